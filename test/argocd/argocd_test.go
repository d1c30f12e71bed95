// Package argocd syncs charts/cocalc with a real ArgoCD (bin/argocd, built
// by `make argocd` from ci/tools/argocd) on the test cluster and asserts
// through the Applications' status: the example Application as shipped
// becomes Synced and Healthy and stays so, self-heal, a values change rolls
// the server, runtime project pods are never pruned or reported, and no
// values change synced with prune: true, nor deleting the Application,
// deletes a data object; and the chart as published (bin/imagebuild publish)
// synced from a plain-HTTP OCI registry on loopback. Without bin/argocd the
// tests skip, saying so.
package argocd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

var repoRoot string

func TestMain(m *testing.M) {
	root, err := cluster.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd:", err)
		os.Exit(2)
	}
	repoRoot = root
	cluster.Main(m)
}

// Bounds: generous for a 2-core machine shared with other builds; the
// measured times are logged.
const (
	syncBound      = 5 * time.Minute
	reconcileBound = 3 * time.Minute
)

// Names the chart derives from the release name "cocalc".
const (
	serverName        = "cocalc-server"
	dataClaimName     = "cocalc-data"
	projectsClaimName = "cocalc-projects"
	templateConfigMap = "cocalc-project-template"
)

// One ArgoCD serves every Application of the package.
func TestArgoCD(t *testing.T) {
	a := startArgo(t)
	t.Run("ExampleApplication", func(t *testing.T) { testExampleApplication(t, a) })
	t.Run("DataSafety", func(t *testing.T) { testDataSafety(t, a) })
	t.Run("OCIChart", func(t *testing.T) { testOCIChart(t, a) })
}

