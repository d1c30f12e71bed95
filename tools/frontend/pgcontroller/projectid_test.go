package pgcontroller

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"k8s.io/client-go/util/workqueue"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/smccompute"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator/orchestratortest"
)

// TestOneProjectIDRuleInEveryFrontEnd: the HTTP API, smc-compute, the
// PostgreSQL controller and the file operations accept and refuse the
// same IDs. Before, projectfiles demanded version-4 UUIDs, so the HTTP API
// accepted IDs that smc-compute refused and the controller dropped without
// a word.
func TestOneProjectIDRuleInEveryFrontEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, id string
		ok       bool
	}{
		{"version 4", "7b3a4b32-8f0e-4c1a-9d2e-0123456789ab", true},
		{"version 1", "11111111-1111-1111-8111-111111111111", true},
		{"version 7", "01890a5d-ac96-774b-bcce-b302099a8057", true},
		{"upper case", "7B3A4B32-8F0E-4C1A-9D2E-0123456789AB", false},
		{"braced", "{7b3a4b32-8f0e-4c1a-9d2e-0123456789ab}", false},
		{"nil UUID", "00000000-0000-0000-0000-000000000000", false},
		{"no dashes", "7b3a4b328f0e4c1a9d2e0123456789ab", false},
		{"one short", "7b3a4b32-8f0e-4c1a-9d2e-0123456789a", false},
		{"traversal", "../../etc/passwd-0000-0000-00000000", false},
		{"padded", " 7b3a4b32-8f0e-4c1a-9d2e-0123456789a", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := project.Parse(tc.id); (err == nil) != tc.ok {
				t.Fatalf("project.Parse(%q) = %v, want ok=%v", tc.id, err, tc.ok)
			}
			if err := projectfiles.CheckProjectID(tc.id); (err == nil) != tc.ok {
				t.Errorf("projectfiles: %v, want ok=%v", err, tc.ok)
			}

			// HTTP API: status of the project.
			fake := orchestratortest.New()
			srv := httptest.NewServer(httpapi.NewAPI(fake, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{}))
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/v1/projects/" + url.PathEscape(tc.id))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if (resp.StatusCode == http.StatusOK) != tc.ok || (!tc.ok && resp.StatusCode != http.StatusBadRequest) {
				t.Errorf("HTTP API answered %d, want ok=%v (400 when refused)", resp.StatusCode, tc.ok)
			}

			// smc-compute: state of the project.
			var out, errb bytes.Buffer
			code := smccompute.Run(context.Background(), []string{"--kubernetes", "state", tc.id}, &out, &errb, smccompute.Config{
				Files:   projectfiles.Store{Dir: t.TempDir()},
				Connect: func(context.Context) (orchestrator.Projects, error) { return fake, nil },
			})
			if (code == 0) != tc.ok {
				t.Errorf("smc-compute exited %d, want ok=%v (stdout %q, stderr %q)", code, tc.ok, out.String(), errb.String())
			}

			// PostgreSQL controller: a notification or scan naming the project.
			var logs bytes.Buffer
			c := &controller{log: slog.New(slog.NewTextHandler(&logs, nil)), running: map[project.ID]*performing{},
				queue: workqueue.NewTypedRateLimitingQueue(rateLimiter(Config{RetryInterval: 1})),
			}
			defer c.queue.ShutDown()
			c.enqueue(tc.id)
			if queued := c.queue.Len() == 1; queued != tc.ok {
				t.Errorf("controller queued=%v, want %v", queued, tc.ok)
			}
			if refused := strings.Contains(logs.String(), "invalid project ID"); refused == tc.ok {
				t.Errorf("controller log %q: a refused ID must be logged, an accepted one not", logs.String())
			}
		})
	}
}
