package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRestartAPIServerUnsupported(t *testing.T) {
	restartable := func(context.Context, restartOptions) error { return nil }
	tests := []struct {
		name    string
		cluster *Cluster
		wantWhy string // "" = supported
	}{
		{"api tier this process runs", &Cluster{Tier: TierAPI, Name: "x", owned: true, restartAPI: restartable}, ""},
		{"reused api tier", &Cluster{Tier: TierAPI, Name: "x"}, "attached to an api tier another process runs (COCALC_TEST_REUSE=1)"},
		{"kind", &Cluster{Tier: TierKind, Name: "x"}, "static pod inside the node container"},
		{"existing", &Cluster{Tier: TierExisting, Name: "x"}, "not the test's to restart"},
		{"owned but no hook", &Cluster{Tier: TierAPI, Name: "x", owned: true}, "not started with a restartable API server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errCan := tc.cluster.CanRestartAPIServer()
			errDo := tc.cluster.RestartAPIServer(t.Context())
			if tc.wantWhy == "" {
				require.NoError(t, errCan)
				require.NoError(t, errDo)
				return
			}
			for _, err := range []error{errCan, errDo} {
				require.ErrorIs(t, err, ErrUnsupported)
				require.ErrorContains(t, err, tc.wantWhy)
				require.ErrorContains(t, err, "the "+string(tc.cluster.Tier)+" cluster x")
			}
		})
	}
}

// processRole is the component a control-plane pid runs: the multi-call
// binary gets the component's name as its first argument.
func processRole(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	args := bytes.Split(data, []byte{0})
	if len(args) < 2 {
		return ""
	}
	return string(args[1])
}

// rolePids maps each control-plane component to its pid.
func rolePids(t *testing.T, c *Cluster) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, pid := range c.pids() {
		role := processRole(pid)
		require.NotEmpty(t, role, "pid %d has no command line", pid)
		out[role] = pid
	}
	return out
}

// TestRestartAPIServerKeepsStateAndProcessHandling restarts the API server
// of a private api tier twice (gracefully, then as a crash with an outage)
// and checks: the same client answers again,
// objects made before survive and new ones can be made, the old process is
// gone and the new one is a tracked child of the test (so Stop still ends
// everything), and the other components keep running.
func TestRestartAPIServerKeepsStateAndProcessHandling(t *testing.T) {
	ctx, c := ownAPITier(t, 1, 4*time.Minute)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop(context.Background())
		}
	})
	require.NoError(t, c.CanRestartAPIServer())

	before, err := c.Client.CoreV1().ConfigMaps(metav1.NamespaceDefault).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "survives-restart"},
		Data:       map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	allPids := map[int]bool{}
	rounds := []struct {
		how  string
		opts []RestartOption
	}{
		{"stopped", nil},
		{"killed", []RestartOption{WithCrash(), WithDowntime(time.Second)}},
	}
	for i, tc := range rounds {
		round := i + 1
		old := rolePids(t, c)
		require.Len(t, old, 5, "etcd, apiserver, controller-manager, scheduler, kwok: %v", old)
		oldAPI := old[apiServerName]
		require.NotZero(t, oldAPI, "no %s among %v", apiServerName, old)
		for _, pid := range old {
			allPids[pid] = true
		}

		begin := time.Now()
		require.NoError(t, c.RestartAPIServer(ctx, tc.opts...), "round %d", round)
		if tc.how == "killed" {
			require.GreaterOrEqual(t, time.Since(begin), time.Second, "WithDowntime must keep the server down")
		}

		require.False(t, running(oldAPI), "round %d: old kube-apiserver pid %d still running", round, oldAPI)
		now := rolePids(t, c)
		require.Len(t, now, 5, "round %d: %v", round, now)
		newAPI := now[apiServerName]
		require.NotZero(t, newAPI)
		require.NotEqual(t, oldAPI, newAPI, "round %d: kube-apiserver was not replaced", round)
		require.True(t, running(newAPI))
		require.Equal(t, os.Getpid(), parentOf(newAPI), "the new kube-apiserver must be a child of the test (parent-death signal)")
		for role, pid := range old {
			if role != apiServerName {
				require.Equal(t, pid, now[role], "round %d: %s was restarted too", round, role)
				require.True(t, running(pid), "round %d: %s (pid %d) died with the API server", round, role, pid)
			}
		}
		allPids[newAPI] = true

		// The same client (and its connection pool) answers again, and
		// the data in etcd is what it was.
		got, err := c.Client.CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, before.Name, metav1.GetOptions{})
		require.NoError(t, err, "round %d: object made before the restart", round)
		require.Equal(t, before.UID, got.UID)
		require.Equal(t, before.Data, got.Data)
		_, err = c.Client.CoreV1().ConfigMaps(metav1.NamespaceDefault).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("after-restart-%d", round)},
		}, metav1.CreateOptions{})
		require.NoError(t, err, "round %d: write after the restart", round)
	}

	log, err := os.ReadFile(c.StateDir + "/logs/" + apiServerName + ".log")
	require.NoError(t, err)
	require.Equal(t, 2, strings.Count(string(log), "kube-apiserver restarted at"), "the log marks each restart")
	require.Equal(t, 1, strings.Count(string(log), " stopped) ===="), "graceful restart")
	require.Equal(t, 1, strings.Count(string(log), " killed) ===="), "crash restart")

	require.NoError(t, c.Stop(ctx))
	stopped = true
	pids := make([]int, 0, len(allPids))
	for pid := range allPids {
		pids = append(pids, pid)
	}
	waitGone(t, pids, 5*time.Second)
	err = c.RestartAPIServer(ctx)
	require.Error(t, err, "restart after Stop")
	require.False(t, errors.Is(err, ErrUnsupported), "a stopped cluster is not an unsupported tier: %v", err)
}
