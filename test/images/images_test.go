// Package images tests the image recipes under tools/images and their
// daemonless builder (ci/tools/imagebuild). The orchestrator and nfs-server
// images are built here as OCI image layouts and checked from the layout
// itself (read with the standard library from the image spec); the overlay
// images on upstream CoCalc images cannot be built here (no registry holding
// them is reachable), so their Dockerfiles are parsed with BuildKit's parser
// (`imagebuild dockerfile`) and their stages and pins checked.
package images

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/smccompute"
)

var repoRoot, _ = filepath.Abs("../..")

const testVersion = "0.0.0-image-test"

var (
	toolOnce sync.Once
	toolPath string
	toolErr  error
)

// imagebuild builds ci/tools/imagebuild from its sources (Go's build cache
// makes this quick after the first time) and returns the binary.
func imagebuild(t *testing.T) string {
	t.Helper()
	toolOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imagebuild-test-")
		if err != nil {
			toolErr = err
			return
		}
		toolPath = filepath.Join(dir, "imagebuild")
		cmd := exec.Command("go", "build", "-trimpath", "-o", toolPath, ".")
		cmd.Dir = filepath.Join(repoRoot, "ci", "tools", "imagebuild")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			toolErr = fmt.Errorf("build imagebuild: %v: %s", err, out)
		}
	})
	require.NoError(t, toolErr)
	return toolPath
}

// build runs imagebuild with SOURCE_DATE_EPOCH=epoch and returns the
// digest it prints and how long it took.
func build(t *testing.T, epoch int64, args ...string) (string, time.Duration) {
	t.Helper()
	cmd := exec.Command(imagebuild(t), args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(epoch, 10))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	require.NoError(t, err, "imagebuild %v: %s", args, stderr.String())
	return strings.TrimSpace(stdout.String()), time.Since(start)
}

// dockerfile is `imagebuild dockerfile`'s report: the file as BuildKit's
// parser reads it.
type dockerfile struct {
	Args []struct {
		Name       string `json:"name"`
		Default    string `json:"default"`
		HasDefault bool   `json:"hasDefault"`
	} `json:"args"`
	Stages []struct {
		From         string `json:"from"`
		Name         string `json:"name"`
		Instructions []struct {
			Cmd   string   `json:"cmd"`
			Flags []string `json:"flags"`
			Args  []string `json:"args"`
			JSON  bool     `json:"json"`
		} `json:"instructions"`
	} `json:"stages"`
}

func parseDockerfile(t *testing.T, image string) dockerfile {
	t.Helper()
	out, err := exec.Command(imagebuild(t), "dockerfile", "-f", filepath.Join(repoRoot, "tools", "images", image, "Dockerfile")).Output()
	require.NoError(t, err)
	var d dockerfile
	require.NoError(t, json.Unmarshal(out, &d))
	return d
}

// instructions returns the arguments of every cmd instruction of stage i.
func (d dockerfile) instructions(i int, cmd string) [][]string {
	var out [][]string
	for _, in := range d.Stages[i].Instructions {
		if in.Cmd == cmd {
			out = append(out, in.Args)
		}
	}
	return out
}

// requireArgWithoutDefault: an overlay's base is given by whoever builds,
// as a digest reference (the Makefile refuses anything else).
func requireArgWithoutDefault(t *testing.T, d dockerfile, name string) {
	t.Helper()
	for _, a := range d.Args {
		if a.Name == name {
			assert.False(t, a.HasDefault, "ARG %s must have no default: never a moving upstream tag", name)
			return
		}
	}
	t.Fatalf("no global ARG %s", name)
}

// elfMachine is each Go architecture's ELF machine.
var elfMachine = map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}

var (
	orchOnce   sync.Once
	orchLayout string
	orchEpoch  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Unix()
)

