package bench

import (
	"strings"
	"testing"
	"time"
)

func TestWriteMarkdownRatiosAndTargets(t *testing.T) {
	d := func(ms int) Durations {
		v := time.Duration(ms) * time.Millisecond
		return Durations{N: 200, Min: v, P50: v, P95: v, P99: v, Max: v, Mean: v}
	}
	r := &Results{
		Config: Config{Nodes: 20, QPS: 50, QPSBurst: 100, ChurnWorkers: 10, Window: 10 * time.Second},
		Latencies: []Latency{
			{Method: "floor (client-go create + watch)", Cycles: 200, Lanes: 1, Start: d(40), Stop: d(20)},
			{Method: "ours, HTTP API (cocalc-k8s serve)", Cycles: 200, Lanes: 1, Start: d(100), Stop: d(20)},
			{Method: "original method (kubectl apply + poll), BASELINE", Cycles: 200, Lanes: 4, Start: d(1000), Stop: d(800)},
		},
		Statuses:  []StatusResult{{Method: "ours, HTTP API (cocalc-k8s serve)", Latency: d(1), PodRequests: 0, AllRequests: 0}},
		Bursts:    []Burst{{Method: "ours, HTTP API (cocalc-k8s serve)", Projects: 1000, AllRunning: 31 * time.Second, PodCreates: 1000, PodCreateRequests: 1100, EventWrites: 250, PeakRSS: 264 << 20}},
		Footprint: []Footprint{{Pods: 5000, RSSBytes: 100 << 20, AnonBytes: 75 << 20, PeakRSS: 120 << 20, Heap: &GoHeap{InUse: 20 << 20, Retained: 40 << 20}}},
		ColdStarts: []ColdStart{{Orchestrator: "cocalc-k8s", Pods: 20000, Filled: 15000, ReadyAfter: 2500 * time.Millisecond, SyncPeakRSS: 140 << 20,
			RSS: 90 << 20, PeakRSS: 100 << 20, Anon: 64 << 20, WatchLists: 1, Heap: PodCacheHeap{Pods: 20000, LiveBytes: 20000 * 1024}}},
	}
	var b strings.Builder
	WriteMarkdown(&b, r)
	out := b.String()
	for _, want := range []string{
		"| ours, HTTP API (cocalc-k8s serve) | 200 | 1 | 100.0 |", // absolute numbers
		"| +60.0 | +60.0 | 10.0× |",                               // vs floor, original ÷ ours
		"start p50 within 15 ms of the floor: MISSED (+60.0 ms)",
		"start p50 within 5 ms of the floor: MISSED (+60.0 ms); p99 within 20 ms: MISSED (+60.0 ms) (issue 16)",
		"≥ 8× faster than the original at p50: met (10.0×)",
		"status with 0 API requests: met",
		"1000 concurrent starts within 15 % of the client floor (18s, so ≤ 20.7s), 0 errors: MISSED (31s, 1.72×, 0 errors; 1.00 pod creates and 0.25 Event writes per start",
		"| ours, HTTP API (cocalc-k8s serve) | 1000 | 0 | 31s | 18s | 1.72× |",
		"| 1.00 | 1.10 | 0.25 |",
		"| 264.0 | 0 |", // the orchestrator's peak RSS during the burst, errors
		"RSS ≤ 60 MiB at 5,000 pods (the orchestrator that started them, idle and churn): MISSED (peak 120.0 MiB at 5000 pods; Go heap at the end of the idle window: 20.0 MiB in use, 40.0 MiB freed and not yet returned to the OS)",
		"fresh process watching 20,000 pods: RSS ≤ 150 MiB: met (peak 140.0 MiB, 90.0 MiB idle, of which 64.0 MiB anonymous)",
		"| 5000 | idle | 100.0 | 75.0 | 20.0 | 40.0 | 120.0 |",
		"cold start with 20,000 pods: ready ≤ 3 s: met (2.5s, streamed (1 watch-list, 0 LIST))",
		"| cocalc-k8s | 20000 | 15000 | 2.5s | 140.0 | 90.0 | 64.0 | 100.0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// With pods held before Ready (a real container start), the target is
// what the orchestrator adds relative to the floor's start latency.
func TestTargetsWithReadyDelay(t *testing.T) {
	d := func(ms int) Durations {
		v := time.Duration(ms) * time.Millisecond
		return Durations{N: 100, Min: v, P50: v, P95: v, P99: v, Max: v, Mean: v}
	}
	r := &Results{
		Config: Config{ReadyDelay: 1500 * time.Millisecond},
		Latencies: []Latency{
			{Method: "floor (client-go create + watch)", Start: d(1550), Stop: d(20)},
			{Method: "ours, in-process Go API", Start: d(1560), Stop: d(20)},
			{Method: "ours, HTTP API (cocalc-k8s serve)", Start: d(1600), Stop: d(20)},
		},
	}
	var b strings.Builder
	WriteMarkdown(&b, r)
	out := b.String()
	for _, want := range []string{
		"ours, in-process Go API: adds ≤ 1 % to the start latency at p50 with pods held 1.5s before Ready: met (+0.65 %: +10.0 ms over the floor's 1550.0 ms)",
		"ours, HTTP API (cocalc-k8s serve): adds ≤ 1 % to the start latency at p50 with pods held 1.5s before Ready: MISSED (+3.23 %: +50.0 ms over the floor's 1550.0 ms)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "within 5 ms") {
		t.Errorf("the zero-delay target is reported with a ready delay:\n%s", out)
	}
}
