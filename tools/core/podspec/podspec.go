// Package podspec builds a project's Pod from the chart's project pod
// template, the project ID and the project's quota. It is pure: no API
// calls, no clock, no randomness, so the same input always gives the same
// pod and the same spec hash.
package podspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// Annotations the orchestrator writes on project pods.
const (
	// AnnotationSpecHash is a hash of everything Build derived (labels,
	// annotations, spec). A pod whose hash differs from what the current
	// template would produce for the same request is stale.
	AnnotationSpecHash = "cocalc-kubernetes/spec-hash"
	// AnnotationRequest records the start request (effective quota and
	// extra environment) so the pod can be rebuilt for stale detection and
	// its idle timeout is known after an orchestrator restart.
	AnnotationRequest = "cocalc-kubernetes/start-request"
)

// Names inside the pod.
const (
	ContainerName = "project"
	HomeVolume    = "home"
	HubPortName   = "hub"
	RawPortName   = "raw"
	EnvProjectID  = "COCALC_PROJECT_ID"
	HealthPath    = "/health"
)

// Keys that ArgoCD uses to track the objects it manages. Runtime pods must
// never carry them, or ArgoCD would prune them or report the app OutOfSync.
var argoTrackingLabels = []string{"app.kubernetes.io/instance"}
var argoTrackingAnnotations = []string{"argocd.argoproj.io/tracking-id"}

// ErrInvalidRequest is wrapped by errors about a start request.
var ErrInvalidRequest = errors.New("invalid start request")

// Request is what a start asks for.
type Request struct {
	// Quota as sent by the caller; zero fields take the template defaults.
	Quota podtemplate.Quota `json:"quota"`
	// Env is extra environment for the project container (e.g. the hub's
	// COCALC_EXTRA_ENV). Keys must be valid variable names.
	Env map[string]string `json:"env,omitempty"`
}

// Input is everything Build needs besides the template.
type Input struct {
	Project project.ID
	Request Request
	// NFSServer is the resolved address of the NFS server when the template
	// names a Service (storage.nfs.serviceName); ignored otherwise.
	NFSServer string
}

