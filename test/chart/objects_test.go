package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// object is one rendered manifest, decoded strictly into its k8s.io/api type.
type object struct {
	Source string // "# Source:" template path
	Kind   string
	Meta   metav1.ObjectMeta
	Obj    runtime.Object
}

// kinds is every kind the chart may render, with its typed struct. A kind not
// listed here fails the suite: add it with its type, never decode loosely.
var kinds = map[string]func() runtime.Object{
	"v1/ConfigMap":                             func() runtime.Object { return &corev1.ConfigMap{} },
	"v1/Secret":                                func() runtime.Object { return &corev1.Secret{} },
	"v1/Service":                               func() runtime.Object { return &corev1.Service{} },
	"v1/ServiceAccount":                        func() runtime.Object { return &corev1.ServiceAccount{} },
	"v1/PersistentVolumeClaim":                 func() runtime.Object { return &corev1.PersistentVolumeClaim{} },
	"v1/PersistentVolume":                      func() runtime.Object { return &corev1.PersistentVolume{} },
	"v1/Namespace":                             func() runtime.Object { return &corev1.Namespace{} },
	"v1/ResourceQuota":                         func() runtime.Object { return &corev1.ResourceQuota{} },
	"v1/LimitRange":                            func() runtime.Object { return &corev1.LimitRange{} },
	"v1/Pod":                                   func() runtime.Object { return &corev1.Pod{} },
	"apps/v1/Deployment":                       func() runtime.Object { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                      func() runtime.Object { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":                        func() runtime.Object { return &appsv1.DaemonSet{} },
	"batch/v1/CronJob":                         func() runtime.Object { return &batchv1.CronJob{} },
	"rbac.authorization.k8s.io/v1/Role":        func() runtime.Object { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/RoleBinding": func() runtime.Object { return &rbacv1.RoleBinding{} },
	"networking.k8s.io/v1/NetworkPolicy":       func() runtime.Object { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":             func() runtime.Object { return &networkingv1.Ingress{} },
	"policy/v1/PodDisruptionBudget":            func() runtime.Object { return &policyv1.PodDisruptionBudget{} },
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy": func() runtime.Object {
		return &admissionregistrationv1.ValidatingAdmissionPolicy{}
	},
	"admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": func() runtime.Object {
		return &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	},
}

// decodeManifests splits helm output into documents and decodes each strictly
// (unknown or duplicate fields are errors).
func decodeManifests(out string) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	var objs []object
	var errs []error
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split manifests: %w", err)
		}
		source := sourceOf(doc)
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		if head.Kind == "" && len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue // comment-only document
		}
		newObj, ok := kinds[head.APIVersion+"/"+head.Kind]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: kind %s/%s is not in the suite's typed list", source, head.APIVersion, head.Kind))
			continue
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): strict decode: %w", source, head.Kind, err))
			continue
		}
		accessor, err := metaOf(obj)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		objs = append(objs, object{Source: source, Kind: head.Kind, Meta: *accessor, Obj: obj})
	}
	return objs, errors.Join(errs...)
}

func metaOf(obj runtime.Object) (*metav1.ObjectMeta, error) {
	m, ok := obj.(metav1.ObjectMetaAccessor)
	if !ok {
		return nil, fmt.Errorf("%T has no ObjectMeta", obj)
	}
	return m.GetObjectMeta().(*metav1.ObjectMeta), nil
}

func sourceOf(doc []byte) string {
	for _, line := range strings.Split(string(doc), "\n") {
		if s, ok := strings.CutPrefix(line, "# Source: "); ok {
			return s
		}
	}
	return "(unknown source)"
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// manifests is a decoded render with typed lookups.
type manifests []object

func mustDecode(t *testing.T, out string) manifests {
	t.Helper()
	objs, err := decodeManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func renderObjects(t *testing.T, c valuesCase) manifests {
	t.Helper()
	return mustDecode(t, renderCase(t, c))
}

// all returns every object of type T.
func all[T runtime.Object](m manifests) []T {
	var res []T
	for _, o := range m {
		if v, ok := o.Obj.(T); ok {
			res = append(res, v)
		}
	}
	return res
}

// one returns the single object of type T with the given name.
func one[T runtime.Object](t *testing.T, m manifests, name string) T {
	t.Helper()
	var found []T
	for _, o := range m {
		if v, ok := o.Obj.(T); ok && o.Meta.Name == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T named %q, found %d", zero, name, len(found))
	}
	return found[0]
}

// maybe returns the object of type T with the given name, or false.
func maybe[T runtime.Object](m manifests, name string) (T, bool) {
	for _, o := range m {
		if v, ok := o.Obj.(T); ok && o.Meta.Name == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// maybeIn returns the object of type T with the given namespace and name, or false.
func maybeIn[T runtime.Object](m manifests, namespace, name string) (T, bool) {
	for _, o := range m {
		if v, ok := o.Obj.(T); ok && o.Meta.Namespace == namespace && o.Meta.Name == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func TestStrictDecoderRejectsUnknownFields(t *testing.T) {
	// The decoder must be strict, or every other assertion could pass on a typo'd manifest.
	bad := "# Source: cocalc/templates/x.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  selctor: {a: b}\n"
	if _, err := decodeManifests(bad); err == nil || !strings.Contains(err.Error(), "selctor") {
		t.Fatalf("unknown field not rejected: %v", err)
	}
	dup := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n"
	if _, err := decodeManifests(dup); err == nil {
		t.Fatal("duplicate field not rejected")
	}
	unknownKind := "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n"
	if _, err := decodeManifests(unknownKind); err == nil {
		t.Fatal("unknown kind not rejected")
	}
}
