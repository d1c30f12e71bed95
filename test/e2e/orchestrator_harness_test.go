package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
)

// serviceAccountConfig returns a rest.Config that authenticates as the
// chart's ServiceAccount with a short-lived TokenRequest token: exactly the
// identity the orchestrator has in the server pod.
func serviceAccountConfig(t *testing.T, c *cluster.Cluster, ns string) *rest.Config {
	t.Helper()
	expiry := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), serviceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	require.NoError(t, err, "TokenRequest for ServiceAccount %s/%s", ns, serviceAccountName)
	cfg := rest.AnonymousClientConfig(c.RESTConfig)
	cfg.BearerToken = tr.Status.Token
	return cfg
}

// serviceAccountKubeconfig writes a kubeconfig file for cfg (a token
// config from serviceAccountConfig).
func serviceAccountKubeconfig(t *testing.T, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, CertificateAuthority: cfg.CAFile}
	kc.AuthInfos["orchestrator"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "orchestrator"}
	kc.CurrentContext = "e2e"
	path := filepath.Join(t.TempDir(), "orchestrator.kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}

// orchestratorTemplate writes the installed template with storage.serverPath
// moved to a temporary directory (the process runs on this machine, not in
// the server pod) and returns the file and that directory.
func orchestratorTemplate(t *testing.T, c *cluster.Cluster, ns string) (file, homes string) {
	t.Helper()
	tpl := liveTemplate(t, c, ns)
	homes = t.TempDir()
	tpl.Storage.ServerPath = homes
	require.NoError(t, tpl.Validate())
	data, err := yaml.Marshal(tpl)
	require.NoError(t, err)
	file = filepath.Join(t.TempDir(), "template.yaml")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	return file, homes
}

// orchProcess is bin/cocalc-k8s serve running as a child process.
type orchProcess struct {
	cmd    *exec.Cmd
	log    string
	api    *httpapi.Client
	health string
	done   chan struct{}
}

// orchestratorBinary is bin/cocalc-k8s (make build).
func orchestratorBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(repoRoot, "bin", "cocalc-k8s")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("orchestrator binary missing: %v (run `make build`)", err)
	}
	return bin
}

// freeLoopbackAddr reserves a loopback port and releases it for a child.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startOrchestrator runs `cocalc-k8s serve` on loopback and waits for
// /readyz (pod cache synced). Its log goes to a file that is printed when
// the test fails; it is killed when the test ends.
func startOrchestrator(t *testing.T, kubeconfig, template string, extraArgs ...string) *orchProcess {
	t.Helper()
	return startOrchestratorWithEnv(t, nil, kubeconfig, template, extraArgs...)
}

// startOrchestratorWithEnv is startOrchestrator with env added to the
// process's environment.
func startOrchestratorWithEnv(t *testing.T, env []string, kubeconfig, template string, extraArgs ...string) *orchProcess {
	t.Helper()
	api, health := freeLoopbackAddr(t), freeLoopbackAddr(t)
	logFile, err := os.CreateTemp(t.TempDir(), "orchestrator-*.log")
	require.NoError(t, err)
	args := append([]string{"serve",
		"--kubeconfig", kubeconfig, "--template", template,
		"--listen", api, "--health-listen", health,
		"--log-format", "json", "--shutdown-timeout", "5s", "--idle-check-interval", "2s"}, extraArgs...)
	cmd := exec.Command(orchestratorBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start(), "start orchestrator")
	o := &orchProcess{cmd: cmd, log: logFile.Name(), health: "http://" + health,
		api: &httpapi.Client{BaseURL: "http://" + api, HTTP: &http.Client{Timeout: 3 * time.Minute}}, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(o.done) }()
	t.Cleanup(func() {
		o.kill()
		if t.Failed() {
			data, _ := os.ReadFile(o.log)
			t.Logf("orchestrator log (pid %d):\n%s", cmd.Process.Pid, lastLines(string(data), 80))
		}
	})
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-o.done:
			return false, fmt.Errorf("orchestrator exited: %s", cmd.ProcessState)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, o.health+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		data, _ := os.ReadFile(o.log)
		t.Fatalf("orchestrator not ready: %v\n%s", err, lastLines(string(data), 40))
	}
	return o
}

// kill sends SIGKILL (no graceful shutdown) and waits for the exit.
func (o *orchProcess) kill() {
	select {
	case <-o.done:
		return
	default:
	}
	_ = o.cmd.Process.Signal(syscall.SIGKILL)
	<-o.done
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
