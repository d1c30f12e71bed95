package chart

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli"
)

// hubValues are the values the hub wiring depends on, read from a case's
// merged values (chart defaults overlaid by its files).
type hubValues struct {
	protocol         string
	port             int32
	basePath         string
	pgMode           string
	external         map[string]any // postgresql.external
	embedded         map[string]any // hub.embeddedDatabase
	activityEmbedded bool
	checkPath        string
	checkPort        string
}

func readHubValues(t *testing.T, c valuesCase) hubValues {
	t.Helper()
	v := mergedValues(t, c)
	hub := v["hub"].(map[string]any)
	emb := hub["embeddedDatabase"].(map[string]any)
	pg := v["postgresql"].(map[string]any)
	hc := v["server"].(map[string]any)["healthCheck"].(map[string]any)
	return hubValues{
		protocol: hub["protocol"].(string), port: int32(hub["port"].(float64)), basePath: hub["basePath"].(string),
		pgMode: pg["mode"].(string), external: pg["external"].(map[string]any), embedded: emb,
		activityEmbedded: emb["activityInSmcCompute"].(bool),
		checkPath:        hc["path"].(string), checkPort: hc["port"].(string),
	}
}

// argValues returns every value of a repeatable "--name=value" argument.
func argValues(c corev1.Container, name string) []string {
	var res []string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			res = append(res, v)
		}
	}
	return res
}

// The cases that must cover both protocols, both database modes and the
// 2020 hub with an image that honours an external database.
func TestHubCasesCoverBothProtocols(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range renderCases(t) {
		h := readHubValues(t, c)
		seen[h.protocol+"/"+h.pgMode] = true
	}
	for _, want := range []string{"smc-compute/embedded", "smc-compute/external", "database/embedded", "database/external"} {
		assert.True(t, seen[want], "no values case renders %s", want)
	}
}

// The orchestrator is told the hub's protocol and, where the hub has a
// database it can read, a libpq connection string for exactly that database,
// without a password; database mode hands projects CONAT_SERVER (the hub port
// of the server Service) and BASE_PATH.
func TestOrchestratorHubWiring(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := readHubValues(t, c)
			m := renderObjects(t, c)
			spec := serverDeployment(t, m).Spec.Template.Spec
			o := orch(t, spec)
			assert.Equal(t, []string{h.protocol}, argValues(o, "--hub-protocol"))

			dsns := argValues(o, "--postgres")
			wantDB := h.protocol == "database" || h.pgMode == "external" || h.activityEmbedded
			if !wantDB {
				assert.Empty(t, dsns, "no reachable hub database: no --postgres (the orchestrator then turns the idle stop off)")
			} else {
				require.Len(t, dsns, 1)
				want := h.embedded
				if h.pgMode == "external" {
					want = h.external
				}
				cfg, err := pgconn.ParseConfig(dsns[0] + " password=''")
				require.NoError(t, err, "--postgres must be a libpq connection string: %s", dsns[0])
				assert.Equal(t, want["host"], cfg.Host)
				assert.EqualValues(t, want["port"], cfg.Port)
				assert.Equal(t, want["database"], cfg.Database)
				assert.Equal(t, want["user"], cfg.User)
				assert.NotContains(t, strings.ToLower(dsns[0]), "password")
			}

			envs := argValues(o, "--project-env")
			svc := one[*corev1.Service](t, m, releaseName+"-server")
			_, hubSvcPort := servicePortFor(svc, "hub")
			if h.protocol != "database" {
				assert.Empty(t, envs, "the 2020 hub's projects get no conat settings")
				assert.Zero(t, hubSvcPort, "the server Service exposes the hub port only in database mode")
				assert.NotContains(t, containerPortNames(container(t, spec, "hub")), "hub")
				return
			}
			got := map[string]string{}
			for _, e := range envs {
				k, v, ok := strings.Cut(e, "=")
				require.True(t, ok, e)
				got[k] = v
			}
			require.Contains(t, got, "CONAT_SERVER")
			assert.Equal(t, h.basePath, got["BASE_PATH"])
			u, err := url.Parse(got["CONAT_SERVER"])
			require.NoError(t, err)
			assert.Equal(t, "http", u.Scheme)
			// The URL names the server Service in its namespace, at the Service port that leads to the
			// hub container's port "hub" = hub.port, plus the base path as CoCalc's own default has it.
			assert.Equal(t, fmt.Sprintf("%s.%s.svc", svc.Name, svc.Namespace), u.Hostname())
			require.NotZero(t, hubSvcPort)
			assert.Equal(t, fmt.Sprint(hubSvcPort), u.Port())
			assert.Equal(t, h.port, namedContainerPort(t, container(t, spec, "hub"), "hub"))
			if h.basePath == "/" {
				assert.Empty(t, u.Path)
			} else {
				assert.Equal(t, h.basePath, u.Path)
			}
		})
	}
}