// testExampleApplication applies ci/argocd/application.yaml as shipped
// (values/onprem.yaml: mode nfs, pre-bound volumes, a separate projects
// namespace) with only its source pointed at a local git repository.
func testExampleApplication(t *testing.T, a *argo) {
	repo := a.newRepo(t, "example")
	app := exampleApplication(t)
	pointAt(t, app, repo)
	name := app.GetName()
	ns, _, _ := unstructured.NestedString(app.Object, "spec", "destination", "namespace")
	projectsNS := "cocalc-projects" // values/onprem.yaml
	head := strings.TrimSpace(repo.git(t, "rev-parse", "HEAD"))
	fakeLoadBalancers(t, a.c, ns)

	t0 := time.Now()
	a.createApp(t, app)
	a.waitApp(t, name, syncBound, "Synced and Healthy", syncedHealthy(head))
	t.Logf("measured: Application created → Synced and Healthy in %s", time.Since(t0).Round(100*time.Millisecond))

	// The PersistentVolume controller binds the pre-bound claims; the
	// Application must stay Synced through that and every later reconcile.
	waitBound(t, a.c, time.Minute, ns, projectsNS)
	for i, s := range a.reconciles(t, name, 3, reconcileBound) {
		assert.Equal(t, "Synced", s.Sync.Status, "reconcile %d after the claims were bound: %s", i+1, s)
		assert.Equal(t, "Healthy", s.Health.Status, "reconcile %d: %s", i+1, s)
	}
	data := dataObjects(t, a.c, ns, projectsNS)
	require.Contains(t, data, dataKey{"PersistentVolumeClaim", ns, dataClaimName})
	require.Contains(t, data, dataKey{"Namespace", "", projectsNS})
	t.Logf("data objects: %v", data)

	t.Run("SelfHealRevertsAnEditOfTheServer", func(t *testing.T) {
		d, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
		require.NoError(t, err)
		want := d.Spec.Template.Spec.Containers[0].Image
		d.Spec.Template.Spec.Containers[0].Image = "example.invalid/drift:1"
		t0 := time.Now()
		_, err = a.c.Client.AppsV1().Deployments(ns).Update(t.Context(), d, metav1.UpdateOptions{FieldManager: "kubectl-edit"})
		require.NoError(t, err)
		a.waitApp(t, name, syncBound, "the edit reverted", func(s appStatus) error {
			d, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := d.Spec.Template.Spec.Containers[0].Image; got != want {
				return fmt.Errorf("image still %s", got)
			}
			return syncedHealthy(head)(s)
		})
		t.Logf("measured: manual edit → reverted by self-heal, Synced and Healthy in %s", time.Since(t0).Round(100*time.Millisecond))
	})

	// A project the orchestrator starts: a pod the chart does not render.
	orch := startOrchestrator(t, a, ns, templateConfigMap)
	id := startProject(t, orch)
	pod, err := a.c.Client.CoreV1().Pods(projectsNS).Get(t.Context(), id.PodName(), metav1.GetOptions{})
	require.NoError(t, err, "project pod")
	require.Equal(t, "cocalc-k8s", pod.Labels[podtemplate.LabelManagedBy])

	t.Run("ProjectPodsAreNeitherReportedNorOutOfSync", func(t *testing.T) {
		for i, s := range a.reconciles(t, name, 3, reconcileBound) {
			assert.Equal(t, "Synced", s.Sync.Status, "reconcile %d with a project running: %s", i+1, s)
			_, listed := s.resource("Pod", projectsNS, pod.Name)
			assert.False(t, listed, "reconcile %d: the project pod is one of the Application's resources", i+1)
		}
	})

	t.Run("ValuesChangeRollsTheServerAndKeepsData", func(t *testing.T) {
		before, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
		require.NoError(t, err)
		rev := repo.write(t, "values/onprem.yaml", withValues(t, repo, "values/onprem.yaml", map[string]any{
			"server": map[string]any{"extraEnv": []any{map[string]any{"name": "COCALC_GITOPS_TEST", "value": "rolled"}}},
		}), "server: an environment variable")
		t0 := time.Now()
		a.refresh(t, name)
		s := a.waitApp(t, name, syncBound, "the new commit synced", syncedTo(rev))
		phase, _ := s.operationFor(rev)
		require.Equal(t, "Succeeded", phase, "sync of the values change: %s", s)
		a.waitApp(t, name, syncBound, "Synced and Healthy at the new commit", func(s appStatus) error {
			d, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != *d.Spec.Replicas || d.Status.AvailableReplicas != *d.Spec.Replicas {
				return fmt.Errorf("server not rolled out: %+v", d.Status)
			}
			return syncedHealthy(rev)(s)
		})
		t.Logf("measured: values commit → synced, server rolled, Healthy in %s", time.Since(t0).Round(100*time.Millisecond))
		after, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Greater(t, after.Generation, before.Generation, "the pod template changed")
		assert.True(t, slices.ContainsFunc(after.Spec.Template.Spec.Containers[0].Env, func(e corev1.EnvVar) bool {
			return e.Name == "COCALC_GITOPS_TEST" && e.Value == "rolled"
		}), "the server runs with the new value")
		requireKept(t, a.c, data, "after the values change")

		// The sync (prune: true) left the project running.
		p, err := a.c.Client.CoreV1().Pods(projectsNS).Get(t.Context(), pod.Name, metav1.GetOptions{})
		require.NoError(t, err, "the project pod survives a sync with prune: true")
		assert.Equal(t, pod.UID, p.UID)
		assert.Nil(t, p.DeletionTimestamp)
	})

	t.Run("DeletingTheApplicationKeepsData", func(t *testing.T) {
		deleteApp(t, a, name)
		_, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the server Deployment was deleted with the Application (err %v)", err)
		requireKept(t, a.c, data, "after deleting the Application")
	})
}

// deleteApp deletes an Application (its resources finalizer deletes what it
// deployed) and waits until it is gone.
func deleteApp(t *testing.T, a *argo, name string) {
	t.Helper()
	t0 := time.Now()
	fg := metav1.DeletePropagationForeground
	require.NoError(t, a.dyn.Resource(applicationsGVR).Namespace(argoNamespace).Delete(t.Context(), name, metav1.DeleteOptions{PropagationPolicy: &fg}))
	ctx, cancel := context.WithTimeout(t.Context(), syncBound)
	defer cancel()
	require.NoError(t, poll(ctx, 500*time.Millisecond, func() error {
		_, err := a.dyn.Resource(applicationsGVR).Namespace(argoNamespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("Application %s still there (%v)", name, err)
	}), "delete Application %s", name)
	t.Logf("measured: Application %s deleted (cascade) in %s", name, time.Since(t0).Round(100*time.Millisecond))
}

// withValues returns the values file at path in repo with changes merged in
// (maps merge, everything else is replaced).
func withValues(t *testing.T, repo *gitRepo, path string, changes map[string]any) string {
	t.Helper()
	data, err := os.ReadFile(repo.dir + "/" + path)
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, yaml.Unmarshal(data, &v))
	merge(v, changes)
	out, err := yaml.Marshal(v)
	require.NoError(t, err)
	return string(out)
}

