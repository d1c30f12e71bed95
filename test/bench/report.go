package bench

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Targets from issues 7 and 16 (benchmarks: reported, never asserted).
const (
	TargetP50OverFloor = 15 * time.Millisecond
	TargetP99OverFloor = 50 * time.Millisecond
	TargetSpeedup      = 8.0
	// TargetBurstOverFloor: concurrent starts finish within this fraction
	// over the client floor (BurstFloor), issue 16.
	TargetBurstOverFloor = 0.15
	TargetStatusAPICall  = 0.0
	// Issue 16: RSS watching 5,000 and 20,000 project pods, and time to
	// ready of a fresh process with 20,000.
	TargetRSS5000   = 60 << 20
	TargetRSS20000  = 150 << 20
	TargetColdStart = 3 * time.Second
	// Issue 16 item 5: the orchestrator's own cost over the floor, at
	// zero ready delay; item 6: with a ready delay that models a real
	// container start, what it adds at p50 relative to the floor's p50.
	TargetP50OverFloor16 = 5 * time.Millisecond
	TargetP99OverFloor16 = 20 * time.Millisecond
	TargetAddedAtDelay   = 0.01
)

// WriteMarkdown renders r as the results file (and stdout) table.
func WriteMarkdown(w io.Writer, r *Results) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	c := r.Config
	p("# cocalc-kubernetes benchmark: project start/stop, ours vs the original's method\n\n")
	p("Run %s, took %s. Machine: %s; load average %s at the start, %s at the end (other engineers' builds share the machine).\n\n", r.Began.Format(time.RFC3339), r.Took.Round(time.Second), r.Machine, r.LoadBefore, r.LoadAfter)
	p("Cluster: api tier (real kube-apiserver, controller-manager, scheduler, etcd from `bin/kube-cluster`; %d kwok nodes; kwok stage delays 0 ms (test/cluster/stages.yaml), every pod held %s before Ready (annotation %s); API server and scheduler at their default flow-control and client QPS). ", c.Nodes, c.ReadyDelay, ReadyDelayAnnotation)
	p("Orchestrator client-go QPS %.0f, burst %d. Baseline kubectl: %s (built from k8s.io/kubectl, test/bench/tools/kubectl). API server background rate: %.1f requests/s.\n\n", c.QPS, c.QPSBurst, orDash(r.Kubectl), r.IdleRate)

	var floor, orig *Latency
	for i := range r.Latencies {
		switch {
		case strings.HasPrefix(r.Latencies[i].Method, "floor"):
			floor = &r.Latencies[i]
		case strings.HasPrefix(r.Latencies[i].Method, "original"):
			orig = &r.Latencies[i]
		}
	}
	p("## Start latency (request → reported running), ms\n\n")
	p("Detection = reported running − the moment an independent watch saw the pod Ready.\n\n")
	p("| method | cycles | lanes | p50 | p95 | p99 | max | detection p50 | detection p99 | p50 − floor | p99 − floor | original p50 ÷ this p50 |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range r.Latencies {
		p("| %s | %d%s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", l.Method, l.Cycles, errNote(l.Errors), l.Lanes,
			Ms(l.Start.P50), Ms(l.Start.P95), Ms(l.Start.P99), Ms(l.Start.Max), Ms(l.StartDetect.P50), Ms(l.StartDetect.P99),
			diff(l.Start.P50, floor, func(x *Latency) time.Duration { return x.Start.P50 }),
			diff(l.Start.P99, floor, func(x *Latency) time.Duration { return x.Start.P99 }),
			ratioOf(orig, func(x *Latency) time.Duration { return x.Start.P50 }, l.Start.P50))
	}
	p("\n## Stop latency (request → reported stopped), ms\n\n")
	p("| method | p50 | p95 | p99 | max | detection p50 | detection p99 | original p50 ÷ this p50 |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range r.Latencies {
		p("| %s | %s | %s | %s | %s | %s | %s | %s |\n", l.Method, Ms(l.Stop.P50), Ms(l.Stop.P95), Ms(l.Stop.P99), Ms(l.Stop.Max),
			Ms(l.StopDetect.P50), Ms(l.StopDetect.P99), ratioOf(orig, func(x *Latency) time.Duration { return x.Stop.P50 }, l.Stop.P50))
	}
	p("\n## Cost per start+stop cycle\n\n")
	p("API requests are the API server's own `apiserver_request_total`, cluster-wide (so they include the scheduler's, kwok's and controllers' work for the pod: the floor's row is what the cluster itself needs). CPU is the method's own process: the orchestrator process for the HTTP row, the kubectl and shell child processes (their rusage) for the baseline, this harness's process for the floor and in-process rows.\n\n")
	p("| method | API requests | on pods | CPU ms | processes spawned | wall for all cycles |\n")
	p("|---|---:|---:|---:|---:|---:|\n")
	for _, l := range r.Latencies {
		p("| %s | %.1f | %.1f | %s | %.1f | %s |\n", l.Method, l.RequestsPerCycle, l.PodReqPerCycle, Ms(l.CPUPerCycle), l.ProcsPerCycle, l.Wall.Round(time.Millisecond))
	}
	p("\n## Status query (project running)\n\n")
	p("| method | n | p50 ms | p99 ms | API requests on pods / status | all API requests / status (but leases, nodes, events) | CPU ms / status | processes / status |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Statuses {
		p("| %s | %d%s | %s | %s | %.2f | %.2f | %s | %.1f |\n", s.Method, s.Latency.N, errNote(s.Errors), Ms(s.Latency.P50), Ms(s.Latency.P99),
			s.PodRequests, s.AllRequests, fmt.Sprintf("%.3f", float64(s.CPUPerStatus)/float64(time.Millisecond)), s.ProcsPerStatus)
	}
	p("\n## Throughput: concurrent starts over the HTTP API\n\n")
	p("A retry row re-issues the failed starts of the row above it (so the footprint below has its pod count).\n\n")
	p("Client floor = ceil((starts − burst) / QPS) at the orchestrator's client-go QPS %.0f and burst %d: no client with that limit can create the last pod sooner. API writes are the API server's count (`apiserver_request_total`) of pod creates and of core Event creates + patches answered 2xx (only the orchestrator writes core Events; the scheduler's are events.k8s.io) while the burst ran, per start issued; create requests also counts creates answered with an error (a create retried after a client-side timeout is answered 409 AlreadyExists). Events are written on their own client limiter, off the starts' path: those not written by the end of the burst follow at ≤ a fifth of the client QPS.\n\n", c.QPS, c.QPSBurst)
	p("The floor rows are the cluster's own pace for the same burst (create + watch for Ready from the harness, pods deleted after): unlimited, and with creates limited to the orchestrator's QPS and burst; the rest are ours over the HTTP API. Every burst starts once the API server has been quiet (foreground requests, all but leases, nodes and events, at most %.0f a second) for %s, or after %s: the deletion of the previous row's pods otherwise still loads the control plane.\n\n", settleRate, settleWindow, settleMax)
	p("| method | starts issued at once | pods already running | all reported running | client floor | ÷ floor | all pods Ready (watch) | starts/s | start p50 ms | start p99 ms | pod creates / start | pod create requests / start | Event writes / start | CPU s (orchestrator; harness for floors) | orchestrator peak RSS MiB | errors |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	running := 0
	for _, b := range r.Bursts {
		issued := strconv.Itoa(b.Projects)
		if b.Retry {
			issued += " (retry)"
		}
		fl := BurstFloor(b.Projects, c.QPS, c.QPSBurst)
		ours := !strings.HasPrefix(b.Method, "floor")
		before := strconv.Itoa(running)
		if !ours {
			before = "–"
		}
		peak := "–"
		if b.PeakRSS > 0 {
			peak = fmt.Sprintf("%.1f", float64(b.PeakRSS)/(1<<20))
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %.2f | %s | %d |\n", b.Method, issued, before, b.AllRunning.Round(time.Millisecond), fl,
			ratioTo(b.AllRunning, fl), b.AllReady.Round(time.Millisecond),
			float64(b.Projects)/b.AllRunning.Seconds(), Ms(b.Latency.P50), Ms(b.Latency.P99),
			perStart(b.PodCreates, b.Projects), perStart(b.PodCreateRequests, b.Projects), perStart(b.EventWrites, b.Projects), b.CPU.Seconds(), peak, b.Errors)
		if ours {
			running += b.Projects - b.Errors
		}
	}
	for _, b := range r.Bursts {
		if b.FirstError != "" {
			p("\nFirst burst error: `%s`\n", b.FirstError)
			break
		}
	}
	p("\n## Orchestrator process footprint (cocalc-k8s serve), %s windows\n\n", c.Window)
	p("RSS is the process's resident memory; anon is its anonymous part (heap, stacks: RssAnon), the rest its executable's file-backed pages (RssFile: clean, shared, reclaimable; ≈ 25 MiB whatever the pod count). The harness closes its idle keep-alive connections to the process after the bursts (1,000 idle connections held ≈ 18 MiB in the process). Go heap in use and freed-not-returned are the process's own runtime figures at the end of the window (its /metrics: heap_inuse, heap_idle − heap_released): freed memory stays in RSS until the runtime's scavenger returns it to the operating system.\n\n")
	p("| project pods | load | RSS MiB (end) | anon MiB (end) | Go heap in use MiB | Go heap freed, not returned MiB | peak RSS MiB | CPU (cores) | churn ops/s | errors |\n")
	p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range r.Footprint {
		load := "idle"
		if f.Churn {
			load = fmt.Sprintf("churn (%d stop+start loops)", c.ChurnWorkers)
		}
		inUse, retained := "–", "–"
		if f.Heap != nil {
			inUse, retained = fmt.Sprintf("%.1f", mib(f.Heap.InUse)), fmt.Sprintf("%.1f", mib(f.Heap.Retained))
		}
		p("| %d | %s | %.1f | %.1f | %s | %s | %.1f | %.3f | %.1f | %d |\n", f.Pods, load, mib(f.RSSBytes), mib(f.AnonBytes), inUse, retained, mib(f.PeakRSS), f.CPUCores, f.OpsPerSec, f.Errors)
	}
	for _, f := range r.Footprint {
		if f.FirstError != "" {
			p("\nFirst churn error at %d pods: `%s`\n", f.Pods, f.FirstError)
			break
		}
	}
	if len(r.ColdStarts) > 0 {
		p("\n## Cold start: a fresh orchestrator process with N project pods present\n\n")
		p("Pods beyond those the bursts started are created by the harness from the same template (podspec.Build), bound to held nodes (registered by the harness, Leases renewed, no kubelet or kwok), their status written Running and Ready by the harness before the process starts (FillPods). Ready = exec until `/readyz` answers OK (pod cache synced). Initial sync: the API server's pod LISTs and completed pod watch-lists (`apiserver_watch_list_duration_seconds_count`) until ready: client-go streams the initial state over one watch when the server offers WatchList, object by object through the cache's transform, else it LISTs. Heap per pod: the pod cache's live heap after GC, measured by building the same cache in the harness (ProfilePodCache).\n\n")
		p("| binary | project pods | created for the row | ready after | peak RSS MiB until ready | RSS MiB idle (end of %s) | anon MiB idle | peak RSS MiB idle | CPU s (exec to end) | initial sync | cache live heap MiB | heap per pod KiB |\n", c.Window)
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n")
		for _, cs := range r.ColdStarts {
			heap, perPod := fmt.Sprintf("%.1f", cs.Heap.LiveBytes/(1<<20)), fmt.Sprintf("%.2f", cs.Heap.PerPod()/1024)
			if c.CompareOrchestrator != "" && cs.Orchestrator == filepath.Base(c.CompareOrchestrator) {
				heap, perPod = "–", "–" // the harness builds the current code's cache
			}
			p("| %s | %d | %d | %s | %.1f | %.1f | %.1f | %.1f | %.2f | %s | %s | %s |\n", orDash(cs.Orchestrator), cs.Pods, cs.Filled, cs.ReadyAfter.Round(time.Millisecond),
				mib(cs.SyncPeakRSS), mib(cs.RSS), mib(cs.Anon), mib(cs.PeakRSS), cs.CPU.Seconds(), syncKind(cs), heap, perPod)
		}
	}
	p("\n## Targets (issues 7 and 16)\n\n")
	for _, t := range targets(r, floor, orig) {
		p("- %s\n", t)
	}
	for _, n := range r.Notes {
		p("\n%s\n", n)
	}
	for _, l := range r.Latencies {
		if l.FirstError != "" {
			p("\nFirst error of %s: `%s`\n", l.Method, l.FirstError)
		}
	}
}

