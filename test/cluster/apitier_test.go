package cluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] != 'Z'
}

func waitGone(t *testing.T, pids []int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for running(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still running %s after teardown", pid, within)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestStopLeavesNothingBehind starts a private api tier and checks Stop
// ends every process it started and removes the temporary state.
// ownAPITier starts a private api-tier cluster for a test of the tier's own
// process handling (skipped under -short and on other tiers); ctx bounds
// the test. The test stops the cluster itself.
func ownAPITier(t *testing.T, nodes int, timeout time.Duration) (context.Context, *Cluster) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	if tier, _ := TierFromEnv(); tier != TierAPI {
		t.Skipf("checks the api tier's process handling (this run uses %s)", tier)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	c, err := Start(ctx, Options{Tier: TierAPI, Nodes: nodes, Logf: t.Logf})
	require.NoError(t, err)
	return ctx, c
}

func TestStopLeavesNothingBehind(t *testing.T) {
	ctx, c := ownAPITier(t, 2, 3*time.Minute)
	pids := c.pids()
	require.Len(t, pids, 5, "etcd, apiserver, controller-manager, scheduler, kwok")
	for _, pid := range pids {
		require.Equal(t, os.Getpid(), parentOf(pid), "control plane must be children of the test")
		require.True(t, running(pid))
	}
	require.NoError(t, c.Stop(ctx))
	waitGone(t, pids, 5*time.Second)
	_, err := os.Stat(c.StateDir)
	require.True(t, os.IsNotExist(err), "temporary state dir %s left behind", c.StateDir)
}

func parentOf(pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

const helperEnv = "COCALC_CLUSTER_TEST_HELPER"

// TestHelperStartAndHang is not a test: TestKilledOwnerTakesControlPlaneAlong
// runs the test binary with helperEnv set to make it start a cluster,
// print the children's pids and hang until killed.
func TestHelperStartAndHang(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestKilledOwnerTakesControlPlaneAlong")
	}
	c, err := Start(context.Background(), Options{Tier: TierAPI, Nodes: 1})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("PIDS", strings.Trim(fmt.Sprint(c.pids()), "[]"), "DIR", c.StateDir)
	select {}
}

// TestKilledOwnerTakesControlPlaneAlong: when the process that started a
// cluster dies without cleaning up (SIGKILL, as on a go test timeout), the
// kernel kills the control plane too.
func TestKilledOwnerTakesControlPlaneAlong(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	if tier, _ := TierFromEnv(); tier != TierAPI {
		t.Skipf("checks the api tier's process handling (this run uses %s)", tier)
	}
	if _, err := KubeBinary(""); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperStartAndHang$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var pids []int
	var dir string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERROR") {
			t.Fatal(line)
		}
		if rest, ok := strings.CutPrefix(line, "PIDS "); ok {
			fields, d, _ := strings.Cut(rest, " DIR ")
			dir = d
			for _, f := range strings.Fields(fields) {
				n, err := strconv.Atoi(f)
				require.NoError(t, err)
				pids = append(pids, n)
			}
			break
		}
	}
	require.Len(t, pids, 5, "helper must report the five control-plane processes")
	for _, pid := range pids {
		require.True(t, running(pid))
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	waitGone(t, pids, 10*time.Second)
	// Nobody was left to remove the temporary state; do it for the helper.
	if strings.Contains(dir, "cocalc-api-") {
		_ = os.RemoveAll(dir)
	}
}
