package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// Burst is the result of starting many projects at once.
type Burst struct {
	// Method is the method's name (the HTTP API's rows: ours).
	Method   string
	Projects int
	// AllRunning is the time from issuing every start until the last one
	// returned running; AllReady until the independent watch saw the last
	// pod Ready.
	AllRunning time.Duration
	AllReady   time.Duration
	Latency    Durations
	// Done are the successful starts' latencies in the order they
	// returned (the burst curve: projects running over time).
	Done       []time.Duration
	Errors     int
	FirstError string
	CPU        time.Duration // orchestrator process CPU during the burst
	// PeakRSS is the orchestrator process's highest RSS during the burst
	// (sampled every 50 ms; 0 for methods without a process of their own).
	PeakRSS int64
	// Retry marks a burst that re-issues the failed starts of the one
	// before (so the pod count the footprint needs is reached).
	Retry bool
	// Failed lists the projects whose start failed.
	Failed []project.ID
	// PodCreates and EventWrites are the API server's count of pod
	// creates and of core Event creates and patches answered 2xx (the
	// orchestrator's: the scheduler writes events.k8s.io Events) from the
	// first start issued until the last one returned; PodCreateRequests
	// counts every pod create, also those answered with an error (a
	// create retried after a client timeout is answered 409). Only this
	// method runs then.
	PodCreates, PodCreateRequests, EventWrites float64
}

// StartBurst issues len(ids) starts concurrently.
func StartBurst(ctx context.Context, env Env, m Method, ids []project.ID) Burst {
	res := Burst{Method: m.Name(), Projects: len(ids)}
	before, scrapeErr := ScrapeRequestsByCode(ctx, env.Admin)
	cpu0 := m.CPU()
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	began := time.Now()
	// The orchestrator's process, for the HTTP method; the others have
	// none of their own.
	stopSampling := func() int64 { return 0 }
	if h, ok := m.(*HTTP); ok && h.PID != 0 {
		stopSampling = samplePeakRSS(h.PID, 50*time.Millisecond)
	}
	defer stopSampling()
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			err := m.Start(ctx, id)
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Errors++
				res.Failed = append(res.Failed, id)
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
				return
			}
			lat = append(lat, took)
		}()
	}
	wg.Wait()
	res.AllRunning = time.Since(began)
	res.PeakRSS = stopSampling()
	if after, err := ScrapeRequestsByCode(ctx, env.Admin); err == nil && scrapeErr == nil {
		d := after.Sub(before)
		res.PodCreates = d.Succeeded("POST", "pods")
		res.EventWrites = d.Succeeded("POST", "events") + d.Succeeded("PATCH", "events")
		for k, v := range d {
			if strings.HasPrefix(k, "POST pods ") {
				res.PodCreateRequests += v
			}
		}
	} else {
		res.PodCreates, res.PodCreateRequests, res.EventWrites = -1, -1, -1 // not measured
	}
	res.Latency = Summarize(lat)
	res.Done = lat
	failed := map[project.ID]bool{}
	for _, id := range res.Failed {
		failed[id] = true
	}
	var last time.Time
	for _, id := range ids {
		if failed[id] {
			continue
		}
		if t, ok := env.Clock.Ready(ctx, m.Namespace(), id.PodName()); ok && t.After(last) {
			last = t
		}
	}
	if !last.IsZero() {
		res.AllReady = last.Sub(began)
	}
	res.CPU = m.CPU() - cpu0
	return res
}

// BurstFloor is the client-side floor of n concurrent starts for a client
// allowed qps requests per second after a burst of burst: the last of n
// pod creates cannot leave before ceil((n − burst) / qps) seconds.
func BurstFloor(n int, qps float32, burst int) time.Duration {
	if n <= burst || qps <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(float64(n-burst)/float64(qps))) * time.Second
}

// Footprint is the orchestrator process's memory and CPU over a window.
type Footprint struct {
	Pods     int
	Churn    bool
	RSSBytes int64 // at the end of the window
	PeakRSS  int64 // highest sample in the window
	// AnonBytes is the anonymous part of RSSBytes (ProcSample).
	AnonBytes int64
	// Heap is the process's Go heap at the end of the window, when it
	// serves /metrics (the HTTP method); nil otherwise.
	Heap     *GoHeap
	CPUCores float64 // CPU seconds per second over the window
	// Ops is start+stop operations completed per second (churn only).
	OpsPerSec  float64
	Errors     int
	FirstError string
}

// ChurnOpTimeout bounds one stop+start of the churn load, so a start the
// orchestrator never finishes shows up as an error instead of stalling
// the window.
const ChurnOpTimeout = 30 * time.Second

// MeasureFootprint samples pid's RSS every 250 ms for window. With churn,
// workers repeatedly stop and restart random projects of ids meanwhile.
func MeasureFootprint(ctx context.Context, m Method, pid int, ids []project.ID, window time.Duration, churnWorkers int) (Footprint, error) {
	res := Footprint{Pods: len(ids), Churn: churnWorkers > 0}
	first, err := ReadProc(pid)
	if err != nil {
		return res, err
	}
	wctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var ops, errs atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	var wg sync.WaitGroup
	// Each worker owns a disjoint slice of projects, so no two workers
	// start and stop the same project at once.
	for w := 0; w < churnWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				id := ids[w+churnWorkers*rand.IntN(max(1, len(ids)/churnWorkers))]
				// Operations under way when the window closes finish (with
				// a bound), so the pod count stays what the row says.
				opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ChurnOpTimeout)
				err := m.Stop(opCtx, id)
				if err == nil {
					err = m.Start(opCtx, id)
				}
				cancel()
				if err != nil {
					fail(err)
					continue
				}
				ops.Add(2)
			}
		}()
	}
	t0 := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := first
sample:
	for {
		select {
		case <-wctx.Done():
			break sample
		case <-tick.C:
			s, err := ReadProc(pid)
			if err != nil {
				return res, err
			}
			last = s
			res.PeakRSS = max(res.PeakRSS, s.RSSBytes)
		}
	}
	elapsed := time.Since(t0)
	wg.Wait()
	res.RSSBytes, res.AnonBytes = last.RSSBytes, last.AnonBytes
	if h, ok := m.(*HTTP); ok {
		heap, err := h.GoHeap(ctx)
		if err != nil {
			return res, err
		}
		res.Heap = &heap
	}
	res.CPUCores = (last.CPU - first.CPU).Seconds() / elapsed.Seconds()
	res.OpsPerSec = float64(ops.Load()) / elapsed.Seconds()
	res.Errors = int(errs.Load())
	if s, ok := firstErr.Load().(string); ok {
		res.FirstError = s
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("footprint: %w", ctx.Err())
	}
	return res, nil
}

// samplePeakRSS samples the RSS of process pid every interval until the
// returned stop is called, which returns the highest seen (idempotent).
func samplePeakRSS(pid int, interval time.Duration) (stop func() int64) {
	var peak int64
	done := make(chan struct{})
	finished := make(chan struct{})
	sample := func() {
		if s, err := ReadProc(pid); err == nil && s.RSSBytes > peak {
			peak = s.RSSBytes
		}
	}
	go func() {
		defer close(finished)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-done:
				sample() // the moment stop is called counts too
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() int64 {
		once.Do(func() { close(done); <-finished })
		return peak
	}
}
