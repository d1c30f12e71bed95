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
		Bursts:    []Burst{{Projects: 1000, AllRunning: 31 * time.Second}},
		Footprint: []Footprint{{Pods: 5000, RSSBytes: 100 << 20, PeakRSS: 120 << 20}},
	}
	var b strings.Builder
	WriteMarkdown(&b, r)
	out := b.String()
	for _, want := range []string{
		"| ours, HTTP API (cocalc-k8s serve) | 200 | 1 | 100.0 |", // absolute numbers
		"| +60.0 | +60.0 | 10.0× |",                               // vs floor, original ÷ ours
		"start p50 within 15 ms of the floor: MISSED (+60.0 ms)",
		"≥ 8× faster than the original at p50: met (10.0×)",
		"status with 0 API requests: met",
		"1,000 concurrent starts all running in ≤ 30 s: MISSED (31s",
		"≤ 150 MB RSS at 5,000 pods: met (peak 120.0 MiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
