package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Bounds of the API-server restart test. Generous: they only decide how
// long a broken orchestrator is waited for, never whether a slow one passes.
const (
	// hubRetryFor is how long an operation is retried through the HTTP
	// API, as the hub does, before the test gives up on it.
	hubRetryFor = 3 * time.Minute
	// cacheCatchUp bounds how long a change made directly through the API
	// may take to show in the orchestrator's answers.
	cacheCatchUp = time.Minute
)

// projectOp is one operation the test asks of the orchestrator.
type projectOp struct {
	stop bool // else start
	id   project.ID
}

func (o projectOp) String() string {
	if o.stop {
		return "stop " + string(o.id)
	}
	return "start " + string(o.id)
}

func (o projectOp) want() state.State {
	if o.stop {
		return state.Opened
	}
	return state.Running
}

// opOutcome is how an operation went: how many attempts it took and the
// errors of the failed ones, or err if it never reached its state.
type opOutcome struct {
	op       projectOp
	attempts int
	failures []string
	err      error
}

// untilDone issues op through the orchestrator's HTTP API and repeats it
// when it fails or answers another state, as the hub does, until the
// project is in the requested state or hubRetryFor passes.
func untilDone(ctx context.Context, r *orchestratedRelease, op projectOp) opOutcome {
	out := opOutcome{op: op}
	deadline := time.Now().Add(hubRetryFor)
	for {
		out.attempts++
		var st orchestrator.ProjectStatus
		var err error
		if op.stop {
			st, err = r.orch.api.Stop(ctx, op.id)
		} else {
			st, err = r.orch.api.Start(ctx, op.id, orchestrator.StartRequest{})
		}
		if err == nil && st.State == op.want() {
			return out
		}
		if err == nil {
			err = fmt.Errorf("answered %s, want %s", st.State, op.want())
		}
		out.failures = append(out.failures, shorten(err.Error(), 300))
		if time.Now().After(deadline) {
			out.err = fmt.Errorf("%s: not done after %d attempts in %s: %w", op, out.attempts, hubRetryFor, err)
			return out
		}
		select {
		case <-ctx.Done():
			out.err = fmt.Errorf("%s: %w", op, ctx.Err())
			return out
		case <-time.After(time.Second):
		}
	}
}

// waitAPIServerDown returns once the cluster's /readyz fails (the API
// server is shutting down or not listening). It asks with a plain HTTP
// client: client-go would retry the 429s a terminating server sends.
func waitAPIServerDown(ctx context.Context, c *cluster.Cluster) error {
	hc, err := rest.HTTPClientFor(c.RESTConfig)
	if err != nil {
		return fmt.Errorf("http client for the API server: %w", err)
	}
	hc.Timeout = time.Second
	url := strings.TrimRight(c.RESTConfig.Host, "/") + "/readyz"
	return wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return true, nil
		}
		resp.Body.Close()
		return resp.StatusCode != http.StatusOK, nil
	})
}

// shorten cuts s to n bytes for the log (errors repeat the pod URL).
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func newProjectIDs(n int) []project.ID {
	out := make([]project.ID, n)
	for i := range out {
		out[i] = newProjectID()
	}
	return out
}

// TestOrchestratorSurvivesAPIServerRestart restarts kube-apiserver while
// starts and stops are in flight: one wave of operations is issued just
// before the restart, a second while the API server is down. Each is
// retried through the HTTP API when it fails, as the hub does. Afterwards
// every project must be in its requested state with exactly one pod per
// running project and none for stopped ones, the orchestrator must be the
// same process, and its pod cache must follow changes made after the
// restart (its watch was re-established, not silently lost).
//
// Two restarts: a graceful one (SIGTERM: 429s while the server drains,
// then a few seconds of refused connections) and a crash with an outage
// longer than the orchestrator's own API retries, so that requests do fail
// and are retried by the caller.
//
// No project is restarted (stopped and started again) across the outage:
// a pod deleted and re-created under the same name while kube-scheduler's
// watch is down leaves it with "Scheduler cache is corrupted" (its log)
// and the new pod is never scheduled, also on later re-creations; tried
// with kube-scheduler v1.37.2, the test tier's. That is the scheduler's
// bug, not the orchestrator's, and it broke the shared test cluster.
func TestOrchestratorSurvivesAPIServerRestart(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	if err := c.CanRestartAPIServer(); err != nil {
		if !errors.Is(err, cluster.ErrUnsupported) {
			t.Fatal(err)
		}
		t.Skip(err.Error())
	}
	tests := []struct {
		name string
		opts []cluster.RestartOption
		// mustRetry: the outage outlasts the orchestrator's retries of
		// one API call (≈3 s), so some operation must have failed and
		// been retried, else this case did not test what it claims.
		mustRetry bool
	}{
		{name: "graceful"},
		{name: "crash with 10s outage", opts: []cluster.RestartOption{cluster.WithCrash(), cluster.WithDowntime(10 * time.Second)}, mustRetry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			timed(t)
			survivesAPIServerRestart(t, c, tc.mustRetry, tc.opts...)
		})
	}
}

