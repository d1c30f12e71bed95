package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// ArgoCD's field manager for server-side apply and its annotation tracking
// (the default since ArgoCD 3.0): "<app>:<group>/<kind>:<namespace>/<name>".
const (
	argoFieldManager    = "argocd-controller"
	argoTrackingID      = "argocd.argoproj.io/tracking-id"
	argoInstanceLabel   = "app.kubernetes.io/instance" // ArgoCD's label tracking
	argoApplicationName = releaseName
)

// renderChart runs `helm template <release> charts/cocalc --namespace <ns>`
// with opts' values, as ArgoCD's repo server does, and returns the objects
// ArgoCD would sync: helm hooks (here the `helm test` pod) are not part of
// the desired state.
func renderChart(t *testing.T, opts *helm.Options) []*unstructured.Unstructured {
	t.Helper()
	out, err := helm.RenderTemplateE(t, opts, chartDir(), releaseName, nil, opts.ExtraArgs["template"]...)
	require.NoError(t, err, "helm template")
	all, err := cluster.DecodeYAML([]byte(out))
	require.NoError(t, err, "decode rendered manifest")
	var objs []*unstructured.Unstructured
	for _, u := range all {
		if _, hook := u.GetAnnotations()["helm.sh/hook"]; !hook {
			objs = append(objs, u)
		}
	}
	require.NotEmpty(t, objs)
	return objs
}

// applier applies objects server-side through the dynamic client.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	ns     string
}

func newApplier(t *testing.T, c *cluster.Cluster, ns string) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	require.NoError(t, err)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client.Discovery()))
	return &applier{dyn: dyn, mapper: mapper, ns: ns}
}

// resource resolves an object's REST endpoint, defaulting its namespace
// to the destination namespace the way ArgoCD does.
func (a *applier) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameRoot {
		return a.dyn.Resource(m.Resource), nil
	}
	if u.GetNamespace() == "" {
		u.SetNamespace(a.ns)
	}
	return a.dyn.Resource(m.Resource).Namespace(u.GetNamespace()), nil
}

func (a *applier) apply(t *testing.T, u *unstructured.Unstructured, dryRun bool) (*unstructured.Unstructured, error) {
	t.Helper()
	ri, err := a.resource(u)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return nil, err
	}
	opts := metav1.PatchOptions{FieldManager: argoFieldManager, Force: ptrTo(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	return ri.Patch(t.Context(), u.GetName(), types.ApplyPatchType, data, opts)
}

func ptrTo[T any](v T) *T { return &v }

func objectKey(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s/%s:%s/%s", u.GroupVersionKind().Group, u.GetKind(), u.GetNamespace(), u.GetName())
}

// track sets ArgoCD's tracking annotation, as its controller does on sync.
func track(u *unstructured.Unstructured) {
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[argoTrackingID] = fmt.Sprintf("%s:%s/%s:%s/%s", argoApplicationName, u.GroupVersionKind().Group, u.GetKind(), u.GetNamespace(), u.GetName())
	u.SetAnnotations(ann)
}

// normalized drops what ArgoCD ignores when comparing: status and the
// metadata the API server maintains. Generation stays: a desired state that
// would change a spec bumps it.
func normalized(u *unstructured.Unstructured) map[string]any {
	c := u.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "status")
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "creationTimestamp", "selfLink"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	return c.Object
}

