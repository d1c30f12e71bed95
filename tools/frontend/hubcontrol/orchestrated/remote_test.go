package orchestrated

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// apiOrchestrator is an in-memory httpapi.Orchestrator: the HTTP API is the
// real one, so the adapter is tested against the wire format.
type apiOrchestrator struct {
	mu      sync.Mutex
	running map[project.ID]orchestrator.StartRequest
	touched []project.ID
}

func (o *apiOrchestrator) Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	o.mu.Lock()
	o.running[id] = req
	o.mu.Unlock()
	return o.Status(id), nil
}

func (o *apiOrchestrator) Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	o.mu.Lock()
	delete(o.running, id)
	o.mu.Unlock()
	return o.Status(id), nil
}

func (o *apiOrchestrator) Restart(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	return o.Start(ctx, id, req)
}

func (o *apiOrchestrator) Status(id project.ID) orchestrator.ProjectStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.running[id]; ok {
		return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Running, IP: "10.4.0.7"}}
	}
	return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Opened}}
}

func (o *apiOrchestrator) List() []orchestrator.ProjectStatus {
	o.mu.Lock()
	var ids []project.ID
	for id := range o.running {
		ids = append(ids, id)
	}
	o.mu.Unlock()
	var out []orchestrator.ProjectStatus
	for _, id := range ids {
		out = append(out, o.Status(id))
	}
	return out
}

func (o *apiOrchestrator) Touch(id project.ID) error {
	o.mu.Lock()
	o.touched = append(o.touched, id)
	o.mu.Unlock()
	return nil
}

func (o *apiOrchestrator) Ready() bool { return true }

func TestRemoteOverTheHTTPAPI(t *testing.T) {
	core := &apiOrchestrator{running: map[project.ID]orchestrator.StartRequest{}}
	srv := httptest.NewServer(httpapi.NewAPI(core, nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	a := Adapter{Core: Remote(&httpapi.Client{BaseURL: srv.URL})}
	ctx := context.Background()

	q := podtemplate.Quota{Cores: 1.5, MemoryMiB: 1500, Network: true}
	if err := a.Start(ctx, id, q, hubcontrol.StartOptions{ExtraEnv: map[string]string{"COCALC_EXTRA_ENV": "e30="}}); err != nil {
		t.Fatal(err)
	}
	if req := core.running[project.MustParse(id)]; req.Quota != q || req.Env["COCALC_EXTRA_ENV"] != "e30=" {
		t.Errorf("request over the wire %+v", req)
	}
	st, err := a.Status(ctx, id)
	if err != nil || st.State != hubcontrol.Running || st.IP != "10.4.0.7" {
		t.Errorf("status %+v %v", st, err)
	}
	list, err := a.List(ctx)
	if err != nil || len(list) != 1 || list[0].ProjectID != id {
		t.Errorf("list %+v %v", list, err)
	}
	if err := a.Touch(ctx, id); err != nil || len(core.touched) != 1 {
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
