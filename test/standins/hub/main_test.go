package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// fakeProjects answers like the orchestrator; a running project's ports
// point at a local server standing in for the project pod.
type fakeProjects struct {
	mu      sync.Mutex
	running map[project.ID]bool
	lastReq orchestrator.StartRequest
	ip      string
	port    int
}

func (f *fakeProjects) status(id project.ID) orchestrator.ProjectStatus {
	st := orchestrator.ProjectStatus{ProjectID: id, HubPort: f.port, RawPort: f.port}
	st.State = state.Opened
	if f.running[id] {
		st.State, st.IP = state.Running, f.ip
	}
	return st
}

func (f *fakeProjects) Start(_ context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[id] = true
	f.lastReq = req
	return f.status(id), nil
}

func (f *fakeProjects) Stop(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, id)
	return f.status(id), nil
}

func (f *fakeProjects) Status(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status(id), nil
}

func TestHubStandin(t *testing.T) {
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "project saw "+r.URL.Path)
	}))
	defer pod.Close()
	host, port, _ := net.SplitHostPort(pod.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	homes := t.TempDir()
	fake := &fakeProjects{running: map[project.ID]bool{}, ip: host, port: p}
	srv := httptest.NewServer(newHandler(fake, homes))
	defer srv.Close()
	id := project.MustParse("4f9c2a1e-8b7d-4c3e-9a2f-1b2c3d4e5f60")
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := do("GET", "/health", "")
	require.Equal(t, 200, code)
	require.Equal(t, "ok", body)
	code, _ = do("GET", "/projects/"+string(id)+"/raw/x", "")
	require.Equal(t, http.StatusServiceUnavailable, code, "proxy to a stopped project")
	code, body = do("POST", "/projects/"+string(id)+"/start", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"state":"running"`)
	code, body = do("GET", "/projects/"+string(id)+"/raw/health", "")
	require.Equal(t, 200, code)
	require.Equal(t, "project saw /health", body)
	code, body = do("GET", "/projects/"+string(id)+"/hub/a/b", "")
	require.Equal(t, 200, code)
	require.Equal(t, "project saw /a/b", body)

	require.NoError(t, os.Mkdir(filepath.Join(homes, string(id)), 0o755))
	code, _ = do("POST", "/projects/"+string(id)+"/file?name=from-server.txt", "written by the server")
	require.Equal(t, http.StatusNoContent, code)
	data, err := os.ReadFile(filepath.Join(homes, string(id), "from-server.txt"))
	require.NoError(t, err)
	require.Equal(t, "written by the server", string(data))
	code, _ = do("POST", "/projects/"+string(id)+"/file?name=../escape", "x")
	require.Equal(t, http.StatusBadRequest, code)

	code, body = do("POST", "/projects/"+string(id)+"/stop", "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"state":"opened"`)
	code, _ = do("POST", "/projects/not-a-uuid/start", "")
	require.Equal(t, http.StatusBadRequest, code)

	// A start body is the orchestrator's start request, passed through;
	// a malformed one is refused, not replaced by the defaults.
	code, _ = do("POST", "/projects/"+string(id)+"/start", `{"quota":{"network":true,"idleTimeoutSeconds":10}}`)
	require.Equal(t, 200, code)
	require.True(t, fake.lastReq.Quota.Network)
	require.EqualValues(t, 10, fake.lastReq.Quota.IdleTimeoutSeconds)
	code, body = do("POST", "/projects/"+string(id)+"/start", `{"quota":`)
	require.Equal(t, http.StatusBadRequest, code, body)

	code, body = do("GET", "/dial?addr="+pod.Listener.Addr().String(), "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `"connected":true`)
}

// The real client satisfies the interface the handler uses.
var _ projects = (*httpapi.Client)(nil)