// orchestratorLayout builds the orchestrator image once for the package.
func orchestratorLayout(t *testing.T) string {
	t.Helper()
	orchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orchestrator-layout-")
		require.NoError(t, err)
		orchLayout = filepath.Join(dir, "orchestrator")
		_, took := build(t, orchEpoch, "orchestrator", "-out", orchLayout, "-version", testVersion, "-revision", "test-revision")
		t.Logf("orchestrator image (amd64+arm64): %s", took.Round(time.Millisecond))
	})
	require.NotEmpty(t, orchLayout)
	return orchLayout
}

func TestOrchestratorImage(t *testing.T) {
	l := readLayout(t, orchestratorLayout(t))
	assert.Equal(t, testVersion, l.tag, "the layout is tagged with the version (buildx oci-layout://…:<version>)")

	var platforms []string
	for _, d := range l.index.Manifests {
		img := l.image(t, d, "/cocalc-k8s")
		platforms = append(platforms, img.platform)
		c := img.config.Config
		assert.Equal(t, "2001:2001", c.User, "runs as the project user, like the chart's securityContext")
		assert.Equal(t, []string{"/cocalc-k8s"}, c.Entrypoint, "the chart passes only args")
		assert.Equal(t, []string{"serve"}, c.Cmd)
		assert.Equal(t, map[string]struct{}{"8470/tcp": {}, "8471/tcp": {}}, c.ExposedPorts, "orchestrator.ports api and health")
		assert.Equal(t, "AGPL-3.0", c.Labels["org.opencontainers.image.licenses"])
		assert.Equal(t, testVersion, c.Labels["org.opencontainers.image.version"])
		assert.Equal(t, "test-revision", c.Labels["org.opencontainers.image.revision"])
		assert.Contains(t, c.Labels, "org.opencontainers.image.source")
		assert.Equal(t, time.Unix(orchEpoch, 0).UTC().Format(time.RFC3339), img.config.Created, "created is SOURCE_DATE_EPOCH")

		require.Len(t, img.files, 1, "%s: the binary alone on an empty base", img.platform)
		h := img.files["/cocalc-k8s"]
		require.NotNil(t, h)
		assert.Equal(t, int64(0o755), h.Mode)
		assert.Equal(t, 0, h.Uid)
		assert.True(t, h.ModTime.Equal(time.Unix(orchEpoch, 0)), "file mtime is SOURCE_DATE_EPOCH, got %s", h.ModTime)

		bin := filepath.Join(t.TempDir(), "cocalc-k8s")
		require.NoError(t, os.WriteFile(bin, img.contents["/cocalc-k8s"], 0o755))
		f, err := elf.Open(bin)
		require.NoError(t, err)
		assert.Equal(t, elfMachine[img.platform], f.Machine, "%s binary", img.platform)
		for _, p := range f.Progs {
			assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s is dynamically linked: it cannot run on an empty base", img.platform)
		}
		f.Close()
		if img.platform == "linux/amd64" {
			assert.Contains(t, run(t, bin, "version"), testVersion, "version stamped by the build")
			assert.Contains(t, run(t, bin, "--help"), "serve")
		}
	}
	assert.ElementsMatch(t, []string{"linux/amd64", "linux/arm64"}, platforms)
}

// Two builds of the same commit give the same digest; a different
// SOURCE_DATE_EPOCH gives another (the epoch is what the image records).
func TestOrchestratorImageIsReproducible(t *testing.T) {
	first := readLayout(t, orchestratorLayout(t))
	again := filepath.Join(t.TempDir(), "orchestrator")
	digest, took := build(t, orchEpoch, "orchestrator", "-out", again, "-version", testVersion, "-revision", "test-revision")
	t.Logf("rebuild (warm Go cache): %s", took.Round(time.Millisecond))
	assert.Equal(t, first.digest, digest, "a second build gives the same image index")
	assert.Equal(t, first.digest, readLayout(t, again).digest)

	other := filepath.Join(t.TempDir(), "orchestrator")
	digest, _ = build(t, orchEpoch+1, "orchestrator", "-out", other, "-version", testVersion, "-revision", "test-revision")
	assert.NotEqual(t, first.digest, digest, "another SOURCE_DATE_EPOCH is another image")
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", bin, args, out)
	return string(out)
}

