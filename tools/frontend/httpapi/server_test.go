package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

const id = "7b3a4b32-8f0e-4c1a-9d2e-0123456789ab"

// fakeOrch records calls and returns canned results.
type fakeOrch struct {
	mu      sync.Mutex
	calls   []string
	lastReq orchestrator.StartRequest
	err     error
	ready   bool
}

func (f *fakeOrch) rec(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func running(id project.ID) orchestrator.ProjectStatus {
	return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Running, IP: "10.0.0.9"}, Pod: id.PodName(), HubPort: 6000, RawPort: 6001}
}

func (f *fakeOrch) Start(_ context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	f.rec("start " + id.String())
	f.mu.Lock()
	f.lastReq = req
	f.mu.Unlock()
	if f.err != nil {
		return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Starting, Reason: "ImagePullBackOff"}}, f.err
	}
	return running(id), nil
}
func (f *fakeOrch) Stop(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.rec("stop " + id.String())
	return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Opened}}, f.err
}
func (f *fakeOrch) Restart(_ context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	f.rec("restart " + id.String())
	f.lastReq = req
	return running(id), f.err
}
func (f *fakeOrch) Status(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.rec("status " + id.String())
	return running(id), nil
}
func (f *fakeOrch) List(context.Context) ([]orchestrator.ProjectStatus, error) {
	f.rec("list")
	return []orchestrator.ProjectStatus{running(project.MustParse(id))}, nil
}
func (f *fakeOrch) Touch(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.rec("touch " + id.String())
	return running(id), f.err
}
func (f *fakeOrch) Ready() bool { return f.ready }

func newServer(t *testing.T, f *fakeOrch) *httptest.Server {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "cocalc_k8s_up 1\n") })
	srv := httptest.NewServer(NewAPI(f, metrics, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{}))
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, srv *httptest.Server, method, path, contentType, body string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatalf("%s %s: body not JSON: %q", method, path, data)
		}
	}
	return resp.StatusCode, out, resp.Header
}

func TestRoutes(t *testing.T) {
	const js = "application/json"
	tests := []struct {
		name, method, path, ctype, body string
		code                            int
		call                            string
		field, want                     string
	}{
		{"start empty body", "POST", "/v1/projects/" + id + "/start", "", "", 200, "start " + id, "state", "running"},
		{"start with quota", "POST", "/v1/projects/" + id + "/start", js, `{"quota":{"cores":2,"memoryMiB":2000,"network":true},"env":{"A":"1"}}`, 200, "start " + id, "ip", "10.0.0.9"},
		{"restart", "POST", "/v1/projects/" + id + "/restart", js, `{"quota":{"cores":1}}`, 200, "restart " + id, "state", "running"},
		{"stop", "POST", "/v1/projects/" + id + "/stop", "", "", 200, "stop " + id, "state", "opened"},
		{"stop with empty object", "POST", "/v1/projects/" + id + "/stop", js, `{}`, 200, "stop " + id, "state", "opened"},
		{"touch", "POST", "/v1/projects/" + id + "/touch", "", "", 200, "touch " + id, "project_id", id},
		{"status", "GET", "/v1/projects/" + id, "", "", 200, "status " + id, "pod", "project-" + id},
		{"list", "GET", "/v1/projects", "", "", 200, "list", "", ""},
		{"healthz", "GET", "/healthz", "", "", 200, "", "status", "ok"},
		{"readyz", "GET", "/readyz", "", "", 200, "", "status", "ready"},

		{"uppercase id", "POST", "/v1/projects/" + strings.ToUpper(id) + "/start", "", "", 400, "", "", ""},
		{"braced id", "GET", "/v1/projects/%7B" + id + "%7D", "", "", 400, "", "", ""},
		{"traversal id", "GET", "/v1/projects/..%2f..%2fetc", "", "", 400, "", "", ""},
		{"empty id", "GET", "/v1/projects/", "", "", 400, "", "", ""},
		{"bad json", "POST", "/v1/projects/" + id + "/start", js, `{"quota":`, 400, "", "", ""},
		{"unknown field", "POST", "/v1/projects/" + id + "/start", js, `{"quota":{"cpus":2}}`, 400, "", "", ""},
		{"unknown top-level field", "POST", "/v1/projects/" + id + "/start", js, `{"quotas":{}}`, 400, "", "", ""},
		{"wrong type", "POST", "/v1/projects/" + id + "/start", js, `{"quota":{"cores":"two"}}`, 400, "", "", ""},
		{"trailing data", "POST", "/v1/projects/" + id + "/start", js, `{} {}`, 400, "", "", ""},
		{"body on stop", "POST", "/v1/projects/" + id + "/stop", js, `{"force":true}`, 400, "", "", ""},
		{"not json content type", "POST", "/v1/projects/" + id + "/start", "text/plain", `cores=2`, 415, "", "", ""},
		{"too large", "POST", "/v1/projects/" + id + "/start", js, `{"env":{"A":"` + strings.Repeat("x", MaxBodyBytes) + `"}}`, 413, "", "", ""},
		{"GET start", "GET", "/v1/projects/" + id + "/start", "", "", 405, "", "", ""},
		{"DELETE project", "DELETE", "/v1/projects/" + id, "", "", 405, "", "", ""},
		{"POST list", "POST", "/v1/projects", "", "", 405, "", "", ""},
		{"POST healthz", "POST", "/healthz", "", "", 405, "", "", ""},
		{"unknown action", "POST", "/v1/projects/" + id + "/explode", "", "", 404, "", "", ""},
		{"unknown route", "GET", "/v2/projects", "", "", 404, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeOrch{ready: true}
			srv := newServer(t, f)
			code, body, hdr := call(t, srv, tt.method, tt.path, tt.ctype, tt.body)
			if code != tt.code {
				t.Fatalf("code = %d, want %d (body %v)", code, tt.code, body)
			}
			if code >= 400 {
				if msg, _ := body["error"].(string); msg == "" {
					t.Fatalf("error response without message: %v", body)
				}
				if len(f.calls) != 0 {
					t.Fatalf("bad request reached the orchestrator: %v", f.calls)
				}
				if code == 405 && hdr.Get("Allow") == "" {
					t.Fatal("405 without Allow header")
				}
				return
			}
			if tt.call != "" && (len(f.calls) == 0 || f.calls[0] != tt.call) {
				t.Fatalf("calls = %v, want %q", f.calls, tt.call)
			}
			if tt.field != "" && fmt.Sprint(body[tt.field]) != tt.want {
				t.Fatalf("%s = %v, want %s (body %v)", tt.field, body[tt.field], tt.want, body)
			}
		})
	}
}