// Build returns the project's pod. The request's quota is replaced by the
// effective quota (defaults and clamps applied) in the recorded request.
func Build(t *podtemplate.Template, in Input) (*corev1.Pod, error) {
	if err := in.Project.Validate(); err != nil {
		return nil, err
	}
	q, err := EffectiveQuota(t.Resources, in.Request.Quota)
	if err != nil {
		return nil, err
	}
	env, err := containerEnv(t, in.Project, in.Request.Env)
	if err != nil {
		return nil, err
	}
	res, err := resources(t.Resources, q)
	if err != nil {
		return nil, err
	}
	vol, mount, err := homeVolume(t.Storage, in.Project, in.NFSServer)
	if err != nil {
		return nil, err
	}
	recorded, err := json.Marshal(Request{Quota: q, Env: in.Request.Env})
	if err != nil {
		return nil, fmt.Errorf("encode start request: %w", err)
	}

	network := podtemplate.NetworkNone
	if q.Network {
		network = podtemplate.NetworkOutside
	}
	labels := map[string]string{}
	maps.Copy(labels, t.SelectorLabels)
	maps.Copy(labels, t.Labels)
	// Fixed labels last: the template cannot override identity or policy
	// labels, and the selector labels must survive (the informer and the
	// NetworkPolicies select on them).
	maps.Copy(labels, t.SelectorLabels)
	maps.Copy(labels, map[string]string{
		podtemplate.LabelComponent: podtemplate.ComponentProject,
		podtemplate.LabelPartOf:    podtemplate.PartOf,
		podtemplate.LabelManagedBy: podtemplate.ManagedBy,
		podtemplate.LabelRun:       podtemplate.RunProject,
		podtemplate.LabelProjectID: in.Project.String(),
		podtemplate.LabelNetwork:   network,
	})
	for _, k := range argoTrackingLabels {
		delete(labels, k)
	}
	annotations := map[string]string{}
	maps.Copy(annotations, t.Annotations)
	for _, k := range argoTrackingAnnotations {
		delete(annotations, k)
	}
	annotations[AnnotationRequest] = string(recorded)
	delete(annotations, AnnotationSpecHash)

	mounts := append([]corev1.VolumeMount{mount}, t.ExtraMounts...)
	volumes := append([]corev1.Volume{vol}, t.ExtraVolumes...)

	c := corev1.Container{
		Name:            ContainerName,
		Image:           t.Image.Reference(),
		ImagePullPolicy: t.Image.PullPolicy,
		Ports: []corev1.ContainerPort{
			{Name: HubPortName, ContainerPort: podtemplate.HubPort, Protocol: corev1.ProtocolTCP},
			{Name: RawPortName, ContainerPort: podtemplate.RawPort, Protocol: corev1.ProtocolTCP},
		},
		Env:          env,
		Resources:    res,
		VolumeMounts: mounts,
		// "running" means Ready: the local hub accepts connections, so the
		// hub's first connect after start succeeds instead of racing the
		// project's boot.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstrName(HubPortName)}},
			PeriodSeconds:    2,
			FailureThreshold: 3,
			TimeoutSeconds:   2,
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if t.LivenessProbe {
		// The original's probe: lenient, because a busy project (a long
		// computation) must not be killed for answering slowly.
		c.LivenessProbe = &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: HealthPath, Port: intstrName(RawPortName)}},
			InitialDelaySeconds: 60,
			PeriodSeconds:       30,
			TimeoutSeconds:      10,
			FailureThreshold:    20,
		}
	}

	podSC := &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(t.Security.RunAsUser),
		RunAsGroup:     ptr.To(t.Security.RunAsGroup),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if t.Security.FSGroup > 0 {
		podSC.FSGroup = ptr.To(t.Security.FSGroup)
		// The home volume may be one claim shared by every project: a
		// recursive ownership walk on each start would touch every home.
		podSC.FSGroupChangePolicy = ptr.To(corev1.FSGroupChangeOnRootMismatch)
	}

	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        in.Project.PodName(),
			Namespace:   t.Namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{c},
			Volumes:    volumes,
			// Always, as in the original: a project is a long-running
			// server. A crashed or OOM-killed project restarts in place
			// (same pod, same IP, state "starting" with the reason) instead
			// of leaving a Failed pod the user must notice and restart.
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptr.To(t.TerminationGracePeriodSeconds),
			// Projects run untrusted user code: no API credentials, no
			// service environment variables leaking the namespace's layout.
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			SecurityContext:              podSC,
			NodeSelector:                 maps.Clone(t.NodeSelector),
			Tolerations:                  slices.Clone(t.Tolerations),
			Affinity:                     t.Affinity.DeepCopy(),
			PriorityClassName:            t.PriorityClassName,
		},
	}
	if t.RuntimeClassName != "" {
		pod.Spec.RuntimeClassName = ptr.To(t.RuntimeClassName)
	}
	if t.DNSConfig != nil {
		// The template's resolver only, never the cluster's.
		pod.Spec.DNSPolicy = corev1.DNSNone
		pod.Spec.DNSConfig = t.DNSConfig.DeepCopy()
	}
	for _, s := range t.Image.PullSecrets {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	hash, err := SpecHash(pod)
	if err != nil {
		return nil, err
	}
	pod.Annotations[AnnotationSpecHash] = hash
	if err := Validate(pod); err != nil {
		return nil, fmt.Errorf("built an invalid pod (template or request bug): %w", err)
	}
	return pod, nil
}

// RecordedRequest decodes the start request stored on a pod built by Build.
func RecordedRequest(pod *corev1.Pod) (Request, error) {
	var r Request
	raw, ok := pod.Annotations[AnnotationRequest]
	if !ok {
		return r, fmt.Errorf("pod %s has no %s annotation", pod.Name, AnnotationRequest)
	}
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return r, fmt.Errorf("pod %s: decode %s: %w", pod.Name, AnnotationRequest, err)
	}
	return r, nil
}

