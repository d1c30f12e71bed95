// Package registry proves the release path against a real OCI registry:
// CNCF distribution (bin/registry, pinned in ci/tools/registry) started on
// loopback, `make publish` into it, the chart pulled back with helm 3 and
// helm 4 and its values checked against what the registry serves.
package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/ocireg"
)

var repoRoot, _ = filepath.Abs("../..")

func bin(t *testing.T, name, hint string) string {
	t.Helper()
	p := filepath.Join(repoRoot, "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v: run `%s`", p, err, hint)
	}
	return p
}

// startRegistry runs bin/registry on a free loopback port with storage in
// a temporary directory and returns host:port once /v2/ answers.
func startRegistry(t *testing.T) string {
	t.Helper()
	return ocireg.Start(t, bin(t, "registry", "make bin/registry"))
}

// layoutIndex returns the digest and media type of the single entry of an
// OCI image layout's index.json, checked against the blob it names.
func layoutIndex(t *testing.T, dir string) (digest string, manifests []string) {
	t.Helper()
	var top struct {
		Manifests []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &top))
	require.Len(t, top.Manifests, 1, "%s/index.json", dir)
	digest = top.Manifests[0].Digest
	blob, err := os.ReadFile(filepath.Join(dir, "blobs", strings.Replace(digest, ":", "/", 1)))
	require.NoError(t, err)
	sum := sha256.Sum256(blob)
	require.Equal(t, digest, "sha256:"+hex.EncodeToString(sum[:]), "blob content matches its digest")
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	require.NoError(t, json.Unmarshal(blob, &idx))
	for _, m := range idx.Manifests {
		manifests = append(manifests, m.Digest)
	}
	return digest, manifests
}

// registryDigest asks the registry for a manifest (by tag or digest) and
// returns the digest it serves.
func registryDigest(t *testing.T, addr, repo, ref string) (string, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/"+repo+"/manifests/"+ref, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode
	}
	sum := sha256.Sum256(body.Bytes())
	got := "sha256:" + hex.EncodeToString(sum[:])
	require.Equal(t, got, resp.Header.Get("Docker-Content-Digest"), "served manifest matches the registry's digest header")
	return got, resp.StatusCode
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out.String())
	return out.String()
}

// values reads a chart directory's values.yaml.
func values(t *testing.T, chartDir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, yaml.Unmarshal(b, &v))
	return v
}

func at(m map[string]any, path ...string) map[string]any {
	for _, k := range path {
		next, _ := m[k].(map[string]any)
		m = next
	}
	return m
}

var pushedLine = regexp.MustCompile(`^(\S+)/([a-z-]+):(\S+)@(sha256:[0-9a-f]{64})$`)