func targets(r *Results, floor, orig *Latency) []string {
	var out []string
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	for _, l := range r.Latencies {
		if !strings.HasPrefix(l.Method, "ours") || floor == nil {
			continue
		}
		d50, d99 := l.Start.P50-floor.Start.P50, l.Start.P99-floor.Start.P99
		out = append(out, fmt.Sprintf("%s: start p50 within 15 ms of the floor: %s (%+.1f ms); p99 within 50 ms: %s (%+.1f ms)",
			l.Method, mark(d50 <= TargetP50OverFloor), ms(d50), mark(d99 <= TargetP99OverFloor), ms(d99)))
		if r.Config.ReadyDelay == 0 {
			out = append(out, fmt.Sprintf("%s: start p50 within 5 ms of the floor: %s (%+.1f ms); p99 within 20 ms: %s (%+.1f ms) (issue 16)",
				l.Method, mark(d50 <= TargetP50OverFloor16), ms(d50), mark(d99 <= TargetP99OverFloor16), ms(d99)))
		} else if floor.Start.P50 > 0 {
			added := float64(d50) / float64(floor.Start.P50)
			out = append(out, fmt.Sprintf("%s: adds ≤ 1 %% to the start latency at p50 with pods held %s before Ready: %s (%+.2f %%: %+.1f ms over the floor's %.1f ms)",
				l.Method, r.Config.ReadyDelay, mark(added <= TargetAddedAtDelay), 100*added, ms(d50), ms(floor.Start.P50)))
		}
		if orig != nil && l.Start.P50 > 0 {
			x := float64(orig.Start.P50) / float64(l.Start.P50)
			out = append(out, fmt.Sprintf("%s: ≥ 8× faster than the original at p50: %s (%.1f×)", l.Method, mark(x >= TargetSpeedup), x))
		}
	}
	for _, s := range r.Statuses {
		if strings.HasPrefix(s.Method, "ours") {
			out = append(out, fmt.Sprintf("%s: status with 0 API requests: %s (%.2f on pods, %.2f in all per status)", s.Method, mark(s.PodRequests == 0 && s.AllRequests < 0.05), s.PodRequests, s.AllRequests))
		}
	}
	seen := map[int]bool{}
	for _, b := range r.Bursts {
		if (b.Projects == 1000 || b.Projects == 5000) && !b.Retry && !seen[b.Projects] && !strings.HasPrefix(b.Method, "floor") {
			seen[b.Projects] = true
			fl := BurstFloor(b.Projects, r.Config.QPS, r.Config.QPSBurst)
			limit := time.Duration(float64(fl) * (1 + TargetBurstOverFloor))
			out = append(out, fmt.Sprintf("%d concurrent starts within 15 %% of the client floor (%s, so ≤ %s), 0 errors: %s (%s, %s, %d errors; %s pod creates and %s Event writes per start while it ran)",
				b.Projects, fl, limit.Round(100*time.Millisecond), mark(b.AllRunning <= limit && b.Errors == 0), b.AllRunning.Round(time.Millisecond), ratioTo(b.AllRunning, fl), b.Errors,
				perStart(b.PodCreates, b.Projects), perStart(b.EventWrites, b.Projects)))
		}
	}
	for _, b := range r.Bursts {
		if strings.HasPrefix(b.Method, "floor, creates at") {
			fl := BurstFloor(b.Projects, r.Config.QPS, r.Config.QPSBurst)
			out = append(out, fmt.Sprintf("for comparison, the cluster's floor with creates at the same QPS: %d starts in %s (%s the client floor)", b.Projects, b.AllRunning.Round(time.Millisecond), ratioTo(b.AllRunning, fl)))
		}
	}
	var peak int64
	var at int
	var heap string
	for _, f := range r.Footprint {
		if f.Pods >= at {
			if f.Pods > at {
				peak, heap = 0, ""
			}
			at = f.Pods
			peak = max(peak, f.PeakRSS)
			if f.Heap != nil && !f.Churn {
				heap = fmt.Sprintf("; Go heap at the end of the idle window: %.1f MiB in use, %.1f MiB freed and not yet returned to the OS", mib(f.Heap.InUse), mib(f.Heap.Retained))
			}
		}
	}
	switch {
	case at >= 5000:
		out = append(out, fmt.Sprintf("footprint rows: RSS ≤ 60 MiB at 5,000 pods (the orchestrator that started them, idle and churn): %s (peak %.1f MiB at %d pods%s)", mark(peak <= TargetRSS5000), mib(peak), at, heap))
	case at > 0:
		out = append(out, fmt.Sprintf("footprint rows: RSS ≤ 60 MiB at 5,000 pods: not measured (largest run %d pods, peak %.1f MiB)", at, mib(peak)))
	}
	for _, cs := range r.ColdStarts {
		peak := max(cs.SyncPeakRSS, cs.PeakRSS)
		who := ""
		if cs.Orchestrator != "" && len(r.ColdStarts) > len(r.Config.ColdStart) {
			who = cs.Orchestrator + ": "
		}
		switch cs.Pods {
		case 5000:
			out = append(out, fmt.Sprintf("%sfresh process watching 5,000 pods: RSS ≤ 60 MiB: %s (peak %.1f MiB, %.1f MiB idle, of which %.1f MiB anonymous)", who, mark(peak <= TargetRSS5000), mib(peak), mib(cs.RSS), mib(cs.Anon)))
		case 20000:
			out = append(out, fmt.Sprintf("%sfresh process watching 20,000 pods: RSS ≤ 150 MiB: %s (peak %.1f MiB, %.1f MiB idle, of which %.1f MiB anonymous)", who, mark(peak <= TargetRSS20000), mib(peak), mib(cs.RSS), mib(cs.Anon)))
			out = append(out, fmt.Sprintf("%scold start with 20,000 pods: ready ≤ 3 s: %s (%s, %s)", who, mark(cs.ReadyAfter <= TargetColdStart), cs.ReadyAfter.Round(time.Millisecond), syncKind(cs)))
		}
	}
	return out
}

