package chart

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli"
)

// orchestratorBinary is where the orchestrator image holds cocalc-k8s: its
// entrypoint (ci/tools/imagebuild; test/images checks the built image).
const orchestratorBinary = "/cocalc-k8s"

// notesCommands renders NOTES.txt (helm 4 install --dry-run=client, no
// cluster) and returns the kubectl command lines it prints.
func notesCommands(t *testing.T, c valuesCase) []string {
	t.Helper()
	requireTools(t)
	args := []string{"install", releaseName, chartDir, "--dry-run=client", "--namespace", releaseNamespace,
		"--kubeconfig", filepath.Join(t.TempDir(), "no-kubeconfig")}
	for _, f := range c.files {
		args = append(args, "-f", f)
	}
	out, err := runHelm(context.Background(), helm4Path, args...)
	require.NoError(t, err)
	i := strings.Index(out, "NOTES:")
	require.GreaterOrEqual(t, i, 0, "install printed no NOTES")
	var cmds []string
	for _, l := range strings.Split(out[i:], "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "kubectl ") {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// Every kubectl command NOTES.txt prints names objects, containers, ports
// and binaries of the rendered release: exec and logs a container of the
// server Deployment, the orchestrator's binary at its image path with
// subcommands and flags the real CLI accepts and the API port it listens
// on, the hub's database where the hub container has it.
func TestNotesCommandsMatchTheRender(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			cmds := notesCommands(t, c)
			var verbs []string
			for _, cmd := range cmds {
				verbs = append(verbs, checkKubectl(t, m, cmd))
			}
			for _, want := range []string{"rollout", "exec", "logs"} {
				assert.Contains(t, verbs, want, "NOTES print no kubectl %s", want)
			}
			v := mergedValues(t, c)
			if v["hub"].(map[string]any)["protocol"] == "smc-compute" {
				assert.True(t, slices.ContainsFunc(cmds, func(s string) bool { return strings.Contains(s, "make-user-admin") }),
					"smc-compute: NOTES print the make-user-admin step")
			}
		})
	}
}

// The kubectl command of `cocalc-k8s project --help` works on the default render.
func TestProjectHelpCommandMatchesTheRender(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, cli.ExitOK, cli.Execute(context.Background(), []string{"project", "--help"}, &out, &errOut), errOut.String())
	var cmd string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "kubectl exec") {
			cmd = l
		}
	}
	require.NotEmpty(t, cmd, "project --help shows no kubectl exec command:\n%s", out.String())
	cmd = strings.ReplaceAll(cmd, "<release>", releaseName)
	// The help has no -n: kubectl's namespace is the release's.
	cmd = strings.Replace(cmd, "kubectl ", "kubectl -n "+releaseNamespace+" ", 1)
	assert.Equal(t, "exec", checkKubectl(t, renderObjects(t, caseByName(t, "default")), cmd))
}

var placeholder = regexp.MustCompile(`^<[a-z-]+>$`)

// checkKubectl checks one "kubectl -n <namespace> <verb> ..." line against
// the render and returns its verb.
func checkKubectl(t *testing.T, m manifests, line string) string {
	t.Helper()
	f := strings.Fields(line)
	require.GreaterOrEqual(t, len(f), 5, line)
	require.Equal(t, []string{"kubectl", "-n", releaseNamespace}, f[:3], "%s: namespace", line)
	verb, rest := f[3], f[4:]
	switch verb {
	case "rollout":
		require.Len(t, rest, 2, line)
		assert.Equal(t, "status", rest[0], line)
		deployment(t, m, rest[1], "deployment/", line)
	case "port-forward":
		require.Len(t, rest, 2, line)
		name, ok := strings.CutPrefix(rest[0], "service/")
		require.True(t, ok, line)
		svc := one[*corev1.Service](t, m, name)
		_, remote, ok := strings.Cut(rest[1], ":")
		require.True(t, ok, line)
		assert.True(t, slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == remote }),
			"%s: service %s has no port %s", line, name, remote)
	case "get":
		require.Len(t, rest, 2, line)
		assert.Equal(t, "service", rest[0], line)
		one[*corev1.Service](t, m, rest[1])
	case "logs":
		require.Len(t, rest, 3, line)
		d := deployment(t, m, rest[0], "deploy/", line)
		require.Equal(t, "-c", rest[1], "%s: names its container (the default one is the hub)", line)
		serverContainer(t, d, rest[2], line)
	case "exec":
		require.GreaterOrEqual(t, len(rest), 5, line)
		d := deployment(t, m, rest[0], "deploy/", line)
		require.Equal(t, "-c", rest[1], "%s: names its container (the default one is the hub)", line)
		c := serverContainer(t, d, rest[2], line)
		require.Equal(t, "--", rest[3], line)
		argv := rest[4:]
		switch c.Name {
		case "orchestrator":
			checkOrchestratorExec(t, c, argv, line)
		case "hub":
			checkHubExec(t, d, c, argv, line)
		default:
			t.Errorf("%s: exec into container %s", line, c.Name)
		}
	default:
		t.Errorf("%s: unexpected kubectl verb %s", line, verb)
	}
	return verb
}

