// Package state maps a project pod (or its absence) to the CoCalc compute
// state the hub understands, plus an error reason taken from pod status.
//
// The original parsed `kubectl get pod` text and returned a capitalised
// "Pending" that was not a CoCalc state. Here the state is a closed set of
// typed constants: every pod maps to exactly one of them.
package state

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// State is a CoCalc compute state (smc-util compute-states).
type State string

// The states a project can be in under this orchestrator.
const (
	Opened   State = "opened"   // no pod: stopped
	Starting State = "starting" // pod exists, not (yet) Ready
	Running  State = "running"  // pod Ready with an IP
	Stopping State = "stopping" // pod being deleted
)

// Error reasons reported with a state. Kubelet reasons are passed through
// verbatim when they are not in this list.
const (
	ReasonOOMKilled        = "OOMKilled"
	ReasonImagePullBackOff = "ImagePullBackOff"
	ReasonErrImagePull     = "ErrImagePull"
	ReasonCrashLoopBackOff = "CrashLoopBackOff"
	ReasonUnschedulable    = "Unschedulable"
	ReasonEvicted          = "Evicted"
	ReasonFailed           = "Failed"
	ReasonCompleted        = "Completed"
	ReasonNodeLost         = "NodeLost"
)

// Status is what the orchestrator reports for a project.
type Status struct {
	State State `json:"state"`
	// Reason is set when something is wrong (or was: a running project
	// that was OOM-killed before keeps the reason until its pod is replaced).
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// IP is the pod IP, set only when State is Running.
	IP       string `json:"ip,omitempty"`
	Restarts int32  `json:"restarts,omitempty"`
	// StartedAt is when the project container started running (the
	// container status' running.startedAt), set only when State is Running.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// Terminal is true for pods that will never run again (Failed or
	// Succeeded); start replaces them.
	Terminal bool `json:"-"`
	// NodeLost is true when the pod's node stopped reporting (see
	// nodeLost): its state is unknown, its containers may be gone with the
	// node. Start and stop do not wait for such a pod (they delete it with
	// grace 0); the Reason is ReasonNodeLost.
	NodeLost bool `json:"-"`
}

// benignWaiting are container waiting reasons of a normal start.
var benignWaiting = map[string]bool{
	"ContainerCreating": true,
	"PodInitializing":   true,
	"":                  true,
}

// FromPod derives the status of a project from its pod; nil means no pod.
func FromPod(pod *corev1.Pod) Status {
	if pod == nil {
		return Status{State: Opened}
	}
	if pod.DeletionTimestamp != nil {
		if nodeLost(pod) {
			return lostStatus(Stopping, pod)
		}
		return Status{State: Stopping}
	}
	if nodeLost(pod) {
		return lostStatus(Starting, pod)
	}
	st := Status{}
	cs := containerStatus(pod)
	if cs != nil {
		st.Restarts = cs.RestartCount
	}

	switch pod.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		// Not running and never will: for the hub the project is stopped.
		// The reason says why; start deletes the pod and creates a new one.
		st.State = Opened
		st.Terminal = true
		st.Reason, st.Message = pod.Status.Reason, pod.Status.Message
		if st.Reason == "" {
			if pod.Status.Phase == corev1.PodSucceeded {
				st.Reason = ReasonCompleted
			} else {
				st.Reason = ReasonFailed
			}
			if cs != nil && cs.State.Terminated != nil {
				if r := cs.State.Terminated.Reason; r != "" {
					st.Reason = r
				}
				st.Message = cs.State.Terminated.Message
			}
		}
		return st
	}

	if pod.Status.Phase == corev1.PodRunning && isReady(pod) && pod.Status.PodIP != "" {
		st.State = Running
		st.IP = pod.Status.PodIP
		if cs != nil && cs.State.Running != nil && !cs.State.Running.StartedAt.IsZero() {
			t := cs.State.Running.StartedAt.UTC()
			st.StartedAt = &t
		}
		if cs != nil && cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == ReasonOOMKilled {
			st.Reason = ReasonOOMKilled
			st.Message = "the project was restarted after running out of memory"
		}
		return st
	}

	st.State = Starting
	if c := condition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
		st.Reason, st.Message = ReasonUnschedulable, c.Message
		return st
	}
	if cs == nil {
		return st
	}
	var lastReason string
	if t := cs.LastTerminationState.Terminated; t != nil {
		lastReason = t.Reason
	}
	switch {
	case cs.State.Waiting != nil && !benignWaiting[cs.State.Waiting.Reason]:
		st.Reason, st.Message = cs.State.Waiting.Reason, cs.State.Waiting.Message
		// A crash loop caused by the memory limit is reported as such:
		// the user needs more memory, not a bug hunt.
		if st.Reason == ReasonCrashLoopBackOff && lastReason == ReasonOOMKilled {
			st.Reason = ReasonOOMKilled
			st.Message = fmt.Sprintf("the project runs out of memory and is restarted (%d restarts)", cs.RestartCount)
		}
	case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
		st.Reason, st.Message = cs.State.Terminated.Reason, cs.State.Terminated.Message
	case lastReason == ReasonOOMKilled:
		st.Reason = ReasonOOMKilled
	}
	return st
}

// nodeLost reports whether the pod's node stopped reporting its state:
// phase Unknown, or a running pod whose Ready condition is False while its
// (only) container was last reported ready and running. The kubelet never
// writes that combination (Ready is its containers' readiness; project
// pods have one container and no readiness gates); the node lifecycle
// controller does, when the node's kubelet has not posted status for the
// node-monitor grace period (MarkPodsNotReady flips only the Ready
// condition). When the node comes back, its kubelet rewrites the status
// and the pod is no longer lost.
func nodeLost(pod *corev1.Pod) bool {
	switch pod.Status.Phase {
	case corev1.PodUnknown:
		return true
	case corev1.PodRunning:
		c, cs := condition(pod, corev1.PodReady), containerStatus(pod)
		return c != nil && c.Status == corev1.ConditionFalse && cs != nil && cs.Ready && cs.State.Running != nil
	}
	return false
}

func lostStatus(s State, pod *corev1.Pod) Status {
	st := Status{State: s, Reason: ReasonNodeLost, NodeLost: true, Message: pod.Status.Message}
	if st.Message == "" {
		st.Message = fmt.Sprintf("node %s is not responding", pod.Spec.NodeName)
	}
	if cs := containerStatus(pod); cs != nil {
		st.Restarts = cs.RestartCount
	}
	return st
}

func containerStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	if len(pod.Status.ContainerStatuses) == 0 {
		return nil
	}
	return &pod.Status.ContainerStatuses[0]
}

func condition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func isReady(pod *corev1.Pod) bool {
	c := condition(pod, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}
