package argocd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/ocireg"
)

// The release version the OCI test publishes.
const ociVersion = "0.0.1-argo"

// testOCIChart: the chart as a release publishes it (bin/imagebuild publish,
// what `make publish` runs: the orchestrator image pushed, the chart packaged
// with its repository:tag@digest in values.yaml and pushed as an OCI
// artifact) into a plain-HTTP registry on loopback (bin/registry), synced by
// ArgoCD from there: a Helm repository Secret with enableOCI, the
// Application's source that repository, chart cocalc and the exact version.
//
// Plain HTTP: ArgoCD v2.14 has no setting for it (insecureOCIForceHttp came
// later); its repo server pulls with `helm pull oci://… --version …`
// (util/helm/cmd.go PullOCI, no --plain-http) and helm 3 (bin/helm) retries
// a registry that answers HTTPS with HTTP over HTTP (pkg/registry/fallback.go).
// So the Secret must not set insecure: "true": that passes
// --insecure-skip-tls-verify, with which helm 3 builds a client without that
// fallback and the pull fails ("server gave HTTP response to HTTPS client").
// A version constraint as targetRevision cannot work at all: ArgoCD lists the
// tags itself (util/helm/client.go GetTags, oras without PlainHTTP), HTTPS
// only; the second Application shows that.
func testOCIChart(t *testing.T, a *argo) {
	for _, b := range []struct{ name, hint string }{{"registry", "make tools"}, {"imagebuild", "make bin/imagebuild"}} {
		if _, err := os.Stat(filepath.Join(repoRoot, "bin", b.name)); err != nil {
			t.Fatalf("bin/%s missing: %v (run `%s`)", b.name, err, b.hint)
		}
	}
	addr := ocireg.Start(t, filepath.Join(repoRoot, "bin", "registry"))
	registry := addr + "/cocalc-argo"

	// Only the orchestrator's layout (make image-orchestrator): out/images's
	// if built, else built here.
	layouts := t.TempDir()
	if built := filepath.Join(repoRoot, "out", "images", "orchestrator"); fileExists(filepath.Join(built, "index.json")) {
		require.NoError(t, os.CopyFS(filepath.Join(layouts, "orchestrator"), os.DirFS(built)))
	} else {
		runIn(t, repoRoot, "make", "-s", "image-orchestrator", "IMAGES_OUT="+layouts, "VERSION="+ociVersion)
	}
	t0 := time.Now()
	out := runIn(t, repoRoot, filepath.Join(repoRoot, "bin", "imagebuild"), "publish", "-registry", registry, "-version", ociVersion,
		"-layouts", layouts, "-chart", filepath.Join(repoRoot, "charts", "cocalc"), "-helm", filepath.Join(repoRoot, "bin", "helm"))
	m := regexp.MustCompile(`(?m)^(\S+/orchestrator):(\S+)@(sha256:[0-9a-f]{64})$`).FindStringSubmatch(out)
	require.NotNil(t, m, "publish output names the orchestrator image:\n%s", out)
	require.Equal(t, registry+"/orchestrator:"+ociVersion, m[1]+":"+m[2], "publish output")
	want := m[1] + ":" + m[2] + "@" + m[3]
	// The packaged chart's values, as the registry serves them.
	var values struct {
		Orchestrator struct {
			Image struct{ Repository, Tag, Digest string }
		}
	}
	require.NoError(t, yaml.Unmarshal([]byte(runIn(t, t.TempDir(), filepath.Join(repoRoot, "bin", "helm"), "show", "values",
		"oci://"+registry+"/charts/cocalc", "--version", ociVersion, "--plain-http")), &values))
	img := values.Orchestrator.Image
	require.Equal(t, want, img.Repository+":"+img.Tag+"@"+img.Digest, "the packaged chart's orchestrator image is the pushed one")
	t.Logf("measured: published in %s: %s; chart oci://%s/charts/cocalc:%s", time.Since(t0).Round(100*time.Millisecond), want, registry, ociVersion)

	_, err := a.c.Client.CoreV1().Secrets(argoNamespace).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cocalc-oci", Labels: map[string]string{"argocd.argoproj.io/secret-type": "repository"}},
		StringData: map[string]string{"type": "helm", "name": "cocalc-oci", "url": registry + "/charts", "enableOCI": "true"},
	}, metav1.CreateOptions{})
	require.NoError(t, err, "repository Secret")
	t.Cleanup(func() {
		_ = a.c.Client.CoreV1().Secrets(argoNamespace).Delete(context.Background(), "cocalc-oci", metav1.DeleteOptions{})
	})

	// The example Application with the OCI chart as its source: values/onprem.yaml
	// inline (an OCI source has no repository files to name), its own
	// namespaces so nothing is shared with ExampleApplication's release.
	onprem, err := os.ReadFile(filepath.Join(repoRoot, "values", "onprem.yaml"))
	require.NoError(t, err)
	var onpremValues map[string]any
	require.NoError(t, yaml.Unmarshal(onprem, &onpremValues))
	ns, projectsNS := "cocalc-oci", "cocalc-oci-projects"
	ociApp := func(name, revision string) *unstructured.Unstructured {
		app := exampleApplication(t)
		app.SetName(name)
		require.NoError(t, unstructured.SetNestedField(app.Object, ns, "spec", "destination", "namespace"))
		src, _, _ := unstructured.NestedMap(app.Object, "spec", "source")
		delete(src, "path")
		src["repoURL"], src["chart"], src["targetRevision"] = registry+"/charts", "cocalc", revision
		helm := src["helm"].(map[string]any)
		delete(helm, "valueFiles")
		helm["valuesObject"] = onpremValues
		helm["parameters"] = append(helm["parameters"].([]any), map[string]any{"name": "projects.namespace", "value": projectsNS})
		require.NoError(t, unstructured.SetNestedMap(app.Object, src, "spec", "source"))
		return app
	}
	fakeLoadBalancers(t, a.c, ns)

	t0 = time.Now()
	a.createApp(t, ociApp("cocalc-oci", ociVersion))
	a.waitApp(t, "cocalc-oci", syncBound, "Synced and Healthy", syncedHealthy(ociVersion))
	t.Logf("measured: OCI Application created → Synced and Healthy in %s", time.Since(t0).Round(100*time.Millisecond))
	d, err := a.c.Client.AppsV1().Deployments(ns).Get(t.Context(), serverName, metav1.GetOptions{})
	require.NoError(t, err)
	var got string
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "orchestrator" {
			got = c.Image
		}
	}
	assert.Equal(t, want, got, "the server's orchestrator container runs the published image by digest")

	t.Run("VersionConstraintNeedsHTTPS", func(t *testing.T) {
		a.createApp(t, ociApp("cocalc-oci-constraint", ">=0.0.1-0"))
		s := a.waitApp(t, "cocalc-oci-constraint", syncBound, "a ComparisonError", func(s appStatus) error {
			for _, c := range s.Conditions {
				if c.Type == "ComparisonError" {
					return nil
				}
			}
			return fmt.Errorf("no ComparisonError")
		})
		t.Logf("targetRevision >=0.0.1-0: %s", s)
		assert.Contains(t, s.String(), "server gave HTTP response to HTTPS client", "ArgoCD lists the tags over HTTPS only")
		deleteApp(t, a, "cocalc-oci-constraint")
	})

	deleteApp(t, a, "cocalc-oci")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// runIn runs a command in dir (helm's homes in a temporary directory) and
// returns its standard output.
func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	require.NoError(t, err, "%s %s:\n%s%s", name, strings.Join(args, " "), b, stderr.String())
	return string(b)
}
