package bench

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// Latency is one method's start/stop cycle results.
type Latency struct {
	Method string
	Lanes  int
	Start  Durations
	// StartSamples are the start latencies themselves (for the CDF plot).
	StartSamples []time.Duration
	// StartDetect is report time minus the moment an independent watch
	// saw the pod Ready; StopDetect likewise for the pod's deletion.
	StartDetect Durations
	Stop        Durations
	StopDetect  Durations
	Cycles      int
	Errors      int
	FirstError  string
	// Per start+stop cycle: CPU of the method's process(es), processes
	// spawned, API requests (all, and on pods).
	CPUPerCycle      time.Duration
	ProcsPerCycle    float64
	RequestsPerCycle float64
	PodReqPerCycle   float64
	Wall             time.Duration
}

// Env is what every phase needs.
type Env struct {
	Admin kubernetes.Interface // for /metrics scrapes
	Clock *PodClock
	Log   *slog.Logger
}

// processCounter is implemented by methods that spawn processes.
type processCounter interface{ Processes() int64 }

// spending measures what a phase costs from its start: API requests (by
// scraping the API server), the method's CPU and, for methods that spawn
// them, processes.
type spending struct {
	admin    kubernetes.Interface
	m        Method
	requests RequestCounts
	cpu      time.Duration
	procs    int64
}

func startSpending(ctx context.Context, admin kubernetes.Interface, m Method) (*spending, error) {
	requests, err := ScrapeRequests(ctx, admin)
	if err != nil {
		return nil, err
	}
	return &spending{admin: admin, m: m, requests: requests, cpu: m.CPU(), procs: processes(m)}, nil
}

// since returns the requests, CPU and processes spent since the start.
func (s *spending) since(ctx context.Context) (RequestCounts, time.Duration, int64, error) {
	after, err := ScrapeRequests(ctx, s.admin)
	if err != nil {
		return nil, 0, 0, err
	}
	return after.Sub(s.requests), s.m.CPU() - s.cpu, processes(s.m) - s.procs, nil
}

// processes counts the processes m has spawned (0 for in-process methods).
func processes(m Method) int64 {
	if pc, ok := m.(processCounter); ok {
		return pc.Processes()
	}
	return 0
}

// MeasureCycles runs n start+stop cycles of m on fresh projects, in lanes
// concurrent lanes (1 = strictly sequential), after warm sequential
// cycles that are not recorded (connection set-up, kubectl's discovery
// cache).
func MeasureCycles(ctx context.Context, env Env, m Method, n, lanes, warm int) (Latency, error) {
	res := Latency{Method: m.Name(), Lanes: lanes}
	for i := 0; i < warm; i++ {
		id := NewID()
		if err := m.Start(ctx, id); err != nil {
			return res, fmt.Errorf("%s: warm-up start: %w", m.Name(), err)
		}
		if err := m.Stop(ctx, id); err != nil {
			return res, fmt.Errorf("%s: warm-up stop: %w", m.Name(), err)
		}
	}
	spent, err := startSpending(ctx, env.Admin, m)
	if err != nil {
		return res, err
	}
	var (
		mu                       sync.Mutex
		start, sdet, stop, stdet []time.Duration
		next                     int
	)
	began := time.Now()
	var wg sync.WaitGroup
	for l := 0; l < lanes; l++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= n || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				a, b, c, d, err := cycle(ctx, env, m, NewID())
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				} else {
					start, sdet, stop, stdet = append(start, a), append(sdet, b), append(stop, c), append(stdet, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Wall = time.Since(began)
	d, cpu, procs, err := spent.since(ctx)
	if err != nil {
		return res, err
	}
	res.Cycles = len(start)
	res.Start, res.StartDetect, res.Stop, res.StopDetect = Summarize(start), Summarize(sdet), Summarize(stop), Summarize(stdet)
	res.StartSamples = start
	if total := res.Cycles + res.Errors; total > 0 {
		res.RequestsPerCycle = d.Total() / float64(total)
		res.PodReqPerCycle = d.Resource("pods") / float64(total)
		res.CPUPerCycle = cpu / time.Duration(total)
		res.ProcsPerCycle = float64(procs) / float64(total)
	}
	return res, nil
}

// cycle starts and stops one project, returning start latency, start
// detection delay, stop latency and stop detection delay.
func cycle(ctx context.Context, env Env, m Method, id project.ID) (time.Duration, time.Duration, time.Duration, time.Duration, error) {
	ns, name := m.Namespace(), id.PodName()
	t0 := time.Now()
	if err := m.Start(ctx, id); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("start %s: %w", id, err)
	}
	t1 := time.Now()
	readyAt, ok := env.Clock.Ready(ctx, ns, name)
	if !ok {
		return 0, 0, 0, 0, fmt.Errorf("start %s: reported running, but the pod was never seen Ready", id)
	}
	t2 := time.Now()
	if err := m.Stop(ctx, id); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("stop %s: %w", id, err)
	}
	t3 := time.Now()
	goneAt, ok := env.Clock.Gone(ctx, ns, name)
	if !ok {
		return 0, 0, 0, 0, fmt.Errorf("stop %s: reported stopped, but the pod was never seen deleted", id)
	}
	env.Clock.Forget(ns, name)
	return t1.Sub(t0), t1.Sub(readyAt), t3.Sub(t2), t3.Sub(goneAt), nil
}

// StatusResult is one method's status query cost.
type StatusResult struct {
	Method         string
	Latency        Durations
	PodRequests    float64 // per status, on the pods resource
	AllRequests    float64 // per status, every request but the background's (leases, nodes, events)
	CPUPerStatus   time.Duration
	ProcsPerStatus float64
	Errors         int
}

// MeasureStatus starts one project, queries its status n times (all must
// say running), and stops it.
func MeasureStatus(ctx context.Context, env Env, m Method, n int) (StatusResult, error) {
	res := StatusResult{Method: m.Name()}
	id := NewID()
	if err := m.Start(ctx, id); err != nil {
		return res, fmt.Errorf("%s: status phase start: %w", m.Name(), err)
	}
	defer func() { _ = m.Stop(context.WithoutCancel(ctx), id) }()
	spent, err := startSpending(ctx, env.Admin, m)
	if err != nil {
		return res, err
	}
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		running, err := m.Status(ctx, id)
		if err != nil || !running {
			res.Errors++
			continue
		}
		lat = append(lat, time.Since(t0))
	}
	d, cpu, procs, err := spent.since(ctx)
	if err != nil {
		return res, err
	}
	res.Latency = Summarize(lat)
	res.PodRequests = d.Resource("pods") / float64(n)
	// A request is counted once served, so the "before" scrape is in the
	// delta: subtract it.
	res.AllRequests = max(d.Foreground()-1, 0) / float64(n)
	res.CPUPerStatus = cpu / time.Duration(n)
	res.ProcsPerStatus = float64(procs) / float64(n)
	return res, nil
}

// IdleRequestRate is the API server's background request rate (kwok
// heartbeats, controllers, this harness's scrapes), per second.
func IdleRequestRate(ctx context.Context, admin kubernetes.Interface, window time.Duration) (float64, error) {
	before, err := ScrapeRequests(ctx, admin)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	after, err := ScrapeRequests(ctx, admin)
	if err != nil {
		return 0, err
	}
	return (after.Sub(before).Total() - 1) / time.Since(t0).Seconds(), nil
}