func survivesAPIServerRestart(t *testing.T, c *cluster.Cluster, mustRetry bool, opts ...cluster.RestartOption) {
	r := installForOrchestrator(t, c, "orch-apirestart")
	ctx := t.Context()
	orchPid := r.orch.cmd.Process.Pid

	// Running before the restart: some are stopped during it, some stay.
	toStop, toKeep := newProjectIDs(4), newProjectIDs(2)
	for _, id := range slices.Concat(toStop, toKeep) {
		st, err := r.orch.api.Start(ctx, id, orchestrator.StartRequest{})
		require.NoError(t, err, "start %s before the restart", id)
		require.Equal(t, state.Running, st.State, "%s: %+v", id, st)
	}
	toStart := newProjectIDs(6)
	var before, during []projectOp
	for i, id := range toStart {
		if i < len(toStart)/2 {
			before = append(before, projectOp{id: id})
		} else {
			during = append(during, projectOp{id: id})
		}
	}
	for i, id := range toStop {
		if i < len(toStop)/2 {
			before = append(before, projectOp{stop: true, id: id})
		} else {
			during = append(during, projectOp{stop: true, id: id})
		}
	}

	outcomes := make(chan opOutcome, len(before)+len(during))
	var ops sync.WaitGroup
	issue := func(wave []projectOp) {
		for _, op := range wave {
			ops.Go(func() { outcomes <- untilDone(ctx, r, op) })
		}
	}
	restarted := make(chan error, 1)
	begin := time.Now()
	issue(before)
	go func() {
		restartCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		restarted <- c.RestartAPIServer(restartCtx, opts...)
	}()
	require.NoError(t, waitAPIServerDown(ctx, c), "the API server never went down")
	t.Logf("API server down %v after the restart began; issuing %d more operations", time.Since(begin).Round(time.Millisecond), len(during))
	issue(during)
	require.NoError(t, <-restarted, "restart kube-apiserver")
	t.Logf("API server ready again %v after the restart began", time.Since(begin).Round(time.Millisecond))
	ops.Wait()
	close(outcomes)
	retried := 0
	for o := range outcomes {
		if len(o.failures) > 0 {
			retried++
			t.Logf("%s: %d attempts; failures:\n\t%s", o.op, o.attempts, strings.Join(o.failures, "\n\t"))
		}
		require.NoError(t, o.err)
	}
	t.Logf("all %d operations done %v after the restart began (%d needed a retry)",
		len(before)+len(during), time.Since(begin).Round(time.Millisecond), retried)
	if mustRetry {
		require.NotZero(t, retried, "no operation failed during the outage: lengthen it beyond the orchestrator's API retries")
	}

	// The same orchestrator process answered everything: it did not crash
	// (and was not restarted by anyone).
	select {
	case <-r.orch.done:
		t.Fatalf("orchestrator (pid %d) exited during the API server restart", orchPid)
	default:
	}
	resp, err := http.Get(r.orch.health + "/readyz")
	require.NoError(t, err, "orchestrator health endpoint")
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "orchestrator /readyz after the restart")

	running := slices.Concat(toKeep, toStart)
	for _, id := range running {
		require.Len(t, projectPods(t, c, r.ns, id), 1, "pods of started project %s", id)
		st, err := r.orch.api.Status(ctx, id)
		require.NoError(t, err)
		require.Equal(t, state.Running, st.State, "%s: %+v", id, st)
	}
	for _, id := range toStop {
		require.Empty(t, projectPods(t, c, r.ns, id), "pods of stopped project %s", id)
		st, err := r.orch.api.Status(ctx, id)
		require.NoError(t, err)
		require.Equal(t, state.Opened, st.State, "%s: %+v", id, st)
	}
	list, err := r.orch.api.List(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, running, idsOf(list), "the orchestrator lists exactly the running projects")

	// Changes made directly through the API after the restart reach the
	// orchestrator's cache: a pod another replica (or an admin) created,
	// and a pod someone deleted.
	changed := time.Now()
	adopted := newProjectID()
	pod, err := podspec.Build(liveTemplate(t, c, r.ns), podspec.Input{Project: adopted})
	require.NoError(t, err)
	_, err = c.Client.CoreV1().Pods(r.ns).Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err, "create a project pod directly")
	gone := toKeep[0]
	zero := int64(0)
	require.NoError(t, c.Client.CoreV1().Pods(r.ns).Delete(ctx, gone.PodName(), metav1.DeleteOptions{GracePeriodSeconds: &zero}),
		"delete a project pod directly")
	want := slices.Concat(toKeep[1:], toStart, []project.ID{adopted})
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		st, err := r.orch.api.Status(ctx, adopted)
		require.NoError(ct, err)
		require.Equal(ct, state.Running, st.State, "pod created directly after the restart: %+v", st)
		st, err = r.orch.api.Status(ctx, gone)
		require.NoError(ct, err)
		require.Equal(ct, state.Opened, st.State, "pod deleted directly after the restart: %+v", st)
		list, err := r.orch.api.List(ctx)
		require.NoError(ct, err)
		require.ElementsMatch(ct, want, idsOf(list))
	}, cacheCatchUp, 200*time.Millisecond, "the orchestrator's pod cache does not follow the API after the restart")
	t.Logf("direct changes visible through the orchestrator %v after they were made", time.Since(changed).Round(time.Millisecond))
}