// syncKind names how the initial state came: streamed over a watch
// (WatchList) or listed.
func syncKind(cs ColdStart) string {
	switch {
	case cs.Lists == 0 && cs.WatchLists > 0:
		return fmt.Sprintf("streamed (%.0f watch-list, 0 LIST)", cs.WatchLists)
	case cs.Lists > 0:
		return fmt.Sprintf("%.0f LIST, %.0f watch-list", cs.Lists, cs.WatchLists)
	}
	return "–"
}

// perStart is v / n with two decimals; "–" when v was not measured (< 0).
func perStart(v float64, n int) string {
	if v < 0 || n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v/float64(n))
}

// ratioTo is d ÷ floor as "1.07×", "–" without a floor.
func ratioTo(d, floor time.Duration) string {
	if floor <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", float64(d)/float64(floor))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mib(b int64) float64        { return float64(b) / (1 << 20) }

func diff(v time.Duration, floor *Latency, get func(*Latency) time.Duration) string {
	if floor == nil {
		return "–"
	}
	return fmt.Sprintf("%+.1f", ms(v-get(floor)))
}

func ratioOf(orig *Latency, get func(*Latency) time.Duration, v time.Duration) string {
	if orig == nil {
		return "–"
	}
	return Ratio(float64(get(orig)), float64(v))
}

func errNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d errors)", n)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
