package kube

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
)

// keptAnnotations are the annotations the orchestrator reads.
var keptAnnotations = []string{podspec.AnnotationSpecHash, podspec.AnnotationRequest}

// interned holds one copy of strings many cached pods repeat. It is a
// cache, not a registry: when it reaches maxInterned entries (a string
// that is not repeated, such as an unusual start request, takes a slot
// too) it starts over, so it never grows with the number of projects;
// strings already shared stay shared.
var interned = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

const maxInterned = 1024

func intern(s string) string {
	if s == "" {
		return ""
	}
	interned.Lock()
	defer interned.Unlock()
	if v, ok := interned.m[s]; ok {
		return v
	}
	if len(interned.m) >= maxInterned {
		interned.m = map[string]string{}
	}
	interned.m[s] = s
	return s
}

// slimPod is the pod cache's transform: it keeps only what the
// orchestrator reads of a project pod and drops the rest before the object
// is stored (the container spec, environment, probes, security context,
// labels, managedFields, most of the status). With thousands of projects
// the cache is most of the orchestrator's memory.
//
// What is kept, and who reads it:
//   - metadata: name, namespace, uid, resourceVersion (writes, Events),
//     the spec-hash and start-request annotations (stale-spec detection,
//     idle timeout), creation and deletion timestamps and the deletion
//     grace period (state, sweeps). Labels are not kept: the API server
//     applies the informer's selector, and nothing reads them after;
//   - spec: nodeName, and the first volume when it is an NFS volume (the
//     server address, for stale-spec detection);
//   - status: phase, reason, message, podIP, the PodScheduled and Ready
//     conditions (state.FromPod; the terminal sweep's end time is the
//     latest transition, which for an ended pod is Ready's) and the first
//     container's status (state.FromPod, sweeps).
//
// Strings every project pod repeats (namespace, annotation keys, the
// start request of a default quota, condition and container names) are
// shared between cached pods (intern).
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
			Namespace:         intern(pod.Namespace),
			UID:               pod.UID,
			ResourceVersion:   pod.ResourceVersion,
			CreationTimestamp: pod.CreationTimestamp,
			DeletionTimestamp: pod.DeletionTimestamp,
			// The grace period of a deletion in progress.
			DeletionGracePeriodSeconds: pod.DeletionGracePeriodSeconds,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName},
		Status: corev1.PodStatus{
			Phase:   corev1.PodPhase(intern(string(pod.Status.Phase))),
			Reason:  pod.Status.Reason,
			Message: pod.Status.Message,
			PodIP:   pod.Status.PodIP,
		},
	}
	for _, k := range keptAnnotations {
		if v, ok := pod.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = make(map[string]string, len(keptAnnotations))
			}
			if k == podspec.AnnotationRequest {
				v = intern(v) // the same for every project on a default quota
			}
			out.Annotations[k] = v
		}
	}
	if len(pod.Spec.Volumes) > 0 && pod.Spec.Volumes[0].NFS != nil {
		v := pod.Spec.Volumes[0]
		out.Spec.Volumes = []corev1.Volume{{Name: v.Name, VolumeSource: corev1.VolumeSource{NFS: v.NFS}}}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled || c.Type == corev1.PodReady {
			if out.Status.Conditions == nil {
				out.Status.Conditions = make([]corev1.PodCondition, 0, 2)
			}
			out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{
				Type: corev1.PodConditionType(intern(string(c.Type))), Status: corev1.ConditionStatus(intern(string(c.Status))),
				Reason: intern(c.Reason), Message: c.Message, LastTransitionTime: c.LastTransitionTime,
			})
		}
	}
	if len(pod.Status.ContainerStatuses) > 0 {
		cs := pod.Status.ContainerStatuses[0]
		out.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: intern(cs.Name), State: cs.State, LastTerminationState: cs.LastTerminationState,
			Ready: cs.Ready, RestartCount: cs.RestartCount,
		}}
	}
	return out, nil
}