func TestServerDockerfile(t *testing.T) {
	d := parseDockerfile(t, "server")
	requireArgWithoutDefault(t, d, "COCALC_SERVER_IMAGE")
	requireArgWithoutDefault(t, d, "ORCHESTRATOR_IMAGE")
	require.Len(t, d.Stages, 2)
	assert.Equal(t, "${ORCHESTRATOR_IMAGE}", d.Stages[0].From)
	assert.Equal(t, "orchestrator", d.Stages[0].Name)
	assert.Empty(t, d.Stages[0].Instructions, "the orchestrator stage is the orchestrator image as built: no Go build here")
	assert.Equal(t, "${COCALC_SERVER_IMAGE}", d.Stages[1].From)
	for i := range d.Stages {
		for _, r := range d.instructions(i, "run") {
			assert.NotContains(t, strings.Join(r, " "), "go build", "cocalc-k8s is built once, by the orchestrator image")
		}
	}

	// The server copies the orchestrator image's entrypoint binary.
	orch := readLayout(t, orchestratorLayout(t))
	var amd64 platformImage
	for _, m := range orch.index.Manifests {
		if m.Platform.Architecture == "amd64" {
			amd64 = orch.image(t, m, "/cocalc-k8s")
		}
	}
	entry := amd64.config.Config.Entrypoint[0]
	var copied bool
	for _, in := range d.Stages[1].Instructions {
		if in.Cmd == "copy" && assert.Len(t, in.Args, 2) && in.Args[0] == entry {
			assert.Equal(t, []string{"--from=orchestrator"}, in.Flags)
			assert.Equal(t, "/usr/local/bin/cocalc-k8s", in.Args[1])
			copied = true
		}
	}
	assert.True(t, copied, "the final stage copies %s from the orchestrator stage", entry)
	final := strings.Join(flatten(d.instructions(1, "run")), "\n")
	assert.Contains(t, final, "ln -s cocalc-k8s /usr/local/bin/smc-compute")
	env := strings.Join(flatten(d.instructions(1, "env")), "\n")
	assert.Contains(t, env, smccompute.EnvAPI+"\n"+smccompute.DefaultAPI)
	assert.Contains(t, env, smccompute.EnvHomes+"\n/projects/home")

	// What the final stage's RUN checks: the binary answers as smc-compute.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cocalc-k8s"), amd64.contents["/cocalc-k8s"], 0o755))
	link := filepath.Join(dir, smccompute.ProgramName)
	require.NoError(t, os.Symlink("cocalc-k8s", link))
	help := run(t, link, "--help")
	assert.Contains(t, help, "smc-compute")
	assert.NotContains(t, help, "Run the orchestrator")
}

func flatten(xs [][]string) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x...)
	}
	return out
}

func TestProjectDockerfile(t *testing.T) {
	d := parseDockerfile(t, "project")
	requireArgWithoutDefault(t, d, "COCALC_PROJECT_IMAGE")
	require.Len(t, d.Stages, 1, "an overlay: one stage on the upstream image")
	assert.Equal(t, "${COCALC_PROJECT_IMAGE}", d.Stages[0].From)

	b, err := os.ReadFile(filepath.Join(repoRoot, "charts", "cocalc", "values.yaml"))
	require.NoError(t, err)
	var v struct {
		Projects struct {
			Security struct {
				RunAsUser  int64 `json:"runAsUser"`
				RunAsGroup int64 `json:"runAsGroup"`
			} `json:"security"`
		} `json:"projects"`
	}
	require.NoError(t, yaml.Unmarshal(b, &v))
	users := d.instructions(0, "user")
	require.Len(t, users, 1)
	assert.Equal(t, []string{fmt.Sprintf("%d:%d", v.Projects.Security.RunAsUser, v.Projects.Security.RunAsGroup)}, users[0],
		"numeric USER equal to the chart's project uid/gid, so runAsNonRoot can be verified")
	assert.ElementsMatch(t, []string{fmt.Sprintf("%d/tcp", podtemplate.HubPort), fmt.Sprintf("%d/tcp", podtemplate.RawPort)},
		flatten(d.instructions(0, "expose")))
	for _, in := range d.Stages[0].Instructions {
		assert.Contains(t, []string{"user", "expose", "label"}, in.Cmd, "the overlay adds only what the chart's pods need (README.md)")
	}
}

