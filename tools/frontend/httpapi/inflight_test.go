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

// boundedAPI serves a fake orchestrator whose starts of the projects in
// hang take an hour, and starts each of them; cancel ends one.
type boundedAPI struct {
	t      *testing.T
	f      *orchestratortest.Fake
	a      *api
	srv    *httptest.Server
	client *Client
	cancel map[project.ID]context.CancelFunc
	done   chan error
}

func newBoundedAPI(t *testing.T, opts Options, hang ...project.ID) *boundedAPI {
	t.Helper()
	b := &boundedAPI{t: t, f: orchestratortest.New(), cancel: map[project.ID]context.CancelFunc{}, done: make(chan error, len(hang))}
	hanging := map[project.ID]bool{}
	for _, id := range hang {
		hanging[id] = true
	}
	b.f.StartDelayFor = func(id project.ID) time.Duration {
		if hanging[id] {
			return time.Hour
		}
		return 0
	}
	b.a = newAPI(b.f, slog.New(slog.NewTextHandler(io.Discard, nil)), opts)
	b.srv = httptest.NewServer(b.a.routes(nil))
	t.Cleanup(b.srv.Close)
	b.client = &Client{BaseURL: b.srv.URL, HTTP: b.srv.Client()}
	for _, id := range hang {
		ctx, cancel := context.WithCancel(t.Context())
		b.cancel[id] = cancel
		t.Cleanup(cancel)
		go func() { _, err := b.client.Start(ctx, id, orchestrator.StartRequest{}); b.done <- err }()
	}
	testwait.Eventually(t, "the hanging starts in progress", func() bool {
		for _, id := range hang {
			if b.f.CountCalls("start", id) != 1 {
				return false
			}
		}
		return true
	})
	return b
}

// post sends one request, without Client's retries.
func (b *boundedAPI) post(ctx context.Context, id project.ID, action string) (code int, retryAfter, body string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.srv.URL+"/v1/projects/"+id.String()+"/"+action, strings.NewReader("{}"))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.srv.Client().Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(data), nil
}

// release ends a hanging start and checks that its caller saw an error.
func (b *boundedAPI) release(id project.ID) {
	b.t.Helper()
	b.cancel[id]()
	if err := <-b.done; err == nil {
		b.t.Error("the cancelled start returned no error")
	}
}

var (
	p1 = project.MustParse("11111111-1111-4111-8111-111111111111")
	p2 = project.MustParse("22222222-2222-4222-8222-222222222222")
	p3 = project.MustParse("33333333-3333-4333-8333-333333333333")
	p4 = project.MustParse("44444444-4444-4444-8444-444444444444")
	p5 = project.MustParse("55555555-5555-4555-8555-555555555555")
)

// TestWaitingOperationsQueueForASlot: beyond MaxInFlight operations in
// progress, up to MaxQueued more wait for a slot and then run without a
// 429; beyond the queue the answer is 429 with Retry-After at once,
// before the orchestrator; quick calls are not bounded; a request whose
// client goes away leaves the queue.
func TestWaitingOperationsQueueForASlot(t *testing.T) {
	b := newBoundedAPI(t, Options{MaxInFlight: 2, MaxQueued: 1, QueueWait: time.Hour}, p1, p2)

	type answer struct {
		code int
		body string
		err  error
	}
	queued := make(chan answer, 1)
	go func() {
		code, _, body, err := b.post(t.Context(), p3, "start")
		queued <- answer{code, body, err}
	}()
	testwait.Eventually(t, "the third start queued", func() bool { return len(b.a.queued) == 1 })

	// The queue is full: a further waiting operation is refused at once.
	for _, action := range []string{"start", "stop", "restart"} {
		code, retryAfter, body, err := b.post(t.Context(), p4, action)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusTooManyRequests || retryAfter != "1" || !strings.Contains(body, "in progress") {
			t.Errorf("%s beyond the queue: %d Retry-After %q %s", action, code, retryAfter, body)
		}
	}
	if n := b.f.CountCalls("", p3) + b.f.CountCalls("", p4); n != 0 {
		t.Errorf("queued or refused operations reached the orchestrator: %d calls", n)
	}
	// Calls that do not wait are not bounded.
	if _, err := b.client.Status(t.Context(), p1); err != nil {
		t.Errorf("status while bounded: %v", err)
	}
	if _, err := b.client.Touch(t.Context(), p4); err != nil {
		t.Errorf("touch while bounded: %v", err)
	}

	// A slot frees: the queued start runs, answered once, without a 429.
	b.release(p1)
	got := <-queued
	if got.err != nil || got.code != http.StatusOK || !strings.Contains(got.body, `"running"`) {
		t.Fatalf("queued start: %d %v %s", got.code, got.err, got.body)
	}
	if n := b.f.CountCalls("start", p3); n != 1 {
		t.Errorf("queued project started %d times", n)
	}

	// Fill the bound again; a queued request whose client goes away frees
	// its place without reaching the orchestrator.
	b.f.StartDelayFor = func(project.ID) time.Duration { return time.Hour }
	go func() { _, _ = b.client.Start(t.Context(), p4, orchestrator.StartRequest{}) }()
	testwait.Eventually(t, "the bound full again", func() bool { return b.f.CountCalls("start", p4) == 1 })
	ctx, cancel := context.WithCancel(t.Context())
	gone := make(chan struct{})
	go func() { _, _, _, _ = b.post(ctx, p5, "start"); close(gone) }()
	testwait.Eventually(t, "the fifth start queued", func() bool { return len(b.a.queued) == 1 })
	cancel()
	<-gone
	testwait.Eventually(t, "the queue empty after its client left", func() bool { return len(b.a.queued) == 0 })
	if n := b.f.CountCalls("", p5); n != 0 {
		t.Errorf("a request whose client left reached the orchestrator: %d calls", n)
	}
}

// TestClientRetriesBeyondTheQueue: a request that waited QueueWait is
// answered 429; Client sends it again until a slot is free, and a caller
// that gives up gets the 429 and its own reason.
func TestClientRetriesBeyondTheQueue(t *testing.T) {
	b := newBoundedAPI(t, Options{MaxInFlight: 1, MaxQueued: 1, QueueWait: 100 * time.Millisecond}, p1)

	code, retryAfter, _, err := b.post(t.Context(), p2, "start")
	if err != nil || code != http.StatusTooManyRequests || retryAfter != "1" {
		t.Fatalf("after the queue wait: %d Retry-After %q %v", code, retryAfter, err)
	}
	if n := b.f.CountCalls("", p2); n != 0 {
		t.Errorf("a request refused after its wait reached the orchestrator: %d calls", n)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err = b.client.Start(ctx, p3, orchestrator.StartRequest{})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("gave up while refused: %v", err)
	}

	got := make(chan error, 1)
	go func() {
		st, err := b.client.Start(t.Context(), p2, orchestrator.StartRequest{})
		if err == nil && st.State != state.Running {
			err = errors.New("not running: " + string(st.State))
		}
		got <- err
	}()
	time.Sleep(1500 * time.Millisecond) // at least one 429 and its Retry-After
	if b.f.CountCalls("start", p2) != 0 {
		t.Fatal("a start ran while the bound was full")
	}
	b.release(p1)
	if err := <-got; err != nil {
		t.Fatalf("start behind the bound: %v", err)
	}
	if n := b.f.CountCalls("start", p2); n != 1 {
		t.Errorf("project started %d times", n)
	}
}
