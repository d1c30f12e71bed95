package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/standin"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// The stand-ins for hosts beyond the cluster, in a network namespace the
// test makes inside the kind node (cluster.OutsideHost): an "internet"
// address from TEST-NET-3 and the cloud metadata address. Nothing sent to
// them leaves the node.
var (
	internetAddr = netip.MustParseAddr("203.0.113.10")
	metadataAddr = netip.MustParseAddr("169.254.169.254")
)

// hub talks to the stand-in hub in the server pod through the API
// server's pod proxy, as a browser would through the Service.
type hub struct {
	t   *testing.T
	c   *cluster.Cluster
	ns  string
	pod string
	// tolerateProxyTimeout: the API server's pod proxy gave up on a slow
	// answer (a start on a loaded machine, seen at load 70 on 2 cores);
	// start then waits for the project through status instead (the
	// orchestrator finishes a start whose caller gave up).
	tolerateProxyTimeout bool
}

func (h hub) do(method, path string, params map[string]string, body string) (int, []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 3*time.Minute)
	defer cancel()
	req := h.c.Client.CoreV1().RESTClient().Verb(method).Namespace(h.ns).Resource("pods").
		Name(h.pod + ":8080").SubResource("proxy").Suffix(path)
	for k, v := range params {
		req = req.Param(k, v)
	}
	if body != "" {
		req = req.Body([]byte(body)).SetHeader("Content-Type", "application/json")
	}
	var code int
	raw, err := req.Do(ctx).StatusCode(&code).Raw()
	if err != nil && code == 0 {
		if h.tolerateProxyTimeout && apierrors.IsTimeout(err) {
			return http.StatusGatewayTimeout, []byte(err.Error())
		}
		require.NoError(h.t, err, "%s %s", method, path)
	}
	return code, raw
}

func (h hub) status(id project.ID) orchestrator.ProjectStatus {
	h.t.Helper()
	code, raw := h.do("GET", "/projects/"+string(id)+"/status", nil, "")
	require.Equal(h.t, 200, code, "status %s: %s", id, raw)
	var st orchestrator.ProjectStatus
	require.NoError(h.t, json.Unmarshal(raw, &st))
	return st
}

// start starts id with quota JSON (empty: the template's defaults) and
// waits until it runs.
func (h hub) start(id project.ID, quota string) orchestrator.ProjectStatus {
	h.t.Helper()
	body := ""
	if quota != "" {
		body = `{"quota":` + quota + `}`
	}
	h.tolerateProxyTimeout = true
	code, raw := h.do("POST", "/projects/"+string(id)+"/start", nil, body)
	h.tolerateProxyTimeout = false
	if code != http.StatusGatewayTimeout {
		require.Equal(h.t, 200, code, "start %s: %s", id, raw)
	} else {
		h.t.Logf("start %s: the API server's proxy timed out (%s); waiting for the project through status", id, raw)
	}
	var st orchestrator.ProjectStatus
	require.Eventually(h.t, func() bool {
		st = h.status(id)
		return st.State == state.Running && st.IP != ""
	}, 2*time.Minute, time.Second, "project %s never ran", id)
	return st
}

// dial asks the server pod (from "") or a project (through the hub's proxy
// to its raw port) to connect to addr.
func (h hub) dial(from project.ID, addr string) standin.DialResult {
	h.t.Helper()
	path := "/dial"
	if from != "" {
		path = "/projects/" + string(from) + "/raw/dial"
	}
	code, raw := h.do("GET", path, map[string]string{"addr": addr, "timeout": "3s"}, "")
	require.Equal(h.t, 200, code, "dial %s from %q: %s", addr, from, raw)
	var res standin.DialResult
	require.NoError(h.t, json.Unmarshal(raw, &res))
	return res
}

// installInCluster installs values/kind.yaml with the stand-in images and
// returns the stand-in hub of the Ready server pod.
func installInCluster(t *testing.T, c *cluster.Cluster, ns string, set map[string]string) hub {
	t.Helper()
	install(t, c, ns, helmOptions(t, c, ns, set, valuesFile("kind.yaml")))
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 1, "one server pod")
	return hub{t: t, c: c, ns: ns, pod: pods.Items[0].Name}
}

