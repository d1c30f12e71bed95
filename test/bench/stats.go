// Package bench measures project start/stop speed and scale of the
// orchestrator against a re-creation of the original (2020) system's
// method and against the floor the cluster itself allows, all in one run
// on one cluster, and renders the results as a Markdown table.
//
// The harness never asserts: it reports numbers (issue 7). `make bench`
// runs it through cmd/cocalc-bench.
package bench

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Durations summarises a set of latencies.
type Durations struct {
	N                  int
	Min, P50, P95, P99 time.Duration
	Max, Mean          time.Duration
}

// Summarize returns order statistics of samples (nearest-rank
// percentiles, so p99 of 200 samples is the 198th smallest).
func Summarize(samples []time.Duration) Durations {
	if len(samples) == 0 {
		return Durations{}
	}
	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Durations{
		N: len(s), Min: s[0], Max: s[len(s)-1], Mean: sum / time.Duration(len(s)),
		P50: percentile(s, 50), P95: percentile(s, 95), P99: percentile(s, 99),
	}
}

// percentile uses the nearest-rank method on sorted samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// Ms formats a duration in milliseconds with one decimal.
func Ms(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}

// Ratio formats a/b ("–" when b is zero).
func Ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}
