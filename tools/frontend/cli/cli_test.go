package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

const pid = "7b3a4b32-8f0e-4c1a-9d2e-0123456789ab"

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpDocumentsEveryCommand(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" || strings.HasPrefix(c.CommandPath(), "cocalc-k8s completion") {
			return
		}
		if c.Short == "" || c.Long == "" {
			t.Errorf("%s lacks Short or Long help", c.CommandPath())
		}
		args := append(strings.Fields(c.CommandPath())[1:], "--help")
		code, out, _ := run(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, output %q", args, code, out)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(io.Discard, io.Discard))
	_, out, _ := run(t, "--help")
	for _, want := range []string{"serve", "project", "check", "version", "Exit codes"} {
		if !strings.Contains(out, want) {
			t.Errorf("root help lacks %q", want)
		}
	}
	_, out, _ = run(t, "serve", "--help")
	for _, flag := range []string{"--template", "--listen", "--health-listen", "--kubeconfig", "--kube-qps", "--kube-burst",
		"--log-format", "--log-level", "--idle-check-interval", "--shutdown-timeout", "127.0.0.1:8470", ":8471", "(default 50)", "(default 100)", "(default 1m0s)"} {
		if !strings.Contains(out, flag) {
			t.Errorf("serve help lacks %q", flag)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"no-such-command"},
		{"project", "status"},
		{"project", "status", pid, "extra"},
		{"project", "status", strings.ToUpper(pid)},
		{"project", "start", "{" + pid + "}"},
		{"project", "start", pid, "--bogus"},
		{"project", "start", pid, "--cores", "many"},
		{"project", "start", pid, "--env", "NOEQUALS"},
		{"project", "status", pid, "-o", "yaml"},
		{"serve", "--log-format", "xml"},
		{"serve", "--template", "/nonexistent/template.yaml"},
		{"serve", "--idle-stop", "sometimes"},
		{"serve", "--hub-protocol", "kucalc"},
		{"serve", "--hub-protocol", "database"},
		{"serve", "--max-inflight", "0"},
		{"serve", "--max-queued", "-1"},
		{"serve", "--queue-wait", "0s"},
		{"check"},
		{"check", "--tcp", "no-port"},
		{"version", "extra"},
	} {
		if code, _, errOut := run(t, args...); code != ExitUsage || !strings.Contains(errOut, "error:") {
			t.Errorf("%v: exit %d (stderr %q), want %d", args, code, errOut, ExitUsage)
		}
	}
}

// TestIdleStopNeedsAnActivitySource: by default projects are stopped for
// idleness exactly where the hub's database is an activity source, and by
// the loop that reads it.
func TestIdleStopNeedsAnActivitySource(t *testing.T) {
	for _, tc := range []struct {
		protocol, mode string
		postgres       bool
		want           idlePolicy
	}{
		{ProtocolSMCCompute, "auto", false, idlePolicy{}},
		{ProtocolSMCCompute, "auto", true, idlePolicy{hubSweep: true}},
		{ProtocolSMCCompute, "on", true, idlePolicy{hubSweep: true}},
		{ProtocolSMCCompute, "on", false, idlePolicy{orchestratorSweep: true}},
		{ProtocolSMCCompute, "off", true, idlePolicy{}},
		{ProtocolDatabase, "auto", true, idlePolicy{orchestratorSweep: true}},
		{ProtocolDatabase, "on", true, idlePolicy{orchestratorSweep: true}},
		{ProtocolDatabase, "off", true, idlePolicy{}},
	} {
		got, err := resolveIdlePolicy(tc.protocol, tc.mode, tc.postgres)
		if err != nil {
			t.Errorf("%s --idle-stop=%s postgres=%v: %v", tc.protocol, tc.mode, tc.postgres, err)
			continue
		}
		stops := got.orchestratorSweep || got.hubSweep
		if got.orchestratorSweep != tc.want.orchestratorSweep || got.hubSweep != tc.want.hubSweep || stops == (got.off != "") {
			t.Errorf("%s --idle-stop=%s postgres=%v: %+v, want %+v (and a log line exactly when nothing stops)", tc.protocol, tc.mode, tc.postgres, got, tc.want)
		}
	}
	// The line a default smc-compute install logs says what and why.
	got, _ := resolveIdlePolicy(ProtocolSMCCompute, "auto", false)
	for _, want := range []string{"not stopped by age", "no activity source", "--postgres"} {
		if !strings.Contains(got.off, want) {
			t.Errorf("startup line %q lacks %q", got.off, want)
		}
	}
	for _, bad := range [][3]string{{"kucalc", "auto", "--hub-protocol"}, {ProtocolDatabase, "auto", "--postgres"}, {ProtocolSMCCompute, "sometimes", "--idle-stop"}} {
		_, err := resolveIdlePolicy(bad[0], bad[1], false)
		if err == nil || !strings.Contains(err.Error(), bad[2]) {
			t.Errorf("%v: error %v, want a usage error naming %s", bad, err, bad[2])
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "cocalc-k8s dev") {
		t.Fatalf("exit %d out %q", code, out)
	}
}

// apiStub answers the project API with canned responses.
func apiStub(t *testing.T, code int, body any) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runningStatus() orchestrator.ProjectStatus {
	id := project.MustParse(pid)
	return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Running, IP: "10.244.0.7"}, Pod: id.PodName(), HubPort: 6000, RawPort: 6001}
}