// TestInClusterServerRunsProjects is the kind tier's end-to-end check of
// the chart as an admin installs it: the orchestrator inside the server
// pod (with the pod's own ServiceAccount token) starts real project pods,
// the server reaches them, storage is shared, NetworkPolicies isolate
// them (checked by real connections from inside the pods), and idle
// projects stop.
func TestInClusterServerRunsProjects(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	c.RequireCapability(t, cluster.NetworkPolicyEnforced)
	ns := newNamespace(t, c, "incluster", nil)
	// A short sweep so the idle stop shows within the test.
	// The hub stand-in has no database to read activity from: without
	// activityInSmcCompute=false the orchestrator would be given the
	// embedded database's address, find nothing listening, and (as
	// documented for such an image) stop nothing. So no activity source,
	// and the idle stop on by hand (--idle-stop=on: idleness counts from
	// the start and the API's touch).
	h := installInCluster(t, c, ns, map[string]string{
		"hub.embeddedDatabase.activityInSmcCompute": "false",
		"orchestrator.extraArgs[0]":                 "--idle-check-interval=2s",
		"orchestrator.extraArgs[1]":                 "--idle-stop=on",
	})

	a := project.MustParse("0a0a0a0a-0000-4000-8000-00000000000a")
	b := project.MustParse("0b0b0b0b-0000-4000-8000-00000000000b")

	var stA orchestrator.ProjectStatus
	t.Run("orchestrator starts a project pod", func(t *testing.T) {
		h.t = t
		stA = h.start(a, "")
		pod, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), stA.Pod, metav1.GetOptions{})
		require.NoError(t, err)
		require.Equal(t, corev1.PodRunning, pod.Status.Phase)
		require.NotNil(t, pod.Spec.AutomountServiceAccountToken)
		require.False(t, *pod.Spec.AutomountServiceAccountToken, "project pods carry no token")
	})
	require.NotEmpty(t, stA.IP, "project A must run for the rest of the test")

	t.Run("server reaches the project on 6000 and 6001", func(t *testing.T) {
		h.t = t
		for _, port := range []string{"hub", "raw"} {
			code, raw := h.do("GET", "/projects/"+string(a)+"/"+port+"/health", nil, "")
			require.Equal(t, 200, code, "%s port: %s", port, raw)
			require.Equal(t, "ok", string(raw))
		}
	})

	t.Run("a file the server writes is read by the project pod", func(t *testing.T) {
		h.t = t
		content := "written by the server at " + time.Now().UTC().Format(time.RFC3339Nano)
		code, raw := h.do("POST", "/projects/"+string(a)+"/file", map[string]string{"name": "from-server.txt"}, content)
		require.Equal(t, 204, code, "write: %s", raw)
		code, raw = h.do("GET", "/projects/"+string(a)+"/raw/file", map[string]string{"name": "from-server.txt"}, "")
		require.Equal(t, 200, code, "read in the project pod: %s", raw)
		require.Equal(t, content, string(raw))
		// And the other way: the project wrote its start marker into the
		// same home, as the project user.
		code, raw = h.do("GET", "/projects/"+string(a)+"/raw/file", map[string]string{"name": ".standin-started"}, "")
		require.Equal(t, 200, code, "marker: %s", raw)
	})

	t.Run("network isolation by real connections", func(t *testing.T) {
		h.t = t
		isolationTable(t, c, h, a, b, stA, nil)
	})

	t.Run("idle projects stop", func(t *testing.T) {
		h.t = t
		idle := project.MustParse("0c0c0c0c-0000-4000-8000-00000000000c")
		h.start(idle, `{"idleTimeoutSeconds":20}`)
		require.Eventually(t, func() bool { return h.status(idle).State != state.Running }, 2*time.Minute, time.Second,
			"project with a 20 s idle timeout still running")
		require.Eventually(t, func() bool {
			pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=project"})
			require.NoError(t, err)
			for _, p := range pods.Items {
				if strings.Contains(p.Name, string(idle)) {
					return false
				}
			}
			return true
		}, time.Minute, time.Second, "the idle project's pod was not deleted")
		require.Equal(t, state.Running, h.status(a).State, "project A (idle timeout 600 s) must keep running")
	})
}

