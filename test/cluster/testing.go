package cluster

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds bringing up a cluster from a test.
const startTimeout = 3 * time.Minute

// shared holds the clusters of a test binary whose TestMain calls Main.
var shared struct {
	sync.Mutex
	main     bool
	clusters map[Tier]*Cluster
	errs     map[Tier]error
}

// Main runs a test package's tests with one shared cluster per tier,
// started by the first Get and stopped after the last test, also when the
// run is interrupted (SIGINT, SIGTERM). Use it from TestMain:
//
//	func TestMain(m *testing.M) { cluster.Main(m) }
func Main(m *testing.M) {
	shared.Lock()
	shared.main = true
	shared.Unlock()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "cluster: %v: stopping test clusters\n", sig)
		stopShared()
		os.Exit(130)
	}()

	code := m.Run()
	signal.Stop(sigs)
	stopShared()
	os.Exit(code)
}

func stopShared() {
	shared.Lock()
	defer shared.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for tier, c := range shared.clusters {
		if err := c.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: stop %s tier: %v\n", tier, err)
		}
		delete(shared.clusters, tier)
	}
}

// TB is the part of testing.TB Get uses.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Cleanup(func())
	Context() context.Context
}

// Get returns a cluster for the test, of the tier in COCALC_TEST_TIER.
// With -short it skips the test. With COCALC_TEST_REUSE=1 it attaches to
// the cluster `make cluster-<tier>` runs. Otherwise it starts one: shared
// by the package's tests when TestMain calls Main, else for this test only
// (stopped in t.Cleanup).
func Get(t TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a cluster; skipped in -short mode")
	}
	tier, err := TierFromEnv()
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), startTimeout)
	defer cancel()

	if ReuseFromEnv() || tier == TierKind {
		// kind clusters are long-lived by nature (make cluster-kind);
		// tests attach to them rather than create one per run.
		c, err := Attach(ctx, tier)
		if err != nil {
			t.Fatalf("attach to %s cluster: %v", tier, err)
		}
		return c
	}
	if tier == TierExisting {
		c, err := attachExisting(ctx)
		if err != nil {
			t.Fatalf("existing cluster: %v", err)
		}
		return c
	}

	shared.Lock()
	defer shared.Unlock()
	if shared.main {
		if c := shared.clusters[tier]; c != nil {
			return c
		}
		if err := shared.errs[tier]; err != nil {
			t.Fatalf("start %s cluster (earlier attempt): %v", tier, err)
		}
	}
	logf := t.Logf
	if shared.main {
		// A shared cluster outlives the test that started it; its
		// provisioner must not log through that test.
		logf = stderrLogf
	}
	c, err := Start(ctx, Options{Tier: tier, Logf: logf})
	if err != nil {
		if shared.main {
			if shared.errs == nil {
				shared.errs = map[Tier]error{}
			}
			shared.errs[tier] = err
		}
		t.Fatalf("start %s cluster: %v", tier, err)
	}
	if shared.main {
		if shared.clusters == nil {
			shared.clusters = map[Tier]*Cluster{}
		}
		shared.clusters[tier] = c
		return c
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Logf("stop %s cluster: %v", tier, err)
		}
	})
	return c
}

func stderrLogf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cluster: "+format+"\n", args...)
}
