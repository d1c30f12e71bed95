package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/kube"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Config sets what a run measures.
type Config struct {
	// Nodes is the number of kwok nodes (each takes 500 pods, and about
	// 320 project pods by CPU requests).
	Nodes int
	// Cycles is the number of start+stop cycles per method (≥ 200 for the
	// issue's figures); OriginalLanes runs the baseline's cycles that many
	// at a time (its sleeps would otherwise dominate the run time).
	Cycles, OriginalLanes int
	Statuses              int
	// Burst is the number of concurrent starts; Scale the pod counts at
	// which the orchestrator's footprint is measured (ascending; the
	// first should be Burst).
	Burst int
	Scale []int
	// Window is how long each footprint is sampled; ChurnWorkers how many
	// concurrent stop+start loops make the churn.
	Window       time.Duration
	ChurnWorkers int
	// QPS and BurstQPS are the orchestrator's client-go settings.
	// ReadyDelay holds every pod (all methods) this long before kwok makes
	// it Ready: 0 measures what the control plane allows, a second or
	// two resembles a real image-cached container start.
	ReadyDelay time.Duration
	QPS        float32
	QPSBurst   int
	// Orchestrator and Kubectl are the binaries; KubeBinary the control
	// plane (empty: the cluster package's default).
	Orchestrator, Kubectl, KubeBinary string
	// CompareOrchestrator, when set, is another orchestrator binary (an
	// older build) that each cold-start row also starts, just before
	// Orchestrator, for a before/after in one run.
	CompareOrchestrator string
	Log                 *slog.Logger
	// ColdStart lists project pod counts (ascending) at which a fresh
	// orchestrator process is started and its time to ready and memory
	// measured; pods beyond those the bursts started are made by FillPods
	// on held nodes (HoldNodes).
	ColdStart []int
	// HeapProfile, when set, is where a heap profile of the pod cache at
	// the largest scale is written (see ProfilePodCache).
	HeapProfile string
}

// Results is everything a run measured.
type Results struct {
	Config  Config
	Began   time.Time
	Took    time.Duration
	Machine string
	// LoadBefore and LoadAfter are /proc/loadavg: other work on the
	// machine slows the kubectl baseline most (it is CPU-bound).
	LoadBefore, LoadAfter string
	Kubectl               string
	IdleRate              float64
	Latencies             []Latency
	Statuses              []StatusResult
	Bursts                []Burst
	Footprint             []Footprint
	ColdStarts            []ColdStart
	Notes                 []string
}

// Namespaces of the methods (one each, so no informer sees another's pods).
const (
	nsFloor    = "bench-floor"
	nsInProc   = "bench-inproc"
	nsHTTP     = "cocalc"
	nsOriginal = "bench-original"
	// heldNodes is how many held nodes carry the cold-start fill pods
	// (2,000 each at 20,000).
	heldNodes = 10
)

