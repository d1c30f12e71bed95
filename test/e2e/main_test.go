// Package e2e deploys charts/cocalc into a test cluster (tier from
// COCALC_TEST_TIER, default api) and checks what the chart promises: helm
// lifecycle, least-privilege RBAC, the orchestrator run with the chart's
// identity, NetworkPolicy isolation and ArgoCD sync. One control plane is
// shared by the package (TestMain); every test works in its own namespace.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/gruntwork-io/terratest/modules/k8s"
	"github.com/gruntwork-io/terratest/modules/logger"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

func TestMain(m *testing.M) {
	root, err := cluster.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	repoRoot = root
	// terratest runs "helm" from PATH: make it the pinned bin/helm.
	os.Setenv("PATH", filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	cluster.Main(m)
}

// repoRoot is the repository root (set by TestMain).
var repoRoot string

// releaseName is the Helm release of every install: each lives in its own
// namespace, and "cocalc" makes the chart's fullname "cocalc" so object
// names are predictable ("cocalc-server", "cocalc-orchestrator", ...).
const releaseName = "cocalc"

// Object names the chart derives from releaseName.
const (
	serverName         = releaseName + "-server"
	roleName           = releaseName + "-orchestrator"
	serviceAccountName = releaseName
	templateConfigMap  = releaseName + "-project-template"
	dataClaimName      = releaseName + "-data"
	projectsClaimName  = releaseName + "-projects"
)

// standinValues point every image at the offline stand-ins (ci/kind builds
// them; on the api tier kwok never runs them, but the names must not be
// the real registry's), and give the node CIDRs that storage mode
// nfsServer (the default) requires: testNodeCIDR.
var standinValues = map[string]string{
	"networkPolicy.nfs.nodeCIDRs":   "{" + testNodeCIDR + "}",
	"server.image.repository":       "cocalc-kubernetes/hub-standin",
	"server.image.tag":              "dev",
	"orchestrator.image.repository": "cocalc-kubernetes/orchestrator",
	"orchestrator.image.tag":        "dev",
	"projects.image.repository":     "cocalc-kubernetes/project-standin",
	"projects.image.tag":            "dev",
}

// testNodeCIDR stands for the node network in NetworkPolicy values
// (a private range, as node networks are): apart from pod, API server, metadata and internet
// addresses, so the truth table can tell nodes from everyone else.
const testNodeCIDR = "172.31.250.0/24"

func chartDir() string { return filepath.Join(repoRoot, "charts", "cocalc") }

func valuesFile(name string) string { return filepath.Join(repoRoot, "values", name) }

// mergeValues returns a new map with the entries of all maps, later wins.
func mergeValues(maps ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// helmOptions are terratest options for a release in ns.
func helmOptions(t *testing.T, c *cluster.Cluster, ns string, set map[string]string, files ...string) *helm.Options {
	t.Helper()
	return &helm.Options{
		KubectlOptions: k8s.NewKubectlOptions("", c.KubeconfigPath, ns),
		SetValues:      set,
		ValuesFiles:    files,
		Logger:         logger.Discard,
		ExtraArgs: map[string][]string{
			"install":  {"--wait", "--timeout", "3m"},
			"upgrade":  {"--wait", "--timeout", "3m"},
			"rollback": {"--wait", "--timeout", "3m"},
		},
	}
}

// install runs `helm install --wait` of the chart as releaseName into ns and
// uninstalls it when the test ends (unless it failed: then the release stays
// for inspection, like the namespace).
func install(t *testing.T, c *cluster.Cluster, ns string, opts *helm.Options) {
	t.Helper()
	start := time.Now()
	err := helm.InstallE(t, opts, chartDir(), releaseName)
	require.NoError(t, err, "helm install into %s", ns)
	t.Logf("helm install --wait into %s: %v", ns, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		if err := helm.DeleteE(t, opts, releaseName, true); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Logf("helm uninstall %s: %v", ns, err)
		}
	})
}

// newNamespace creates a uniquely named namespace for one test. It is
// deleted when the test passes; when it fails, its pods and events are
// dumped into the log and it is kept for inspection.
func newNamespace(t *testing.T, c *cluster.Cluster, prefix string, labels map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("e2e-%s-%s", prefix, rand.String(5))
	_, err := c.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	require.NoError(t, err, "create namespace %s", name)
	waitForDefaultServiceAccount(t, c, name)
	t.Cleanup(func() {
		ctx := t.Context()
		if ctx.Err() != nil {
			ctx = contextWithTimeout(30 * time.Second)
		}
		if t.Failed() {
			dumpNamespace(t, c, name)
			t.Logf("namespace %s kept for inspection (KUBECONFIG=%s)", name, c.KubeconfigPath)
			return
		}
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

// defaultServiceAccountTimeout bounds the wait for a new namespace's
// default ServiceAccount: kube-controller-manager creates it a moment after
// the namespace, and after an API server restart (see
// TestOrchestratorSurvivesAPIServerRestart) only once its informers have
// relisted, which their backoff can put tens of seconds away.
const defaultServiceAccountTimeout = 2 * time.Minute

// waitForDefaultServiceAccount waits until ns has its default
// ServiceAccount, without which the API server refuses every pod that names
// none (as Kubernetes' own e2e framework does before a test uses a
// namespace).
func waitForDefaultServiceAccount(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), defaultServiceAccountTimeout)
	defer cancel()
	begin := time.Now()
	for {
		_, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			if waited := time.Since(begin); waited > 5*time.Second {
				t.Logf("namespace %s: default ServiceAccount after %v", ns, waited.Round(time.Millisecond))
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("namespace %s: no default ServiceAccount after %v (is kube-controller-manager running? its log is under %s/logs): %v",
				ns, defaultServiceAccountTimeout, c.StateDir, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dumpNamespace logs every pod's phase and conditions and every event of ns.
func dumpNamespace(t *testing.T, c *cluster.Cluster, ns string) {
	ctx := contextWithTimeout(30 * time.Second)
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("dump %s: list pods: %v", ns, err)
	} else {
		for _, p := range pods.Items {
			var conds []string
			for _, cond := range p.Status.Conditions {
				conds = append(conds, fmt.Sprintf("%s=%s", cond.Type, cond.Status))
			}
			t.Logf("dump %s: pod %s node=%s phase=%s %s labels=%v", ns, p.Name, p.Spec.NodeName, p.Status.Phase, strings.Join(conds, ","), p.Labels)
		}
	}
	events, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("dump %s: list events: %v", ns, err)
		return
	}
	sort.Slice(events.Items, func(i, j int) bool {
		return events.Items[i].LastTimestamp.Before(&events.Items[j].LastTimestamp)
	})
	for _, e := range events.Items {
		t.Logf("dump %s: event %s %s/%s %s: %s", ns, e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
}

// timed logs how long a suite took, for the notes on suite times.
func timed(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() { t.Logf("TIMING %s: %v", t.Name(), time.Since(start).Round(time.Millisecond)) })
}

// helmOptionsLogger keeps helm's command lines out of the test log.
func helmOptionsLogger() *logger.Logger { return logger.Discard }

// simulatedPodsOnly skips a suite written for the api tier, where kwok
// "runs" every pod: it installs the chart's default images and NFS server
// or starts many projects, which a tier with real containers here cannot
// pull (no registry), run (no NFS in this kernel) or fit (2 cores). The
// kind tier's end-to-end suite is TestInClusterServerRunsProjects.
func simulatedPodsOnly(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	if c.Has(cluster.RealContainers) {
		t.Skipf("api-tier suite (simulated pods); the %s tier runs real containers: see TestInClusterServerRunsProjects", c.Tier)
	}
}