func TestStartBodyReachesOrchestrator(t *testing.T) {
	f := &fakeOrch{ready: true}
	srv := newServer(t, f)
	code, _, _ := call(t, srv, "POST", "/v1/projects/"+id+"/start", "application/json",
		`{"quota":{"cores":2.5,"memoryMiB":3000,"cpuShares":100,"network":true,"gpus":1,"idleTimeoutSeconds":60},"env":{"COCALC_EXTRA_ENV":"e30="}}`)
	if code != 200 {
		t.Fatal(code)
	}
	q := f.lastReq.Quota
	if q.Cores != 2.5 || q.MemoryMiB != 3000 || q.CPUShares != 100 || !q.Network || q.GPUs != 1 || q.IdleTimeoutSeconds != 60 ||
		f.lastReq.Env["COCALC_EXTRA_ENV"] != "e30=" {
		t.Fatalf("request = %+v", f.lastReq)
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{fmt.Errorf("x: %w", podspec.ErrInvalidQuota), 400},
		{fmt.Errorf("start: %w after 1m0s", orchestrator.ErrTimeout), 504},
		{fmt.Errorf("start: %w", orchestrator.ErrStoppedWhileStarting), 409},
		{orchestrator.ErrShutdown, 503},
		{fmt.Errorf("create pod: %w", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("rbac"))), 502},
		{errors.New("disk on fire"), 500},
	}
	for _, tt := range tests {
		f := &fakeOrch{ready: true, err: tt.err}
		srv := newServer(t, f)
		code, body, _ := call(t, srv, "POST", "/v1/projects/"+id+"/start", "", "")
		if code != tt.code {
			t.Errorf("%v: code %d, want %d", tt.err, code, tt.code)
		}
		if msg, _ := body["error"].(string); !strings.Contains(msg, tt.err.Error()) {
			t.Errorf("error message %q lacks context %q", msg, tt.err)
		}
		if st, ok := body["status"].(map[string]any); !ok || st["reason"] != "ImagePullBackOff" {
			t.Errorf("error without the project status: %v", body)
		}
	}
}

func TestReadyzNotSynced(t *testing.T) {
	srv := newServer(t, &fakeOrch{ready: false})
	if code, _, _ := call(t, srv, "GET", "/readyz", "", ""); code != 503 {
		t.Fatalf("readyz before sync = %d", code)
	}
}

func TestHealthListenerServesOnlyHealth(t *testing.T) {
	ready := false
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "cocalc_k8s_up 1\n") })
	srv := httptest.NewServer(NewHealth(func() bool { return ready }, metrics))
	defer srv.Close()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200, "/v1/projects": 404, "/v1/projects/" + id + "/start": 404} {
		if code, _, _ := call(t, srv, "GET", path, "", ""); code != want {
			t.Errorf("GET %s = %d, want %d", path, code, want)
		}
	}
	ready = true
	if code, _, _ := call(t, srv, "GET", "/readyz", "", ""); code != 200 {
		t.Errorf("readyz after sync = %d", code)
	}
	if code, _, _ := call(t, srv, "POST", "/v1/projects/"+id+"/start", "", ""); code != 404 {
		t.Errorf("project operation reachable on the health listener: %d", code)
	}
}

func TestClientRoundTrip(t *testing.T) {
	f := &fakeOrch{ready: true}
	srv := newServer(t, f)
	c := &Client{BaseURL: srv.URL + "/", HTTP: srv.Client()}
	ctx := context.Background()
	pid := project.MustParse(id)
	if st, err := c.Start(ctx, pid, orchestrator.StartRequest{}); err != nil || st.State != state.Running || st.IP != "10.0.0.9" {
		t.Fatalf("start: %+v %v", st, err)
	}
	if st, err := c.Stop(ctx, pid); err != nil || st.State != state.Opened {
		t.Fatalf("stop: %+v %v", st, err)
	}
	if _, err := c.Restart(ctx, pid, orchestrator.StartRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Touch(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx, pid); err != nil || st.Pod != pid.PodName() {
		t.Fatalf("status: %+v %v", st, err)
	}
	if l, err := c.List(ctx); err != nil || len(l) != 1 {
		t.Fatalf("list: %v %v", l, err)
	}
	f.err = fmt.Errorf("start: %w", orchestrator.ErrTimeout)
	_, err := c.Start(ctx, pid, orchestrator.StartRequest{})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 504 || apiErr.Status == nil || apiErr.Status.Reason != "ImagePullBackOff" {
		t.Fatalf("client error = %#v", err)
	}
}
