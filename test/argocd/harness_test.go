package argocd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// The namespace ArgoCD runs in and watches for Applications.
const argoNamespace = "argocd"

var (
	applicationsGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}
	projectsGVR     = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "appprojects"}
)

// argo is a running ArgoCD: Redis, the repo server and the application
// controller as processes of this machine, against the test cluster, with
// its CRDs, settings and default AppProject in namespace argocd.
type argo struct {
	c    *cluster.Cluster
	dyn  dynamic.Interface
	dir  string // logs, git repositories, the processes' HOME and TMPDIR
	bin  string // bin/argocd
	root string // repository root
}

// argoBinary is bin/argocd (make argocd), or a skip that says how to get it.
func argoBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(repoRoot, "bin", "argocd")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("ArgoCD is not built (%s missing): run `make argocd` (≈ 20 min cold on 2 cores; .ci/run builds it in its own phase when CI's budget allows)", bin)
	}
	for _, f := range []string{"application-crd.yaml", "appproject-crd.yaml"} {
		if _, err := os.Stat(filepath.Join(repoRoot, "bin", "argocd-crds", f)); err != nil {
			t.Skipf("ArgoCD's CRDs are missing (%v): run `make argocd`", err)
		}
	}
	return bin
}

// startArgo starts ArgoCD for the test (stopped in its cleanup).
func startArgo(t *testing.T) *argo {
	t.Helper()
	bin := argoBinary(t)
	for _, tool := range []string{"redis-server", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (ci/install-deps.sh installs it)", tool)
		}
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "bin", "helm")); err != nil {
		t.Fatalf("bin/helm not found: run `make tools` (the repo server renders the chart with it)")
	}
	c := cluster.Get(t)
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	require.NoError(t, err)
	a := &argo{c: c, dyn: dyn, dir: t.TempDir(), bin: bin, root: repoRoot}
	for _, d := range []string{"home", "tmp", "tls", "ssh", "gpg", "plugins", "repos", "logs"} {
		require.NoError(t, os.MkdirAll(filepath.Join(a.dir, d), 0o700))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	a.install(t, ctx)

	redisPort, repoPort, repoMetrics, ctrlMetrics := freePort(t), freePort(t), freePort(t), freePort(t)
	redisAddr := "127.0.0.1:" + strconv.Itoa(redisPort)
	redis := a.start(t, "redis", "redis-server", []string{
		"--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--protected-mode", "yes",
		"--save", "", "--appendonly", "no", "--dir", filepath.Join(a.dir, "tmp"),
	}, nil)
	require.NoError(t, redis.WaitFor(ctx, 100*time.Millisecond, dialCheck(redisAddr)), "redis")

	common := []string{
		"HOME=" + filepath.Join(a.dir, "home"),
		"TMPDIR=" + filepath.Join(a.dir, "tmp"),
		"PATH=" + filepath.Join(repoRoot, "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"ARGOCD_TLS_DATA_PATH=" + filepath.Join(a.dir, "tls"),
		"ARGOCD_SSH_DATA_PATH=" + filepath.Join(a.dir, "ssh"),
		"ARGOCD_GNUPGHOME=" + filepath.Join(a.dir, "gpg"),
		"ARGOCD_PLUGINSOCKFILEPATH=" + filepath.Join(a.dir, "plugins"),
		"ARGOCD_GPG_ENABLED=false",
	}
	repoAddr := "127.0.0.1:" + strconv.Itoa(repoPort)
	repo := a.start(t, "repo-server", bin, []string{
		"--address", "127.0.0.1", "--port", strconv.Itoa(repoPort),
		"--metrics-address", "127.0.0.1", "--metrics-port", strconv.Itoa(repoMetrics),
		"--redis", redisAddr, "--disable-tls", "--parallelismlimit", "2", "--loglevel", "info",
	}, append(common, "ARGOCD_BINARY_NAME=argocd-repo-server"))
	require.NoError(t, repo.WaitFor(ctx, 200*time.Millisecond, dialCheck(repoAddr)), "repo server")

	// The destination https://kubernetes.default.svc is "this cluster": with
	// ARGOCD_FAKE_IN_CLUSTER the controller takes it from $KUBECONFIG, as in
	// ArgoCD's own local runs, instead of a pod's service account.
	// --app-resync: a reconcile every 10 s instead of 3 min, so "three more
	// reconciles" take seconds; everything else is ArgoCD's default.
	ctrl := a.start(t, "application-controller", bin, []string{
		"--namespace", argoNamespace,
		"--repo-server", repoAddr, "--repo-server-plaintext",
		"--redis", redisAddr, "--metrics-port", strconv.Itoa(ctrlMetrics),
		"--app-resync", "10", "--status-processors", "4", "--operation-processors", "4", "--loglevel", "info",
	}, append(common, "ARGOCD_BINARY_NAME=argocd-application-controller", "ARGOCD_FAKE_IN_CLUSTER=true", "KUBECONFIG="+c.KubeconfigPath))
	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz", ctrlMetrics)
	require.NoError(t, ctrl.WaitFor(ctx, 200*time.Millisecond, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, healthz, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", healthz, resp.Status)
		}
		return nil
	}), "application controller")
	return a
}

