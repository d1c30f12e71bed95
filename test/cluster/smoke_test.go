package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// wantServerVersion is what bin/kube-cluster is stamped with (Makefile).
const wantServerVersion = "v1.37.2"

func TestServerReportsItsRealVersion(t *testing.T) {
	c := cluster.Get(t)
	v, err := c.Client.Discovery().ServerVersion()
	require.NoError(t, err)
	if c.Tier == cluster.TierAPI {
		require.Equal(t, wantServerVersion, v.GitVersion, "ldflags on k8s.io/component-base/version missing?")
	}
	require.NotContains(t, v.GitVersion, "master", "an unstamped build reports v0.0.0-master")
}

func TestNodesAreReadyAndSpreadOverZones(t *testing.T) {
	c := cluster.Get(t)
	if c.Tier != cluster.TierAPI {
		t.Skipf("simulated node layout is specific to the api tier (this is %s)", c.Tier)
	}
	nodes, err := c.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(nodes.Items), 2)
	zones := map[string]bool{}
	for _, n := range nodes.Items {
		require.Equal(t, "fake", n.Annotations["kwok.x-k8s.io/node"], n.Name)
		require.Empty(t, n.Spec.Taints, "tests schedule onto simulated nodes without tolerations")
		zones[n.Labels[cluster.LabelZone]] = true
		require.True(t, nodeReady(&n), "node %s not Ready", n.Name)
	}
	require.GreaterOrEqual(t, len(zones), 2, "nodes must be in distinct zones: %v", zones)
}

func TestPodSecurityRestrictedRejectsPrivilegedPod(t *testing.T) {
	c := cluster.Get(t)
	ns := namespace(t, c.Client, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "privileged"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "c", Image: "registry.invalid/never-pulled:1",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr(true)},
		}}},
	}
	_, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	require.Error(t, err)
	require.True(t, apierrors.IsForbidden(err), "want Forbidden, got %v", err)
	require.Contains(t, err.Error(), `violates PodSecurity "restricted:latest"`)
	require.Contains(t, err.Error(), "privileged")

	// The same namespace admits a pod that meets the profile: the
	// rejection above is the policy, not a broken admission chain.
	ok := restrictedPod("compliant", corev1.RestartPolicyAlways)
	_, err = c.Client.CoreV1().Pods(ns).Create(t.Context(), ok, metav1.CreateOptions{})
	require.NoError(t, err)
}

func TestPodLifecycle(t *testing.T) {
	c := cluster.Get(t)
	if c.Has(cluster.RealContainers) {
		t.Skipf("checks the api tier's simulated pod lifecycle (kwok stages); the %s tier runs real containers, "+
			"whose lifecycle TestNetworkPolicyAllowsOneClientAndDeniesAnother exercises", c.Tier)
	}
	ns := namespace(t, c.Client, nil)
	pods := c.Client.CoreV1().Pods(ns)

	long := restrictedPod("long-running", corev1.RestartPolicyAlways)
	oneShot := restrictedPod("one-shot", corev1.RestartPolicyNever)
	project := restrictedPod("project", corev1.RestartPolicyNever)
	project.Labels = map[string]string{"app.kubernetes.io/component": "project"}
	for _, p := range []*corev1.Pod{long, oneShot, project} {
		_, err := pods.Create(t.Context(), p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	waitPhase(t, c.Client, ns, "long-running", corev1.PodRunning)
	waitPhase(t, c.Client, ns, "one-shot", corev1.PodSucceeded)
	waitPhase(t, c.Client, ns, "project", corev1.PodRunning)

	got, err := pods.Get(t.Context(), "long-running", metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, got.Spec.NodeName, "scheduled by kube-scheduler")
	require.NotEmpty(t, got.Status.PodIP)

	if c.Tier == cluster.TierAPI {
		// A project pod is never completed by the simulation, however long
		// it lives: give kwok time it would need to (wrongly) finish it.
		time.Sleep(500 * time.Millisecond)
		got, err = pods.Get(t.Context(), "project", metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, corev1.PodRunning, got.Status.Phase)
	}

	require.NoError(t, pods.Delete(t.Context(), "long-running", metav1.DeleteOptions{}))
	require.NoError(t, wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, "long-running", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}), "deleted pod never went away")
}

