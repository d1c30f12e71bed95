package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// TestHelmInstallEachValuesFile installs the chart with --wait on its
// defaults and on every values/ file that fits the tier, then runs
// `helm test`.
func TestHelmInstallEachValuesFile(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	cases := []struct {
		name string
		file string
		// skip says why a values file cannot be installed on this tier
		// ("" = it can).
		skip string
		// prepare adapts the cluster and values to the tier; it returns
		// values to set on top of the file's.
		prepare func(t *testing.T, ns string) map[string]string
	}{
		{name: "defaults"},
		{name: "kind", file: "kind.yaml"},
		{name: "onprem", file: "onprem.yaml", prepare: func(t *testing.T, ns string) map[string]string {
			// helm --wait waits for the LoadBalancer Service's address: on
			// tiers without a load balancer, the test plays MetalLB.
			if !c.Has(cluster.LoadBalancer) {
				fakeLoadBalancer(t, c, ns)
			}
			// The file names one fixed projects namespace; each install
			// here needs its own. It is kept by helm (resource-policy), so
			// the test deletes it.
			projects := ns + "-projects"
			// Storage mode nfs: the chart's volumes are cluster-scoped and kept.
			deleteNFSVolumesOnSuccess(t, c, ns, projects)
			t.Cleanup(func() {
				if !t.Failed() {
					_ = c.Client.CoreV1().Namespaces().Delete(contextWithTimeout(30*time.Second), projects, metav1.DeleteOptions{})
				}
			})
			return map[string]string{"projects.namespace": projects}
		}},
		{name: "gke", file: "gke.yaml", skip: "needs GKE node pools (nodeSelector cloud.google.com/gke-nodepool), " +
			"the StorageClasses standard-rwo/standard-rwx and a LoadBalancer address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" && c.Tier != cluster.TierExisting {
				t.Skipf("values/%s does not fit the %s tier: %s", tc.file, c.Tier, tc.skip)
			}
			timed(t)
			t.Parallel()
			ns := newNamespace(t, c, "install-"+tc.name, nil)
			var files []string
			if tc.file != "" {
				files = append(files, valuesFile(tc.file))
			}
			set := standinValues
			if tc.prepare != nil {
				set = mergeValues(set, tc.prepare(t, ns))
			}
			opts := helmOptions(t, c, ns, set, files...)
			install(t, c, ns, opts)

			dep, err := c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
			require.NoError(t, err)
			require.True(t, deploymentAvailable(dep), "server Deployment not available after --wait: %+v", dep.Status)
			tpl := liveTemplate(t, c, ns)
			if want := set["projects.namespace"]; want != "" {
				require.Equal(t, want, tpl.Namespace)
			} else {
				require.Equal(t, ns, tpl.Namespace)
			}
			require.Equal(t, releaseName, tpl.Release)
			if tc.name == "onprem" {
				// Mode nfs: the server's and the projects' claims are bound to their pre-bound volumes.
				requireNFSVolumesBound(t, c, ns, tpl.Namespace)
			}

			out, err := helm.RunHelmCommandAndGetOutputE(t, opts, "test", releaseName, "--timeout", "2m")
			require.NoError(t, err, "helm test: %s", out)
			require.Contains(t, out, "Phase:          Succeeded", out)
		})
	}
}

