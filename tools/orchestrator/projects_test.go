package orchestrator

import (
	"context"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
)

// TestWatchFollowsTheInformer: Watch reports each state a project's pod
// goes through, pushed by the cache's change notifications (the test's
// clock never moves, so nothing can be polling on a timer).
func TestWatchFollowsTheInformer(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	ch := e.orch.Watch(ctx)
	next := func(want state.State) ProjectStatus {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case st, ok := <-ch:
				if !ok {
					t.Fatalf("watch closed waiting for %s", want)
				}
				if st.ProjectID == pid && st.State == want {
					return st
				}
			case <-deadline:
				t.Fatalf("no %s status from the watch", want)
			}
		}
	}
	started := make(chan error, 1)
	go func() {
		_, err := e.orch.Start(ctx, pid, StartRequest{})
		started <- err
	}()
	e.waitFor("pod in cache", e.podInCache(pid.PodName()))
	next(state.Starting)
	e.kubelet().run(pid.PodName())
	if st := next(state.Running); st.IP != "10.244.0.7" {
		t.Errorf("running status without the pod IP: %+v", st)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	e.kubelet().finish(pid.PodName())
	next(state.Opened)
	// Other subscribers and the per-name waiters keep working after a
	// watch ends, and the channel is closed.
	cancel()
	for range ch {
	}
	if st, err := e.orch.Status(ctxT(t), pid); err != nil || st.State != state.Opened {
		t.Errorf("status after the watch ended: %+v, %v", st, err)
	}
}
