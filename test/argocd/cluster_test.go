package argocd

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// dataKey names a data object: kind, namespace, name.
type dataKey struct{ Kind, Namespace, Name string }

func (k dataKey) String() string { return fmt.Sprintf("%s %s/%s", k.Kind, k.Namespace, k.Name) }

// dataObjects is every data object of the given namespaces as it is now:
// their PersistentVolumeClaims, the PersistentVolumes bound or pre-bound to
// those claims, and the namespaces themselves, with their UIDs (a deleted and
// re-created object has a new one).
func dataObjects(t *testing.T, c *cluster.Cluster, namespaces ...string) map[dataKey]types.UID {
	t.Helper()
	ctx := t.Context()
	out := map[dataKey]types.UID{}
	in := map[string]bool{}
	for _, ns := range namespaces {
		in[ns] = true
		n, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		require.NoError(t, err, "namespace %s", ns)
		out[dataKey{"Namespace", "", ns}] = n.UID
		pvcs, err := c.Client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for _, p := range pvcs.Items {
			out[dataKey{"PersistentVolumeClaim", ns, p.Name}] = p.UID
		}
	}
	pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, pv := range pvs.Items {
		if ref := pv.Spec.ClaimRef; ref != nil && in[ref.Namespace] {
			out[dataKey{"PersistentVolume", "", pv.Name}] = pv.UID
		}
	}
	return out
}

// requireKept fails unless every object of before still exists with the
// same UID and is not being deleted.
func requireKept(t *testing.T, c *cluster.Cluster, before map[dataKey]types.UID, when string) {
	t.Helper()
	ctx := t.Context()
	keys := make([]dataKey, 0, len(before))
	for k := range before {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		var meta metav1.Object
		var err error
		switch k.Kind {
		case "Namespace":
			meta, err = c.Client.CoreV1().Namespaces().Get(ctx, k.Name, metav1.GetOptions{})
		case "PersistentVolumeClaim":
			meta, err = c.Client.CoreV1().PersistentVolumeClaims(k.Namespace).Get(ctx, k.Name, metav1.GetOptions{})
		case "PersistentVolume":
			meta, err = c.Client.CoreV1().PersistentVolumes().Get(ctx, k.Name, metav1.GetOptions{})
		}
		if !assert.NoError(t, err, "%s: %s is gone", when, k) {
			continue
		}
		assert.Equal(t, before[k], meta.GetUID(), "%s: %s was deleted and re-created", when, k)
		assert.Nil(t, meta.GetDeletionTimestamp(), "%s: %s is being deleted", when, k)
	}
}

// homeFile writes a file into a project's home on the claim's volume (the
// api tier's hostPath provisioner: the directory goes when the volume is
// deleted) and returns its path.
func homeFile(t *testing.T, c *cluster.Cluster, ns, claim string) string {
	t.Helper()
	pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), claim, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, pvc.Spec.VolumeName, "claim %s/%s not bound", ns, claim)
	pv, err := c.Client.CoreV1().PersistentVolumes().Get(t.Context(), pvc.Spec.VolumeName, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotNil(t, pv.Spec.HostPath, "volume %s of %s/%s is not the provisioner's", pv.Name, ns, claim)
	path := filepath.Join(pv.Spec.HostPath.Path, newProjectID().String(), "notes.txt")
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte("a project's work\n"), 0o644))
	return path
}

// waitBound waits until every claim of the namespaces is Bound.
func waitBound(t *testing.T, c *cluster.Cluster, bound time.Duration, namespaces ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	require.NoError(t, poll(ctx, 500*time.Millisecond, func() error {
		for _, ns := range namespaces {
			pvcs, err := c.Client.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, p := range pvcs.Items {
				if p.Status.Phase != corev1.ClaimBound {
					return fmt.Errorf("claim %s/%s is %s", ns, p.Name, p.Status.Phase)
				}
			}
		}
		return nil
	}), "claims bound")
}

// fakeLoadBalancers gives every LoadBalancer Service and Ingress of ns an
// address, as MetalLB and an ingress controller would (ArgoCD reports both
// Progressing until they have one). Runs until the test ends.
func fakeLoadBalancers(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if svcs, err := c.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{}); err == nil {
				for _, s := range svcs.Items {
					if s.Spec.Type != corev1.ServiceTypeLoadBalancer || len(s.Status.LoadBalancer.Ingress) > 0 {
						continue
					}
					ip := s.Spec.LoadBalancerIP
					if ip == "" {
						ip = "192.0.2.10"
					}
					s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
					_, _ = c.Client.CoreV1().Services(ns).UpdateStatus(ctx, &s, metav1.UpdateOptions{})
				}
			}
			if ings, err := c.Client.NetworkingV1().Ingresses(ns).List(ctx, metav1.ListOptions{}); err == nil {
				for _, i := range ings.Items {
					if len(i.Status.LoadBalancer.Ingress) > 0 {
						continue
					}
					i.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.11"}}
					_, _ = c.Client.NetworkingV1().Ingresses(ns).UpdateStatus(ctx, &i, metav1.UpdateOptions{})
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
}

// startOrchestrator runs bin/cocalc-k8s serve against the cluster with the
// template the chart installed in ns (homes moved to a temporary directory:
// the process runs here, not in the server pod) and returns its API.
func startOrchestrator(t *testing.T, a *argo, ns, configMap string) *httpapi.Client {
	t.Helper()
	bin := filepath.Join(repoRoot, "bin", "cocalc-k8s")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("orchestrator binary missing: %v (run `make build`)", err)
	}
	cm, err := a.c.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), configMap, metav1.GetOptions{})
	require.NoError(t, err, "template ConfigMap")
	tpl, err := podtemplate.Parse([]byte(cm.Data[podtemplate.TemplateKey]))
	require.NoError(t, err)
	tpl.Storage.ServerPath = t.TempDir()
	// The api tier's simulated nodes have no ephemeral storage: a pod that
	// asks for some is never scheduled there (test/e2e installs with the
	// value empty; the example Application is applied as shipped).
	if !a.c.Has(cluster.RealContainers) {
		tpl.Resources.EphemeralStorageLimit = ""
	}
	data, err := yaml.Marshal(tpl)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "template.yaml")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	api := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	health := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := a.start(t, "orchestrator", bin, []string{"serve",
		"--kubeconfig", a.c.KubeconfigPath, "--template", file,
		"--listen", api, "--health-listen", health, "--shutdown-timeout", "5s",
	}, []string{"HOME=" + t.TempDir()})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, p.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+health+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	}), "orchestrator ready")
	return &httpapi.Client{BaseURL: "http://" + api, HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

func startProject(t *testing.T, api *httpapi.Client) project.ID {
	t.Helper()
	id := newProjectID()
	st, err := api.Start(t.Context(), id, orchestrator.StartRequest{})
	require.NoError(t, err, "start project %s", id)
	require.Equal(t, "running", string(st.State))
	return id
}

// newProjectID is a random version 4 UUID, the form of CoCalc's project ids.
func newProjectID() project.ID {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return project.MustParse(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}
