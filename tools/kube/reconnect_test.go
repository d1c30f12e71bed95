package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// refused is what dialing a stopped API server returns.
var refused = &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api/v1/pods", Err: &net.OpError{Op: "dial", Net: "tcp",
	Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestIsUnreachable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection refused", refused, true},
		{"connection reset", &net.OpError{Op: "read", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}, true},
		{"unexpected EOF", fmt.Errorf("stream: %w", io.ErrUnexpectedEOF), true},
		{"EOF", io.EOF, true},
		{"dial timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, true},
		{"503 from a proxy", apierrors.NewServiceUnavailable("upstream down"), true},
		{"502 from a proxy", apierrors.NewGenericServerResponse(502, "get", podsGR, "", "bad gateway", 0, true), true},
		{"504 from a proxy", apierrors.NewGenericServerResponse(504, "get", podsGR, "", "gateway timeout", 0, true), true},
		// Answers of a live server: the reflector's own handling applies.
		{"429", apierrors.NewTooManyRequests("slow down", 1), false},
		{"403 (RBAC not synced yet after a restart)", apierrors.NewForbidden(podsGR, "", errors.New("rbac")), false},
		{"410 (resource version too old)", apierrors.NewResourceExpired("too old"), false},
		{"500", apierrors.NewInternalError(errors.New("boom")), false},
		{"other", errors.New("decode: bad object"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, isUnreachable(tc.err))
		})
	}
}

// recordingClock returns from every After at once and records how long
// the caller asked to wait.
type recordingClock struct {
	clock.RealClock
	mu     sync.Mutex
	waited []time.Duration
}

func (c *recordingClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waited = append(c.waited, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}

func (c *recordingClock) delays() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waited...)
}

// fakeLW fails the first `failures` calls of each kind with err.
func fakeLW(failures int32, err error, lists, watches *atomic.Int32) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			if lists.Add(1) <= failures {
				return nil, err
			}
			return &metav1.List{}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			if watches.Add(1) <= failures {
				return nil, err
			}
			return watch.NewFake(), nil
		},
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestUnreachableServerIsRetriedAtMostCapApart(t *testing.T) {
	var lists, watches atomic.Int32
	clk := &recordingClock{}
	const failures = 12 // long enough to reach the cap
	lw := newPodListerWatcher(fakeLW(failures, refused, &lists, &watches), fake.NewClientset(), defaultReconnectBackoff, clk, quietLogger())

	w, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{})
	require.NoError(t, err, "the watch must be retried until the server answers")
	require.NotNil(t, w)
	w.Stop()
	require.EqualValues(t, failures+1, watches.Load())
	_, err = lw.ListWithContext(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.EqualValues(t, failures+1, lists.Load())

	delays := clk.delays()
	require.Len(t, delays, 2*failures, "one wait per failed attempt")
	maxDelay := time.Duration(float64(defaultReconnectBackoff.Cap) * (1 + defaultReconnectBackoff.Jitter))
	for i, d := range delays {
		require.GreaterOrEqual(t, d, defaultReconnectBackoff.Duration, "delay %d", i)
		// client-go's reflector would be at 30-60 s by now.
		require.LessOrEqual(t, d, maxDelay, "delay %d: reconnection attempts must stay at most the cap apart", i)
	}
	require.GreaterOrEqual(t, delays[failures-1], defaultReconnectBackoff.Cap, "the delay grows to the cap")
}

func TestServerAnswersReachTheReflectorUnchanged(t *testing.T) {
	for name, answer := range map[string]error{
		"forbidden":    apierrors.NewForbidden(podsGR, "", errors.New("rbac")),
		"expired":      apierrors.NewResourceExpired("too old"),
		"throttled":    apierrors.NewTooManyRequests("slow down", 1),
		"internal":     apierrors.NewInternalError(errors.New("boom")),
		"undecodeable": errors.New("decode: bad object"),
	} {
		t.Run(name, func(t *testing.T) {
			var lists, watches atomic.Int32
			clk := &recordingClock{}
			lw := newPodListerWatcher(fakeLW(1, answer, &lists, &watches), fake.NewClientset(), defaultReconnectBackoff, clk, quietLogger())
			_, err := lw.WatchWithContext(t.Context(), metav1.ListOptions{})
			require.ErrorIs(t, err, answer)
			_, err = lw.ListWithContext(t.Context(), metav1.ListOptions{})
			require.ErrorIs(t, err, answer)
			require.EqualValues(t, 1, watches.Load())
			require.EqualValues(t, 1, lists.Load())
			require.Empty(t, clk.delays())
		})
	}
}

func TestReconnectingStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var calls atomic.Int32
	lw := newPodListerWatcher(&cache.ListWatch{
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			if calls.Add(1) == 3 {
				cancel() // the informer is shutting down
			}
			return nil, refused
		},
	}, fake.NewClientset(), wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 1}, clock.RealClock{}, quietLogger())
	_, err := lw.WatchWithContext(ctx, metav1.ListOptions{})
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.EqualValues(t, 3, calls.Load())
}

// errorLog records the API errors the Client reports.
type errorLog struct {
	mu   sync.Mutex
	errs []string
}

func (e *errorLog) APIError(verb string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, verb+": "+err.Error())
}

func (e *errorLog) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.errs...)
}

// TestPodCacheRidesOutAnUnreachableServer: a pod cache started while the
// API server refuses connections syncs once it answers, and the reflector
// never saw a failure (so none of its backoff, which grows to 30-60 s,
// was spent). A failure the server answered (403) is still reported.
func TestPodCacheRidesOutAnUnreachableServer(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		failures   int32
		wantErrors bool
	}{
		{"refused", refused, 3, false},
		// Once: each costs the reflector's backoff (≥ 0.8 s).
		{"forbidden", apierrors.NewForbidden(podsGR, "", errors.New("rbac")), 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(testPod("project-a", selector))
			lists := failTimes(cs, "list", "pods", tc.failures, tc.err)
			var watches atomic.Int32
			cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
				if watches.Add(1) <= tc.failures {
					return true, nil, tc.err
				}
				return false, nil, nil
			})
			errs := &errorLog{}
			c, err := New(cs, Config{Namespace: ns, Selector: selector, Errors: errs, Logger: quietLogger(),
				ReconnectBackoff: wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 1}})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			c.Start(ctx)
			syncCtx, cancelSync := context.WithTimeout(ctx, time.Minute)
			defer cancelSync()
			require.NoError(t, c.WaitForSync(syncCtx))
			require.NotNil(t, c.Pod("project-a"))
			require.Greater(t, lists.Load(), tc.failures, "every failed list was retried")
			if tc.wantErrors {
				require.NotEmpty(t, errs.all(), "a failure the server answered must be reported")
				return
			}
			require.Empty(t, errs.all(), "an unreachable server must not reach the reflector")
		})
	}
}

func TestListWatchFailuresReported(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		reported bool
	}{
		{"watch closed normally", io.EOF, false},
		{"resource version expired", apierrors.NewResourceExpired("too old"), false},
		{"gone", apierrors.NewGone("compacted"), false},
		{"forbidden", apierrors.NewForbidden(podsGR, "", errors.New("rbac")), true},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := &errorLog{}
			c, err := New(fake.NewClientset(), Config{Namespace: ns, Selector: selector, Errors: errs, Logger: quietLogger()})
			require.NoError(t, err)
			c.listWatchFailed(t.Context(), nil, tc.err)
			if tc.reported {
				require.Equal(t, []string{"watch: " + tc.err.Error()}, errs.all())
			} else {
				require.Empty(t, errs.all())
			}
		})
	}
}