func merge(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

// A values change that drops a data object from the render, synced by a
// real ArgoCD with prune: true, must not delete it, nor a file in a
// project's home on it; nor must deleting the Application afterwards.
type switchCase struct {
	name string
	// valueFiles of the Application besides the test's own values/test.yaml.
	valueFiles []string
	base       map[string]any
	switched   map[string]any
	// prepare runs after the first sync: what the admin creates before the
	// switch (the claims existingClaim names).
	prepare func(t *testing.T, a *argo, ns string)
	// homes are the claims (in the release namespace) whose volume gets a
	// file in a project's home before the switch.
	homes []string
	// dropped are the data objects that leave the render with the switch:
	// ArgoCD must list them as requiring pruning, and leave them.
	dropped func(ns string) []dataKey
	// pruned are non-data objects that leave the render: ArgoCD must prune
	// them (proof that prune: true is in force).
	pruned func(ns string) []dataKey
	// projectsNamespace is a separate projects namespace, if any.
	projectsNamespace func(ns string) string
	// refused is set when the switch renders a different spec for a claim
	// of the same name: the API server refuses it as immutable, so ArgoCD's
	// comparison (a server-side dry run) fails with this text and no sync
	// runs at all until the old claim is dealt with by hand.
	refused string
	// unprotected is the control: the chart in the repository has no
	// Prune=false,Delete=false (as before issue 14), and the dropped data
	// objects must then be deleted by the sync (argo-cd issue #17819: the
	// resource-policy keep annotation alone does not stop a prune). It shows
	// that the annotation, nothing else, keeps the data in the other cases.
	unprotected bool
}

func testDataSafety(t *testing.T, a *argo) {
	nodeCIDRs := map[string]any{"networkPolicy": map[string]any{"nfs": map[string]any{"nodeCIDRs": []any{"172.31.250.0/24"}}}}
	cases := []switchCase{{
		name: "server.persistence.existingClaim",
		base: map[string]any{
			"storage": map[string]any{"mode": "pvc"},
			"server":  map[string]any{"podDisruptionBudget": map[string]any{"enabled": true}},
		},
		switched: map[string]any{"server": map[string]any{
			"persistence":         map[string]any{"existingClaim": "admin-data"},
			"podDisruptionBudget": map[string]any{"enabled": false},
		}},
		prepare: func(t *testing.T, a *argo, ns string) { createClaim(t, a, ns, "admin-data", corev1.ReadWriteOnce) },
		homes:   []string{dataClaimName},
		dropped: func(ns string) []dataKey { return []dataKey{{"PersistentVolumeClaim", ns, dataClaimName}} },
		pruned: func(ns string) []dataKey {
			return []dataKey{{"PodDisruptionBudget", ns, serverName}}
		},
	}, {
		name: "control: server.persistence.existingClaim without Prune=false",
		base: map[string]any{"storage": map[string]any{"mode": "pvc"}},
		switched: map[string]any{"server": map[string]any{
			"persistence": map[string]any{"existingClaim": "admin-data"},
		}},
		prepare:     func(t *testing.T, a *argo, ns string) { createClaim(t, a, ns, "admin-data", corev1.ReadWriteOnce) },
		dropped:     func(ns string) []dataKey { return []dataKey{{"PersistentVolumeClaim", ns, dataClaimName}} },
		unprotected: true,
	}, {
		name:     "storage.pvc.existingClaim",
		base:     map[string]any{"storage": map[string]any{"mode": "pvc"}},
		switched: map[string]any{"storage": map[string]any{"pvc": map[string]any{"existingClaim": "admin-homes"}}},
		prepare:  func(t *testing.T, a *argo, ns string) { createClaim(t, a, ns, "admin-homes", corev1.ReadWriteMany) },
		homes:    []string{projectsClaimName},
		dropped:  func(ns string) []dataKey { return []dataKey{{"PersistentVolumeClaim", ns, projectsClaimName}} },
	}, {
		name:     "storage.mode nfsServer to pvc",
		base:     merged(nodeCIDRs, map[string]any{"storage": map[string]any{"mode": "nfsServer"}}),
		switched: map[string]any{"storage": map[string]any{"mode": "pvc"}},
		homes:    []string{projectsClaimName},
		refused:  "spec is immutable",
	}, {
		name:     "storage.mode pvc to nfs",
		base:     map[string]any{"storage": map[string]any{"mode": "pvc"}},
		switched: map[string]any{"storage": map[string]any{"mode": "nfs", "nfs": map[string]any{"server": "192.0.2.5", "path": "/export/homes"}}},
		homes:    []string{projectsClaimName},
		refused:  "spec is immutable",
	}, {
		name:       "projects.createNamespace false",
		valueFiles: []string{"../../values/onprem.yaml"},
		base: map[string]any{
			"projects":     map[string]any{"createNamespace": true},
			"ingress":      map[string]any{"enabled": false},
			"loadBalancer": map[string]any{"enabled": false},
		},
		switched: map[string]any{"projects": map[string]any{"createNamespace": false}},
		dropped:  func(ns string) []dataKey { return []dataKey{{"Namespace", "", ns + "-projects"}} },
		projectsNamespace: func(ns string) string {
			return ns + "-projects"
		},
	}}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testSwitch(t, a, c, fmt.Sprintf("switch-%d", i+1))
		})
	}
}

