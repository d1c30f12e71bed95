package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator/orchestratortest"
)

// TestOperationsInProgressAreBounded: beyond MaxInFlight waiting operations
// the API answers 429 with Retry-After at once, without touching the
// orchestrator; quick calls are not bounded; Client waits and sends again,
// so its callers only see the operation's own result.
func TestOperationsInProgressAreBounded(t *testing.T) {
	hanging := []project.ID{project.MustParse("11111111-1111-4111-8111-111111111111"), project.MustParse("22222222-2222-4222-8222-222222222222")}
	third := project.MustParse("33333333-3333-4333-8333-333333333333")
	f := orchestratortest.New()
	f.StartDelayFor = func(id project.ID) time.Duration {
		if id == third {
			return 0
		}
		return time.Hour
	}
	srv := httptest.NewServer(NewAPI(f, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Options{MaxInFlight: 2}))
	t.Cleanup(srv.Close)
	client := &Client{BaseURL: srv.URL, HTTP: srv.Client()}

	cancels := map[project.ID]context.CancelFunc{}
	done := make(chan error, len(hanging))
	for _, id := range hanging {
		ctx, cancel := context.WithCancel(t.Context())
		cancels[id] = cancel
		go func() { _, err := client.Start(ctx, id, orchestrator.StartRequest{}); done <- err }()
	}
	testwait.Eventually(t, "both starts in progress", func() bool {
		return f.CountCalls("start", hanging[0]) == 1 && f.CountCalls("start", hanging[1]) == 1
	})

	// A third waiting operation is refused at once, before the orchestrator.
	for _, path := range []string{"/v1/projects/" + third.String() + "/start", "/v1/projects/" + third.String() + "/stop"} {
		resp, err := srv.Client().Post(srv.URL+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || !strings.Contains(string(body), "in progress") {
			t.Errorf("%s: %d Retry-After %q %s", path, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if n := f.CountCalls("", third); n != 0 {
		t.Errorf("refused operations reached the orchestrator: %d calls", n)
	}
	// Calls that do not wait are not bounded.
	if _, err := client.Status(t.Context(), hanging[0]); err != nil {
		t.Errorf("status while bounded: %v", err)
	}
	if _, err := client.Touch(t.Context(), third); err != nil {
		t.Errorf("touch while bounded: %v", err)
	}

	// Client sends the start again until a slot is free, then it runs.
	got := make(chan error, 1)
	go func() {
		st, err := client.Start(t.Context(), third, orchestrator.StartRequest{})
		if err == nil && st.State != state.Running {
			err = errors.New("not running: " + string(st.State))
		}
		got <- err
	}()
	time.Sleep(1500 * time.Millisecond) // at least one 429 and its Retry-After
	if f.CountCalls("start", third) != 0 {
		t.Fatal("the third start ran while two were in progress")
	}
	cancels[hanging[0]]()
	if err := <-done; err == nil {
		t.Error("the cancelled start returned no error")
	}
	if err := <-got; err != nil {
		t.Fatalf("start behind the bound: %v", err)
	}
	if n := f.CountCalls("start", third); n != 1 {
		t.Errorf("third project started %d times", n)
	}

	// A caller that gives up while refused gets the 429 and its own reason.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	f2 := project.MustParse("44444444-4444-4444-8444-444444444444")
	f.StartDelayFor = func(project.ID) time.Duration { return time.Hour }
	go func() { _, _ = client.Start(t.Context(), f2, orchestrator.StartRequest{}) }()
	testwait.Eventually(t, "the bound full again", func() bool { return f.CountCalls("start", f2) == 1 })
	_, err := client.Start(ctx, project.MustParse("55555555-5555-4555-8555-555555555555"), orchestrator.StartRequest{})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("gave up while refused: %v", err)
	}
	cancels[hanging[1]]()
}
