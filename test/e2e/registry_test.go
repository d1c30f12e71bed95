package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// TestInstallFromRegistry is issue 13's proof on a cluster: the release
// an admin installs comes from a registry, as published by `imagebuild
// publish` (what `make publish` runs), and the node's containerd pulls
// every image from it through a registry host entry (no `kind load`).
//
// The registry is CNCF distribution inside the kind node
// (cluster.StartNodeRegistry). Published twice, 0.0.1-kind and 0.0.2-kind:
// the orchestrator image as `make images` builds it (the real one, not the
// docker-built dev image the other kind tests load), and the stand-in hub
// and project images as the server and project images (the CoCalc images
// cannot be built here). Then `helm install` of the OCI chart at 0.0.1-kind
// runs a project, and `helm upgrade` to 0.0.2-kind keeps its home.
func TestInstallFromRegistry(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	ctx := t.Context()

	start := time.Now()
	out, err := exec.CommandContext(ctx, "make", "-C", repoRoot, "image-orchestrator", filepath.Join(repoRoot, "bin", "registry")).CombinedOutput()
	require.NoError(t, err, "make image-orchestrator bin/registry:\n%s", out)
	t.Logf("make image-orchestrator bin/registry: %s", time.Since(start).Round(time.Second))
	addr, err := c.StartNodeRegistry(ctx, filepath.Join(repoRoot, "bin", "registry"))
	require.NoError(t, err)
	registry := addr + "/cocalc-kubernetes"

	// The layouts publish pushes: the built orchestrator, and the stand-ins
	// (docker save writes an OCI layout) as the server and project images.
	layouts := t.TempDir()
	require.NoError(t, os.CopyFS(filepath.Join(layouts, "orchestrator"), os.DirFS(filepath.Join(repoRoot, "out", "images", "orchestrator"))))
	dockerSaveLayout(t, "cocalc-kubernetes/hub-standin:dev", filepath.Join(layouts, "server"))
	dockerSaveLayout(t, "cocalc-kubernetes/project-standin:dev", filepath.Join(layouts, "project"))
	published := map[string]map[string]string{}
	for _, version := range []string{"0.0.1-kind", "0.0.2-kind"} {
		start := time.Now()
		out, err := exec.CommandContext(ctx, filepath.Join(repoRoot, "bin", "imagebuild"), "publish",
			"-registry", registry, "-version", version, "-layouts", layouts,
			"-chart", chartDir(), "-helm", filepath.Join(repoRoot, "bin", "helm"), "-plain-http").CombinedOutput()
		require.NoError(t, err, "publish %s:\n%s", version, out)
		t.Logf("publish %s: %s\n%s", version, time.Since(start).Round(time.Second), out)
		published[version] = publishedRefs(t, string(out))
	}
	chartRef := "oci://" + registry + "/charts/cocalc"
	// The node registry outlives a run (its content is reused): images a
	// previous run pulled are removed, so this one's first use is a pull.
	var refs []string
	for _, v := range published {
		for _, ref := range v {
			refs = append(refs, ref)
		}
	}
	require.NoError(t, c.RemoveImages(ctx, refs...))

	// values/kind.yaml without its image blocks: the packaged chart's
	// values (the pushed references, by digest) choose every image.
	ns := newNamespace(t, c, "registry", nil)
	values := kindValuesWithoutImages(t)
	opts := func(version string) *helm.Options {
		o := helmOptions(t, c, ns, nil, values)
		for _, cmd := range []string{"install", "upgrade"} {
			o.ExtraArgs[cmd] = append(append([]string{}, o.ExtraArgs[cmd]...), "--version", version, "--plain-http")
		}
		return o
	}
	start = time.Now()
	require.NoError(t, helm.InstallE(t, opts("0.0.1-kind"), chartRef, releaseName), "helm install %s --version 0.0.1-kind", chartRef)
	t.Logf("helm install %s --version 0.0.1-kind (pulls included): %s", chartRef, time.Since(start).Round(time.Second))
	t.Cleanup(func() {
		if !t.Failed() {
			_ = helm.DeleteE(t, opts("0.0.2-kind"), releaseName, true)
		}
	})

	h := hub{t: t, c: c, ns: ns, pod: serverPod(t, c, ns)}
	requirePulledFromRegistry(t, c, ns, h.pod, published["0.0.1-kind"], true, "server", "orchestrator")
	id := project.MustParse("0e0e0e0e-0000-4000-8000-00000000000e")
	st := h.start(id, "")
	requirePulledFromRegistry(t, c, ns, st.Pod, published["0.0.1-kind"], true, "project")
	content := "written before the upgrade"
	code, raw := h.do("POST", "/projects/"+string(id)+"/file", map[string]string{"name": "kept.txt"}, content)
	require.Equal(t, 204, code, "write: %s", raw)

	start = time.Now()
	require.NoError(t, helm.UpgradeE(t, opts("0.0.2-kind"), chartRef, releaseName), "helm upgrade to 0.0.2-kind")
	t.Logf("helm upgrade to 0.0.2-kind: %s", time.Since(start).Round(time.Second))
	h.pod = serverPod(t, c, ns)
	requirePulledFromRegistry(t, c, ns, h.pod, published["0.0.2-kind"], false, "server", "orchestrator")

	// The project's home survives the upgrade, and a restart of the
	// project under the new release reads it back.
	code, raw = h.do("POST", "/projects/"+string(id)+"/stop", nil, "")
	require.Equal(t, 200, code, "stop: %s", raw)
	st = h.start(id, "")
	requirePulledFromRegistry(t, c, ns, st.Pod, published["0.0.2-kind"], false, "project")
	code, raw = h.do("GET", "/projects/"+string(id)+"/raw/file", map[string]string{"name": "kept.txt"}, "")
	require.Equal(t, 200, code, "read after the upgrade: %s", raw)
	assert.Equal(t, content, string(raw))
}

