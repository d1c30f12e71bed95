package kube

import (
	"reflect"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

// realisticPod is a project pod as the API server returns it: built by the
// orchestrator's own builder, with server-side fields and a status.
func realisticPod(t *testing.T, mutate func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	pid := project.MustParse("44444444-4444-4444-8444-444444444444")
	pod, err := podspec.Build(fixture.Template(), podspec.Input{Project: pid, Request: podspec.Request{Quota: podtemplate.Quota{Network: true, IdleTimeoutSeconds: 600}}, NFSServer: "10.96.0.50"})
	if err != nil {
		t.Fatal(err)
	}
	pod.UID = "uid-1"
	pod.ResourceVersion = "42"
	pod.CreationTimestamp = metav1.Now()
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "cocalc-k8s", Operation: metav1.ManagedFieldsOperationUpdate, FieldsV1: &metav1.FieldsV1{Raw: make([]byte, 4000)}}}
	pod.Spec.NodeName = "node-a"
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: "10.244.1.7", HostIP: "172.18.0.3", QOSClass: corev1.PodQOSBurstable,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "project", Ready: true, RestartCount: 2, Image: "project:1", ImageID: "sha256:abc",
			State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: state.ReasonOOMKilled, ExitCode: 137}},
		}},
	}
	if mutate != nil {
		mutate(pod)
	}
	return pod
}

func TestCachedPodKeepsWhatTheOrchestratorReads(t *testing.T) {
	now := metav1.Now()
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Pod)
	}{
		{"running after an OOM restart", nil},
		{"deleting", func(p *corev1.Pod) { p.DeletionTimestamp = &now }},
		{"crash loop", func(p *corev1.Pod) {
			p.Status.Conditions[2].Status = corev1.ConditionFalse
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: state.ReasonCrashLoopBackOff, Message: "back-off"}}
		}},
		{"unschedulable", func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes"}}}
		}},
		{"failed", func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", Message: "exit 1"}}
		}},
		{"evicted", func(p *corev1.Pod) {
			p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "low on memory"
		}},
		{"node lost", func(p *corev1.Pod) { p.Status.Phase, p.Status.Message = corev1.PodUnknown, "node unreachable" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full := realisticPod(t, tc.mutate)
			slim := cachedOf(t, full.DeepCopy()).pod()
			if got, want := state.FromPod(slim), state.FromPod(full); !reflect.DeepEqual(got, want) {
				t.Errorf("state of the cached pod %+v, of the full pod %+v", got, want)
			}
			gotReq, err1 := podspec.RecordedRequest(slim)
			wantReq, err2 := podspec.RecordedRequest(full)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(gotReq, wantReq) {
				t.Errorf("recorded request %+v/%v, want %+v/%v", gotReq, err1, wantReq, err2)
			}
			if slim.Annotations[podspec.AnnotationSpecHash] == "" || slim.Annotations[podspec.AnnotationSpecHash] != full.Annotations[podspec.AnnotationSpecHash] {
				t.Error("spec hash annotation lost")
			}
			if len(slim.Spec.Volumes) != 1 || slim.Spec.Volumes[0].NFS == nil || slim.Spec.Volumes[0].NFS.Server != "10.96.0.50" {
				t.Errorf("NFS volume lost: %+v", slim.Spec.Volumes)
			}
			if slim.UID != full.UID || slim.ResourceVersion != full.ResourceVersion || slim.Name != full.Name || slim.Namespace != full.Namespace ||
				!slim.CreationTimestamp.Equal(&full.CreationTimestamp) || slim.Spec.NodeName != "node-a" {
				t.Errorf("identity or placement lost: %+v", slim.ObjectMeta)
			}
			if len(slim.Spec.Containers) != 0 || slim.ManagedFields != nil || slim.Labels != nil {
				t.Error("the container spec, managedFields and labels must not be cached")
			}
			if len(slim.Annotations) != 2 {
				t.Errorf("annotations %v, want only the spec hash and the start request", slim.Annotations)
			}
		})
	}
	// Strings every pod repeats are shared between cached pods.
	pa, pb := cachedOf(t, realisticPod(t, nil)).pod(), cachedOf(t, realisticPod(t, nil)).pod()
	for _, pair := range [][2]string{
		{pa.Namespace, pb.Namespace},
		{pa.Annotations[podspec.AnnotationRequest], pb.Annotations[podspec.AnnotationRequest]},
		{string(pa.Status.Conditions[0].Type), string(pb.Status.Conditions[0].Type)},
		{pa.Status.ContainerStatuses[0].Name, pb.Status.ContainerStatuses[0].Name},
	} {
		if pair[0] != pair[1] || unsafe.StringData(pair[0]) != unsafe.StringData(pair[1]) {
			t.Errorf("%q is not shared between cached pods", pair[0])
		}
	}
	if obj, _ := compactPod("tombstone"); obj != "tombstone" {
		t.Error("objects that are not pods pass unchanged")
	}
}

// cachedOf is the cache's transform of pod.
func cachedOf(t *testing.T, pod *corev1.Pod) *cachedPod {
	t.Helper()
	obj, err := compactPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*cachedPod)
}

func TestCachedPodWithoutOptionalParts(t *testing.T) {
	// A pod just created: no annotations the orchestrator reads, no
	// volume, no conditions, no container status.
	full := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "project-x", Namespace: "ns", UID: "u"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	got := cachedOf(t, full).pod()
	if got.Annotations != nil || got.Spec.Volumes != nil || got.Status.Conditions != nil || got.Status.ContainerStatuses != nil {
		t.Errorf("parts the pod does not have appeared: %+v", got)
	}
	if !reflect.DeepEqual(state.FromPod(got), state.FromPod(full)) {
		t.Errorf("state %+v, want %+v", state.FromPod(got), state.FromPod(full))
	}
	// Only one of the two annotations, and only the Ready condition.
	full.Annotations = map[string]string{podspec.AnnotationSpecHash: "h", "other": "x"}
	full.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodInitialized, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "r"}}
	got = cachedOf(t, full).pod()
	if !reflect.DeepEqual(got.Annotations, map[string]string{podspec.AnnotationSpecHash: "h"}) {
		t.Errorf("annotations %v", got.Annotations)
	}
	if len(got.Status.Conditions) != 1 || got.Status.Conditions[0].Type != corev1.PodReady || got.Status.Conditions[0].Reason != "r" {
		t.Errorf("conditions %+v", got.Status.Conditions)
	}
}

func TestCachedPodDeepCopyIsIndependent(t *testing.T) {
	now := metav1.Now()
	orig := cachedOf(t, realisticPod(t, func(p *corev1.Pod) { p.DeletionTimestamp = &now }))
	cp := orig.DeepCopyObject().(*cachedPod)
	if !reflect.DeepEqual(cp.pod(), orig.pod()) {
		t.Fatal("copy differs")
	}
	cp.DeletionTimestamp.Time = cp.DeletionTimestamp.Add(time.Hour)
	cp.nfs.Server = "changed"
	cp.container.state.Running.StartedAt.Time = cp.container.state.Running.StartedAt.Add(time.Hour)
	cp.container.last.Terminated.ExitCode = 1
	if orig.DeletionTimestamp.Equal(cp.DeletionTimestamp) || orig.nfs.Server == "changed" ||
		orig.container.state.Running.StartedAt.Equal(&cp.container.state.Running.StartedAt) || orig.container.last.Terminated.ExitCode == 1 {
		t.Error("the copy shares memory with the original")
	}
	if orig.GetObjectKind().GroupVersionKind() != (schema.GroupVersionKind{}) {
		t.Error("a cached pod has no kind of its own")
	}
}
