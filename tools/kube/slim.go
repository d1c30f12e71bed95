package kube

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
)

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

// cachedPod is what the pod cache stores for a project pod: only what the
// orchestrator reads, in a layout of its own. A *corev1.Pod is 1,240 bytes
// before any of its strings, maps or slices, nearly all of it fields the
// orchestrator never reads; with thousands of projects the cache is most of
// the orchestrator's memory (2.77 KiB of heap per pod with a trimmed
// *corev1.Pod, see test/bench/results). Readers get a *corev1.Pod built
// from it (pod), holding exactly the fields listed here.
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
//     container's status: name, state, last termination state, ready,
//     restart count (state.FromPod, sweeps).
//
// Strings every project pod repeats (namespace, the start request of a
// default quota, condition reasons, the container name) are shared between
// cached pods (intern).
//
// Anything else a caller needs must be added here, with a test (see
// TestCachedPodKeepsWhatTheOrchestratorReads).
type cachedPod struct {
	// meta holds name, namespace, uid, resourceVersion, the timestamps and
	// the grace period; no labels, annotations or managedFields. It also
	// gives the cache its key (meta.Accessor).
	metav1.ObjectMeta
	specHash, request      string
	hasSpecHash, hasReq    bool
	hasScheduled, hasReady bool
	hasContainer           bool
	nodeName               string
	nfs                    *corev1.NFSVolumeSource
	nfsVolume              string
	phase                  corev1.PodPhase
	reason, message        string
	podIP                  string
	scheduled, ready       cachedCondition
	container              cachedContainer
}

type cachedCondition struct {
	status          corev1.ConditionStatus
	reason, message string
	lastTransition  metav1.Time
}

func (c *cachedCondition) condition(t corev1.PodConditionType) corev1.PodCondition {
	return corev1.PodCondition{Type: t, Status: c.status, Reason: c.reason, Message: c.message, LastTransitionTime: c.lastTransition}
}

type cachedContainer struct {
	name         string
	state, last  corev1.ContainerState
	ready        bool
	restartCount int32
}

// GetObjectKind and DeepCopyObject make a cachedPod a runtime.Object, as
// the informer's store expects of what it holds.
func (p *cachedPod) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (p *cachedPod) DeepCopyObject() runtime.Object {
	out := *p
	p.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if p.nfs != nil {
		out.nfs = p.nfs.DeepCopy()
	}
	p.scheduled.lastTransition.DeepCopyInto(&out.scheduled.lastTransition)
	p.ready.lastTransition.DeepCopyInto(&out.ready.lastTransition)
	p.container.state.DeepCopyInto(&out.container.state)
	p.container.last.DeepCopyInto(&out.container.last)
	return &out
}

// compactPod is the pod cache's transform: it turns a project pod as the
// API server sends it into a cachedPod before the object is stored.
func compactPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // e.g. a DeletedFinalStateUnknown tombstone
	}
	out := &cachedPod{
		ObjectMeta: metav1.ObjectMeta{
			Name:                       pod.Name,
			Namespace:                  intern(pod.Namespace),
			UID:                        pod.UID,
			ResourceVersion:            pod.ResourceVersion,
			CreationTimestamp:          pod.CreationTimestamp,
			DeletionTimestamp:          pod.DeletionTimestamp,
			DeletionGracePeriodSeconds: pod.DeletionGracePeriodSeconds,
		},
		nodeName: pod.Spec.NodeName,
		phase:    corev1.PodPhase(intern(string(pod.Status.Phase))),
		reason:   pod.Status.Reason,
		message:  pod.Status.Message,
		podIP:    pod.Status.PodIP,
	}
	out.specHash, out.hasSpecHash = pod.Annotations[podspec.AnnotationSpecHash]
	if v, ok := pod.Annotations[podspec.AnnotationRequest]; ok {
		out.request, out.hasReq = intern(v), true // the same for every project on a default quota
	}
	if len(pod.Spec.Volumes) > 0 && pod.Spec.Volumes[0].NFS != nil {
		out.nfsVolume, out.nfs = pod.Spec.Volumes[0].Name, pod.Spec.Volumes[0].NFS
	}
	for _, c := range pod.Status.Conditions {
		cc := cachedCondition{status: corev1.ConditionStatus(intern(string(c.Status))), reason: intern(c.Reason), message: c.Message, lastTransition: c.LastTransitionTime}
		switch c.Type {
		case corev1.PodScheduled:
			out.scheduled, out.hasScheduled = cc, true
		case corev1.PodReady:
			out.ready, out.hasReady = cc, true
		}
	}
	if len(pod.Status.ContainerStatuses) > 0 {
		cs := pod.Status.ContainerStatuses[0]
		out.hasContainer = true
		out.container = cachedContainer{name: intern(cs.Name), state: cs.State, last: cs.LastTerminationState, ready: cs.Ready, restartCount: cs.RestartCount}
	}
	return out, nil
}

// pod returns a new *corev1.Pod with the cached fields (and only those).
// Pointer fields (timestamps, container states, the NFS volume) are shared
// with the cache: callers must not modify the result.
func (p *cachedPod) pod() *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: p.ObjectMeta,
		Spec:       corev1.PodSpec{NodeName: p.nodeName},
		Status: corev1.PodStatus{
			Phase:   p.phase,
			Reason:  p.reason,
			Message: p.message,
			PodIP:   p.podIP,
		},
	}
	if p.hasSpecHash || p.hasReq {
		out.Annotations = make(map[string]string, 2)
		if p.hasSpecHash {
			out.Annotations[podspec.AnnotationSpecHash] = p.specHash
		}
		if p.hasReq {
			out.Annotations[podspec.AnnotationRequest] = p.request
		}
	}
	if p.nfs != nil {
		out.Spec.Volumes = []corev1.Volume{{Name: p.nfsVolume, VolumeSource: corev1.VolumeSource{NFS: p.nfs}}}
	}
	if p.hasScheduled || p.hasReady {
		out.Status.Conditions = make([]corev1.PodCondition, 0, 2)
		if p.hasScheduled {
			out.Status.Conditions = append(out.Status.Conditions, p.scheduled.condition(corev1.PodScheduled))
		}
		if p.hasReady {
			out.Status.Conditions = append(out.Status.Conditions, p.ready.condition(corev1.PodReady))
		}
	}
	if p.hasContainer {
		c := &p.container
		out.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: c.name, State: c.state, LastTerminationState: c.last, Ready: c.ready, RestartCount: c.restartCount,
		}}
	}
	return out
}
