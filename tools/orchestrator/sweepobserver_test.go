package orchestrator

import (
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

type sweepRecorder struct {
	recordingObserver
	mu      sync.Mutex
	reasons []string
}

func (s *sweepRecorder) SweepDeletion(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reasons = append(s.reasons, reason)
}

// The sweep's deletions reach an Observer that is also a SweepObserver,
// one call per deleted pod with its reason (the metrics' label values).
func TestSweepReportsDeletionsByReason(t *testing.T) {
	created := metav1.NewTime(epoch)
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pid2.PodName(), Namespace: fixture.Namespace, UID: "p",
		Labels: fixture.Template().SelectorLabels, CreationTimestamp: created}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	e := newEnv(t, nil, pending) // pendingSeconds 600, idle timeout 1800s
	rec := &sweepRecorder{}
	e.orch = e.newOrchestrator(e.tpl, func(c *Config) { c.Observer = rec })
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(11 * time.Minute)
	e.orch.Sweep(ctxT(t))
	e.waitFor("pending pod deleted", func() bool { return e.kube.Pod(pid2.PodName()) == nil })
	e.clock.Step(20 * time.Minute)
	e.orch.Sweep(ctxT(t))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []string{"pending", "idle"}; !slices.Equal(rec.reasons, want) {
		t.Fatalf("sweep deletions reported %v, want %v", rec.reasons, want)
	}
}