func merged(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		merge(out, m)
	}
	return out
}

func testSwitch(t *testing.T, a *argo, c switchCase, name string) {
	ns := name
	repo := a.newRepo(t, name)
	base := merged(c.base)
	var projectsNS string
	if c.projectsNamespace != nil {
		projectsNS = c.projectsNamespace(ns)
		merge(base, map[string]any{"projects": map[string]any{"namespace": projectsNS}})
	}
	baseYAML, err := yaml.Marshal(base)
	require.NoError(t, err)
	if c.unprotected {
		helpers := "charts/cocalc/templates/_helpers.tpl"
		data, err := os.ReadFile(filepath.Join(repo.dir, helpers))
		require.NoError(t, err)
		line := "argocd.argoproj.io/sync-options: Prune=false,Delete=false\n"
		require.Contains(t, string(data), line)
		repo.write(t, helpers, strings.Replace(string(data), line, "", 1), "control: the chart without Prune=false,Delete=false")
	}
	rev1 := repo.write(t, "values/test.yaml", string(baseYAML), "test values")

	app := exampleApplication(t)
	pointAt(t, app, repo)
	app.SetName(name)
	require.NoError(t, unstructured.SetNestedField(app.Object, ns, "spec", "destination", "namespace"))
	files := []any{}
	for _, f := range c.valueFiles {
		files = append(files, f)
	}
	files = append(files, "../../values/test.yaml")
	require.NoError(t, unstructured.SetNestedSlice(app.Object, files, "spec", "source", "helm", "valueFiles"))
	unstructured.RemoveNestedField(app.Object, "spec", "source", "helm", "parameters")
	// The release name stays "cocalc" (object names as in the example); the
	// Application's own name differs per case.
	fakeLoadBalancers(t, a.c, ns)

	t0 := time.Now()
	a.createApp(t, app)
	a.waitApp(t, name, syncBound, "Synced and Healthy", syncedHealthy(rev1))
	t.Logf("measured: first sync → Synced and Healthy in %s", time.Since(t0).Round(100*time.Millisecond))
	namespaces := []string{ns}
	if projectsNS != "" {
		namespaces = append(namespaces, projectsNS)
	}
	waitBound(t, a.c, time.Minute, namespaces...)
	if c.prepare != nil {
		c.prepare(t, a, ns)
	}
	var files2 []string
	for _, claim := range c.homes {
		files2 = append(files2, homeFile(t, a.c, ns, claim))
	}
	data := dataObjects(t, a.c, namespaces...)
	t.Logf("data objects before the switch: %v", data)
	for _, k := range droppedOf(c, ns) {
		require.Contains(t, data, k, "the switch must drop an object the base renders")
	}

	switched := merged(base, c.switched)
	switchedYAML, err := yaml.Marshal(switched)
	require.NoError(t, err)
	rev2 := repo.write(t, "values/test.yaml", string(switchedYAML), "switch: "+c.name)
	t0 = time.Now()
	a.refresh(t, name)
	var phase string
	if c.refused != "" {
		s := a.waitApp(t, name, syncBound, "the switch refused by the comparison", func(s appStatus) error {
			for _, cond := range s.Conditions {
				if cond.Type == "ComparisonError" && strings.Contains(cond.Message, c.refused) {
					return nil
				}
			}
			return fmt.Errorf("no ComparisonError with %q", c.refused)
		})
		t.Logf("measured: switch commit → refused in %s: %s", time.Since(t0).Round(100*time.Millisecond), s)
		// It stays refused: no sync of the switch is ever attempted.
		for i, s := range a.reconciles(t, name, 2, reconcileBound) {
			_, started := s.operationFor(rev2)
			ran := s.OperationState != nil && s.OperationState.SyncResult != nil && s.OperationState.SyncResult.Revision == rev2
			assert.False(t, ran || started, "reconcile %d: a sync of the refused switch ran: %s", i+1, s)
			assert.NotEqual(t, "Synced", s.Sync.Status, "reconcile %d: %s", i+1, s)
		}
	} else {
		s := a.waitApp(t, name, syncBound, "the switch synced", syncedTo(rev2))
		phase, _ = s.operationFor(rev2)
		t.Logf("measured: switch commit → sync %s in %s: %s", phase, time.Since(t0).Round(100*time.Millisecond), s)
		require.Equal(t, "Succeeded", phase, "the switch synced: %s", s)
		if c.unprotected {
			ctx, cancel := context.WithTimeout(t.Context(), syncBound)
			defer cancel()
			for _, k := range droppedOf(c, ns) {
				require.NoError(t, poll(ctx, time.Second, func() error {
					pvc, err := a.c.Client.CoreV1().PersistentVolumeClaims(k.Namespace).Get(t.Context(), k.Name, metav1.GetOptions{})
					if apierrors.IsNotFound(err) || (err == nil && pvc.DeletionTimestamp != nil) {
						return nil
					}
					return fmt.Errorf("%s still there (%v)", k, err)
				}), "control: without Prune=false the sync deletes %s", k)
				t.Logf("control: without Prune=false,Delete=false the sync deleted %s (%s after the commit)", k, time.Since(t0).Round(100*time.Millisecond))
			}
			deleteApp(t, a, name)
			return
		}
		// One more reconcile: whatever the controller does after the sync has happened.
		a.reconciles(t, name, 1, reconcileBound)
	}
	requireKept(t, a.c, data, "after the switch")
	for _, f := range files2 {
		_, err := os.Stat(f)
		assert.NoError(t, err, "a file in a project's home after the switch")
	}
	s, err := a.status(t.Context(), name)
	require.NoError(t, err)
	for _, k := range droppedOf(c, ns) {
		r, ok := s.resource(k.Kind, k.Namespace, k.Name)
		if assert.True(t, ok, "%s is still listed by the Application: %s", k, s) {
			assert.True(t, r.RequiresPruning, "%s is reported as requiring pruning: %s", k, s)
		}
	}
	if c.pruned != nil {
		for _, k := range c.pruned(ns) {
			assert.False(t, exists(t, a, k), "%s (not data) was pruned: %s", k, s)
		}
	}

	deleteApp(t, a, name)
	requireKept(t, a.c, data, "after deleting the Application")
	for _, f := range files2 {
		_, err := os.Stat(f)
		assert.NoError(t, err, "a file in a project's home after deleting the Application")
	}
}

func droppedOf(c switchCase, ns string) []dataKey {
	if c.dropped == nil {
		return nil
	}
	return c.dropped(ns)
}

// createClaim makes a claim as an admin would before pointing existingClaim
// at it.
func createClaim(t *testing.T, a *argo, ns, name string, mode corev1.PersistentVolumeAccessMode) {
	t.Helper()
	_, err := a.c.Client.CoreV1().PersistentVolumeClaims(ns).Create(t.Context(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{mode},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err, "create claim %s/%s", ns, name)
}

// exists reports whether a (non-data) object of the kinds the cases prune is there.
func exists(t *testing.T, a *argo, k dataKey) bool {
	t.Helper()
	var err error
	switch k.Kind {
	case "PodDisruptionBudget":
		_, err = a.c.Client.PolicyV1().PodDisruptionBudgets(k.Namespace).Get(t.Context(), k.Name, metav1.GetOptions{})
	case "StatefulSet":
		_, err = a.c.Client.AppsV1().StatefulSets(k.Namespace).Get(t.Context(), k.Name, metav1.GetOptions{})
	default:
		t.Fatalf("exists: kind %s not handled", k.Kind)
	}
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return true
}