func TestPublishIntoRegistryAndPullWithHelm3And4(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the orchestrator image for two platforms and publishes it: not in -short")
	}
	helm3 := bin(t, "helm", "make tools")
	helm4 := bin(t, "helm4", "make tools")
	addr := startRegistry(t)
	registry := addr + "/cocalc-test"

	sourceValues, err := os.ReadFile(filepath.Join(repoRoot, "charts", "cocalc", "values.yaml"))
	require.NoError(t, err)

	// The orchestrator's layout, as `make images` writes it.
	layouts := t.TempDir()
	run(t, repoRoot, "make", "-s", "image-orchestrator", "IMAGES_OUT="+layouts, "VERSION=0.0.1-test")
	indexDigest, platformDigests := layoutIndex(t, filepath.Join(layouts, "orchestrator"))
	require.Len(t, platformDigests, 2, "amd64 and arm64")

	publishOut := map[string]string{}
	for _, version := range []string{"0.0.1-test", "0.0.2-test"} {
		out := run(t, repoRoot, "make", "-s", "publish", "REGISTRY="+registry, "VERSION="+version, "IMAGES_OUT="+layouts)
		publishOut[version] = out
		var pushed []string
		for _, line := range strings.Split(out, "\n") {
			if m := pushedLine.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				require.Equal(t, registry, m[1])
				require.Equal(t, version, m[3])
				pushed = append(pushed, m[2])
				if m[2] == "orchestrator" {
					assert.Equal(t, indexDigest, m[4], "publish pushes the layout's index unchanged")
				}
			}
		}
		require.Equal(t, []string{"orchestrator"}, pushed, "publish output:\n%s", out)
		assert.Contains(t, out, "oci://"+registry+"/charts/cocalc --version "+version)
	}

	after, err := os.ReadFile(filepath.Join(repoRoot, "charts", "cocalc", "values.yaml"))
	require.NoError(t, err)
	require.Equal(t, string(sourceValues), string(after), "publish never edits the source chart")

	// The registry serves the index by tag and by digest, and every
	// platform manifest it references.
	repo := "cocalc-test/orchestrator"
	for _, ref := range []string{"0.0.1-test", "0.0.2-test", indexDigest} {
		got, code := registryDigest(t, addr, repo, ref)
		require.Equal(t, http.StatusOK, code, "GET %s:%s", repo, ref)
		assert.Equal(t, indexDigest, got, "%s:%s", repo, ref)
	}
	for _, d := range platformDigests {
		_, code := registryDigest(t, addr, repo, d)
		assert.Equal(t, http.StatusOK, code, "platform manifest %s", d)
	}
	_, code := registryDigest(t, addr, repo, "sha256:"+strings.Repeat("0", 64))
	assert.Equal(t, http.StatusNotFound, code, "the check can fail: an unknown digest is not served")

	source := map[string]any{}
	require.NoError(t, yaml.Unmarshal(sourceValues, &source))
	for _, helm := range []struct{ name, exe string }{{"helm3", helm3}, {"helm4", helm4}} {
		for _, version := range []string{"0.0.1-test", "0.0.2-test"} {
			t.Run(helm.name+"/"+version, func(t *testing.T) {
				dest := t.TempDir()
				env := []string{"HELM_CACHE_HOME=" + filepath.Join(dest, "cache"), "HELM_CONFIG_HOME=" + filepath.Join(dest, "config"), "HELM_DATA_HOME=" + filepath.Join(dest, "data")}
				cmd := exec.Command(helm.exe, "pull", "oci://"+registry+"/charts/cocalc", "--version", version, "--plain-http", "--untar", "--untardir", dest)
				cmd.Env = append(os.Environ(), env...)
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "%s pull: %s", helm.name, out)
				chartDir := filepath.Join(dest, "cocalc")

				b, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
				require.NoError(t, err)
				var meta struct{ Version, AppVersion string }
				require.NoError(t, yaml.Unmarshal(b, &meta))
				assert.Equal(t, version, meta.Version)
				assert.Equal(t, version, meta.AppVersion)

				v := values(t, chartDir)
				img := at(v, "orchestrator", "image")
				assert.Equal(t, registry+"/orchestrator", img["repository"])
				assert.Equal(t, version, img["tag"])
				assert.Equal(t, indexDigest, img["digest"], "the packaged chart references the pushed digest")
				// Everything else is the source chart's.
				for _, path := range [][]string{{"server", "image"}, {"storage", "nfsServer", "image"}, {"projects", "image"}} {
					assert.Equal(t, at(source, path...), at(v, path...), "%v: no layout published, source values kept", path)
				}
				delete(at(v, "orchestrator"), "image")
				src := map[string]any{}
				require.NoError(t, yaml.Unmarshal(sourceValues, &src))
				delete(at(src, "orchestrator"), "image")
				assert.Equal(t, src, v, "only the published images' references differ from the source values")

				// The pulled chart renders the digest reference the
				// registry resolves.
				cmd = exec.Command(helm.exe, "template", "cocalc", chartDir, "--set-json", `networkPolicy.nfs.nodeCIDRs=["10.0.0.0/24"]`)
				cmd.Env = append(os.Environ(), env...)
				rendered, err := cmd.CombinedOutput()
				require.NoError(t, err, "%s template: %s", helm.name, rendered)
				want := registry + "/orchestrator:" + version + "@" + indexDigest
				assert.Contains(t, string(rendered), "image: "+want+"\n", "orchestrator image in the render")
			})
		}
	}
}