// dockerSaveLayout writes image (a local docker image) as an OCI layout
// into dir: `docker save`, converted by `imagebuild docker-archive` (a
// daemon before Docker 25 writes no layout itself).
func dockerSaveLayout(t *testing.T, image, dir string) {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	out, err := exec.CommandContext(t.Context(), "docker", "save", "-o", archive, image).CombinedOutput()
	require.NoError(t, err, "docker save %s: %s", image, out)
	// A label of its own: a new image ID, so the published copy and the
	// dev image the nodes already hold never share one runtime record.
	out, err = exec.CommandContext(t.Context(), filepath.Join(repoRoot, "bin", "imagebuild"), "docker-archive",
		"-in", archive, "-out", dir, "-labels", "org.opencontainers.image.source=test/e2e/registry_test.go").CombinedOutput()
	require.NoError(t, err, "imagebuild docker-archive %s: %s", image, out)
}

// publishedRefs maps each image name publish printed (repo:tag@digest
// lines) to its reference.
func publishedRefs(t *testing.T, out string) map[string]string {
	t.Helper()
	refs := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if at := strings.Index(l, "@sha256:"); at > 0 && !strings.Contains(l, " ") {
			repo := l[:strings.LastIndex(l[:at], ":")]
			refs[repo[strings.LastIndex(repo, "/")+1:]] = l
		}
	}
	for _, want := range []string{"orchestrator", "server", "project"} {
		require.Contains(t, refs, want, "publish printed no reference for %s:\n%s", want, out)
	}
	return refs
}

// kindValuesWithoutImages writes values/kind.yaml without the image of the
// server, orchestrator and projects into a temporary file.
func kindValuesWithoutImages(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(valuesFile("kind.yaml"))
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, sigsyaml.Unmarshal(b, &v))
	for _, key := range []string{"server", "orchestrator", "projects"} {
		m, ok := v[key].(map[string]any)
		require.True(t, ok, "values/kind.yaml has %s", key)
		require.Contains(t, m, "image", "values/kind.yaml sets %s.image", key)
		delete(m, "image")
	}
	out, err := sigsyaml.Marshal(v)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "kind-registry.yaml")
	require.NoError(t, os.WriteFile(p, out, 0o600))
	return p
}

// serverPod returns the name of the release's one Ready server pod that is
// not being deleted (after an upgrade the old one may still terminate).
func serverPod(t *testing.T, c *cluster.Cluster, ns string) string {
	t.Helper()
	var name string
	require.Eventually(t, func() bool {
		pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
		require.NoError(t, err)
		var ready []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				ready = append(ready, p.Name)
			}
		}
		if len(ready) == 1 && len(pods.Items) == 1 {
			name = ready[0]
			return true
		}
		return false
	}, 2*time.Minute, time.Second, "one Ready server pod, and no other")
	return name
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// requirePulledFromRegistry checks that pod's containers run the published
// images: each named image's reference (repo:tag@digest) is a container's
// image, and the runtime reports that digest; firstUse: the kubelet pulled
// it (else it found it present).
func requirePulledFromRegistry(t *testing.T, c *cluster.Cluster, ns, pod string, refs map[string]string, firstUse bool, images ...string) {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), pod, metav1.GetOptions{})
	require.NoError(t, err)
	running := map[string]string{} // image -> imageID
	for _, s := range p.Status.ContainerStatuses {
		running[s.Image] = s.ImageID
	}
	for _, img := range images {
		ref := refs[img]
		var found bool
		for _, ctr := range p.Spec.Containers {
			if ctr.Image == ref {
				found = true
			}
		}
		require.True(t, found, "pod %s runs %s as %s", pod, img, ref)
		digest := ref[strings.Index(ref, "@")+1:]
		var ids []string
		for _, id := range running {
			ids = append(ids, id)
		}
		assert.True(t, strings.Contains(strings.Join(ids, " "), digest), "pod %s: the runtime reports %s's digest %s (image IDs %v)", pod, img, digest, ids)
	}
	// Pulled by the kubelet from the registry at first use (no image of
	// that name was loaded into the node); a later release with the same
	// digests finds them present.
	evs, err := c.Client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	require.NoError(t, err)
	var msgs []string
	for _, e := range evs.Items {
		if e.Reason == "Pulled" {
			msgs = append(msgs, e.Message)
		}
	}
	for _, img := range images {
		want := fmt.Sprintf("Successfully pulled image %q", refs[img])
		if !firstUse {
			want = fmt.Sprintf("Container image %q already present", refs[img])
		}
		assert.True(t, strings.Contains(strings.Join(msgs, "\n"), want), "pod %s: %q among its Pulled events %q", pod, want, msgs)
	}
}
