// Package images tests the image definitions under tools/images. No
// registry is reachable here, so the images themselves cannot be built; their
// build stage can: each test runs the Dockerfile's own `go build` command and
// checks what the final stage relies on (a static binary that answers to
// its names).
package images

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/smccompute"
)

const repoRoot = "../.."

// dockerfile holds one Dockerfile's instructions, continuation lines joined.
type dockerfile struct {
	path  string
	lines []string
}

func readDockerfile(t *testing.T, image string) dockerfile {
	t.Helper()
	path := filepath.Join(repoRoot, "tools", "images", image, "Dockerfile")
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	d := dockerfile{path: path}
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		d.lines = append(d.lines, cur.String())
		cur.Reset()
	}
	require.NoError(t, sc.Err())
	return d
}

// finalStage returns the instructions after the last FROM.
func (d dockerfile) finalStage() []string {
	last := 0
	for i, l := range d.lines {
		if strings.HasPrefix(l, "FROM ") {
			last = i
		}
	}
	return d.lines[last:]
}

var goBuild = regexp.MustCompile(`RUN (CGO_ENABLED=0 go build .*)$`)

// buildStage runs the Dockerfile's go build command with its output
// redirected to dir, and returns the binary's path.
func (d dockerfile) buildStage(t *testing.T, dir string) string {
	t.Helper()
	var cmd string
	for _, l := range d.lines {
		if m := goBuild.FindStringSubmatch(l); m != nil {
			cmd = m[1]
		}
	}
	require.NotEmpty(t, cmd, "%s: no static `CGO_ENABLED=0 go build` step", d.path)
	require.Contains(t, cmd, "-trimpath", "same flags as `make build`, so the build cache is shared")
	require.Contains(t, cmd, "./tools/cmd/cocalc-k8s")
	out := filepath.Join(dir, "cocalc-k8s")
	cmd = strings.ReplaceAll(cmd, "${VERSION}", "image-test")
	cmd = strings.ReplaceAll(cmd, "/out/cocalc-k8s", out)
	build := exec.Command("sh", "-c", cmd)
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	outb, err := build.CombinedOutput()
	require.NoError(t, err, "%s build stage: %s", d.path, outb)
	return out
}

func requireStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "%s is dynamically linked: it cannot run FROM scratch", bin)
	}
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", bin, args, out)
	return string(out)
}

func TestOrchestratorImage(t *testing.T) {
	d := readDockerfile(t, "orchestrator")
	final := d.finalStage()
	assert.Equal(t, "FROM scratch", final[0])
	assert.Contains(t, final, "USER 2001:2001", "runs as the project user, like the chart's securityContext")
	assert.Contains(t, final, `ENTRYPOINT ["/cocalc-k8s"]`, "the chart passes only args")

	bin := d.buildStage(t, t.TempDir())
	requireStatic(t, bin)
	assert.Contains(t, run(t, bin, "version"), "image-test", "version stamped by the build stage")
	assert.Contains(t, run(t, bin, "--help"), "serve")
}

func TestServerImage(t *testing.T) {
	d := readDockerfile(t, "server")
	final := strings.Join(d.finalStage(), "\n")
	assert.Contains(t, final, "FROM ${COCALC_SERVER_IMAGE}")
	for _, l := range d.lines {
		if strings.HasPrefix(l, "ARG COCALC_SERVER_IMAGE") {
			assert.Equal(t, "ARG COCALC_SERVER_IMAGE", l, "the CoCalc base must be pinned by the builder, never defaulted to a moving tag")
		}
	}
	assert.Contains(t, final, "ln -s cocalc-k8s /usr/local/bin/smc-compute")
	assert.Contains(t, final, smccompute.EnvAPI+"="+smccompute.DefaultAPI)
	assert.Contains(t, final, smccompute.EnvHomes+"=/projects/home")

	dir := t.TempDir()
	bin := d.buildStage(t, dir)
	requireStatic(t, bin)
	// What the final stage's RUN checks: the binary answers as smc-compute.
	link := filepath.Join(dir, smccompute.ProgramName)
	require.NoError(t, os.Symlink("cocalc-k8s", link))
	help := run(t, link, "--help")
	assert.Contains(t, help, "smc-compute")
	assert.NotContains(t, help, "Run the orchestrator")
}
