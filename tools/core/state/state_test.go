package state

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type podOpt func(*corev1.Pod)

func pod(phase corev1.PodPhase, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "project-x"}, Status: corev1.PodStatus{Phase: phase}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func ready(s corev1.ConditionStatus) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: s})
	}
}
func ip(a string) podOpt { return func(p *corev1.Pod) { p.Status.PodIP = a } }
func deleting() podOpt {
	return func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
}
func unschedulable(msg string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: msg})
	}
}
func scheduled() podOpt {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue})
	}
}
func waiting(reason string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: reason + " msg"}}}}
	}
}
func runningContainer() podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	}
}
func readyContainer() podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	}
}
func terminated(reason string) podOpt {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: 137}}}}
	}
}
func lastOOM(restarts int32) podOpt {
	return func(p *corev1.Pod) {
		if len(p.Status.ContainerStatuses) == 0 {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project"}}
		}
		p.Status.ContainerStatuses[0].RestartCount = restarts
		p.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{Reason: ReasonOOMKilled, ExitCode: 137}
	}
}
func podReason(r, msg string) podOpt {
	return func(p *corev1.Pod) { p.Status.Reason, p.Status.Message = r, msg }
}

func TestFromPod(t *testing.T) {
	tests := []struct {
		name     string
		pod      *corev1.Pod
		state    State
		reason   string
		ip       string
		terminal bool
		lost     bool
	}{
		{name: "no pod", pod: nil, state: Opened},
		{name: "pending, nothing yet", pod: pod(corev1.PodPending), state: Starting},
		{name: "empty phase (just created)", pod: pod(""), state: Starting},
		{name: "pending lowercase state, never 'Pending'", pod: pod(corev1.PodPending, scheduled()), state: Starting},
		{name: "unschedulable", pod: pod(corev1.PodPending, unschedulable("0/3 nodes: Insufficient cpu")), state: Starting, reason: ReasonUnschedulable},
		{name: "container creating", pod: pod(corev1.PodPending, scheduled(), waiting("ContainerCreating")), state: Starting},
		{name: "pod initializing", pod: pod(corev1.PodPending, waiting("PodInitializing")), state: Starting},
		{name: "image pull backoff", pod: pod(corev1.PodPending, waiting(ReasonImagePullBackOff)), state: Starting, reason: ReasonImagePullBackOff},
		{name: "err image pull", pod: pod(corev1.PodPending, waiting(ReasonErrImagePull)), state: Starting, reason: ReasonErrImagePull},
		{name: "invalid image name", pod: pod(corev1.PodPending, waiting("InvalidImageName")), state: Starting, reason: "InvalidImageName"},
		{name: "config error", pod: pod(corev1.PodPending, waiting("CreateContainerConfigError")), state: Starting, reason: "CreateContainerConfigError"},
		{name: "crash loop", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), ip("10.1.0.5"), waiting(ReasonCrashLoopBackOff)), state: Starting, reason: ReasonCrashLoopBackOff},
		{name: "crash loop from OOM", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), waiting(ReasonCrashLoopBackOff), lastOOM(4)), state: Starting, reason: ReasonOOMKilled},
		{name: "just OOM-killed, restarting", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), terminated(ReasonOOMKilled)), state: Starting, reason: ReasonOOMKilled},
		{name: "running, restarting after OOM", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), runningContainer(), lastOOM(1)), state: Starting, reason: ReasonOOMKilled},
		{name: "running not ready", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), ip("10.1.0.5"), runningContainer()), state: Starting},
		{name: "running no ready condition", pod: pod(corev1.PodRunning, ip("10.1.0.5"), runningContainer()), state: Starting},
		{name: "ready without IP", pod: pod(corev1.PodRunning, ready(corev1.ConditionTrue), runningContainer()), state: Starting},
		{name: "running and ready", pod: pod(corev1.PodRunning, ready(corev1.ConditionTrue), ip("10.1.0.5"), runningContainer()), state: Running, ip: "10.1.0.5"},
		{name: "ready after an OOM restart", pod: pod(corev1.PodRunning, ready(corev1.ConditionTrue), ip("10.1.0.5"), runningContainer(), lastOOM(1)), state: Running, reason: ReasonOOMKilled, ip: "10.1.0.5"},
		{name: "deleting while running", pod: pod(corev1.PodRunning, ready(corev1.ConditionTrue), ip("10.1.0.5"), deleting()), state: Stopping},
		{name: "deleting while pending", pod: pod(corev1.PodPending, deleting()), state: Stopping},
		{name: "evicted", pod: pod(corev1.PodFailed, podReason(ReasonEvicted, "The node was low on resource: memory.")), state: Opened, reason: ReasonEvicted, terminal: true},
		{name: "failed, container OOM", pod: pod(corev1.PodFailed, terminated(ReasonOOMKilled)), state: Opened, reason: ReasonOOMKilled, terminal: true},
		{name: "failed, no detail", pod: pod(corev1.PodFailed), state: Opened, reason: ReasonFailed, terminal: true},
		{name: "failed, node shutdown", pod: pod(corev1.PodFailed, podReason("Terminated", "node shutdown")), state: Opened, reason: "Terminated", terminal: true},
		{name: "succeeded", pod: pod(corev1.PodSucceeded), state: Opened, reason: ReasonCompleted, terminal: true},
		{name: "unknown phase (node lost)", pod: pod(corev1.PodUnknown), state: Starting, reason: ReasonNodeLost, lost: true},
		// The node lifecycle controller marks the pods of a node that
		// stopped reporting not Ready; the container status stays as the
		// kubelet last wrote it.
		{name: "node not reporting", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), ip("10.1.0.5"), readyContainer()), state: Starting, reason: ReasonNodeLost, lost: true},
		{name: "node not reporting, pod being deleted", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), ip("10.1.0.5"), readyContainer(), deleting()), state: Stopping, reason: ReasonNodeLost, lost: true},
		{name: "readiness failing (kubelet reports the container not ready)", pod: pod(corev1.PodRunning, ready(corev1.ConditionFalse), ip("10.1.0.5"), runningContainer()), state: Starting},
		{name: "ready container, pending pod", pod: pod(corev1.PodPending, ready(corev1.ConditionFalse), readyContainer()), state: Starting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromPod(tt.pod)
			if got.State != tt.state || got.Reason != tt.reason || got.IP != tt.ip || got.Terminal != tt.terminal || got.NodeLost != tt.lost {
				t.Fatalf("FromPod = %+v, want state=%s reason=%q ip=%q terminal=%v nodeLost=%v", got, tt.state, tt.reason, tt.ip, tt.terminal, tt.lost)
			}
			switch got.State {
			case Opened, Starting, Running, Stopping:
			default:
				t.Fatalf("state %q is not a CoCalc state", got.State)
			}
		})
	}
}

func TestRestartsReported(t *testing.T) {
	got := FromPod(pod(corev1.PodRunning, ready(corev1.ConditionTrue), ip("10.0.0.1"), runningContainer(), lastOOM(3)))
	if got.Restarts != 3 {
		t.Fatalf("restarts = %d", got.Restarts)
	}
}

// TestStartedAt: the running container's start time (what the hub shows as
// status.start_ts) is reported for Running only, in UTC.
func TestStartedAt(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600))
	started := func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(at)}}}}
	}
	got := FromPod(pod(corev1.PodRunning, ready(corev1.ConditionTrue), ip("10.0.0.1"), started))
	if got.StartedAt == nil || !got.StartedAt.Equal(at) || got.StartedAt.Location() != time.UTC {
		t.Fatalf("StartedAt = %v, want %v in UTC", got.StartedAt, at)
	}
	if got := FromPod(pod(corev1.PodRunning, ready(corev1.ConditionFalse), ip("10.0.0.1"), started)); got.StartedAt != nil {
		t.Fatalf("not ready: StartedAt = %v, want nil", got.StartedAt)
	}
}
