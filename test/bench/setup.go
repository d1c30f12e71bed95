package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// NFSServiceName is the NFS Service each projects namespace gets (the pods
// never mount it: kwok runs no containers, but the orchestrator resolves
// its ClusterIP like in production).
const NFSServiceName = "cocalc-nfs"

// ReadyDelayAnnotation asks the api tier's kwok stages to hold a pod
// before it gets an IP and Ready (value: a Go duration), standing in for
// image pull and container start (test/cluster/stages.yaml).
const ReadyDelayAnnotation = "cocalc.test/kwok-delay-ms"

// Template is the chart's default project pod template for namespace ns,
// with homes created under serverPath. Start timeouts are raised so a
// burst of 1,000 starts measures throughput instead of timing out.
// readyDelay > 0 sets ReadyDelayAnnotation on every pod.
func Template(ns, serverPath string, readyDelay time.Duration) (*podtemplate.Template, error) {
	if err := os.MkdirAll(serverPath, 0o755); err != nil {
		return nil, fmt.Errorf("homes root: %w", err)
	}
	t := &podtemplate.Template{
		Version:   podtemplate.SchemaVersion,
		Release:   "cocalc",
		Namespace: ns,
		SelectorLabels: map[string]string{
			podtemplate.LabelRelease:   "cocalc",
			podtemplate.LabelComponent: podtemplate.ComponentProject,
		},
		Image: podtemplate.Image{Repository: "registry.example/cocalc-project", Tag: "bench", PullPolicy: "IfNotPresent"},
		Resources: podtemplate.Resources{
			Default:             podtemplate.Quota{Cores: 1, MemoryMiB: 1000, IdleTimeoutSeconds: 3600},
			Min:                 podtemplate.Quota{Cores: 0.1, MemoryMiB: 256},
			Max:                 podtemplate.Quota{Cores: 4, MemoryMiB: 8000},
			CPUOvercommit:       10,
			MemoryOvercommit:    2,
			MinCPURequestMilli:  50,
			MinMemoryRequestMiB: 500,
		},
		Security: podtemplate.Security{RunAsUser: 2001, RunAsGroup: 2001, FSGroup: 2001},
		Storage: podtemplate.Storage{
			Mode:       podtemplate.ModeNFS,
			NFS:        &podtemplate.NFSStorage{ServiceName: NFSServiceName, Path: "/"},
			ServerPath: serverPath,
			MountPath:  "/home/user",
		},
		TerminationGracePeriodSeconds: 10,
		LivenessProbe:                 true,
		Timeouts:                      podtemplate.Timeouts{StartSeconds: 300, StopSeconds: 120, PendingSeconds: 600},
	}
	if readyDelay > 0 {
		t.Annotations = map[string]string{ReadyDelayAnnotation: readyDelay.String()}
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("bench template: %w", err)
	}
	return t, nil
}

// PrepareNamespace creates ns with its NFS Service and waits for its
// default ServiceAccount (pods are rejected until it exists). It returns
// the Service's ClusterIP.
func PrepareNamespace(ctx context.Context, cs kubernetes.Interface, ns string) (string, error) {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace %s: %w", ns, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: NFSServiceName, Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "nfs", Port: 2049}}},
	}
	got, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = cs.CoreV1().Services(ns).Get(ctx, NFSServiceName, metav1.GetOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("NFS service in %s: %w", ns, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return "", fmt.Errorf("default service account in %s: %w", ns, err)
	}
	return got.Spec.ClusterIP, nil
}

// DeleteAllPods removes every pod in ns at once (grace 0) and waits until
// none is left.
func DeleteAllPods(ctx context.Context, cs kubernetes.Interface, ns string) error {
	zero := int64(0)
	if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("delete pods in %s: %w", ns, err)
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil && len(l.Items) == 0, nil
	})
}

// NewID returns a random project ID (a version 4 UUID).
func NewID() project.ID {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return project.MustParse(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}