// The nfs-server image: Debian's packages by debootstrap (root, cached
// under .cache/images), one layer, the Dockerfile's runtime configuration.
func TestNFSServerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("debootstraps a Debian root filesystem on the first run: not in -short")
	}
	if os.Getuid() != 0 {
		t.Skipf("debootstrap and chroot need root; this test runs as uid %d", os.Getuid())
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("debootstrap not installed: `make deps`")
	}
	start := time.Now()
	out, err := exec.Command(filepath.Join(repoRoot, "tools", "images", "nfs-server", "rootfs.sh")).Output()
	require.NoError(t, err, "rootfs.sh")
	rootfs := strings.TrimSpace(string(out))
	t.Logf("root filesystem %s: %s", rootfs, time.Since(start).Round(time.Millisecond))

	dir := filepath.Join(t.TempDir(), "nfs-server")
	digest, took := build(t, orchEpoch, "rootfs", "-rootfs", rootfs, "-config", "nfs-server", "-out", dir, "-version", testVersion)
	t.Logf("nfs-server layer and layout: %s", took.Round(time.Millisecond))
	again, _ := build(t, orchEpoch, "rootfs", "-rootfs", rootfs, "-config", "nfs-server", "-out", filepath.Join(t.TempDir(), "nfs-server"), "-version", testVersion)
	assert.Equal(t, digest, again, "the same root filesystem gives the same image")

	l := readLayout(t, dir)
	require.Len(t, l.index.Manifests, 1, "amd64 only: a foreign-architecture debootstrap needs qemu-user and binfmt_misc")
	img := l.image(t, l.index.Manifests[0])
	assert.Equal(t, "linux/amd64", img.platform)
	ganesha := img.files["/usr/bin/ganesha.nfsd"]
	require.NotNil(t, ganesha, "the server")
	assert.NotZero(t, ganesha.Mode&0o111, "executable")
	assert.NotNil(t, img.files["/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so"], "the VFS backend (nfs-ganesha-vfs)")
	require.NotNil(t, img.files["/etc/ganesha"], "the chart mounts ganesha.conf in /etc/ganesha")
	for name := range img.files {
		assert.False(t, strings.HasPrefix(name, "/etc/ganesha/"), "%s: the image carries no configuration", name)
		assert.False(t, strings.HasPrefix(name, "/var/lib/apt/lists/"), "%s: no apt lists", name)
		assert.False(t, strings.HasPrefix(name, "/dev/"), "%s: the runtime provides /dev", name)
	}

	// The runtime configuration is the Dockerfile's (test/nfsserver runs
	// that ENTRYPOINT with the chart's rendered ganesha.conf).
	d := parseDockerfile(t, "nfs-server")
	final := len(d.Stages) - 1
	entry := d.instructions(final, "entrypoint")
	require.Len(t, entry, 1)
	assert.Equal(t, entry[0], img.config.Config.Entrypoint)
	var ports []string
	for p := range img.config.Config.ExposedPorts {
		ports = append(ports, p)
	}
	assert.ElementsMatch(t, flatten(d.instructions(final, "expose")), ports)
	assert.Empty(t, d.instructions(final, "user"))
	assert.Empty(t, img.config.Config.User, "uid 0 with the four capabilities the chart adds (README.md)")

	// The image's own files run: ganesha.nfsd and its libraries in a
	// chroot of the unpacked layer.
	unpacked := t.TempDir()
	unpack(t, l, img, unpacked)
	v, err := exec.Command("chroot", unpacked, entry[0][0], "-v").CombinedOutput()
	require.NoError(t, err, "ganesha.nfsd -v in the image: %s", v)
	assert.Contains(t, string(v), "NFS-Ganesha Release")
	t.Logf("%s", strings.TrimSpace(string(v)))

	// The image's entrypoint with the chart's ganesha.conf, as in the pod:
	// the projects claim mounted at /exports, /proc and /run provided by the
	// runtime. Only the port and bind address differ (loopback). A config
	// error ganesha survives (an export that does not load) fails the test.
	runWithChartConfig(t, unpacked, entry[0])
}