func TestProjectOutputTableAndJSON(t *testing.T) {
	srv := apiStub(t, 200, runningStatus())
	code, out, _ := run(t, "project", "status", pid, "--api", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "PROJECT") || strings.Join(strings.Fields(lines[1]), " ") != pid+" running - 10.244.0.7 no" {
		t.Fatalf("table:\n%s", out)
	}
	code, out, _ = run(t, "project", "start", pid, "--api", srv.URL, "-o", "json", "--cores", "2")
	var st orchestrator.ProjectStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.State != state.Running || st.IP != "10.244.0.7" {
		t.Fatalf("json: exit %d out %q", code, out)
	}
	list := apiStub(t, 200, map[string]any{"projects": []orchestrator.ProjectStatus{runningStatus(), runningStatus()}})
	code, out, _ = run(t, "project", "list", "--api", list.URL, "-o", "json")
	var l []orchestrator.ProjectStatus
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l) != 2 {
		t.Fatalf("list json: exit %d out %q", code, out)
	}
	empty := apiStub(t, 200, map[string]any{"projects": []any{}})
	if code, out, _ = run(t, "project", "list", "--api", empty.URL, "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty list: exit %d out %q", code, out)
	}
}

func TestProjectExitCodes(t *testing.T) {
	tests := []struct {
		name string
		code int
		want int
	}{
		{"bad request", 400, ExitUsage},
		{"conflict", 409, ExitFailed},
		{"api failure", 502, ExitFailed},
		{"internal", 500, ExitFailed},
		{"not ready", 503, ExitUnavailable},
		{"timeout", 504, ExitTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := apiStub(t, tt.code, map[string]string{"error": "something " + tt.name})
			code, _, errOut := run(t, "project", "start", pid, "--api", srv.URL)
			if code != tt.want || !strings.Contains(errOut, "something "+tt.name) {
				t.Fatalf("exit %d (stderr %q), want %d", code, errOut, tt.want)
			}
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if code, _, _ := run(t, "project", "stop", pid, "--api", "http://"+addr); code != ExitUnavailable {
		t.Fatalf("unreachable API: exit %d, want %d", code, ExitUnavailable)
	}
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)
	if code, _, _ := run(t, "project", "start", pid, "--api", slow.URL, "--timeout", "200ms"); code != ExitTimeout {
		t.Fatalf("client timeout: exit %d, want %d", code, ExitTimeout)
	}
}

func TestCheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer ok.Close()
	code, out, _ := run(t, "check", "--tcp", ok.Listener.Addr().String(), "--http", ok.URL+"/readyz", "--timeout", "5s")
	if code != 0 || !strings.Contains(out, "ok tcp") || !strings.Contains(out, "ok http") {
		t.Fatalf("exit %d out %q", code, out)
	}
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer failing.Close()
	if code, _, errOut := run(t, "check", "--http", failing.URL, "--timeout", "300ms", "--interval", "50ms"); code != ExitTimeout || !strings.Contains(errOut, "503") {
		t.Fatalf("failing http: exit %d stderr %q", code, errOut)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if code, _, _ := run(t, "check", "--tcp", closed, "--timeout", "300ms", "--interval", "50ms"); code != ExitTimeout {
		t.Fatalf("closed port: exit %d", code)
	}
	// A target that comes up during the wait is found.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	late := ln2.Addr().String()
	ln2.Close()
	go func() {
		time.Sleep(200 * time.Millisecond)
		if l, err := net.Listen("tcp", late); err == nil {
			defer l.Close()
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}
	}()
	if code, _, _ := run(t, "check", "--tcp", late, "--timeout", "10s", "--interval", "50ms"); code != 0 {
		t.Fatalf("late target: exit %d", code)
	}
}

// TestServeEndToEnd runs "serve" over a fake clientset and drives it with
// the CLI's own API client.
func TestServeEndToEnd(t *testing.T) {
	dir := t.TempDir()
	tpl := fixture.Template()
	tpl.Storage.ServerPath = filepath.Join(dir, "homes")
	if err := os.Mkdir(tpl.Storage.ServerPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() != 0 {
		tpl.Security.RunAsUser, tpl.Security.RunAsGroup, tpl.Security.FSGroup = int64(os.Getuid()), int64(os.Getgid()), int64(os.Getgid())
	}
	tplFile, kubeconfig := writeTemplateAndKubeconfig(t, dir, tpl)

	cs := fake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fixture.NFSServiceName, Namespace: fixture.Namespace},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20"}})
	kubelet(t, cs)
	var gotQPS []float32 // of each client made: pods, then Events
	var addrs = make(chan [2]string, 1)
	oldCS, oldL := newClientset, onListening
	t.Cleanup(func() { newClientset, onListening = oldCS, oldL })
	var gotContent []string
	newClientset = func(cfg *rest.Config) (kubernetes.Interface, error) {
		gotQPS, gotContent = append(gotQPS, cfg.QPS), append(gotContent, cfg.ContentType)
		return cs, nil
	}
	onListening = func(api, health net.Addr) { addrs <- [2]string{api.String(), health.String()} }

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var serveCode int
	var serveErr bytes.Buffer
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveCode = Execute(ctx, []string{"serve", "--template", tplFile, "--kubeconfig", kubeconfig,
			"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--log-format", "json", "--shutdown-timeout", "5s",
			"--template-reload-interval", "20ms"}, io.Discard, &serveErr)
	}()
	var a [2]string
	select {
	case a = <-addrs:
	case <-time.After(20 * time.Second):
		cancel()
		wg.Wait()
		t.Fatalf("serve did not listen: exit %d %s", serveCode, serveErr.String())
	}
	api, health := "http://"+a[0], "http://"+a[1]
	if code, _, errOut := run(t, "check", "--http", health+"/readyz", "--timeout", "10s", "--interval", "20ms"); code != 0 {
		t.Fatalf("readyz: %s", errOut)
	}
	code, out, errOut := run(t, "project", "start", pid, "--api", api, "-o", "json", "--memory", "2000")
	if code != 0 {
		t.Fatalf("start via API: exit %d %s", code, errOut)
	}
	var st orchestrator.ProjectStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.State != state.Running || st.IP == "" {
		t.Fatalf("start output %q", out)
	}
	if _, err := os.Stat(filepath.Join(tpl.Storage.ServerPath, pid)); err != nil {
		t.Fatalf("home not created: %v", err)
	}
	if code, out, _ := run(t, "project", "list", "--api", api); code != 0 || !strings.Contains(out, pid) {
		t.Fatalf("list: %d %q", code, out)
	}
	resp, err := http.Get(health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`cocalc_k8s_operations_total{operation="start",result="ok"} 1`, `cocalc_k8s_projects{state="running"} 1`,
		"cocalc_k8s_start_duration_seconds_bucket", "cocalc_k8s_pod_cache_synced 1", "cocalc_k8s_stale_pods 0"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A helm upgrade changes the mounted template: serve reloads it (the
	// running pod becomes stale), and keeps it when the next one is invalid.
	waitMetrics := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(health + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			missing := ""
			for _, w := range want {
				if !strings.Contains(string(body), w) {
					missing = w
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: metrics lack %q", what, missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	replace := func(data []byte) {
		t.Helper()
		tmp := tplFile + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, tplFile); err != nil {
			t.Fatal(err)
		}
	}
	upgraded := *tpl
	upgraded.Image.Tag = "1.2.4"
	data, err := yaml.Marshal(&upgraded)
	if err != nil {
		t.Fatal(err)
	}
	replace(data)
	waitMetrics("reload", `cocalc_k8s_template_reloads_total{result="ok"} 1`, "cocalc_k8s_stale_pods 1",
		"cocalc_k8s_template_last_reload_successful 1")
	replace([]byte("version: 1\nimage: {tag: latest}\n"))
	waitMetrics("invalid template", `cocalc_k8s_template_reloads_total{result="invalid"} 1`,
		"cocalc_k8s_template_last_reload_successful 0", "cocalc_k8s_stale_pods 1")
	if code, _, errOut := run(t, "project", "stop", pid, "--api", api); code != 0 {
		t.Fatalf("stop: %s", errOut)
	}
	if len(gotQPS) != 2 || gotQPS[0] != 50 || gotQPS[1] != 10 {
		t.Errorf("client QPS = %v, want the default 50 for pods and a separate 10 for Events", gotQPS)
	}
	for _, ct := range gotContent {
		if ct != "application/vnd.kubernetes.protobuf" {
			t.Errorf("client content types %v, want protobuf", gotContent)
		}
	}
	cancel() // as SIGTERM would
	wg.Wait()
	if serveCode != 0 {
		t.Fatalf("serve exit %d: %s", serveCode, serveErr.String())
	}
	if !strings.Contains(serveErr.String(), `"msg":"shutting down"`) {
		t.Errorf("no structured shutdown log: %s", serveErr.String())
	}
	for _, want := range []string{`"msg":"project pod template reloaded"`, `"msg":"project pod template changed but is invalid; keeping the running one"`} {
		if !strings.Contains(serveErr.String(), want) {
			t.Errorf("no log %s: %s", want, serveErr.String())
		}
	}
}

// kubelet marks every new pod Running and Ready (the fake clientset does
// not run pods).
func kubelet(t *testing.T, cs *fake.Clientset) {
	w, err := cs.CoreV1().Pods(fixture.Namespace).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	gvr := corev1.SchemeGroupVersion.WithResource("pods")
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type != watch.Added || pod.Status.Phase != "" {
				continue
			}
			p := pod.DeepCopy()
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIP = "10.244.0.9"
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			if err := cs.Tracker().Update(gvr, p, fixture.Namespace); err != nil {
				fmt.Println("kubelet:", err)
			}
		}
	}()
}

// writeTemplateAndKubeconfig writes tpl and a kubeconfig whose server never
// answers (the tests substitute a fake clientset) into dir.
func writeTemplateAndKubeconfig(t *testing.T, dir string, tpl *podtemplate.Template) (tplFile, kubeconfig string) {
	t.Helper()
	data, err := yaml.Marshal(tpl)
	if err != nil {
		t.Fatal(err)
	}
	tplFile = filepath.Join(dir, "template.yaml")
	kubeconfig = filepath.Join(dir, "kubeconfig")
	for path, content := range map[string][]byte{tplFile: data, kubeconfig: []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: "t"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`)} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tplFile, kubeconfig
}

// TestProjectDirectMode drives the cluster without the API (--kubeconfig),
// through the same core as serve.
func TestProjectDirectMode(t *testing.T) {
	dir := t.TempDir()
	tpl := fixture.Template()
	tpl.Storage.ServerPath = dir
	tplFile, kubeconfig := writeTemplateAndKubeconfig(t, dir, tpl)
	id := project.MustParse(pid)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: id.PodName(), Namespace: fixture.Namespace, Labels: tpl.SelectorLabels},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
			Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable}}}}
	cs := fake.NewClientset(pod)
	old := newClientset
	t.Cleanup(func() { newClientset = old })
	newClientset = func(*rest.Config) (kubernetes.Interface, error) { return cs, nil }

	code, out, errOut := run(t, "project", "status", pid, "--kubeconfig", kubeconfig, "--template", tplFile)
	if code != 0 || !strings.Contains(out, "starting") || !strings.Contains(out, "Unschedulable") {
		t.Fatalf("direct status: exit %d out %q err %q", code, out, errOut)
	}
	code, out, _ = run(t, "project", "list", "--kubeconfig", kubeconfig, "--template", tplFile, "-o", "json")
	var l []orchestrator.ProjectStatus
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l) != 1 || l[0].Reason != "Unschedulable" {
		t.Fatalf("direct list: exit %d out %q", code, out)
	}
	if code, _, errOut := run(t, "project", "stop", pid, "--kubeconfig", kubeconfig, "--template", tplFile); code != 0 {
		t.Fatalf("direct stop: exit %d %s", code, errOut)
	}
	if _, err := cs.CoreV1().Pods(fixture.Namespace).Get(context.Background(), id.PodName(), metav1.GetOptions{}); err == nil {
		t.Fatal("direct stop left the pod")
	}
	if code, _, _ := run(t, "project", "status", pid, "--kubeconfig", kubeconfig, "--template", filepath.Join(dir, "missing.yaml")); code != ExitUsage {
		t.Fatalf("missing template: exit %d", code)
	}
}

func TestEventsConfigHasItsOwnLimiter(t *testing.T) {
	shared := flowcontrol.NewTokenBucketRateLimiter(50, 100)
	cfg := &rest.Config{Host: "https://k8s.example", QPS: 50, Burst: 100, RateLimiter: shared, UserAgent: "cocalc-k8s/test"}
	ev := eventsConfig(cfg)
	if ev.RateLimiter != nil || ev.QPS != 10 || ev.Burst != 20 || ev.Host != cfg.Host || ev.UserAgent != "cocalc-k8s/test (events)" {
		t.Errorf("events config: limiter %v QPS %v burst %d host %q agent %q; want its own 10/s burst 20 limiter, same server",
			ev.RateLimiter, ev.QPS, ev.Burst, ev.Host, ev.UserAgent)
	}
	if cfg.RateLimiter != shared || cfg.QPS != 50 {
		t.Error("eventsConfig changed the pod client's config")
	}
	if ev := eventsConfig(&rest.Config{QPS: 2, Burst: 3}); ev.QPS != 1 || ev.Burst != 1 {
		t.Errorf("tiny limits: QPS %v burst %d, want at least 1", ev.QPS, ev.Burst)
	}
}