// TestHelmUpgradeRollbackUninstall changes values with `helm upgrade`,
// returns with `helm rollback`, and checks `helm uninstall` keeps the
// claims that hold data (helm.sh/resource-policy: keep).
func TestHelmUpgradeRollbackUninstall(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	ns := newNamespace(t, c, "lifecycle", nil)
	opts := helmOptions(t, c, ns, standinValues)
	install(t, c, ns, opts)
	before := liveTemplate(t, c, ns)
	depBefore, err := c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
	require.NoError(t, err)

	// Upgrade: a new project memory default must reach the template the
	// orchestrator reads (it reloads the mounted file) without rolling the
	// server: same Deployment generation, same pod, users stay connected.
	podBefore := serverPodUID(t, c, ns)
	changed := mergeValues(standinValues, map[string]string{"projects.resources.default.memoryMiB": "2000"})
	upOpts := helmOptions(t, c, ns, changed)
	require.NoError(t, helm.UpgradeE(t, upOpts, chartDir(), releaseName), "helm upgrade")
	after := liveTemplate(t, c, ns)
	require.Equal(t, int64(2000), after.Resources.Default.MemoryMiB)
	require.NotEqual(t, before.Resources.Default.MemoryMiB, after.Resources.Default.MemoryMiB)
	depAfter, err := c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, depBefore.Generation, depAfter.Generation, "a reloadable project setting rolled the server")
	require.Equal(t, podBefore, serverPodUID(t, c, ns), "a project-only upgrade replaced the server pod")
	require.True(t, deploymentAvailable(depAfter), "server not available after upgrade --wait: %+v", depAfter.Status)

	// A template field the orchestrator cannot reload (a timeout) rolls it.
	restart := mergeValues(changed, map[string]string{"projects.timeouts.startSeconds": "301"})
	require.NoError(t, helm.UpgradeE(t, helmOptions(t, c, ns, restart), chartDir(), releaseName), "helm upgrade")
	depRolled, err := c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Greater(t, depRolled.Generation, depAfter.Generation, "a template change needing a restart must roll the server pod")

	// Rollback to revision 1 restores the first template.
	require.NoError(t, helm.RollbackE(t, opts, releaseName, "1"), "helm rollback")
	rolled := liveTemplate(t, c, ns)
	require.Equal(t, before.Resources.Default.MemoryMiB, rolled.Resources.Default.MemoryMiB)
	history, err := helm.RunHelmCommandAndGetOutputE(t, opts, "history", releaseName)
	require.NoError(t, err)
	t.Logf("helm history:\n%s", history)
	require.Contains(t, history, "Rollback to 1")

	// Uninstall: the data claims stay, the rest goes.
	claims := []string{dataClaimName, projectsClaimName}
	for _, name := range claims {
		_, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err, "claim %s before uninstall", name)
	}
	require.NoError(t, helm.DeleteE(t, opts, releaseName, true), "helm uninstall")
	err = wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.AppsV1().Deployments(ns).Get(ctx, serverName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	require.NoError(t, err, "server Deployment still there after uninstall")
	_, err = c.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), templateConfigMap, metav1.GetOptions{})
	require.True(t, apierrors.IsNotFound(err), "template ConfigMap survived uninstall: %v", err)
	for _, name := range claims {
		pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err, "claim %s must survive helm uninstall", name)
		require.Nil(t, pvc.DeletionTimestamp, "claim %s is being deleted", name)
	}
}

// serverPodUID is the UID of the release's one server pod not being deleted.
func serverPodUID(t *testing.T, c *cluster.Cluster, ns string) types.UID {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
	require.NoError(t, err)
	var uids []types.UID
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			uids = append(uids, p.UID)
		}
	}
	require.Len(t, uids, 1, "server pods")
	return uids[0]
}

// liveTemplate reads the installed project pod template ConfigMap and
// decodes it strictly with the orchestrator's own parser.
func liveTemplate(t *testing.T, c *cluster.Cluster, ns string) *podtemplate.Template {
	t.Helper()
	cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), templateConfigMap, metav1.GetOptions{})
	require.NoError(t, err, "template ConfigMap")
	tpl, err := podtemplate.Parse([]byte(cm.Data[podtemplate.TemplateKey]))
	require.NoError(t, err, "installed template must load in the orchestrator")
	return tpl
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == "True" {
			return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == d.Status.Replicas
		}
	}
	return false
}

// fakeLoadBalancer gives every LoadBalancer Service of ns an address, as a
// cloud or MetalLB controller would: its spec.loadBalancerIP, else a
// documentation address. Runs until the test ends.
func fakeLoadBalancer(t *testing.T, c *cluster.Cluster, ns string) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	t.Cleanup(cancel)
	go func() {
		_ = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			svcs, err := c.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			for _, s := range svcs.Items {
				if s.Spec.Type != corev1.ServiceTypeLoadBalancer || len(s.Status.LoadBalancer.Ingress) > 0 {
					continue
				}
				ip := s.Spec.LoadBalancerIP //nolint:staticcheck // what the chart sets (onprem.yaml)
				if ip == "" {
					ip = "192.0.2.10"
				}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
				if _, err := c.Client.CoreV1().Services(ns).UpdateStatus(ctx, &s, metav1.UpdateOptions{}); err != nil {
					t.Logf("fake load balancer: %v", err)
				}
			}
			return false, nil
		})
	}()
}