// isolationTable checks the designed NetworkPolicy matrix (see
// test/e2e/README.md) by connections from inside the pods. Project A has
// no network quota; project B has network=outside.
//
// extra (may be nil) adds rows once B runs, e.g. the multi-node rows of
// multinode_test.go; it returns B's status for the caller too. Rows whose
// from is not a project and not "" dial from extraDialer.
func isolationTable(t *testing.T, c *cluster.Cluster, h hub, a, b project.ID, stA orchestrator.ProjectStatus,
	extra func(stB orchestrator.ProjectStatus) ([]isolationRow, func(addr string) standin.DialResult)) orchestrator.ProjectStatus {
	stB := h.start(b, `{"network":true}`)
	server, err := c.Client.CoreV1().Pods(h.ns).Get(t.Context(), h.pod, metav1.GetOptions{})
	require.NoError(t, err)
	apiSvc, err := c.Client.CoreV1().Services("default").Get(t.Context(), "kubernetes", metav1.GetOptions{})
	require.NoError(t, err)
	apiEP, err := c.Client.DiscoveryV1().EndpointSlices("default").List(t.Context(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	require.NoError(t, err)
	require.NotEmpty(t, apiEP.Items)
	require.NotEmpty(t, apiEP.Items[0].Endpoints)
	apiEndpoint := net.JoinHostPort(apiEP.Items[0].Endpoints[0].Addresses[0], fmt.Sprint(*apiEP.Items[0].Ports[0].Port))
	dns, err := c.Client.CoreV1().Services("kube-system").Get(t.Context(), "kube-dns", metav1.GetOptions{})
	require.NoError(t, err)

	outside := startOutsideHost(t, c)

	at := func(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }
	rows := []isolationRow{
		{"", "server → project A hub port", at(stA.IP, stA.HubPort), true},
		{"", "server → project A raw port", at(stA.IP, stA.RawPort), true},
		{"", "server → project B raw port", at(stB.IP, stB.RawPort), true},
		{"", "server → API server (Service)", at(apiSvc.Spec.ClusterIP, 443), true},
		{"", "server → internet stand-in (control)", at(internetAddr.String(), 8080), true},
		{"", "server → metadata stand-in (control)", at(metadataAddr.String(), 80), true},
		{a, "project A → DNS (TCP)", at(dns.Spec.ClusterIP, 53), true},
		{b, "project B → DNS (TCP)", at(dns.Spec.ClusterIP, 53), true},
		{b, "project B (network=outside) → internet", at(internetAddr.String(), 8080), true},
		{a, "project A → internet", at(internetAddr.String(), 8080), false},
		{a, "project A → project B raw port", at(stB.IP, stB.RawPort), false},
		{a, "project A → project B hub port", at(stB.IP, stB.HubPort), false},
		{b, "project B → project A raw port", at(stA.IP, stA.RawPort), false},
		{a, "project A → server http", at(server.Status.PodIP, 8080), false},
		{a, "project A → server orchestrator health", at(server.Status.PodIP, 8471), false},
		{b, "project B → server orchestrator health", at(server.Status.PodIP, 8471), false},
		{a, "project A → API server (Service)", at(apiSvc.Spec.ClusterIP, 443), false},
		{a, "project A → API server (endpoint)", apiEndpoint, false},
		{b, "project B → API server (Service)", at(apiSvc.Spec.ClusterIP, 443), false},
		{b, "project B → API server (endpoint)", apiEndpoint, false},
		{a, "project A → metadata", at(metadataAddr.String(), 80), false},
		{b, "project B (network=outside) → metadata", at(metadataAddr.String(), 80), false},
	}
	var extraDial func(addr string) standin.DialResult
	if extra != nil {
		more, dial := extra(stB)
		rows, extraDial = append(rows, more...), dial
	}
	var table strings.Builder
	table.WriteString("| from → to | want | got |\n|---|---|---|\n")
	for _, r := range rows {
		var res standin.DialResult
		if r.from == otherPod {
			res = extraDial(r.addr)
		} else {
			res = h.dial(r.from, r.addr)
		}
		fmt.Fprintf(&table, "| %s (%s) | %s | %s |\n", r.name, r.addr, verdict(r.allow), verdict(res.Connected))
		assert.Equal(t, r.allow, res.Connected, "%s (%s): %s", r.name, r.addr, res.Error)
	}
	t.Logf("isolation measured by real connections:\n%s", table.String())
	if t.Failed() {
		t.Logf("outside host log:\n%s", outside.Log(t.Context()))
	}
	return stB
}

// isolationRow is one connection of the truth table.
type isolationRow struct {
	from  project.ID // "" = the server pod; otherPod = extra's dialer
	name  string
	addr  string
	allow bool
}

// otherPod marks rows dialled by a pod outside the release (extra's dialer).
const otherPod project.ID = "other-pod"

func verdict(ok bool) string {
	if ok {
		return "connects"
	}
	return "blocked"
}

// startOutsideHost runs the project stand-in (built here, static) in a
// network namespace of the kind node, listening on the internet and
// metadata stand-in addresses.
func startOutsideHost(t *testing.T, c *cluster.Cluster) *cluster.OutsideHost {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outside")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./test/standins/project")
	build.Dir = repoRoot
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build the outside stand-in: %s", out)
	listen := net.JoinHostPort(internetAddr.String(), "8080") + "," + net.JoinHostPort(metadataAddr.String(), "80")
	host, err := c.StartOutsideHost(t.Context(), "cocalc-out", []netip.Addr{internetAddr, metadataAddr}, bin, "-listen="+listen, "-home=/tmp")
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := host.Stop(contextWithTimeout(30 * time.Second)); err != nil {
			t.Logf("stop outside host: %v", err)
		}
	})
	// Wait for the listener (from the node, not through any policy).
	require.Eventually(t, func() bool { return strings.Contains(host.Log(t.Context()), "serving") }, 30*time.Second, 200*time.Millisecond,
		"outside stand-in never started: %s", host.Log(t.Context()))
	return host
}
