package orchestrated

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi/httpapitest"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
)

// The HTTP API is the real one (over an in-memory core), so the adapter is
// tested against the wire format.
func TestRemoteOverTheHTTPAPI(t *testing.T) {
	core := httpapitest.New()
	srv := httptest.NewServer(httpapi.NewAPI(core, nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	a := Adapter{Core: Remote(&httpapi.Client{BaseURL: srv.URL})}
	ctx := context.Background()

	q := podtemplate.Quota{Cores: 1.5, MemoryMiB: 1500, Network: true}
	if err := a.Start(ctx, id, q, hubcontrol.StartOptions{ExtraEnv: map[string]string{"COCALC_EXTRA_ENV": "e30="}}); err != nil {
		t.Fatal(err)
	}
	if req, _ := core.Request(project.MustParse(id)); req.Quota != q || req.Env["COCALC_EXTRA_ENV"] != "e30=" {
		t.Errorf("request over the wire %+v", req)
	}
	st, err := a.Status(ctx, id)
	if err != nil || st.State != hubcontrol.Running || st.IP != httpapitest.RunningIP {
		t.Errorf("status %+v %v", st, err)
	}
	list, err := a.List(ctx)
	if err != nil || len(list) != 1 || list[0].ProjectID != id {
		t.Errorf("list %+v %v", list, err)
	}
	if err := a.Touch(ctx, id); err != nil || len(core.Touched()) != 1 {
		t.Errorf("touch %v", err)
	}
	if err := a.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Status(ctx, id); st.State != hubcontrol.Opened {
		t.Errorf("after stop %+v", st)
	}
	if err := a.Start(ctx, "../../etc", q, hubcontrol.StartOptions{}); err == nil {
		t.Error("bad id reached the API")
	}
	down := Adapter{Core: Remote(&httpapi.Client{BaseURL: "http://127.0.0.1:1"})}
	if _, err := down.Status(ctx, id); err == nil {
		t.Error("an unreachable API must be an error, not a state")
	}
}