func deployment(t *testing.T, m manifests, ref, prefix, line string) *appsv1.Deployment {
	t.Helper()
	name, ok := strings.CutPrefix(ref, prefix)
	require.True(t, ok, "%s: %q is not %s<name>", line, ref, prefix)
	return one[*appsv1.Deployment](t, m, name)
}

func serverContainer(t *testing.T, d *appsv1.Deployment, name, line string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s: deployment %s has no container %s", line, d.Name, name)
	return corev1.Container{}
}

// checkOrchestratorExec: the image's binary (the container runs the image's
// entrypoint), a command line the CLI accepts (run against a closed loopback
// port, it fails only for the unreachable API, not for usage), and --api on
// the port `serve --listen` has in the render.
func checkOrchestratorExec(t *testing.T, c corev1.Container, argv []string, line string) {
	t.Helper()
	assert.Empty(t, c.Command, "the orchestrator container runs its image's entrypoint")
	require.Equal(t, orchestratorBinary, argv[0], "%s: the orchestrator image's binary", line)
	listen := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--listen="); ok {
			listen = v
		}
	}
	require.NotEmpty(t, listen, "orchestrator args have no --listen")
	api := "http://127.0.0.1:" + strconv.Itoa(cli.DefaultAPIPort) // the CLI's default
	args := make([]string, 0, len(argv))
	for _, a := range argv[1:] {
		if v, ok := strings.CutPrefix(a, "--api="); ok {
			api = v
			continue
		}
		if placeholder.MatchString(a) {
			a = "7b3a4b32-8f0e-4c1a-9d2e-0123456789ab" // a project id
		}
		args = append(args, a)
	}
	u, err := url.Parse(api)
	require.NoError(t, err, line)
	assert.Equal(t, listen, u.Host, "%s: --api must reach `serve --listen`", line)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close())
	var out, errOut bytes.Buffer
	code := cli.Execute(context.Background(), append(args, "--api=http://"+closed, "--timeout=5s"), &out, &errOut)
	assert.Equal(t, cli.ExitUnavailable, code, "%s: the CLI must accept it and only miss the API (stderr %q)", line, errOut.String())
}

// checkHubExec: make-user-admin runs psql; with the embedded database it is
// told the socket directory, which must lie on the hub's data volume (the
// 2020 image keeps PostgreSQL in /projects/postgres); with an external
// database the hub container already has PGHOST and the rest.
func checkHubExec(t *testing.T, d *appsv1.Deployment, c corev1.Container, argv []string, line string) {
	t.Helper()
	require.Equal(t, "make-user-admin", filepath.Base(argv[len(argv)-2]), line)
	require.True(t, placeholder.MatchString(argv[len(argv)-1]), "%s: ends with the e-mail placeholder", line)
	var env []string
	if argv[0] == "env" {
		env = argv[1 : len(argv)-2]
	}
	hasPGHOST := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "PGHOST" })
	if hasPGHOST {
		assert.Empty(t, env, "%s: the container's PG* environment (external database) must not be overridden", line)
		return
	}
	var host string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PGHOST="); ok {
			host = v
		}
	}
	require.NotEmpty(t, host, "%s: embedded database: PGHOST (the socket directory) must be given", line)
	var dataMount string
	for _, vm := range c.VolumeMounts {
		if vm.Name == "data" {
			dataMount = vm.MountPath
		}
	}
	require.NotEmpty(t, dataMount, "hub container mounts no data volume")
	assert.True(t, strings.HasPrefix(host, dataMount+"/"), "%s: socket %s is not on the data volume %s", line, host, dataMount)
	claim := ""
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	assert.NotEmpty(t, claim, "the data volume is a claim")
}

// The operator guide's commands are the tested ones: each `kubectl` line of
// its code blocks is one the NOTES print for some values case (release and
// namespace cocalc, as in the guide), or one of the generic inspection
// commands listed here; each values file it installs exists and is a render case.
func TestOperatorGuideCommandsAreTested(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operator-guide.md"))
	require.NoError(t, err)
	generic := map[string]bool{
		"kubectl -n cocalc get events --sort-by=.lastTimestamp": true,
		"kubectl -n cocalc describe pod <pod>":                  true,
	}
	printed := map[string]bool{}
	for _, c := range platformCases(t) {
		for _, l := range notesCommands(t, c) {
			printed[l] = true
		}
	}
	cases := map[string]bool{}
	for _, c := range renderCases(t) {
		cases[c.name] = true
	}
	inBlock, seen := false, 0
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			continue
		}
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "kubectl ") {
			seen++
			assert.True(t, printed[l] || generic[l], "guide command not printed by NOTES for any values/ case: %s", l)
		}
		for _, m := range regexp.MustCompile(`-f values/([a-z0-9-]+)\.yaml`).FindAllStringSubmatch(l, -1) {
			assert.True(t, cases[m[1]], "guide installs values/%s.yaml, which is no render case", m[1])
		}
	}
	assert.Greater(t, seen, 5, "the guide's kubectl commands were not found")
}
