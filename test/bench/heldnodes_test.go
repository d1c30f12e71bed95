package bench

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/kube"
)

// TestFillPodsMakesRunningProjects: the cold-start fill puts project pods on
// held nodes that the orchestrator's own cache reports running, keeps the
// nodes alive by renewing their Leases, and its pods and nodes are removed
// by the bench's clean-up.
func TestFillPodsMakesRunningProjects(t *testing.T) {
	_, admin := apiTierAdmin(t)
	ctx := t.Context()
	const ns = "bench-fill-test"
	nfsIP, err := PrepareNamespace(ctx, admin, ns)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := Template(ns, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	clock, err := NewPodClock(ctx, admin, "")
	if err != nil {
		t.Fatal(err)
	}
	held, err := HoldNodes(ctx, admin, 2)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			_ = DeleteAllPods(ctx, admin, ns)
			_ = held.Release(ctx)
		}
	})
	lease0, err := admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, held.Names[0], metav1.GetOptions{})
	if err != nil {
		t.Fatalf("held node without a Lease: %v", err)
	}

	const n = 60
	if err := FillPods(ctx, admin, clock, tpl, nfsIP, held, n); err != nil {
		t.Fatal(err)
	}
	// The orchestrator's own pod cache sees every fill pod as a running
	// project on a held node.
	kc, err := kube.New(admin, kube.Config{Namespace: ns, Selector: tpl.SelectorLabels})
	if err != nil {
		t.Fatal(err)
	}
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kc.Start(kctx)
	if err := kc.WaitForSync(kctx); err != nil {
		t.Fatal(err)
	}
	pods := kc.Pods()
	if len(pods) != n {
		t.Fatalf("cache holds %d pods, want %d", len(pods), n)
	}
	perNode := map[string]int{}
	for _, p := range pods {
		if st := state.FromPod(p); st.State != state.Running {
			t.Errorf("pod %s: state %s, want running", p.Name, st.State)
		}
		perNode[p.Spec.NodeName]++
	}
	if perNode[held.Names[0]] != n/2 || perNode[held.Names[1]] != n/2 {
		t.Errorf("pods per node %v, want %d on each held node", perNode, n/2)
	}

	// The Leases are renewed like a kubelet's, so the node lifecycle
	// controller never marks the nodes (and their pods) not ready.
	time.Sleep(heldLeaseRenewal + 2*time.Second)
	lease1, err := admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, held.Names[0], metav1.GetOptions{})
	if err != nil || !lease1.Spec.RenewTime.After(lease0.Spec.RenewTime.Time) {
		t.Errorf("lease not renewed: %v → %v (%v)", lease0.Spec.RenewTime, lease1.Spec.RenewTime, err)
	}
	node, err := admin.CoreV1().Nodes().Get(ctx, held.Names[1], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
			t.Errorf("held node not Ready: %+v", cond)
		}
	}

	// Clean-up as the bench does it: pods (grace 0: no kubelet would end a
	// graceful deletion), then the nodes and their Leases.
	if err := DeleteAllPods(ctx, admin, ns); err != nil {
		t.Fatal(err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	released = true
	for _, name := range held.Names {
		if _, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
			t.Errorf("node %s still registered", name)
		}
		if _, err := admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{}); err == nil {
			t.Errorf("lease %s still there", name)
		}
	}
}