// TestArgoCDSyncHasNoDiff syncs the chart the way ArgoCD does (helm
// template, server-side apply as "argocd-controller", tracking annotation),
// lets the orchestrator start a project, then renders again and compares
// with the live objects. The comparison is ArgoCD's server-side diff: the
// desired object is applied with dryRun=All and the result compared with
// the live object, so defaults, quantity normalisation and admission are
// the API server's own, not a re-implementation of them. Any difference
// is "OutOfSync".
func TestArgoCDSyncHasNoDiff(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	ns := newNamespace(t, c, "argocd", nil)
	// No ephemeral-storage limit: the api tier's simulated nodes have none.
	set := mergeValues(standinValues, map[string]string{"projects.resources.ephemeralStorageLimit": ""})
	opts := helmOptions(t, c, ns, set)
	app := newApplier(t, c, ns)

	desired := renderChart(t, opts)
	rendered := map[string]bool{}
	for _, u := range desired {
		track(u)
		_, err := app.apply(t, u, false)
		require.NoError(t, err, "sync %s", objectKey(u))
		rendered[objectKey(u)] = true
	}
	t.Logf("synced %d objects", len(desired))

	// The orchestrator (as the ServiceAccount) starts a project: runtime
	// state ArgoCD must neither own nor report.
	tplFile, _ := orchestratorTemplate(t, c, ns)
	orch := startOrchestrator(t, serviceAccountKubeconfig(t, serviceAccountConfig(t, c, ns)), tplFile)
	id := newProjectID()
	st, err := orch.api.Start(t.Context(), id, orchestrator.StartRequest{})
	require.NoError(t, err, "start a project")
	require.Equal(t, "running", string(st.State))

	// Re-render (a new `helm template`, as on every ArgoCD refresh) and diff.
	require.Empty(t, argoDiff(t, app, renderChart(t, opts), rendered), "OutOfSync after sync")

	// The comparison can fail: drift the template ConfigMap as another
	// client would, see it OutOfSync, sync again, see it clean.
	cm, err := c.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), templateConfigMap, metav1.GetOptions{})
	require.NoError(t, err)
	cm.Data[podtemplate.TemplateKey] += "\n# drift\n"
	_, err = c.Client.CoreV1().ConfigMaps(ns).Update(t.Context(), cm, metav1.UpdateOptions{FieldManager: "e2e-drift"})
	require.NoError(t, err)
	drift := argoDiff(t, app, renderChart(t, opts), rendered)
	require.Len(t, drift, 1, "exactly the drifted ConfigMap is OutOfSync: %v", drift)
	require.Contains(t, drift[0], templateConfigMap)
	t.Logf("drift detected as expected:\n%s", drift[0])
	for _, u := range renderChart(t, opts) {
		track(u)
		_, err := app.apply(t, u, false)
		require.NoError(t, err, "re-sync %s", objectKey(u))
	}
	require.Empty(t, argoDiff(t, app, renderChart(t, opts), rendered), "OutOfSync after re-sync")

	// Project pods are not part of the app.
	pods := projectPods(t, c, ns, id)
	require.Len(t, pods, 1)
	for _, p := range pods {
		key := fmt.Sprintf("/Pod:%s/%s", p.Namespace, p.Name)
		require.False(t, rendered[key], "project pod %s is in the rendered set", p.Name)
		require.NotContains(t, p.Annotations, argoTrackingID, "project pod %s carries ArgoCD's tracking annotation", p.Name)
		require.NotContains(t, p.Labels, argoInstanceLabel, "project pod %s carries ArgoCD's tracking label", p.Name)
		require.Equal(t, podtemplate.ComponentProject, p.Labels[podtemplate.LabelComponent])
	}
}

// argoDiff is ArgoCD's server-side diff of desired objects against the
// live ones: one entry per OutOfSync object.
func argoDiff(t *testing.T, app *applier, desired []*unstructured.Unstructured, rendered map[string]bool) []string {
	t.Helper()
	var outOfSync []string
	for _, u := range desired {
		track(u)
		want, err := app.apply(t, u, true)
		require.NoError(t, err, "dry-run apply %s", objectKey(u))
		ri, err := app.resource(u)
		require.NoError(t, err)
		live, err := ri.Get(t.Context(), u.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			outOfSync = append(outOfSync, objectKey(u)+": missing")
			continue
		}
		require.NoError(t, err)
		if d := diffObjects(normalized(live), normalized(want)); d != "" {
			outOfSync = append(outOfSync, objectKey(u)+":\n"+d)
		}
		if !rendered[objectKey(u)] {
			outOfSync = append(outOfSync, objectKey(u)+": rendered only the second time (non-deterministic template)")
		}
	}
	return outOfSync
}

// diffObjects returns a line per path where a and b differ ("" if equal).
func diffObjects(a, b map[string]any) string {
	var lines []string
	var walk func(path string, x, y any)
	walk = func(path string, x, y any) {
		xm, xok := x.(map[string]any)
		ym, yok := y.(map[string]any)
		if xok && yok {
			keys := map[string]bool{}
			for k := range xm {
				keys[k] = true
			}
			for k := range ym {
				keys[k] = true
			}
			sorted := make([]string, 0, len(keys))
			for k := range keys {
				sorted = append(sorted, k)
			}
			sort.Strings(sorted)
			for _, k := range sorted {
				walk(path+"."+k, xm[k], ym[k])
			}
			return
		}
		xj, _ := json.Marshal(x)
		yj, _ := json.Marshal(y)
		if !bytes.Equal(xj, yj) {
			lines = append(lines, fmt.Sprintf("  %s: live %s, desired %s", path, xj, yj))
		}
	}
	walk("", a, b)
	return strings.Join(lines, "\n")
}

