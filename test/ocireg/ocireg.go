// Package ocireg starts a real OCI registry for tests: CNCF distribution
// (bin/registry, pinned in ci/tools/registry) on a free loopback port with
// its storage in a temporary directory. test/registry publishes into it and
// pulls back with helm; test/argocd has ArgoCD sync the chart from it.
package ocireg

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Start runs the registry binary exe (bin/registry) for the test's lifetime
// and returns its host:port once /v2/ answers. It speaks plain HTTP; its
// log is printed when the test fails.
func Start(t testing.TB, exe string) string {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: false
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(config), 0o600))
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	require.NoError(t, err)
	cmd := exec.Command(exe, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// No OpenTelemetry exporter: nothing leaves loopback.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("registry log:\n%s", b)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		require.True(t, time.Now().Before(deadline), "registry not answering on %s after 30 s: %v", addr, err)
		time.Sleep(200 * time.Millisecond)
	}
}