// SpecHash hashes the labels, annotations (without the hash itself) and spec
// of a pod. Map keys are encoded sorted by encoding/json, so it is stable.
func SpecHash(pod *corev1.Pod) (string, error) {
	ann := maps.Clone(pod.Annotations)
	delete(ann, AnnotationSpecHash)
	data, err := json.Marshal(struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		Spec        corev1.PodSpec    `json:"spec"`
	}{pod.Labels, ann, pod.Spec})
	if err != nil {
		return "", fmt.Errorf("hash pod spec: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16]), nil
}

func containerEnv(t *podtemplate.Template, id project.ID, extra map[string]string) ([]corev1.EnvVar, error) {
	env := []corev1.EnvVar{{Name: EnvProjectID, Value: id.String()}}
	for _, e := range t.Env {
		if e.Name == EnvProjectID {
			continue // identity is not configurable
		}
		env = append(env, e)
	}
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		if k == EnvProjectID {
			errs = append(errs, fmt.Errorf("%w: env %s is set by the orchestrator", ErrInvalidRequest, k))
			continue
		}
		for _, msg := range validation.IsEnvVarName(k) {
			errs = append(errs, fmt.Errorf("%w: env name %q: %s", ErrInvalidRequest, k, msg))
		}
		env = append(env, corev1.EnvVar{Name: k, Value: extra[k]})
	}
	return env, errors.Join(errs...)
}

func resources(r podtemplate.Resources, q podtemplate.Quota) (corev1.ResourceRequirements, error) {
	limitCPU := int64(math.Round(q.Cores * 1000))
	if limitCPU < 1 {
		limitCPU = 1
	}
	limitMem := q.MemoryMiB

	reqCPU := max(int64(float64(limitCPU)/r.CPUOvercommit), q.CPUShares, r.MinCPURequestMilli)
	reqMem := max(int64(float64(limitMem)/r.MemoryOvercommit), r.MinMemoryRequestMiB)
	// Floors and shares may exceed a small limit; Kubernetes rejects a
	// request above its limit (the original had exactly this bug).
	reqCPU = max(min(reqCPU, limitCPU), 1)
	reqMem = max(min(reqMem, limitMem), 1)

	res := corev1.ResourceRequirements{
		Limits: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(limitCPU, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(limitMem<<20, resource.BinarySI),
		},
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(reqCPU, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(reqMem<<20, resource.BinarySI),
		},
	}
	if q.GPUs > 0 {
		// Extended resources cannot be overcommitted: request == limit.
		gpu := *resource.NewQuantity(q.GPUs, resource.DecimalSI)
		res.Limits[r.GPUResourceName] = gpu
		res.Requests[r.GPUResourceName] = gpu
	}
	if r.EphemeralStorageLimit != "" {
		qty, err := resource.ParseQuantity(r.EphemeralStorageLimit)
		if err != nil {
			return res, fmt.Errorf("template ephemeralStorageLimit: %w", err)
		}
		res.Limits[corev1.ResourceEphemeralStorage] = qty
	}
	return res, nil
}

func homeVolume(s podtemplate.Storage, id project.ID, nfsServer string) (corev1.Volume, corev1.VolumeMount, error) {
	vol := corev1.Volume{Name: HomeVolume}
	mount := corev1.VolumeMount{Name: HomeVolume, MountPath: s.MountPath}
	switch s.Mode {
	case podtemplate.ModeNFS:
		if s.NFS == nil {
			return vol, mount, errors.New("template storage.nfs missing")
		}
		server := s.NFS.Server
		if s.NFS.ServiceName != "" {
			server = nfsServer
		}
		if server == "" {
			return vol, mount, fmt.Errorf("NFS server address of service %q not resolved", s.NFS.ServiceName)
		}
		// id is validated: the joined path cannot leave the export.
		vol.NFS = &corev1.NFSVolumeSource{Server: server, Path: path.Join(s.NFS.Path, id.String())}
	case podtemplate.ModePVC:
		if s.PVC == nil {
			return vol, mount, errors.New("template storage.pvc missing")
		}
		vol.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: s.PVC.ClaimName}
		mount.SubPath = path.Join(s.PVC.SubPathPrefix, id.String())
	default:
		return vol, mount, fmt.Errorf("template storage mode %q unknown", s.Mode)
	}
	return vol, mount, nil
}
