package kube

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/watchlist"
	"k8s.io/utils/clock"
)

// defaultReconnectBackoff paces the pod cache's reconnection attempts while
// the API server is unreachable: 250 ms doubling to at most 2 s.
var defaultReconnectBackoff = wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 10, Cap: 2 * time.Second}

// reconnectingListerWatcher is the pod cache's list and watch: while the
// API server is unreachable it retries the request itself, at most
// Backoff.Cap apart, instead of failing it.
//
// Why: client-go's reflector answers a failed list or watch by sleeping,
// doubling from 0.8 s to a cap of 30 s with up to 100 % jitter, and keeps
// that delay until two minutes pass without a failure. Measured on the api
// test tier: after a 30 s API-server outage the orchestrator's cache showed
// a new pod 32 s after the server was back; every start in that window
// creates its pod and then waits for a cache that cannot see it. That
// backoff protects an API server from thousands of clients; this is one
// list-watch on one namespace, so a request every 2 s costs nothing.
//
// Only errors that mean "no server answered" (refused or reset
// connections, timeouts, 502/503/504 from a proxy in front) are retried
// here. Answers of a live server (429, 403, 410, ...) reach the reflector
// unchanged, and it handles them as it always does.
type reconnectingListerWatcher struct {
	inner   cache.ListerWatcherWithContext
	client  any // for WatchList support, see IsWatchListSemanticsUnSupported
	backoff wait.Backoff
	clock   clock.Clock
	log     *slog.Logger
}

var _ cache.ListerWatcherWithContext = (*reconnectingListerWatcher)(nil)

// newPodListerWatcher lists and watches the pods of namespace matching
// selector through cs, reconnecting as described above.
func newPodListerWatcher(lw *cache.ListWatch, client any, backoff wait.Backoff, clk clock.Clock, log *slog.Logger) *reconnectingListerWatcher {
	return &reconnectingListerWatcher{inner: cache.ToListerWatcherWithContext(lw), client: client, backoff: backoff, clock: clk, log: log}
}

func (r *reconnectingListerWatcher) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	var obj runtime.Object
	err := r.untilAnswered(ctx, "list", func() error {
		var err error
		obj, err = r.inner.ListWithContext(ctx, opts)
		return err
	})
	return obj, err
}

func (r *reconnectingListerWatcher) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	var w watch.Interface
	err := r.untilAnswered(ctx, "watch", func() error {
		var err error
		w, err = r.inner.WatchWithContext(ctx, opts)
		return err
	})
	return w, err
}

// List and Watch complete cache.ListerWatcher, which the informer
// constructor takes; it calls the WithContext methods.
func (r *reconnectingListerWatcher) List(opts metav1.ListOptions) (runtime.Object, error) {
	return r.ListWithContext(context.Background(), opts)
}

func (r *reconnectingListerWatcher) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return r.WatchWithContext(context.Background(), opts)
}

// IsWatchListSemanticsUnSupported passes on what the clientset says, so
// the reflector streams the initial list exactly when it would without
// this wrapper (fake clientsets cannot).
func (r *reconnectingListerWatcher) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(r.client)
}

// untilAnswered runs call until it returns anything but an unreachable
// error, or ctx ends (then the last error is returned).
func (r *reconnectingListerWatcher) untilAnswered(ctx context.Context, verb string, call func() error) error {
	backoff := r.backoff
	var begin time.Time
	for attempt := 1; ; attempt++ {
		err := call()
		if !isUnreachable(err) || ctx.Err() != nil {
			if attempt > 1 {
				r.log.Info("pod cache: API server reachable again", "verb", verb, "attempts", attempt, "after", r.clock.Since(begin).Round(time.Millisecond), "err", err)
			}
			return err
		}
		if attempt == 1 {
			begin = r.clock.Now()
			r.log.Warn("pod cache: API server unreachable, retrying", "verb", verb, "err", err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-r.clock.After(backoff.Step()):
		}
	}
}

// isUnreachable reports whether err means no API server answered the
// request: the connection failed, broke or timed out, or a proxy in front
// of the API server said it is unavailable.
func isUnreachable(err error) bool {
	if err == nil {
		return false
	}
	switch {
	case utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), utilnet.IsProbableEOF(err),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && !apierrors.IsTooManyRequests(err) {
		switch status.Status().Code {
		case 502, 503, 504:
			return true
		}
	}
	return false
}
