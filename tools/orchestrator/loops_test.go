package orchestrator

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

func TestIdleStopHonoursActivity(t *testing.T) {
	e := newEnv(t, nil) // default idle timeout 1800s
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(29 * time.Minute)
	if res := e.orch.Sweep(ctxT(t)); res.IdleStopped != 0 {
		t.Fatalf("stopped before the idle timeout: %+v", res)
	}
	if _, err := e.orch.Touch(ctxT(t), pid); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(29 * time.Minute) // 58 min since start, 29 since activity
	if res := e.orch.Sweep(ctxT(t)); res.IdleStopped != 0 {
		t.Fatalf("activity ignored: %+v", res)
	}
	e.clock.Step(2 * time.Minute)
	if res := e.orch.Sweep(ctxT(t)); res.IdleStopped != 1 {
		t.Fatalf("idle project not stopped: %+v", res)
	}
	e.waitFor("pod deleted", func() bool { return e.kube.Pod(pid.PodName()) == nil })
}

func TestIdleTimeoutPerProjectQuota(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{IdleTimeoutSeconds: 600}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.orch.Start(ctxT(t), pid2, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(11 * time.Minute)
	if res := e.orch.Sweep(ctxT(t)); res.IdleStopped != 1 {
		t.Fatalf("sweep = %+v", res)
	}
	e.waitFor("short-timeout pod deleted", func() bool { return e.kube.Pod(pid.PodName()) == nil })
	if e.kube.Pod(pid2.PodName()) == nil {
		t.Fatal("project with the default timeout stopped early")
	}
}

func TestNoIdleStopWhenTimeoutZero(t *testing.T) {
	e := newEnv(t, func(tpl *podtemplate.Template) { tpl.Resources.Default.IdleTimeoutSeconds = 0 })
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(1000 * time.Hour)
	if res := e.orch.Sweep(ctxT(t)); res.IdleStopped != 0 {
		t.Fatalf("always-running project stopped: %+v", res)
	}
}

func TestCleanUpStuckPendingAndEndedPods(t *testing.T) {
	lbls := fixture.Template().SelectorLabels
	created := metav1.NewTime(epoch)
	ended := metav1.NewTime(epoch.Add(5 * time.Minute))
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pid.PodName(), Namespace: fixture.Namespace, UID: "p",
		Labels: lbls, CreationTimestamp: created}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	failed := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pid2.PodName(), Namespace: fixture.Namespace, UID: "f",
		Labels: lbls, CreationTimestamp: created}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: ended}}}}
	e := newEnv(t, nil, pending, failed) // pendingSeconds 600
	e.clock.Step(9 * time.Minute)
	if res := e.orch.Sweep(ctxT(t)); res.CleanedUp != 0 {
		t.Fatalf("cleaned up too early: %+v", res)
	}
	e.clock.Step(2 * time.Minute) // pending 11 min, ended 6 min ago
	if res := e.orch.Sweep(ctxT(t)); res.CleanedUp != 1 {
		t.Fatalf("sweep = %+v", res)
	}
	e.waitFor("pending pod deleted", func() bool { return e.kube.Pod(pid.PodName()) == nil })
	if e.kube.Pod(pid2.PodName()) == nil {
		t.Fatal("ended pod deleted before pendingSeconds after it ended")
	}
	e.clock.Step(5 * time.Minute)
	if res := e.orch.Sweep(ctxT(t)); res.CleanedUp != 1 {
		t.Fatalf("sweep = %+v", res)
	}
	e.waitFor("ended pod deleted", func() bool { return e.kube.Pod(pid2.PodName()) == nil })
}

func TestRunLoopTicksOnInjectedClock(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{IdleTimeoutSeconds: 120}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.orch.Run(ctx); close(done) }()
	e.waitFor("ticker registered", e.clock.HasWaiters)
	e.clock.Step(time.Minute)
	e.clock.Step(time.Minute)
	e.clock.Step(time.Minute)
	e.waitFor("idle pod deleted by the loop", func() bool { return e.kube.Pod(pid.PodName()) == nil })
	cancel()
	<-done
}

func TestSweepForgetsActivityOfProjectsWithoutPods(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.orch.Touch(ctxT(t), pid); err != nil {
		t.Fatal(err)
	}
	if e.orch.current(pid).LastActivity == nil {
		t.Fatal("touch not recorded")
	}
	e.clock.Step(5 * time.Minute)
	e.orch.Sweep(ctxT(t))
	if e.orch.current(pid).LastActivity == nil {
		t.Fatal("recent activity forgotten")
	}
	e.clock.Step(10 * time.Minute)
	e.orch.Sweep(ctxT(t))
	if e.orch.current(pid).LastActivity != nil {
		t.Fatal("activity of a project without a pod kept forever")
	}
}

// TestNoIdleStopKeepsBusyProjects: without an activity source a project's
// age says nothing about its use; the sweep then stops nothing, and still
// cleans up.
func TestNoIdleStopKeepsBusyProjects(t *testing.T) {
	e := newEnv(t, nil)
	e.orch.Close()
	e.orch = e.newOrchestrator(e.tpl, func(c *Config) { c.NoIdleStop = true })
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{IdleTimeoutSeconds: 60}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Step(time.Hour)
	if res := e.orch.Sweep(ctxT(t)); res.IdleStopped != 0 || e.kube.Pod(pid.PodName()) == nil {
		t.Errorf("sweep with NoIdleStop stopped a project an hour after its start: %+v", res)
	}
}
