// Package nfsserver runs the chart's in-cluster NFS server for real, as a
// process on loopback: NFS-Ganesha (Debian's nfs-ganesha, nfs-ganesha-vfs)
// started with the entrypoint of tools/images/nfs-server, the ganesha.conf
// the chart renders (only the export path, port, bind address and recovery
// directory substituted) and exactly the capabilities the chart's StatefulSet
// adds. Debian's userspace NFS client (libnfs-utils) is the other side: this
// kernel has no NFS client or server module, and neither is needed.
package nfsserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/gruntwork-io/terratest/modules/k8s"
	"github.com/gruntwork-io/terratest/modules/logger"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// The project identity the tests render the chart with: not the defaults
// (2001/2001) and uid != gid, so the squashing is shown to follow
// projects.security.runAsUser and runAsGroup separately.
const (
	projectUID = 3005
	projectGID = 3006
)

// The Debian programs the tests run (ci/install-deps.sh installs them).
var hostPrograms = []string{"ganesha.nfsd", "nfs-ls", "nfs-cp", "nfs-cat", "setpriv"}

var repoRoot string

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Join(filepath.Dir(file), "..", "..")
	// terratest runs "helm" from PATH: make it the pinned bin/helm.
	os.Setenv("PATH", filepath.Join(repoRoot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	os.Exit(m.Run())
}

// rendered is what the chart ships for the NFS server.
type rendered struct {
	conf       string   // ganesha.conf of ConfigMap <fullname>-nfs
	caps       []string // capabilities the nfs container adds
	entrypoint []string // ENTRYPOINT of tools/images/nfs-server/Dockerfile
}

// renderNFS renders the chart in mode nfsServer with the given client
// networks and returns the NFS server's configuration and capabilities. It
// also checks that the StatefulSet mounts the ConfigMap where the image's
// entrypoint reads its configuration.
func renderNFS(t *testing.T, nodeCIDRs, extraClientCIDRs []string) rendered {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot, "bin", "helm")); err != nil {
		t.Fatalf("bin/helm: %v: run `make tools`", err)
	}
	list := func(v []string) string {
		b, err := json.Marshal(append([]string{}, v...))
		require.NoError(t, err)
		return string(b)
	}
	opts := &helm.Options{
		SetValues: map[string]string{
			"storage.mode":                 "nfsServer",
			"projects.security.runAsUser":  strconv.Itoa(projectUID),
			"projects.security.runAsGroup": strconv.Itoa(projectGID),
			"projects.security.fsGroup":    strconv.Itoa(projectGID),
		},
		SetJsonValues: map[string]string{
			"networkPolicy.nfs.nodeCIDRs":        list(nodeCIDRs),
			"storage.nfsServer.extraClientCIDRs": list(extraClientCIDRs),
		},
		KubectlOptions: k8s.NewKubectlOptions("", "", "cocalc"),
		Logger:         logger.Discard,
	}
	out, err := helm.RenderTemplateE(t, opts, filepath.Join(repoRoot, "charts", "cocalc"), "cocalc",
		[]string{"templates/storage/nfs-configmap.yaml", "templates/storage/nfs-statefulset.yaml"})
	require.NoError(t, err, "helm template")

	var cm corev1.ConfigMap
	var sts appsv1.StatefulSet
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else {
			require.NoError(t, err)
		}
		data, err := json.Marshal(doc)
		require.NoError(t, err)
		switch doc["kind"] {
		case "ConfigMap":
			require.NoError(t, yaml.UnmarshalStrict(data, &cm))
		case "StatefulSet":
			require.NoError(t, yaml.UnmarshalStrict(data, &sts))
		}
	}
	conf, ok := cm.Data["ganesha.conf"]
	require.True(t, ok, "ConfigMap %q has no ganesha.conf", cm.Name)
	require.Len(t, sts.Spec.Template.Spec.Containers, 1)
	ctr := sts.Spec.Template.Spec.Containers[0]
	require.NotNil(t, ctr.SecurityContext)
	require.NotNil(t, ctr.SecurityContext.Capabilities)
	r := rendered{conf: conf, entrypoint: imageEntrypoint(t)}
	for _, c := range ctr.SecurityContext.Capabilities.Add {
		r.caps = append(r.caps, string(c))
	}

	// The image reads -f <file>: the ConfigMap's key must be mounted there.
	confPath := flagValue(t, r.entrypoint, "-f")
	var configVolume string
	for _, vm := range ctr.VolumeMounts {
		if vm.MountPath == filepath.Dir(confPath) {
			configVolume = vm.Name
		}
	}
	require.NotEmpty(t, configVolume, "nothing mounted at %s, where the image reads %s", filepath.Dir(confPath), confPath)
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name == configVolume {
			require.NotNil(t, v.ConfigMap, "volume %s", v.Name)
			assert.Equal(t, cm.Name, v.ConfigMap.Name)
			assert.Contains(t, cm.Data, filepath.Base(confPath))
		}
	}
	return r
}

