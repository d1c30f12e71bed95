package bench

import (
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // reversed: Summarize must sort
	}
	tests := []struct {
		name               string
		in                 []time.Duration
		min, p50, p95, p99 time.Duration
		max, mean          time.Duration
	}{
		{"empty", nil, 0, 0, 0, 0, 0, 0},
		{"one", ms(7), 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond, 7 * time.Millisecond},
		{"nearest rank of 100", ms(hundred...), time.Millisecond, 50 * time.Millisecond, 95 * time.Millisecond, 99 * time.Millisecond, 100 * time.Millisecond, 50500 * time.Microsecond},
		{"four", ms(4, 1, 3, 2), time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond, 2500 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summarize(tt.in)
			if got.N != len(tt.in) || got.Min != tt.min || got.P50 != tt.p50 || got.P95 != tt.p95 || got.P99 != tt.p99 || got.Max != tt.max || got.Mean != tt.mean {
				t.Errorf("Summarize = %+v, want min %v p50 %v p95 %v p99 %v max %v mean %v", got, tt.min, tt.p50, tt.p95, tt.p99, tt.max, tt.mean)
			}
		})
	}
}

func TestParseRequestCounts(t *testing.T) {
	const text = `# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 12
apiserver_request_total{code="404",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="",scope="",subresource="/api",verb="GET",version=""} 2.5e+01
apiserver_request_total{code="201",component="apiserver",dry_run="",group="events.k8s.io",resource="events",scope="namespace",subresource="",verb="POST",version="v1"} 4
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="events",scope="namespace",subresource="",verb="POST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="events",scope="namespace",subresource="",verb="PATCH",version="v1"} 1
apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 99
apiserver_request_total_other{verb="GET"} 1000
`
	got, err := ParseRequestCounts(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := RequestCounts{"GET pods": 15, "POST pods/binding": 5, "GET //api": 25,
		"POST events.events.k8s.io": 4, "POST events": 2, "PATCH events": 1}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if got.Total() != 52 {
		t.Errorf("Total = %v, want 52", got.Total())
	}
	if got.Writes("events") != 3 || got.Writes("pods") != 0 {
		t.Errorf("Writes(events) = %v, want 3 (core group only); Writes(pods) = %v, want 0", got.Writes("events"), got.Writes("pods"))
	}
	if got.Resource("pods") != 15 {
		t.Errorf(`Resource("pods") = %v, want 15 (subresources are separate)`, got.Resource("pods"))
	}
	d := got.Sub(RequestCounts{"GET pods": 10, "GET //api": 25, "POST events.events.k8s.io": 4, "POST events": 2, "PATCH events": 1})
	if len(d) != 2 || d["GET pods"] != 5 || d["POST pods/binding"] != 5 {
		t.Errorf("Sub = %v", d)
	}
	byCode, err := parseRequests(strings.NewReader(text), true)
	if err != nil {
		t.Fatal(err)
	}
	if byCode["GET pods 404"] != 3 || byCode.Succeeded("GET", "pods") != 12 || byCode.Succeeded("POST", "events") != 2 || byCode.Succeeded("PATCH", "events") != 1 {
		t.Errorf("by code: %v", byCode)
	}
	if _, err := ParseRequestCounts(strings.NewReader(`apiserver_request_total{verb="GET"} x`)); err == nil {
		t.Error("a non-numeric value must be an error")
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "381 (cocalc-k8s) S 1 381 1 0 -1 4194560 1234 0 0 0 150 25 0 0 20 0 9 0 100 0 0", 1750 * time.Millisecond, false},
		{"spaces and parens in the name", "7 (a (b) c) R 1 7 1 0 -1 0 0 0 0 0 3 4 0 0", 70 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 2", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// The anonymous part of RSS is read too (the rest is the executable's
// file-backed pages).
func TestReadProcSplitsAnonymousMemory(t *testing.T) {
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 || s.AnonBytes <= 0 || s.AnonBytes > s.RSSBytes {
		t.Fatalf("RSS %d, anonymous %d: want 0 < anonymous ≤ RSS", s.RSSBytes, s.AnonBytes)
	}
}

func TestOutputToState(t *testing.T) {
	tests := []struct{ out, want string }{
		{"project-x   1/1   Running   0   3s   10.0.0.5   node-1   <none>   <none>", "running"},
		{"project-x   1/1   Terminating   0   3s   10.0.0.5   node-1   <none>   <none>", "stopping"},
		{"project-x   0/1   Pending   0   0s   <none>   <none>   <none>   <none>", "Pending"},
		{"project-x   0/1   ContainerCreating   0   1s   <none>   node-1   <none>   <none>", "starting"},
		{`Error from server (NotFound): pods "project-x" not found`, "opened"},
		{"", "starting"},
	}
	for _, tt := range tests {
		if got := OutputToState(tt.out); got != tt.want {
			t.Errorf("OutputToState(%q) = %q, want %q", tt.out, got, tt.want)
		}
	}
}

func TestOriginalPodYAML(t *testing.T) {
	id := project.MustParse("3f2a4c1e-9b7d-4e2a-8c55-0123456789ab")
	for _, delay := range []time.Duration{0, 1500 * time.Millisecond} {
		var pod corev1.Pod
		if err := yaml.UnmarshalStrict([]byte(OriginalPodYAML(id, "10.96.0.10", delay)), &pod); err != nil {
			t.Fatalf("delay %v: the original's pod YAML does not decode strictly: %v", delay, err)
		}
		if pod.Name != id.PodName() || pod.Labels["project_id"] != id.String() || pod.Spec.Volumes[0].NFS.Server != "10.96.0.10" ||
			pod.Spec.Volumes[0].NFS.Path != "/"+id.String() || pod.Spec.Containers[0].Resources.Requests.Memory().String() != "500Mi" {
			t.Errorf("delay %v: unexpected pod %+v", delay, pod)
		}
		if got := pod.Annotations[ReadyDelayAnnotation]; (delay > 0) != (got != "") || (delay > 0 && got != delay.String()) {
			t.Errorf("delay %v: annotation %q", delay, got)
		}
		if pod.Namespace != "" {
			t.Error("the original names no namespace (kubectl's context decides)")
		}
	}
}

func TestTemplateValid(t *testing.T) {
	for _, delay := range []time.Duration{0, time.Second} {
		tpl, err := Template("cocalc", t.TempDir(), delay)
		if err != nil {
			t.Fatal(err)
		}
		if got := tpl.Annotations[ReadyDelayAnnotation]; (delay > 0) != (got != "") {
			t.Errorf("delay %v: annotation %q", delay, got)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[project.ID]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if _, err := project.Parse(id.String()); err != nil || seen[id] {
			t.Fatalf("NewID() = %q: %v (duplicate %v)", id, err, seen[id])
		}
		seen[id] = true
	}
}

func TestForegroundIgnoresBackground(t *testing.T) {
	c := RequestCounts{"PUT leases.coordination.k8s.io": 40, "PATCH nodes/status": 3, "POST events": 2, "POST events.events.k8s.io": 7, "GET nodes": 1, "GET pods": 5, "GET //api": 1}
	if got := c.Foreground(); got != 6 {
		t.Errorf("Foreground = %v, want 6 (pods and discovery only)", got)
	}
}

func TestParseWatchLists(t *testing.T) {
	const text = `apiserver_watch_list_duration_seconds_bucket{component="apiserver",group="",resource="pods",scope="namespace",version="v1",le="1"} 2
apiserver_watch_list_duration_seconds_count{component="apiserver",group="",resource="pods",scope="namespace",version="v1"} 2
apiserver_watch_list_duration_seconds_count{component="apiserver",group="",resource="pods",scope="cluster",version="v1"} 1
apiserver_watch_list_duration_seconds_count{component="apiserver",group="",resource="nodes",scope="cluster",version="v1"} 5
`
	got, err := parseWatchLists(strings.NewReader(text), "pods")
	if err != nil || got != 3 {
		t.Errorf("parseWatchLists = %v, %v; want 3", got, err)
	}
}

func TestSamplePeakRSSSeesATransientPeak(t *testing.T) {
	before, err := ReadProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	stop := samplePeakRSS(os.Getpid(), time.Millisecond)
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1 // resident
	}
	time.Sleep(20 * time.Millisecond)
	runtime.KeepAlive(buf)
	peak := stop()
	if peak < before.RSSBytes+48<<20 {
		t.Errorf("peak RSS %d MiB, want at least %d MiB (64 MiB touched)", peak>>20, (before.RSSBytes+48<<20)>>20)
	}
	if again := stop(); again != peak {
		t.Errorf("a second stop returned %d, want %d", again, peak)
	}
}

// TestScrapeGoHeapFromTheOrchestratorsMetrics reads the heap figures from
// what cocalc-k8s serve's registry really exposes, and refuses an
// endpoint without them.
func TestScrapeGoHeapFromTheOrchestratorsMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	h, err := ScrapeGoHeap(t.Context(), srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if h.InUse <= 0 || h.InUse > int64(ms.HeapSys) || h.Retained < 0 || h.Retained > int64(ms.HeapSys) {
		t.Errorf("heap %+v, runtime's heap_sys %d", h, ms.HeapSys)
	}
	for _, text := range []string{
		"go_memstats_heap_inuse_bytes 1\ngo_memstats_heap_idle_bytes 2\n",
		"go_memstats_heap_inuse_bytes x\ngo_memstats_heap_idle_bytes 2\ngo_memstats_heap_released_bytes 1\n",
	} {
		if _, err := ParseGoHeap(strings.NewReader(text)); err == nil {
			t.Errorf("parsed %q", text)
		}
	}
	h, err = ParseGoHeap(strings.NewReader("# HELP x\ngo_memstats_heap_inuse_bytes 4.194304e+06\ngo_memstats_heap_idle_bytes 3e+06\ngo_memstats_heap_released_bytes 1e+06\n"))
	if err != nil || h != (GoHeap{InUse: 4 << 20, Retained: 2e6}) {
		t.Errorf("parsed %+v, %v", h, err)
	}
}
