package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// slimPod is the pod cache's transform: it keeps only what the
// orchestrator reads of a project pod and drops the rest before the object
// is stored (the container spec, environment, probes, security context,
// managedFields, most of the status). With thousands of projects the cache
// is most of the orchestrator's memory.
//
// What is kept, and who reads it:
//   - metadata: name, namespace, uid, resourceVersion (writes, Events),
//     labels (the informer's selector), annotations (spec hash and the
//     recorded start request: stale-spec detection, idle timeout),
//     creation and deletion timestamps and the deletion grace period
//     (state, sweeps);
//   - spec: nodeName, and the first volume when it is an NFS volume (the
//     server address, for stale-spec detection);
//   - status: phase, reason, message, podIP, conditions and the first
//     container's status (state.FromPod, sweeps).
//
// Anything else a caller needs must be added here, with a test (see
// TestSlimPodKeepsWhatTheOrchestratorReads).
func slimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // e.g. a DeletedFinalStateUnknown tombstone
	}
	out := &corev1.Pod{
		TypeMeta: pod.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name:              pod.Name,
			Namespace:         pod.Namespace,
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			Labels:            pod.Labels,
			Annotations:       pod.Annotations,
			CreationTimestamp: pod.CreationTimestamp,
			DeletionTimestamp: pod.DeletionTimestamp,
			// The grace period of a deletion in progress.
			DeletionGracePeriodSeconds: pod.DeletionGracePeriodSeconds,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName},
		Status: corev1.PodStatus{
			Phase:   pod.Status.Phase,
			Reason:  pod.Status.Reason,
			Message: pod.Status.Message,
			PodIP:   pod.Status.PodIP,
		},
	}
	if len(pod.Spec.Volumes) > 0 && pod.Spec.Volumes[0].NFS != nil {
		v := pod.Spec.Volumes[0]
		out.Spec.Volumes = []corev1.Volume{{Name: v.Name, VolumeSource: corev1.VolumeSource{NFS: v.NFS}}}
	}
	if n := len(pod.Status.Conditions); n > 0 {
		out.Status.Conditions = make([]corev1.PodCondition, n)
		for i, c := range pod.Status.Conditions {
			out.Status.Conditions[i] = corev1.PodCondition{
				Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message, LastTransitionTime: c.LastTransitionTime,
			}
		}
	}
	if len(pod.Status.ContainerStatuses) > 0 {
		cs := pod.Status.ContainerStatuses[0]
		out.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: cs.Name, State: cs.State, LastTerminationState: cs.LastTerminationState,
			Ready: cs.Ready, RestartCount: cs.RestartCount,
		}}
	}
	return out, nil
}
