package orchestrator

import (
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

// lostPod is a project pod on a node that stopped reporting: the node
// lifecycle controller set its Ready condition to False; the container
// status is still the kubelet's last word (ready, running). With deleting,
// the taint eviction has deleted it too, and no kubelet will ever finish
// that deletion.
func lostPod(uid types.UID, deleting bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pid.PodName(), Namespace: fixture.Namespace, UID: uid,
		Labels: fixture.Template().SelectorLabels}, Spec: corev1.PodSpec{NodeName: "worker2"}}
	markRunning(p)
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			p.Status.Conditions[i].Status = corev1.ConditionFalse
		}
	}
	if deleting {
		now := metav1.NewTime(epoch)
		grace := int64(30)
		p.DeletionTimestamp, p.DeletionGracePeriodSeconds = &now, &grace
		p.Finalizers = []string{"x"}
	}
	return p
}

// deleteGraces records the grace period of every pod delete.
func deleteGraces(e *env) func() []int64 {
	var mu sync.Mutex
	var graces []int64
	e.cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		g := int64(-1)
		if p := a.(k8stesting.DeleteActionImpl).DeleteOptions.GracePeriodSeconds; p != nil {
			g = *p
		}
		mu.Lock()
		graces = append(graces, g)
		mu.Unlock()
		return false, nil, nil
	})
	return func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return append([]int64(nil), graces...)
	}
}

func TestStartReplacesPodOfLostNodeAtOnce(t *testing.T) {
	for _, deleting := range []bool{false, true} {
		name := map[bool]string{false: "not yet evicted", true: "evicted, deletion never finishing"}[deleting]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil, lostPod("lost", deleting))
			e.graceful.Store(true) // a graceful delete would wait for a kubelet that is gone
			graces := deleteGraces(e)
			e.autoRun()
			st := e.orch.current(pid)
			if !st.NodeLost || st.Reason != state.ReasonNodeLost || st.State == state.Running {
				t.Fatalf("precondition: a pod of a lost node is reported %+v", st)
			}
			st, err := e.orch.Start(ctxT(t), pid, StartRequest{})
			if err != nil || st.State != state.Running {
				t.Fatalf("start: %+v %v", st, err)
			}
			if pod := e.apiPod(pid.PodName()); pod.UID == "lost" {
				t.Fatal("the lost pod was not replaced")
			}
			if got := graces(); len(got) != 1 || got[0] != 0 {
				t.Fatalf("deletes with grace %v, want one with grace 0", got)
			}
			if n := e.creates.Load(); n != 1 {
				t.Fatalf("creates = %d, want 1", n)
			}
		})
	}
}

func TestStopDeletesPodOfLostNodeAtOnce(t *testing.T) {
	e := newEnv(t, nil, lostPod("lost", false))
	e.graceful.Store(true)
	graces := deleteGraces(e)
	st, err := e.orch.Stop(ctxT(t), pid)
	if err != nil || st.State != state.Opened {
		t.Fatalf("stop: %+v %v", st, err)
	}
	if got := graces(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("deletes with grace %v, want one with grace 0", got)
	}
}

// A pod whose readiness probe fails is on a live node: start waits for it
// as before (the kubelet reports its container not ready), nothing is
// deleted.
func TestStartDoesNotReplaceUnreadyPodOfLiveNode(t *testing.T) {
	p := lostPod("live", false)
	p.Status.ContainerStatuses[0].Ready = false
	e := newEnv(t, func(tpl *podtemplate.Template) { tpl.Timeouts.StartSeconds = 1 }, p)
	graces := deleteGraces(e)
	if st := e.orch.current(pid); st.NodeLost {
		t.Fatalf("precondition: %+v", st)
	}
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err == nil {
		t.Fatal("start of a project whose pod never gets ready succeeded")
	}
	if got := graces(); len(got) != 0 || e.creates.Load() != 0 {
		t.Fatalf("deletes %v, creates %d: a live node's pod was replaced", got, e.creates.Load())
	}
}