var entrypointLine = regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])\s*$`)

// imageEntrypoint returns the exec-form ENTRYPOINT of the nfs-server image.
func imageEntrypoint(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "tools", "images", "nfs-server", "Dockerfile"))
	require.NoError(t, err)
	m := entrypointLine.FindSubmatch(data)
	require.NotNil(t, m, "Dockerfile: no exec-form ENTRYPOINT")
	var args []string
	require.NoError(t, json.Unmarshal(m[1], &args))
	require.NotEmpty(t, args)
	return args
}

// flagValue returns the argument after flag in args.
func flagValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatalf("%v has no %s <value>", args, flag)
	return ""
}

// substitute replaces old by new in conf, which must hold old exactly once:
// a change to the chart's file fails here instead of testing something else.
func substitute(t *testing.T, conf, old, new string) string {
	t.Helper()
	require.Equal(t, 1, strings.Count(conf, old), "the chart's ganesha.conf must contain %q exactly once", old)
	return strings.Replace(conf, old, new, 1)
}

// requireHost skips the test, with the reason, where ganesha cannot run as
// the chart runs it: not uid 0, a program missing, or capabilities this
// process cannot hand on.
func requireHost(t *testing.T, caps []string) {
	t.Helper()
	if uid := os.Geteuid(); uid != 0 {
		t.Skipf("ganesha must start as uid 0, as in the chart's pod (with only %v); this test runs as uid %d", caps, uid)
	}
	for _, p := range hostPrograms {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (%v): `make deps` installs nfs-ganesha, nfs-ganesha-vfs and libnfs-utils", p, err)
		}
	}
	bounding, err := boundingSet()
	require.NoError(t, err)
	for _, c := range caps {
		if !bounding[strings.ToLower("cap_"+c)] {
			t.Skipf("this process's capability bounding set lacks CAP_%s, which the chart gives ganesha", c)
		}
	}
}

// boundingSet returns the names (cap_dac_read_search, ...) in this process's bounding set.
func boundingSet() (map[string]bool, error) {
	out, err := exec.Command("setpriv", "--dump").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("setpriv --dump: %v: %s", err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Capability bounding set: "); ok {
			set := map[string]bool{}
			for _, c := range strings.Split(rest, ",") {
				set["cap_"+strings.TrimSpace(c)] = true
			}
			return set, nil
		}
	}
	return nil, fmt.Errorf("setpriv --dump printed no bounding set: %s", out)
}

// ganesha is one running server.
type ganesha struct {
	port   int
	export string // the directory served as the pseudo root
	log    string // its stdout (ganesha logs there: -L STDOUT)
}

// startGanesha runs the image's entrypoint on conf (the chart's file with the
// export path, port, bind address and recovery directory substituted) as uid
// 0 holding only caps, as the StatefulSet does, and waits until it listens.
// The export directory is owned by the project user, as the chart's
// homesOwner init container leaves it. The server is stopped at cleanup.
func startGanesha(t *testing.T, r rendered, caps []string) *ganesha {
	t.Helper()
	dir := t.TempDir()
	g := &ganesha{port: freePort(t), export: filepath.Join(dir, "exports"), log: filepath.Join(dir, "ganesha.log")}
	recovery := filepath.Join(dir, "recovery")
	for _, d := range []string{g.export, recovery} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	require.NoError(t, os.Chown(g.export, projectUID, projectGID))

	conf := substitute(t, r.conf, `Path = "/exports";`, fmt.Sprintf("Path = %q;", g.export))
	conf = substitute(t, conf, "NFS_Port = 2049;", fmt.Sprintf("NFS_Port = %d;\n    Bind_addr = 127.0.0.1;", g.port))
	conf = substitute(t, conf, `RecoveryRoot = "/var/lib/nfs/ganesha";`, fmt.Sprintf("RecoveryRoot = %q;", recovery))
	confPath := filepath.Join(dir, "ganesha.conf")
	require.NoError(t, os.WriteFile(confPath, []byte(conf), 0o644))

	// The entrypoint with the pod's paths replaced by this test's.
	args := append([]string(nil), r.entrypoint...)
	for i := range args {
		switch {
		case i > 0 && args[i-1] == "-f":
			args[i] = confPath
		case i > 0 && args[i-1] == "-p":
			args[i] = filepath.Join(dir, "ganesha.pid")
		}
	}
	require.Equal(t, "STDOUT", flagValue(t, args, "-L"), "the image logs to the container log")
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(c)
	}
	// As in the container: uid 0, the bounding (hence permitted and
	// effective) set = the added capabilities, no privilege gain on exec.
	setpriv := append([]string{"--bounding-set=" + bounding, "--inh-caps=-all", "--no-new-privs", "--"}, args...)
	logFile, err := os.Create(g.log)
	require.NoError(t, err)
	cmd := exec.Command("setpriv", setpriv...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// libblkid's cache file, /run/blkid/blkid.tab in the pod's /run emptyDir.
	cmd.Env = append(os.Environ(), "BLKID_FILE="+filepath.Join(dir, "blkid.tab"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("ganesha log:\n%s", g.readLog(t))
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("ganesha exited before listening: %v\n%s", err, g.readLog(t))
		default:
		}
		if c, err := net.DialTimeout("tcp", g.addr(), 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "ganesha not listening on %s after 20 s:\n%s", g.addr(), g.readLog(t))
		time.Sleep(100 * time.Millisecond)
	}
	// Ganesha starts even when it rejects part of its configuration (a
	// rejected CLIENT or EXPORT block just goes missing): none may be.
	for _, line := range strings.Split(g.readLog(t), "\n") {
		if strings.Contains(line, ":CONFIG :CRIT") || strings.Contains(line, ":CONFIG :MAJ") || strings.Contains(line, ":CONFIG :FATAL") {
			t.Fatalf("ganesha rejected the chart's configuration: %s", line)
		}
	}
	return g
}

func (g *ganesha) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(g.port)) }

func (g *ganesha) readLog(t *testing.T) string {
	data, err := os.ReadFile(g.log)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// url is an NFSv4 URL of libnfs for path on the export, as uid/gid (AUTH_SYS).
func (g *ganesha) url(path string, uid, gid int) string {
	return fmt.Sprintf("nfs://127.0.0.1/%s?nfsport=%d&version=4&uid=%d&gid=%d", path, g.port, uid, gid)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// nfs runs a libnfs-utils program and returns its combined output.
func nfs(t *testing.T, prog string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// write copies content into path on the export as uid/gid with nfs-cp.
func (g *ganesha) write(t *testing.T, path, content string, uid, gid int) error {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	require.NoError(t, os.WriteFile(src, []byte(content), 0o644))
	_, err := nfs(t, "nfs-cp", src, g.url(path, uid, gid))
	return err
}

// owner returns the uid and gid of a file on the server's disk.
func owner(t *testing.T, path string) (int, int) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// loopbackOnly are client networks that admit the tests' client, 127.0.0.1,
// plus an IPv6 entry (ganesha must accept the chart's IPv6 syntax too).
var loopbackOnly = []string{"127.0.0.0/8", "fd00:1::/64"}

// The export answers as the NFSv4 pseudo root, and whoever writes (the
// project uid, root, any other uid) the file lands owned by the project
// uid/gid; root gets no more than the project user.
func TestExportSquashesEveryCallerToTheProjectUser(t *testing.T) {
	r := renderNFS(t, loopbackOnly, nil)
	requireHost(t, r.caps)
	t.Parallel()
	g := startGanesha(t, r, r.caps)

	// A project home as the orchestrator creates it; project pods mount "/<id>".
	const home = "c8b4d7a0-1f55-4d2c-9a55-0c5b7c0f2e11"
	require.NoError(t, os.Mkdir(filepath.Join(g.export, home), 0o700))
	require.NoError(t, os.Chown(filepath.Join(g.export, home), projectUID, projectGID))
	out, err := nfs(t, "nfs-ls", g.url("", projectUID, projectGID))
	require.NoError(t, err)
	assert.Contains(t, out, home, "the pseudo root lists the projects claim")

	for _, c := range []struct {
		name     string
		uid, gid int
	}{
		{"project-user", projectUID, projectGID},
		{"root", 0, 0},
		{"other-user", 5000, 5000},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := home + "/" + c.name + ".txt"
			content := "written as " + c.name + "\n"
			require.NoError(t, g.write(t, "/"+path, content, c.uid, c.gid))
			uid, gid := owner(t, filepath.Join(g.export, path))
			assert.Equal(t, [2]int{projectUID, projectGID}, [2]int{uid, gid}, "owner on disk of a file written as %d:%d", c.uid, c.gid)
			got, err := nfs(t, "nfs-cat", g.url("/"+path, projectUID, projectGID))
			require.NoError(t, err)
			assert.Equal(t, content, got, "read back as the project user")
		})
	}

	t.Run("root-is-not-root", func(t *testing.T) {
		secret := filepath.Join(g.export, "root-only")
		require.NoError(t, os.WriteFile(secret, []byte("root's\n"), 0o600))
		out, err := nfs(t, "nfs-cat", g.url("/root-only", 0, 0))
		require.Error(t, err, "uid 0 read a root-only file: %q", out)
		assert.Contains(t, err.Error(), "NFS4ERR_ACCESS")
	})
}

// Only the listed client networks get in: networkPolicy.nfs.nodeCIDRs and
// storage.nfsServer.extraClientCIDRs, each shown to admit 127.0.0.1 alone.
func TestExportAdmitsOnlyClientCIDRs(t *testing.T) {
	for _, c := range []struct {
		name                  string
		nodeCIDRs, extraCIDRs []string
		admitted              bool
	}{
		{name: "node-cidr", nodeCIDRs: loopbackOnly, admitted: true},
		{name: "extra-client-cidr", nodeCIDRs: []string{"192.0.2.0/24"}, extraCIDRs: []string{"127.0.0.1/32"}, admitted: true},
		{name: "outside", nodeCIDRs: []string{"192.0.2.0/24", "fd00:1::/64"}, extraCIDRs: []string{"10.244.0.0/16"}, admitted: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := renderNFS(t, c.nodeCIDRs, c.extraCIDRs)
			requireHost(t, r.caps)
			t.Parallel()
			g := startGanesha(t, r, r.caps)
			require.NoError(t, os.WriteFile(filepath.Join(g.export, "present"), nil, 0o644))

			out, lsErr := nfs(t, "nfs-ls", g.url("", projectUID, projectGID))
			writeErr := g.write(t, "/new.txt", "x", projectUID, projectGID)
			_, statErr := os.Stat(filepath.Join(g.export, "new.txt"))
			if c.admitted {
				require.NoError(t, lsErr)
				assert.Contains(t, out, "present")
				assert.NoError(t, writeErr)
				assert.NoError(t, statErr)
				return
			}
			require.Error(t, lsErr, "listed from outside the client networks: %q", out)
			assert.Contains(t, lsErr.Error(), "NFS4ERR_ACCESS")
			require.Error(t, writeErr)
			assert.Contains(t, writeErr.Error(), "NFS4ERR_ACCESS")
			assert.ErrorIs(t, statErr, os.ErrNotExist, "a refused client wrote a file")
		})
	}
}

// The chart adds no capability ganesha can do without: with any one of them
// removed, listing or creating a file as the project user fails.
func TestEveryCapabilityIsNeeded(t *testing.T) {
	r := renderNFS(t, loopbackOnly, nil)
	requireHost(t, r.caps)
	require.NotEmpty(t, r.caps)
	for _, drop := range r.caps {
		t.Run(drop, func(t *testing.T) {
			t.Parallel()
			var rest []string
			for _, c := range r.caps {
				if c != drop {
					rest = append(rest, c)
				}
			}
			g := startGanesha(t, r, rest)
			_, lsErr := nfs(t, "nfs-ls", g.url("", projectUID, projectGID))
			writeErr := g.write(t, "/new.txt", "x", projectUID, projectGID)
			assert.False(t, lsErr == nil && writeErr == nil, "ganesha listed and created a file without CAP_%s", drop)
			t.Logf("without CAP_%s: list: %v; create: %v", drop, lsErr, writeErr)
		})
	}
}

var (
	aptInstall   = regexp.MustCompile(`apt-get install -y --no-install-recommends ([a-z0-9. -]+?)\s*(&&|$)`)
	depsPackages = regexp.MustCompile(`(?s)\ndev=\((.*?)\n\)`) // make deps: what every developer (and these tests) get
)

// The server these tests run is the one the image ships: every Debian
// package the Dockerfile installs is one ci/install-deps.sh installs here.
func TestTestsRunTheImagesPackages(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "tools", "images", "nfs-server", "Dockerfile"))
	require.NoError(t, err)
	joined := strings.ReplaceAll(string(dockerfile), "\\\n", " ")
	m := aptInstall.FindStringSubmatch(joined)
	require.NotNil(t, m, "Dockerfile: no apt-get install line")
	image := strings.Fields(m[1])
	require.Contains(t, image, "nfs-ganesha")

	script, err := os.ReadFile(filepath.Join(repoRoot, "ci", "install-deps.sh"))
	require.NoError(t, err)
	d := depsPackages.FindStringSubmatch(string(script))
	require.NotNil(t, d, "ci/install-deps.sh: no dev=( ... ) package list")
	var deps []string
	for _, line := range strings.Split(d[1], "\n") {
		line, _, _ = strings.Cut(line, "#")
		deps = append(deps, strings.Fields(line)...)
	}
	for _, p := range image {
		assert.Contains(t, deps, p, "the image installs %s; make deps must install it for the tests", p)
	}
	assert.Contains(t, deps, "libnfs-utils", "the tests' NFS client")
}
