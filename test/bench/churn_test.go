package bench

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// TestChurnHasNoErrors runs the bench's churn (stop+start loops of the same
// projects, MeasureFootprint) against the orchestrator on the api tier: a
// start that follows a stop that has returned must never fail. It failed
// with "project was stopped while starting" in about half the cycles while
// kwok's pod-delete stage could delete the next pod of a name (see
// test/cluster TestGracefulDeleteNeverReachesTheNextPodOfTheName).
func TestChurnHasNoErrors(t *testing.T) {
	c, admin := apiTierAdmin(t)
	if _, err := PrepareNamespace(t.Context(), admin, nsInProc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DeleteAllPods(t.Context(), admin, nsInProc) })
	cfg := Config{QPS: 50, QPSBurst: 100, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	m, closeM, err := newInProcess(t.Context(), c.RESTConfig, t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeM()
	ids := make([]project.ID, 40)
	for i := range ids {
		ids[i] = NewID()
	}
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() { errs <- m.Start(t.Context(), id) }()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f, err := MeasureFootprint(t.Context(), m, os.Getpid(), ids, churnWindow, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("churn: %.1f ops/s, %d errors", f.OpsPerSec, f.Errors)
	if f.OpsPerSec == 0 {
		t.Fatal("no stop+start cycle completed")
	}
	if f.Errors > 0 {
		t.Fatalf("%d stop+start cycles failed, first: %s", f.Errors, f.FirstError)
	}
}

const churnWindow = 10 * time.Second

// apiTierAdmin returns the api tier and an admin client as the bench makes
// it, or skips: the bench runs on the api tier only.
func apiTierAdmin(t *testing.T) (*cluster.Cluster, *kubernetes.Clientset) {
	t.Helper()
	c := cluster.Get(t)
	if c.Tier != cluster.TierAPI {
		t.Skipf("the bench runs on the api tier (this is %s)", c.Tier)
	}
	admin, err := clientFor(c.RESTConfig, 1000, 2000, "cocalc-bench-test")
	if err != nil {
		t.Fatal(err)
	}
	return c, admin
}