// start runs one process for the test's lifetime; its log is printed when
// the test fails.
func (a *argo) start(t *testing.T, name, binary string, args, env []string) *cluster.Process {
	t.Helper()
	if !filepath.IsAbs(binary) {
		p, err := exec.LookPath(binary)
		require.NoError(t, err)
		binary = p
	}
	p, err := cluster.StartProcess(name, filepath.Join(a.dir, "logs", name+".log"), binary, args, env)
	require.NoError(t, err, "start %s", name)
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s log (%s), last lines:\n%s", name, p.Log, p.Tail(6000))
		}
	})
	return p
}

// install creates what ArgoCD's install manifests would: the namespace, the
// CRDs of the built module, argocd-cm and argocd-secret (ArgoCD's defaults:
// nothing set but the server key every install has) and the default
// AppProject (argocd-server creates it; we run no API server).
func (a *argo) install(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := a.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: argoNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	for _, f := range []string{"application-crd.yaml", "appproject-crd.yaml"} {
		data, err := os.ReadFile(filepath.Join(repoRoot, "bin", "argocd-crds", f))
		require.NoError(t, err)
		_, err = cluster.ApplyYAML(ctx, a.c.RESTConfig, data, "cocalc-test")
		require.NoError(t, err, "apply %s", f)
	}
	require.NoError(t, poll(ctx, time.Second, func() error {
		_, err := a.dyn.Resource(projectsGVR).Namespace(argoNamespace).List(ctx, metav1.ListOptions{})
		return err
	}), "ArgoCD's CRDs served")

	partOf := map[string]string{"app.kubernetes.io/part-of": "argocd"}
	_, err = a.c.Client.CoreV1().ConfigMaps(argoNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "argocd-cm", Labels: partOf},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	_, err = a.c.Client.CoreV1().Secrets(argoNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "argocd-secret", Labels: partOf},
		StringData: map[string]string{"server.secretkey": hex.EncodeToString(key)},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
	proj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
		"metadata": map[string]any{"name": "default", "namespace": argoNamespace},
		"spec": map[string]any{
			"sourceRepos":              []any{"*"},
			"destinations":             []any{map[string]any{"server": "*", "namespace": "*"}},
			"clusterResourceWhitelist": []any{map[string]any{"group": "*", "kind": "*"}},
		},
	}}
	_, err = a.dyn.Resource(projectsGVR).Namespace(argoNamespace).Create(ctx, proj, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		require.NoError(t, err)
	}
}

// gitRepo is a local git repository (branch main) ArgoCD reads through a
// file:// URL, holding a copy of the chart and values/ like this repository.
type gitRepo struct {
	dir string
}

func (r *gitRepo) URL() string { return "file://" + r.dir }

func (a *argo) newRepo(t *testing.T, name string) *gitRepo {
	t.Helper()
	r := &gitRepo{dir: filepath.Join(a.dir, "repos", name)}
	require.NoError(t, os.MkdirAll(r.dir, 0o755))
	r.git(t, "init", "-q", "-b", "main")
	require.NoError(t, os.CopyFS(filepath.Join(r.dir, "charts", "cocalc"), os.DirFS(filepath.Join(repoRoot, "charts", "cocalc"))))
	require.NoError(t, os.CopyFS(filepath.Join(r.dir, "values"), os.DirFS(filepath.Join(repoRoot, "values"))))
	r.commit(t, "the chart and values of this repository")
	return r
}

// write puts a file (path relative to the repository) and commits it,
// returning the new commit.
func (r *gitRepo) write(t *testing.T, path, content, message string) string {
	t.Helper()
	full := filepath.Join(r.dir, path)
	require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
	require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	return r.commit(t, message)
}

func (r *gitRepo) commit(t *testing.T, message string) string {
	t.Helper()
	r.git(t, "add", "-A")
	r.git(t, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", message)
	return strings.TrimSpace(r.git(t, "rev-parse", "HEAD"))
}

func (r *gitRepo) git(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+r.dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %s: %s", strings.Join(args, " "), out)
	return string(out)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func dialCheck(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// poll calls f every interval until it returns nil or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
