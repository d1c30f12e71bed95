package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// heldNodePrefix names the nodes HoldNodes registers; kwok leaves them
// alone (they lack its node annotation).
const heldNodePrefix = "bench-held-"

// heldLeaseRenewal is how often HoldNodes renews each node's Lease: well
// inside the node lifecycle controller's default grace period (40 s), after
// which it would mark the node NotReady and its pods not Ready.
const heldLeaseRenewal = 10 * time.Second

// HeldNodes are nodes whose pods the harness itself makes Running and
// Ready, with no kubelet and no kwok: how the bench puts tens of thousands
// of project pods into the API server in minutes (kwok made about 7 pods a
// second Ready on this machine under load, so 20,000 took most of an hour).
// The nodes are kept healthy by renewing their Leases, as a kubelet does.
// A pod on a held node is deleted only with grace period 0 (nothing would
// finish a graceful deletion); DeleteAllPods does that.
type HeldNodes struct {
	cs    kubernetes.Interface
	Names []string
	stop  context.CancelFunc
	done  chan struct{}
}

// HoldNodes registers n held nodes (idempotent) and renews their Leases
// until Release.
func HoldNodes(ctx context.Context, cs kubernetes.Interface, n int) (*HeldNodes, error) {
	h := &HeldNodes{cs: cs, done: make(chan struct{})}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("8Ti"),
		corev1.ResourcePods:   resource.MustParse("5000"),
	}
	for i := range n {
		name := fmt.Sprintf("%s%d", heldNodePrefix, i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name, "type": "bench-held"}},
			// Nothing may be scheduled here: only pods bound by the harness.
			Spec: corev1.NodeSpec{Unschedulable: true},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("held node %s: %w", name, err)
		}
		// The controllers annotate and taint a new node at once: write the
		// status on the latest version.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			cur.Status = corev1.NodeStatus{
				Capacity: capacity, Allocatable: capacity,
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "BenchHeld", LastHeartbeatTime: now, LastTransitionTime: now}},
				// A documentation-range address nobody answers on.
				Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("198.51.100.%d", 1+i%250)}},
			}
			_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("held node %s status: %w", name, err)
		}
		h.Names = append(h.Names, name)
	}
	if err := h.renew(ctx); err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h.stop = stop
	go func() {
		defer close(h.done)
		t := time.NewTicker(heldLeaseRenewal)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				_ = h.renew(runCtx) // a missed renewal is retried at the next tick
			}
		}
	}()
	return h, nil
}

// renew creates or renews every held node's Lease.
func (h *HeldNodes) renew(ctx context.Context) error {
	leases := h.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	var errs []error
	for _, name := range h.Names {
		now := metav1.NewMicroTime(time.Now())
		duration := int32(40)
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &duration, RenewTime: &now},
			}, metav1.CreateOptions{})
		case err == nil:
			l.Spec.RenewTime = &now
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("lease of held node %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Release stops renewing and deletes the held nodes and their Leases.
// Delete their pods first (DeleteAllPods).
func (h *HeldNodes) Release(ctx context.Context) error {
	h.stop()
	<-h.done
	var errs []error
	for _, name := range h.Names {
		if err := h.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
		if err := h.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runningStatus is the status a kubelet reports for a project pod whose
// container runs and is ready.
func runningStatus(pod *corev1.Pod, podIP, hostIP string, now metav1.Time) corev1.PodStatus {
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now}
	}
	var containers []corev1.ContainerStatus
	started := true
	for _, c := range pod.Spec.Containers {
		containers = append(containers, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers), cond(corev1.PodInitialized), cond(corev1.PodReady),
			cond(corev1.ContainersReady), cond(corev1.PodScheduled),
		},
		HostIP: hostIP, HostIPs: []corev1.HostIP{{IP: hostIP}},
		PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}},
		StartTime: &now, QOSClass: corev1.PodQOSBurstable, ContainerStatuses: containers,
	}
}

// heldPodIP is a distinct address for fill pod i (i < 131,072) from the
// benchmarking range 198.18.0.0/15; nothing is ever sent to it.
func heldPodIP(i int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+(i>>16)&1, (i>>8)&0xff, i&0xff)
}