func runWithChartConfig(t *testing.T, root string, entrypoint []string) {
	t.Helper()
	for _, p := range []string{"unshare", "mount", "nfs-ls"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (`make deps`): cannot run the image's ganesha here", p)
		}
	}
	out, err := exec.Command(filepath.Join(repoRoot, "bin", "helm"), "template", "cocalc", filepath.Join(repoRoot, "charts", "cocalc"),
		"--set", "storage.mode=nfsServer", "--set-json", `networkPolicy.nfs.nodeCIDRs=["127.0.0.0/8"]`,
		"--show-only", "templates/storage/nfs-configmap.yaml").CombinedOutput()
	require.NoError(t, err, "helm template (make tools): %s", out)
	var cm struct {
		Data map[string]string `json:"data"`
	}
	require.NoError(t, yaml.Unmarshal(out, &cm))
	conf := cm.Data["ganesha.conf"]
	require.Equal(t, 1, strings.Count(conf, "NFS_Port = 2049;"), "the chart's ganesha.conf sets the NFS port once")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	conf = strings.Replace(conf, "NFS_Port = 2049;", fmt.Sprintf("NFS_Port = %d;\n    Bind_addr = 127.0.0.1;", port), 1)
	confPath := flagAfter(t, entrypoint, "-f")
	require.NoError(t, os.WriteFile(filepath.Join(root, confPath), []byte(conf), 0o644))

	exports := t.TempDir()
	require.NoError(t, os.Chown(exports, 2001, 2001))
	for _, d := range []string{"exports", "proc", "run"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	script := fmt.Sprintf(`mount -t proc proc %[1]s/proc && mount -t tmpfs tmpfs %[1]s/run && mount --bind %[2]s %[1]s/exports && exec chroot %[1]s "$@"`, root, exports)
	logPath := filepath.Join(t.TempDir(), "ganesha.log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh"}, entrypoint...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	readLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("the image's ganesha exited: %v\n%s", err, readLog())
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "ganesha not listening after 30 s:\n%s", readLog())
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // the export blocks are read before the listener, errors logged by now
	for _, line := range strings.Split(readLog(), "\n") {
		for _, sev := range []string{":CONFIG :CRIT", ":CONFIG :MAJ", ":FSAL :CRIT"} {
			assert.NotContains(t, line, sev, "the image's ganesha rejected the chart's configuration")
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(exports, "hello"), []byte("hi"), 0o644))
	ls, err := exec.Command("nfs-ls", fmt.Sprintf("nfs://127.0.0.1/?nfsport=%d&version=4&uid=2001&gid=2001", port)).CombinedOutput()
	require.NoError(t, err, "nfs-ls of the export: %s\n%s", ls, readLog())
	assert.Contains(t, string(ls), "hello", "the export serves the mounted claim")
}

func flagAfter(t *testing.T, args []string, flag string) string {
	t.Helper()
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	t.Fatalf("no %s in %v", flag, args)
	return ""
}

func TestMain(m *testing.M) {
	code := m.Run()
	if orchLayout != "" {
		os.RemoveAll(filepath.Dir(orchLayout))
	}
	if toolPath != "" {
		os.RemoveAll(filepath.Dir(toolPath))
	}
	os.Exit(code)
}

// The builder is its own module (ci/tools/imagebuild), outside `go test
// ./...` of this one: its unit tests (values editing, which registries get
// plain HTTP) run from here.
func TestImagebuildUnitTests(t *testing.T) {
	cmd := exec.Command("go", "test", "-count=1", "./...")
	cmd.Dir = filepath.Join(repoRoot, "ci", "tools", "imagebuild")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go test in ci/tools/imagebuild:\n%s", out)
}