func TestDefaultStorageClassBindsClaims(t *testing.T) {
	c := cluster.Get(t)
	ns := namespace(t, c.Client, nil)
	claims := c.Client.CoreV1().PersistentVolumeClaims(ns)
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("1Gi"),
			}},
		},
	}
	_, err := claims.Create(t.Context(), pvc, metav1.CreateOptions{})
	require.NoError(t, err)
	var bound *corev1.PersistentVolumeClaim
	require.NoError(t, wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := claims.Get(ctx, "data", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		bound = got
		return got.Status.Phase == corev1.ClaimBound, nil
	}), "claim with the default StorageClass never bound")
	require.NotEmpty(t, bound.Spec.VolumeName)
	require.Contains(t, bound.Status.AccessModes, corev1.ReadWriteMany)

	if c.Tier == cluster.TierAPI {
		// Deleting the claim releases and then removes its volume.
		require.NoError(t, claims.Delete(t.Context(), "data", metav1.DeleteOptions{}))
		require.NoError(t, wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, bound.Spec.VolumeName, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}), "released volume %s was not deleted", bound.Spec.VolumeName)
	}
}

// TestChartInstallsAndHelmTestPasses is the acceptance check:
// `helm install --wait` of charts/cocalc, then `helm test`.
func TestChartInstallsAndHelmTestPasses(t *testing.T) {
	c := cluster.Get(t)
	root, err := cluster.RepoRoot()
	require.NoError(t, err)
	helm := filepath.Join(root, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("%s missing: build it with `make tools`", helm)
	}
	chart := filepath.Join(root, "charts", "cocalc")
	ns := "smoke-" + rand.String(5)
	release := "smoke"
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, helm, append(args, "--kubeconfig", c.KubeconfigPath)...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		t.Logf("helm %s (%s):\n%s", strings.Join(args[:2], " "), time.Since(start).Round(time.Millisecond), out.String())
		require.NoError(t, err, "helm %s", strings.Join(args, " "))
		return out.String()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, helm, "uninstall", release, "-n", ns, "--wait", "--kubeconfig", c.KubeconfigPath).CombinedOutput()
		if err != nil {
			t.Logf("helm uninstall: %v\n%s", err, out)
		}
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	install := []string{"install", release, chart, "--namespace", ns, "--create-namespace", "--wait", "--timeout", "3m"}
	if c.Tier != cluster.TierKind {
		// The defaults (storage mode nfsServer) need the node CIDRs kubelets mount from; a private
		// stand-in range here (values/kind.yaml uses mode pvc).
		install = append(install, "--set", "networkPolicy.nfs.nodeCIDRs={172.31.250.0/24}")
	} else {
		// Real containers need images that exist here: the stand-ins and
		// the orchestrator built from this repository (values/kind.yaml).
		install = append(install, "-f", filepath.Join(root, "values", "kind.yaml"))
	}
	run(install...)
	out := run("test", release, "--namespace", ns, "--timeout", "3m")
	require.Contains(t, out, "Succeeded")

	// The server pod really went through the scheduler onto a node.
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, pods.Items)
	for _, p := range pods.Items {
		require.NotEmpty(t, p.Spec.NodeName, "pod %s not scheduled", p.Name)
	}
}

func namespace(t *testing.T, client kubernetes.Interface, labels map[string]string) string {
	t.Helper()
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + "-" + rand.String(5)
	_, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	// Pods need the namespace's default ServiceAccount.
	require.NoError(t, wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}))
	return name
}

// restrictedPod meets the "restricted" Pod Security profile.
func restrictedPod(name string, restart corev1.RestartPolicy) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: restart,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				RunAsUser:      ptr(int64(2001)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "c",
				Image: "registry.invalid/never-pulled:1",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func waitPhase(t *testing.T, client kubernetes.Interface, ns, name string, want corev1.PodPhase) {
	t.Helper()
	var last corev1.PodPhase
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p.Status.Phase
		if last != want && (last == corev1.PodSucceeded || last == corev1.PodFailed) {
			return false, fmt.Errorf("pod ended in phase %s", last)
		}
		return last == want, nil
	})
	require.NoError(t, err, fmt.Sprintf("pod %s/%s: want phase %s, last %s", ns, name, want, last))
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