// Run brings up the api tier, measures, and tears everything down.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	log := cfg.Log
	res := &Results{Config: cfg, Began: time.Now().UTC(), Machine: machine(), LoadBefore: loadAvg()}
	defer func() { res.LoadAfter = loadAvg() }()
	work, err := os.MkdirTemp("", "cocalc-bench-")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)

	log.Info("starting the api tier", "nodes", cfg.Nodes)
	cl, err := cluster.Start(ctx, cluster.Options{Tier: cluster.TierAPI, Nodes: cfg.Nodes, KubeBinary: cfg.KubeBinary,
		Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }})
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	defer func() {
		if err := cl.Stop(context.WithoutCancel(ctx)); err != nil {
			log.Warn("stop cluster", "err", err)
		}
	}()
	// The harness's own client must never be the bottleneck.
	admin, err := clientFor(cl.RESTConfig, 1000, 2000, "cocalc-bench")
	if err != nil {
		return nil, err
	}
	ips := map[string]string{}
	for _, ns := range []string{nsFloor, nsInProc, nsHTTP, nsOriginal} {
		if ips[ns], err = PrepareNamespace(ctx, admin, ns); err != nil {
			return nil, err
		}
	}
	clock, err := NewPodClock(ctx, admin, "")
	if err != nil {
		return nil, err
	}
	env := Env{Admin: admin, Clock: clock, Log: log}

	// Methods.
	floorTpl, err := Template(nsFloor, filepath.Join(work, "homes-floor"), cfg.ReadyDelay)
	if err != nil {
		return nil, err
	}
	floor := &Floor{Client: admin, NS: nsFloor, Grace: floorTpl.TerminationGracePeriodSeconds,
		Pod: func(id project.ID) (*corev1.Pod, error) {
			return podspec.Build(floorTpl, podspec.Input{Project: id, NFSServer: ips[nsFloor]})
		}}
	inproc, closeInproc, err := newInProcess(ctx, cl.RESTConfig, work, cfg)
	if err != nil {
		return nil, err
	}
	defer closeInproc()
	httpM, stopServe, err := startServe(ctx, cl.KubeconfigPath, work, cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() { stopServe() }() // the last one started (cold starts replace it)
	orig, err := newOriginal(cl.KubeconfigPath, work, cfg, ips[nsOriginal])
	if err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, cfg.Kubectl, "version", "--client").CombinedOutput(); err == nil {
		res.Kubectl = firstLine(string(out))
	}

	if res.IdleRate, err = IdleRequestRate(ctx, admin, 3*time.Second); err != nil {
		return nil, err
	}

	// Start/stop latency, one method after the other.
	for _, p := range []struct {
		m     Method
		lanes int
	}{{floor, 1}, {inproc, 1}, {httpM, 1}, {orig, cfg.OriginalLanes}} {
		if cfg.Cycles <= 0 {
			break
		}
		log.Info("start/stop cycles", "method", p.m.Name(), "cycles", cfg.Cycles, "lanes", p.lanes)
		l, err := MeasureCycles(ctx, env, p.m, cfg.Cycles, p.lanes, 3)
		if err != nil {
			return nil, err
		}
		log.Info("cycles done", "method", l.Method, "start_p50", l.Start.P50, "stop_p50", l.Stop.P50, "errors", l.Errors, "took", l.Wall)
		res.Latencies = append(res.Latencies, l)
	}
	for _, m := range []Method{floor, inproc, httpM, orig} {
		if cfg.Statuses <= 0 {
			break
		}
		log.Info("status queries", "method", m.Name(), "n", cfg.Statuses)
		s, err := MeasureStatus(ctx, env, m, cfg.Statuses)
		if err != nil {
			return nil, err
		}
		res.Statuses = append(res.Statuses, s)
	}

	// The cluster's own pace for a burst: the floor's create + watch, with
	// the harness's unlimited client and with pod creates limited to the
	// orchestrator's QPS and burst (what ours is judged against).
	if cfg.Burst > 0 && len(cfg.Scale) > 0 {
		limited, err := clientFor(cl.RESTConfig, cfg.QPS, cfg.QPSBurst, "cocalc-bench-floor-limited")
		if err != nil {
			return nil, err
		}
		for _, f := range []*Floor{
			{Client: admin, NS: nsFloor, Grace: floor.Grace, Pod: floor.Pod, Label: "floor, client-go unlimited"},
			{Client: admin, Creates: limited, NS: nsFloor, Grace: floor.Grace, Pod: floor.Pod,
				Label: fmt.Sprintf("floor, creates at QPS %.0f burst %d", cfg.QPS, cfg.QPSBurst)},
		} {
			batch := make([]project.ID, cfg.Burst)
			for i := range batch {
				batch[i] = NewID()
			}
			settleBefore(ctx, admin, log)
			log.Info("concurrent starts", "method", f.Name(), "n", len(batch))
			b := StartBurst(ctx, env, f, batch)
			log.Info("burst done", "method", f.Name(), "all_running", b.AllRunning, "errors", b.Errors, "first_error", b.FirstError)
			res.Bursts = append(res.Bursts, b)
			if err := DeleteAllPods(ctx, admin, nsFloor); err != nil {
				return nil, err
			}
		}
	}

	// Throughput and footprint, over the HTTP API of the orchestrator process.
	var ids []project.ID
	for _, target := range cfg.Scale {
		var batch []project.ID
		for len(ids)+len(batch) < target {
			batch = append(batch, NewID())
		}
		for len(batch) > 0 {
			n := min(len(batch), cfg.Burst)
			settleBefore(ctx, admin, log)
			log.Info("concurrent starts", "n", n, "running_before", len(ids))
			b := StartBurst(ctx, env, httpM, batch[:n])
			log.Info("burst done", "all_running", b.AllRunning, "errors", b.Errors, "first_error", b.FirstError)
			res.Bursts = append(res.Bursts, b)
			ids = append(ids, batch[:n]...)
			batch = batch[n:]
			// Re-issue failed starts so the footprint sees the pod count
			// it is labelled with; each retry is reported as its own row.
			for try := 0; try < 5 && len(b.Failed) > 0 && ctx.Err() == nil; try++ {
				b = StartBurst(ctx, env, httpM, b.Failed)
				b.Retry = true
				log.Info("retry burst done", "n", b.Projects, "all_running", b.AllRunning, "errors", b.Errors)
				res.Bursts = append(res.Bursts, b)
			}
			if len(b.Failed) > 0 {
				return nil, fmt.Errorf("%d starts still failing after retries: %s", len(b.Failed), b.FirstError)
			}
		}
		// The harness's transport keeps every connection of a burst open
		// (idle keep-alives, so the next burst opens none): 1,000 idle
		// connections the serve process holds, ≈ 18 KiB each, which no hub
		// does (smc-compute is a process per call; the database front-end
		// runs inside serve). The footprint is of watching the pods.
		httpM.CloseIdleConnections()
		for _, churn := range []int{0, cfg.ChurnWorkers} {
			log.Info("footprint", "pods", len(ids), "churn_workers", churn, "window", cfg.Window)
			f, err := MeasureFootprint(ctx, httpM, httpM.PID, ids, cfg.Window, churn)
			if err != nil {
				return nil, err
			}
			log.Info("footprint done", "rss_mib", f.RSSBytes>>20, "cpu_cores", f.CPUCores, "ops_per_s", f.OpsPerSec)
			res.Footprint = append(res.Footprint, f)
		}
	}
	if cfg.HeapProfile != "" && len(cfg.Scale) > 0 {
		h, err := ProfilePodCache(ctx, cl.RESTConfig, nsHTTP, cfg.HeapProfile)
		if err != nil {
			return nil, err
		}
		log.Info(h.Note())
		res.Notes = append(res.Notes, h.Note())
	}
	// Cold starts: a fresh orchestrator process with N project pods present.
	var held *HeldNodes
	if len(cfg.ColdStart) > 0 {
		tpl, err := Template(nsHTTP, filepath.Join(work, "homes-http"), cfg.ReadyDelay)
		if err != nil {
			return nil, err
		}
		if held, err = HoldNodes(ctx, admin, heldNodes); err != nil {
			return nil, err
		}
		for _, n := range cfg.ColdStart {
			have, err := CountPods(ctx, admin, nsHTTP)
			if err != nil {
				return nil, err
			}
			row := ColdStart{Pods: max(n, have), Filled: max(n-have, 0)}
			log.Info("cold start: filling", "pods", n, "present", have, "creating", row.Filled)
			t0 := time.Now()
			if err := FillPods(ctx, admin, clock, tpl, ips[nsHTTP], held, row.Filled); err != nil {
				// Keep what was measured: a fill that cannot finish on a
				// loaded machine must not lose the whole run.
				note := fmt.Sprintf("Cold start at %d pods not measured: %v (after %s).", n, err, time.Since(t0).Round(time.Second))
				log.Warn(note)
				res.Notes = append(res.Notes, note)
				break
			}
			fill := time.Since(t0)
			// With a comparison binary, it cold-starts first, then ours.
			bins := []string{cfg.Orchestrator}
			if cfg.CompareOrchestrator != "" {
				bins = []string{cfg.CompareOrchestrator, cfg.Orchestrator}
			}
			for i, bin := range bins {
				r := row
				r.Orchestrator, r.Fill = filepath.Base(bin), fill
				if i > 0 {
					r.Filled, r.Fill = 0, 0
				}
				stopServe()
				stopServe = func() {}
				bcfg := cfg
				bcfg.Orchestrator = bin
				if httpM, stopServe, err = coldStart(ctx, cl, admin, work, bcfg, log, &r); err != nil {
					return nil, err
				}
				res.ColdStarts = append(res.ColdStarts, r)
			}
		}
	}
	for _, ns := range []string{nsHTTP, nsFloor, nsInProc, nsOriginal} {
		if err := DeleteAllPods(ctx, admin, ns); err != nil {
			log.Warn("clean-up", "err", err)
		}
	}
	if held != nil {
		if err := held.Release(ctx); err != nil {
			log.Warn("clean-up", "err", err)
		}
	}
	res.Took = time.Since(res.Began)
	return res, nil
}