func containerPortNames(c corev1.Container) []string {
	var res []string
	for _, p := range c.Ports {
		res = append(res, p.Name)
	}
	return res
}

func namedContainerPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

// servicePortFor returns the Service port whose targetPort is the named container port.
func servicePortFor(svc *corev1.Service, target string) (string, int32) {
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.StrVal == target {
			return p.Name, p.Port
		}
	}
	return "", 0
}

// The external PostgreSQL password reaches pods only through a Secret
// reference: no argument, ConfigMap or other non-Secret object carries it (in
// clear or base64), and PGPASSWORD is a secretKeyRef in exactly the hub and
// orchestrator containers, never the init or test containers.
func TestPostgresPasswordStaysInTheSecret(t *testing.T) {
	const password = "Sentinel-pw-7f3a9c1e"
	for _, protocol := range []string{"database", "smc-compute"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			out := render(t, []string{defaultValuesFile()}, map[string]string{
				"hub.protocol": protocol, "hub.externalPostgresInSmcCompute": "true",
				"postgresql.mode": "external", "postgresql.external.host": "pg.example.org",
				"postgresql.external.password": password,
			})
			m := mustDecode(t, out)
			secrets := 0
			for _, doc := range strings.Split(out, "\n---") {
				if strings.Contains(doc, "\nkind: Secret\n") {
					secrets++
					continue
				}
				for _, form := range []string{password, base64.StdEncoding.EncodeToString([]byte(password))} {
					assert.NotContains(t, doc, form, "a non-Secret object carries the password:\n%s", doc)
				}
			}
			require.Equal(t, 1, secrets, "the chart's own Secret holds the password")
			d := serverDeployment(t, m)
			withPassword := map[string]bool{}
			for _, p := range podSpecs(m) {
				for _, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
					for _, e := range c.Env {
						if e.Name != "PGPASSWORD" {
							continue
						}
						withPassword[p.name+"/"+c.Name] = true
						assert.Empty(t, e.Value, "PGPASSWORD in clear in %s/%s", p.name, c.Name)
						require.NotNil(t, e.ValueFrom, "%s/%s", p.name, c.Name)
						require.NotNil(t, e.ValueFrom.SecretKeyRef, "%s/%s", p.name, c.Name)
						assert.Equal(t, releaseName+"-postgresql", e.ValueFrom.SecretKeyRef.Name)
					}
					for _, a := range slices.Concat(c.Command, c.Args) {
						assert.NotContains(t, strings.ToLower(a), "password", "%s/%s argument %q", p.name, c.Name, a)
					}
				}
			}
			server := "Deployment/" + d.Name
			assert.Equal(t, map[string]bool{server + "/hub": true, server + "/orchestrator": true}, withPassword,
				"the hub connects with it and the orchestrator's PostgreSQL client reads it; nothing else")
		})
	}
}