// TestChartPassesServerValidation server-side dry-runs every object the
// chart renders (no workaround) for the values that fit this tier: what
// `helm template` and the render suite cannot see.
func TestChartPassesServerValidation(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	for _, tc := range []struct{ name, file string }{{"defaults", ""}, {"kind", "kind.yaml"}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNamespace(t, c, "validate-"+tc.name, nil)
			var files []string
			if tc.file != "" {
				files = append(files, valuesFile(tc.file))
			}
			// The admission policy too: `helm template` renders it only when told the API exists, and the
			// API server compiles its CEL on create.
			set := mergeValues(standinValues, map[string]string{"admissionPolicy.enabled": "true"})
			opts := helmOptions(t, c, ns, set, files...)
			opts.ExtraArgs = nil // the chart as it is
			app := newApplier(t, c, ns)
			for _, u := range renderChart(t, opts) {
				_, err := app.apply(t, u, true)
				require.NoError(t, err, "the API server rejects %s", objectKey(u))
			}
		})
	}
}

// argoApplication mirrors the argoproj.io/v1alpha1 Application fields the
// example uses. Importing github.com/argoproj/argo-cd/v3 for its types
// would pull its whole module graph (gitops-engine, k8s.io/kubernetes
// replaces) into the root go.mod; a strict decode into this mirror fails
// on any field it does not know, so a typo in the example still fails.
type argoApplication struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Annotations map[string]string `json:"annotations"`
		Finalizers  []string          `json:"finalizers"`
	} `json:"metadata"`
	Spec struct {
		Project string `json:"project"`
		Source  struct {
			RepoURL        string `json:"repoURL"`
			TargetRevision string `json:"targetRevision"`
			Path           string `json:"path"`
			Helm           struct {
				ReleaseName string   `json:"releaseName"`
				ValueFiles  []string `json:"valueFiles"`
				Parameters  []struct {
					Name        string `json:"name"`
					Value       string `json:"value"`
					ForceString bool   `json:"forceString,omitempty"`
				} `json:"parameters"`
			} `json:"helm"`
		} `json:"source"`
		Destination struct {
			Server    string `json:"server"`
			Namespace string `json:"namespace"`
		} `json:"destination"`
		SyncPolicy struct {
			Automated *struct {
				Prune    bool `json:"prune"`
				SelfHeal bool `json:"selfHeal"`
			} `json:"automated"`
			SyncOptions []string `json:"syncOptions"`
		} `json:"syncPolicy"`
	} `json:"spec"`
}

// TestArgoCDApplicationExample checks ci/argocd/application.yaml parses
// strictly, points at this chart and existing value files, and that the
// chart renders with them (release name and namespace as ArgoCD passes).
func TestArgoCDApplicationExample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "ci", "argocd", "application.yaml"))
	require.NoError(t, err)
	var app argoApplication
	require.NoError(t, yaml.UnmarshalStrict(data, &app), "decode the Application strictly")
	require.Equal(t, "argoproj.io/v1alpha1", app.APIVersion)
	require.Equal(t, "Application", app.Kind)
	require.NotEmpty(t, app.Metadata.Name)
	src := app.Spec.Source
	require.Equal(t, "charts/cocalc", src.Path)
	require.NotEqual(t, "HEAD", src.TargetRevision)
	require.Equal(t, releaseName, src.Helm.ReleaseName)
	require.NotEmpty(t, app.Spec.Destination.Namespace)
	require.Contains(t, app.Spec.SyncPolicy.SyncOptions, "ServerSideApply=true")
	require.Contains(t, app.Spec.SyncPolicy.SyncOptions, "CreateNamespace=true")

	args := []string{"template", src.Helm.ReleaseName, filepath.Join(repoRoot, src.Path), "--namespace", app.Spec.Destination.Namespace}
	for _, f := range src.Helm.ValueFiles {
		path := filepath.Join(repoRoot, src.Path, f)
		_, err := os.Stat(path)
		require.NoError(t, err, "value file %s (relative to the chart path)", f)
		args = append(args, "--values", path)
	}
	for _, p := range src.Helm.Parameters {
		args = append(args, "--set", p.Name+"="+p.Value)
	}
	out, err := helm.RunHelmCommandAndGetStdOutE(t, &helm.Options{Logger: helmOptionsLogger()}, args[0], args[1:]...)
	require.NoError(t, err, "helm %s", strings.Join(args, " "))
	require.Contains(t, out, "kind: Deployment")
}
