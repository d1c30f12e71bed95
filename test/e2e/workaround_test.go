package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// mappedIPv6Except is an ipBlock.except entry the chart renders that
// kube-apiserver v1.37 rejects ("must not have an IPv4-mapped IPv6
// address"), so every install of the chart fails at the API server. Found
// on the api tier (see /work/shared/notes/api-tier-findings.md); the chart
// is not this package's to change. Until it is fixed there,
// chartPostRenderer strips that one line from helm's output so the other
// suites can run, and TestChartPassesServerValidation keeps failing, so
// the bug stays visible. Once the chart no longer renders it, the
// workaround switches itself off.
const mappedIPv6Except = "::ffff:0:0/96"

var postRenderer struct {
	once sync.Once
	path string // "" when the chart needs no workaround
	err  error
}

// chartPostRenderer returns the helm --post-renderer executable that works
// around the chart bug above, or "" when the chart renders cleanly.
func chartPostRenderer(t *testing.T) string {
	t.Helper()
	postRenderer.once.Do(func() {
		out, err := exec.Command(filepath.Join(repoRoot, "bin", "helm"), "template", releaseName, chartDir()).CombinedOutput()
		if err != nil {
			postRenderer.err = fmt.Errorf("helm template: %w: %s", err, out)
			return
		}
		if !strings.Contains(string(out), mappedIPv6Except) {
			return
		}
		dir, err := os.MkdirTemp("", "e2e-postrender-")
		if err != nil {
			postRenderer.err = err
			return
		}
		path := filepath.Join(dir, "strip-mapped-ipv6")
		script := "#!/bin/sh\n# e2e workaround for the chart's invalid ipBlock.except entry " + mappedIPv6Except + "\nexec sed '/- \"\\{0,1\\}::ffff:0:0\\/96\"\\{0,1\\}$/d'\n"
		postRenderer.err = os.WriteFile(path, []byte(script), 0o755)
		postRenderer.path = path
	})
	require.NoError(t, postRenderer.err, "prepare the chart post-renderer")
	if postRenderer.path != "" {
		t.Logf("WORKAROUND: the chart renders ipBlock.except %q, which kube-apiserver rejects; stripped by a post-renderer (TestChartPassesServerValidation reports the bug)", mappedIPv6Except)
	}
	return postRenderer.path
}