// postgresql.mode external does nothing with the 2020 image (its start script
// overrides PGHOST and starts its embedded database): refused, saying why,
// unless the admin declares an image that honours it; database mode takes it.
func TestExternalPostgresWith2020HubIsRefused(t *testing.T) {
	ext := map[string]string{"postgresql.mode": "external", "postgresql.external.host": "pg.example.org", "postgresql.external.password": "x"}
	_, err := renderE(t, []string{defaultValuesFile()}, ext)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "postgresql.mode: external does nothing with hub.protocol smc-compute")
	assert.Contains(t, err.Error(), "sets PGHOST to its embedded database's socket")

	for _, extra := range []map[string]string{{"hub.protocol": "database"}, {"hub.externalPostgresInSmcCompute": "true"}} {
		set := maps.Clone(ext)
		maps.Copy(set, extra)
		m := mustDecode(t, render(t, []string{defaultValuesFile()}, set))
		o := orch(t, serverDeployment(t, m).Spec.Template.Spec)
		assert.Len(t, argValues(o, "--postgres"), 1, "%v: the orchestrator reads the external database", extra)
	}
}

// smc-compute mode reads activity from the embedded database by default, as
// the chart's server image allows: the default connection string must be one
// its pg_hba.conf (tools/images/server) lets in over TCP without a password.
// Turned off, the orchestrator gets no database (and so no idle stop).
func TestEmbeddedActivityInSmcComputeMatchesServerImage(t *testing.T) {
	m := mustDecode(t, render(t, []string{defaultValuesFile()}, nil))
	dsns := argValues(orch(t, serverDeployment(t, m).Spec.Template.Spec), "--postgres")
	require.Len(t, dsns, 1, "smc-compute mode reads activity by default")
	cfg, err := pgconn.ParseConfig(dsns[0] + " password=''")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", cfg.Host, "the orchestrator shares the hub's pod: loopback")
	assert.Equal(t, uint16(5432), cfg.Port)

	hba, err := os.ReadFile(filepath.Join(repoRoot, "tools", "images", "server", "pg_hba.conf"))
	require.NoError(t, err)
	var tcp [][]string
	for _, line := range strings.Split(string(hba), "\n") {
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[0], "#") && f[0] != "local" {
			tcp = append(tcp, f)
		}
	}
	assert.Equal(t, [][]string{{"host", cfg.Database, cfg.User, cfg.Host + "/32", "trust"}}, tcp,
		"the server image trusts exactly the chart's default database, user and host over TCP")

	m = mustDecode(t, render(t, []string{defaultValuesFile()}, map[string]string{"hub.embeddedDatabase.activityInSmcCompute": "false"}))
	assert.Empty(t, argValues(orch(t, serverDeployment(t, m).Spec.Template.Spec), "--postgres"))
}