// coldStart starts cfg.Orchestrator as a fresh serve process and fills
// row with its time to ready, memory and initial sync; the process is left
// running (the returned stop ends it).
func coldStart(ctx context.Context, cl *cluster.Cluster, admin kubernetes.Interface, work string, cfg Config, log *slog.Logger, row *ColdStart) (*HTTP, func(), error) {
	before, err := ScrapeRequests(ctx, admin)
	if err != nil {
		return nil, nil, err
	}
	wl0, err := WatchLists(ctx, admin, "pods")
	if err != nil {
		return nil, nil, err
	}
	log.Info("cold start: starting a fresh orchestrator", "binary", cfg.Orchestrator, "pods", row.Pods)
	httpM, stop, err := startServe(ctx, cl.KubeconfigPath, work, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	row.ReadyAfter, row.SyncPeakRSS = httpM.ReadyAfter, httpM.SyncPeakRSS
	if after, err := ScrapeRequests(ctx, admin); err == nil {
		row.Lists = after.Sub(before)["LIST pods"]
	}
	if wl, err := WatchLists(ctx, admin, "pods"); err == nil {
		row.WatchLists = wl - wl0
	}
	f, err := MeasureFootprint(ctx, httpM, httpM.PID, nil, cfg.Window, 0)
	if err != nil {
		stop()
		return nil, nil, err
	}
	row.RSS, row.PeakRSS, row.Anon = f.RSSBytes, f.PeakRSS, f.AnonBytes
	if s, err := ReadProc(httpM.PID); err == nil {
		row.CPU = s.CPU
	}
	if row.Heap, err = ProfilePodCache(ctx, cl.RESTConfig, nsHTTP, ""); err != nil {
		stop()
		return nil, nil, err
	}
	log.Info("cold start done", "binary", row.Orchestrator, "pods", row.Pods, "ready_after", row.ReadyAfter, "sync_peak_rss_mib", row.SyncPeakRSS>>20,
		"rss_mib", row.RSS>>20, "heap_per_pod_kib", row.Heap.PerPod()/1024, "lists", row.Lists, "watch_lists", row.WatchLists)
	return httpM, stop, nil
}

func clientFor(cfg *rest.Config, qps float32, burst int, agent string) (*kubernetes.Clientset, error) {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst, c.UserAgent = qps, burst, agent
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

// newInProcess runs the orchestrator core inside this process with the
// same client settings the serve command uses.
func newInProcess(ctx context.Context, rc *rest.Config, work string, cfg Config) (*InProcess, func(), error) {
	tpl, err := Template(nsInProc, filepath.Join(work, "homes-inproc"), cfg.ReadyDelay)
	if err != nil {
		return nil, nil, err
	}
	// One client-side limiter for client-go and the kube.Client's calls,
	// as serve builds it.
	limiter := kube.NewLimiter(cfg.QPS, cfg.QPSBurst)
	limited := rest.CopyConfig(rc)
	limited.RateLimiter = limiter
	cs, err := clientFor(limited, cfg.QPS, cfg.QPSBurst, "cocalc-k8s-inproc")
	if err != nil {
		return nil, nil, err
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Events on a client of their own, as cocalc-k8s serve writes them.
	events, err := clientFor(rc, max(cfg.QPS/5, 1), max(cfg.QPSBurst/5, 1), "cocalc-k8s-inproc (events)")
	if err != nil {
		return nil, nil, err
	}
	kc, err := kube.New(cs, kube.Config{Namespace: tpl.Namespace, Selector: tpl.SelectorLabels, Logger: quiet, Events: events.CoreV1(), Limiter: limiter})
	if err != nil {
		return nil, nil, err
	}
	orch, err := orchestrator.New(orchestrator.Config{Template: tpl, Cluster: kc, Logger: quiet})
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	kc.Start(runCtx)
	if err := kc.WaitForSync(runCtx); err != nil {
		cancel()
		return nil, nil, fmt.Errorf("in-process orchestrator cache: %w", err)
	}
	go orch.Run(runCtx)
	return &InProcess{Orch: orch, NS: nsInProc}, func() { orch.Close(); cancel() }, nil
}

// startServe runs `cocalc-k8s serve` as a child process and waits until
// its cache is synced.
func startServe(ctx context.Context, kubeconfig, work string, cfg Config, log *slog.Logger) (*HTTP, func(), error) {
	tpl, err := Template(nsHTTP, filepath.Join(work, "homes-http"), cfg.ReadyDelay)
	if err != nil {
		return nil, nil, err
	}
	data, err := yaml.Marshal(tpl)
	if err != nil {
		return nil, nil, fmt.Errorf("template: %w", err)
	}
	tplPath := filepath.Join(work, "template.yaml")
	if err := os.WriteFile(tplPath, data, 0o644); err != nil {
		return nil, nil, fmt.Errorf("template: %w", err)
	}
	api, health := freePort(), freePort()
	logFile, err := os.Create(filepath.Join(work, "serve.log"))
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(cfg.Orchestrator, "serve", "--kubeconfig", kubeconfig, "--template", tplPath,
		"--listen", api, "--health-listen", health, "--log-level", "warn",
		"--kube-qps", strconv.FormatFloat(float64(cfg.QPS), 'f', -1, 32), "--kube-burst", strconv.Itoa(cfg.QPSBurst))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", cfg.Orchestrator, err)
	}
	// Peak RSS until ready: the initial list (or streamed list) of every
	// project pod is where an informer's memory peaks.
	stopSampling := samplePeakRSS(cmd.Process.Pid, 10*time.Millisecond)
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := http.Get("http://" + health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			out, _ := os.ReadFile(logFile.Name())
			return nil, nil, fmt.Errorf("cocalc-k8s serve not ready: %v\n%s", err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	readyAfter := time.Since(began)
	peak := stopSampling()
	log.Info("orchestrator process ready", "pid", cmd.Process.Pid, "api", api, "after", readyAfter, "peak_rss_mib", peak>>20)
	tr := &http.Transport{MaxIdleConns: 10000, MaxIdleConnsPerHost: 10000, IdleConnTimeout: time.Minute}
	client := &httpapi.Client{BaseURL: "http://" + api, HTTP: &http.Client{Transport: tr}}
	return &HTTP{Client: client, NS: nsHTTP, PID: cmd.Process.Pid, ReadyAfter: readyAfter, SyncPeakRSS: peak}, stop, nil
}

// newOriginal prepares the baseline: a kubeconfig whose context namespace
// is the projects namespace, and a HOME for kubectl's caches.
func newOriginal(kubeconfig, work string, cfg Config, nfsIP string) (*Original, error) {
	kc, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ctxCfg := kc.Contexts[kc.CurrentContext]
	if ctxCfg == nil {
		return nil, errors.New("kubeconfig has no current context")
	}
	ctxCfg.Namespace = nsOriginal
	path := filepath.Join(work, "original.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return nil, fmt.Errorf("write baseline kubeconfig: %w", err)
	}
	home := filepath.Join(work, "original-home")
	tmp := filepath.Join(work, "original-tmp")
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return &Original{Kubectl: cfg.Kubectl, Kubeconfig: path, Home: home, TempDir: tmp, NS: nsOriginal,
		NFSServer: nfsIP, ReadyDelay: cfg.ReadyDelay, FirstDelay: time.Second, MaxDelay: 5 * time.Second}, nil
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}

func machine() string {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPUs, %s, Linux %s, host %s", runtime.NumCPU(), runtime.Version(), trimNL(string(kernel)), host)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func trimNL(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
