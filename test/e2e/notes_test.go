package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// TestNotesCommandsRun runs every kubectl command the release's NOTES
// (helm status) print, as printed, against a release on values/kind.yaml
// with a running project: they reach the right objects, containers and
// binaries in real containers (test/chart checks them against the render on
// every values case).
func TestNotesCommandsRun(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		kubectl = filepath.Join(repoRoot, "bin", "kubectl-bench") // the pinned k8s.io/kubectl (make bench)
		if _, err := os.Stat(kubectl); err != nil {
			t.Skip("no kubectl: none on PATH and no bin/kubectl-bench (make bench builds the pinned one)")
		}
	}
	ns := newNamespace(t, c, "notes", nil)
	h := installInCluster(t, c, ns, nil)
	id := project.MustParse("0d0d0d0d-0000-4000-8000-00000000000d")
	h.start(id, "")

	notes, err := helm.RunHelmCommandAndGetStdOutE(t, helmOptions(t, c, ns, nil), "status", releaseName)
	require.NoError(t, err)
	var cmds []string
	for _, l := range strings.Split(notes, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "kubectl ") {
			cmds = append(cmds, l)
		}
	}
	require.NotEmpty(t, cmds, "helm status printed no kubectl commands:\n%s", notes)
	for _, line := range cmds {
		t.Run(line, func(t *testing.T) {
			if strings.Contains(line, "make-user-admin") {
				t.Skip("the kind tier's hub is a stand-in (values/kind.yaml) without the 2020 image's make-user-admin and database")
			}
			args := strings.Fields(strings.ReplaceAll(line, "<project-id>", string(id)))[1:]
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			long := args[2] == "port-forward"
			if long {
				ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
			}
			cmd := exec.CommandContext(ctx, kubectl, args...)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+c.KubeconfigPath)
			out, err := cmd.CombinedOutput()
			if long {
				// Runs until stopped: it must have started forwarding.
				require.Contains(t, string(out), "Forwarding from", "%s", out)
				return
			}
			require.NoError(t, err, "%s", out)
			if strings.Contains(line, "/cocalc-k8s project") {
				require.Contains(t, string(out), string(id), "the running project is listed")
			}
		})
	}
}
