package podspec

import (
	"errors"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

func intstrName(name string) intstr.IntOrString { return intstr.FromString(name) }

// Validate checks the invariants every project pod must satisfy, without
// k8s.io/kubernetes: valid names and labels, sane resources (requests never
// above limits, extended resources equal), non-root, no privilege, every
// mount backed by a volume and the home mount not escaping its directory.
// The fuzz target holds Build to it.
func Validate(pod *corev1.Pod) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	for _, msg := range validation.IsDNS1123Label(pod.Name) {
		add("name %q: %s", pod.Name, msg)
	}
	for _, msg := range validation.IsDNS1123Label(pod.Namespace) {
		add("namespace %q: %s", pod.Namespace, msg)
	}
	for k, v := range pod.Labels {
		for _, msg := range validation.IsQualifiedName(k) {
			add("label key %q: %s", k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			add("label %q value %q: %s", k, v, msg)
		}
	}
	for _, k := range argoTrackingLabels {
		if _, ok := pod.Labels[k]; ok {
			add("label %q is ArgoCD's tracking label", k)
		}
	}
	for _, k := range argoTrackingAnnotations {
		if _, ok := pod.Annotations[k]; ok {
			add("annotation %q is ArgoCD's tracking annotation", k)
		}
	}
	size := 0
	for k, v := range pod.Annotations {
		size += len(k) + len(v)
	}
	if size > 256*1024 {
		add("annotations total %d bytes exceed 256 KiB", size)
	}
	spec := pod.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		add("automountServiceAccountToken must be false")
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.RunAsUser == nil || *sc.RunAsUser <= 0 {
		add("pod must run as a non-root user")
	}
	if len(spec.Containers) != 1 {
		add("want exactly one container, got %d", len(spec.Containers))
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if volumes[v.Name] {
			add("duplicate volume %q", v.Name)
		}
		volumes[v.Name] = true
	}
	for _, c := range spec.Containers {
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			(sc.Privileged != nil && *sc.Privileged) {
			add("container %s may escalate privileges", c.Name)
		}
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				add("env %q: %s", e.Name, msg)
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				add("mount %q has no volume", m.Name)
			}
			if m.SubPath != "" && (path.IsAbs(m.SubPath) || strings.Contains(m.SubPath, "..")) {
				add("mount %q subPath %q escapes the volume", m.Name, m.SubPath)
			}
		}
		checkResources(add, c.Name, c.Resources)
	}
	return errors.Join(errs...)
}

func checkResources(add func(string, ...any), name string, r corev1.ResourceRequirements) {
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		lim, ok := r.Limits[res]
		if !ok || lim.Sign() <= 0 {
			add("container %s: %s limit must be > 0", name, res)
		}
	}
	for res, req := range r.Requests {
		if req.Sign() < 0 {
			add("container %s: %s request negative", name, res)
		}
		lim, ok := r.Limits[res]
		if !ok {
			continue
		}
		if req.Cmp(lim) > 0 {
			add("container %s: %s request %s above limit %s", name, res, req.String(), lim.String())
		}
		if !isNativeResource(res) && req.Cmp(lim) != 0 {
			add("container %s: extended resource %s request %s must equal limit %s", name, res, req.String(), lim.String())
		}
	}
}

func isNativeResource(n corev1.ResourceName) bool {
	return !strings.Contains(string(n), "/") || strings.HasPrefix(string(n), "kubernetes.io/")
}