// A connection string value with quotes, backslashes or spaces stays one value.
func TestPostgresDSNQuoting(t *testing.T) {
	const user = `o'brien \x`
	f := filepath.Join(t.TempDir(), "values.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`hub: {protocol: database}
postgresql:
  mode: external
  external: {host: pg.example.org, password: x, user: "o'brien \\x"}
`), 0o600))
	m := mustDecode(t, render(t, []string{defaultValuesFile(), f}, nil))
	dsns := argValues(orch(t, serverDeployment(t, m).Spec.Template.Spec), "--postgres")
	require.Len(t, dsns, 1)
	cfg, err := pgconn.ParseConfig(dsns[0] + " password=''")
	require.NoError(t, err)
	assert.Equal(t, user, cfg.User)
	assert.Equal(t, "pg.example.org", cfg.Host)
}

// Ready means the hub answers: every hub probe without a handler of its own
// is an HTTP GET of server.healthCheck on a port the hub container has
// (https over HTTPS for the 2020 hub behind haproxy, the hub's own port in
// database mode), and the helm test pod asks the same through the Service.
func TestHubProbesAndHelmTestAskTheHub(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := readHubValues(t, c)
			m := renderObjects(t, c)
			spec := serverDeployment(t, m).Spec.Template.Spec
			hub := container(t, spec, "hub")
			wantPort := h.checkPort
			if wantPort == "" {
				wantPort = map[string]string{"smc-compute": "https", "database": "hub"}[h.protocol]
			}
			wantScheme := corev1.URISchemeHTTP
			if wantPort == "https" {
				wantScheme = corev1.URISchemeHTTPS
			}
			require.Contains(t, containerPortNames(hub), wantPort)
			for name, p := range map[string]*corev1.Probe{"startup": hub.StartupProbe, "liveness": hub.LivenessProbe, "readiness": hub.ReadinessProbe} {
				require.NotNil(t, p, name)
				require.NotNil(t, p.HTTPGet, "%s probe: the hub must answer HTTP, not only accept TCP", name)
				assert.Nil(t, p.TCPSocket, name)
				assert.Equal(t, h.checkPath, p.HTTPGet.Path, name)
				assert.Equal(t, wantPort, p.HTTPGet.Port.StrVal, name)
				assert.Equal(t, wantScheme, p.HTTPGet.Scheme, name)
			}

			pod, ok := maybe[*corev1.Pod](m, releaseName+"-test-connection")
			require.True(t, ok)
			args := pod.Spec.Containers[0].Args
			require.Equal(t, "check", args[0])
			i := slices.Index(args, "--http")
			require.GreaterOrEqual(t, i, 0, "helm test checks HTTP: %v", args)
			assert.NotContains(t, args, "--tcp")
			u, err := url.Parse(args[i+1])
			require.NoError(t, err)
			svc := one[*corev1.Service](t, m, releaseName+"-server")
			_, svcPort := servicePortFor(svc, wantPort)
			require.NotZero(t, svcPort, "the server Service leads to the hub's %s port", wantPort)
			assert.Equal(t, strings.ToLower(string(wantScheme)), u.Scheme)
			assert.Equal(t, svc.Name, u.Hostname())
			assert.Equal(t, fmt.Sprint(svcPort), u.Port())
			assert.Equal(t, h.checkPath, u.Path)
			assert.Equal(t, wantScheme == corev1.URISchemeHTTPS, slices.Contains(args, "--insecure-skip-tls-verify"),
				"certificate checks skipped exactly for the image's self-signed HTTPS")
		})
	}
}

// The defaults per protocol are the hubs' real endpoints: /alive behind the
// 2020 image's haproxy on 443, and on current CoCalc's own port.
func TestHubHealthCheckDefaults(t *testing.T) {
	for protocol, want := range map[string]struct {
		port   string
		scheme corev1.URIScheme
	}{"smc-compute": {"https", corev1.URISchemeHTTPS}, "database": {"hub", corev1.URISchemeHTTP}} {
		m := mustDecode(t, render(t, []string{defaultValuesFile()}, map[string]string{"hub.protocol": protocol}))
		p := container(t, serverDeployment(t, m).Spec.Template.Spec, "hub").ReadinessProbe
		require.NotNil(t, p.HTTPGet, protocol)
		assert.Equal(t, "/alive", p.HTTPGet.Path, protocol)
		assert.Equal(t, want.port, p.HTTPGet.Port.StrVal, protocol)
		assert.Equal(t, want.scheme, p.HTTPGet.Scheme, protocol)
	}
	// A probe that names its own handler is rendered as given.
	m := mustDecode(t, render(t, []string{defaultValuesFile()}, map[string]string{"server.livenessProbe.tcpSocket.port": "http"}))
	p := container(t, serverDeployment(t, m).Spec.Template.Spec, "hub").LivenessProbe
	assert.Nil(t, p.HTTPGet)
	require.NotNil(t, p.TCPSocket)
	assert.Equal(t, "http", p.TCPSocket.Port.StrVal)
}

// The arguments the chart renders are flags `cocalc-k8s` knows, with values
// of the right types: the binary parses them (--help stops before running).
func TestRenderedArgsParseAsCocalcK8sFlags(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			m := renderObjects(t, c)
			argSets := map[string][]string{"orchestrator": orch(t, serverDeployment(t, m).Spec.Template.Spec).Args}
			if pod, ok := maybe[*corev1.Pod](m, releaseName+"-test-connection"); ok {
				argSets["helm test"] = pod.Spec.Containers[0].Args
			}
			for name, args := range argSets {
				var stdout, stderr bytes.Buffer
				code := cli.Execute(context.Background(), append(slices.Clone(args), "--help"), &stdout, &stderr)
				assert.Equal(t, 0, code, "%s args %q: %s", name, args, stderr.String())
			}
		})
	}
}
