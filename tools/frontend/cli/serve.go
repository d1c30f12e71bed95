package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hub2020"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/pgcontroller"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/kube"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

type serveOptions struct {
	template          string
	templateReload    time.Duration
	listen            string
	healthListen      string
	kubeconfig        string
	qps               float32
	burst             int
	maxInFlight       int
	maxQueued         int
	queueWait         time.Duration
	idleCheckInterval time.Duration
	idleStop          string
	shutdownTimeout   time.Duration
	// hubProtocol is how the hub drives projects: smc-compute (the 2020
	// image runs the smc-compute program, which calls the API) or database
	// (current CoCalc: the PostgreSQL controller serves the hub's
	// projects table).
	hubProtocol string
	// postgres is the hub's database: required with the database protocol;
	// with smc-compute, optional, the 2020 hub's database that activity and
	// per-project idle timeouts are read from. projectEnv is handed to the
	// database protocol's projects.
	postgres   string
	projectEnv map[string]string
}

// Hub protocols (--hub-protocol).
const (
	ProtocolSMCCompute = "smc-compute"
	ProtocolDatabase   = "database"
)

// Test hooks: a fake clientset instead of a real one, and the bound
// addresses of listeners opened on port 0.
var (
	newClientset = func(cfg *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(cfg) }
	onListening  = func(api, health net.Addr) {}
)

// The ports serve listens on by default: the chart's orchestrator.ports.api
// and orchestrator.ports.health defaults (test/chart TestOrchestratorPorts
// keeps them equal; the chart also passes them as --listen/--health-listen).
const (
	DefaultAPIPort    = 8470
	DefaultHealthPort = 8471
)

func newServeCmd() *cobra.Command {
	o := serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the orchestrator: pod cache, background loops and the HTTP API",
		Long: `Run the orchestrator in the CoCalc server pod.

It loads the project pod template (the chart's ConfigMap, mounted as a file),
watches the project pods of the template's namespace through one
label-filtered informer, and serves:

  --listen         the project API (/v1/projects/...) plus /healthz, /readyz,
                   /metrics. Keep it on loopback: any process that can reach it
                   can start and stop projects.
  --health-listen  only /healthz, /readyz (pod cache synced) and /metrics, for
                   kubelet probes and Prometheus.

At most --max-inflight start, restart and stop requests are served at once
(each waits until its project runs or is gone), and --max-queued more wait
up to --queue-wait for a slot; beyond, the API answers 429 with Retry-After,
and its client (smc-compute, the CLI) sends them again.

--hub-protocol selects the hub: smc-compute (the 2020 server image runs
the smc-compute program, which calls the project API) or database (current
CoCalc: projects are driven through the hub's PostgreSQL database given by
--postgres).

Background loops run every --idle-check-interval: idle projects are stopped
where an activity source exists (see --idle-stop): with --hub-protocol=database
by the hub's projects.last_edited and run_quota; with smc-compute and
--postgres by the 2020 hub's last_edited/last_active and each project's
mintime and always_running (settings plus users' upgrades). Pods stuck Pending
or ended beyond timeouts.pendingSeconds are deleted, and
pods built from an older template are counted as stale (replaced on their
next start, never killed while running).

The template file is read again every --template-reload-interval: when the
chart is upgraded with new project settings, kubelet updates the mounted
ConfigMap and new pods are built from it without a restart (logged "project
pod template reloaded"; cocalc_k8s_template_reloads_total). An invalid
template, or one that changes what needs a restart (namespace, selector,
security, storage, timeouts, default idle timeout), is logged and the running
one kept.

On SIGTERM or SIGINT it stops accepting requests, lets running requests
finish for up to --shutdown-timeout, then exits 0.`,
		Example: `  cocalc-k8s serve --log-format json
  cocalc-k8s serve --kubeconfig ~/.kube/config --template ./template.yaml --listen 127.0.0.1:8470`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.template, "template", podtemplate.DefaultPath, "project pod template file (the chart's ConfigMap key)")
	f.DurationVar(&o.templateReload, "template-reload-interval", 5*time.Second, "how often the template file is checked for changes (0: never)")
	f.StringVar(&o.listen, "listen", fmt.Sprintf("127.0.0.1:%d", DefaultAPIPort), "address of the project API")
	f.StringVar(&o.healthListen, "health-listen", fmt.Sprintf(":%d", DefaultHealthPort), "address of /healthz, /readyz and /metrics")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)")
	f.Float32Var(&o.qps, "kube-qps", 50, "Kubernetes API client queries per second")
	f.IntVar(&o.burst, "kube-burst", 100, "Kubernetes API client burst")
	f.IntVar(&o.maxInFlight, "max-inflight", httpapi.DefaultMaxInFlight, "start, restart and stop requests the HTTP API serves at once; beyond, they wait in its queue")
	f.IntVar(&o.maxQueued, "max-queued", httpapi.DefaultMaxQueued, "start, restart and stop requests waiting for one of the --max-inflight slots (0: none); beyond, the API answers 429 with Retry-After (its client retries)")
	f.DurationVar(&o.queueWait, "queue-wait", httpapi.DefaultQueueWait, "how long a request waits in the queue before it is answered 429")
	f.DurationVar(&o.idleCheckInterval, "idle-check-interval", time.Minute, "period of the idle-stop and clean-up loops")
	f.StringVar(&o.idleStop, "idle-stop", "auto", "stop projects idle longer than their idle timeout: auto (on exactly when the hub's database is an activity source: --hub-protocol=database, or smc-compute with --postgres), on (without --postgres: something calls the API's touch), off")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long running requests may finish after SIGTERM")
	f.StringVar(&o.hubProtocol, "hub-protocol", ProtocolSMCCompute, "how the hub drives projects: smc-compute (the 2020 image's smc-compute program calls the API) or database (current CoCalc's projects table, needs --postgres)")
	f.StringVar(&o.postgres, "postgres", "", "hub PostgreSQL connection string (libpq key=value or URL; the password may come from $PGPASSWORD): with --hub-protocol=database the database served; with smc-compute the 2020 hub's database, read for project activity and idle timeouts")
	f.StringToStringVar(&o.projectEnv, "project-env", nil, "KEY=VALUE added to every project's environment by --hub-protocol=database (e.g. CONAT_SERVER=http://cocalc-server:80)")
	return cmd
}

// idlePolicy says which loop stops idle projects, if any.
type idlePolicy struct {
	// orchestratorSweep: the orchestrator's own sweep, which counts starts
	// and touches as activity (the database controller touches projects
	// the hub's last_edited shows active).
	orchestratorSweep bool
	// hubSweep: the 2020 hub's database is read for activity and each
	// project's mintime/always_running (tools/frontend/hub2020); the
	// orchestrator's sweep is then off, so a database outage stops nothing.
	hubSweep bool
	// off is the startup log line when nothing stops projects by idleness.
	off string
}

// resolveIdlePolicy checks --hub-protocol, --postgres and --idle-stop
// together. An idle sweep measures time since the last activity, so by
// default (auto) it runs only where the hub's database is an activity
// source; without one a sweep would stop busy projects by their age.
func resolveIdlePolicy(protocol, mode string, postgres bool) (idlePolicy, error) {
	switch protocol {
	case ProtocolSMCCompute, ProtocolDatabase:
	default:
		return idlePolicy{}, usageErrorf("--hub-protocol must be %s or %s, not %q", ProtocolSMCCompute, ProtocolDatabase, protocol)
	}
	if protocol == ProtocolDatabase && !postgres {
		return idlePolicy{}, usageErrorf("--hub-protocol=%s needs --postgres (the hub's database)", ProtocolDatabase)
	}
	switch mode {
	case "auto", "on":
	case "off":
		return idlePolicy{off: "idle stop is off (--idle-stop=off): running projects are not stopped for idleness"}, nil
	default:
		return idlePolicy{}, usageErrorf("--idle-stop must be auto, on or off, not %q", mode)
	}
	switch {
	case protocol == ProtocolDatabase:
		return idlePolicy{orchestratorSweep: true}, nil
	case postgres:
		return idlePolicy{hubSweep: true}, nil
	case mode == "on":
		return idlePolicy{orchestratorSweep: true}, nil
	}
	return idlePolicy{off: "idle stop is off: --hub-protocol=smc-compute without --postgres has no activity source " +
		"(the 2020 hub reports none to smc-compute), so running projects are not stopped by age; " +
		"give --postgres the 2020 hub's database to stop idle projects"}, nil
}

// restConfig resolves the API server connection: an explicit kubeconfig,
// else the in-cluster service account, else $KUBECONFIG / ~/.kube/config.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, withCode(ExitUnavailable, fmt.Errorf("in-cluster config: %w", err))
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("kubeconfig: %w", err))
	}
	return cfg, nil
}

func newKubeClient(kubeconfig string, qps float32, burst int, tpl *podtemplate.Template, errs kube.ErrorObserver) (*kube.Client, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	// client-go's default (5 QPS) would make a burst of starts take minutes.
	// One limiter for client-go and the Client's own calls, which take
	// their tokens before their attempts' timeouts start (kube.Limiter).
	cfg.QPS, cfg.Burst = qps, burst
	limiter := kube.NewLimiter(qps, burst)
	cfg.RateLimiter = limiter
	cfg.UserAgent = "cocalc-k8s/" + Version
	// Protobuf rather than JSON: pods and Events are built-in types the API
	// server serves as protobuf, several times cheaper to decode. Filling
	// the pod cache decodes every project pod, so this is most of the time
	// a fresh process needs to become ready with thousands of projects.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	cs, err := newClientset(cfg)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("kubernetes client: %w", err))
	}
	events, err := newClientset(eventsConfig(cfg))
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("kubernetes events client: %w", err))
	}
	return kube.New(cs, kube.Config{Namespace: tpl.Namespace, Selector: tpl.SelectorLabels, Logger: slog.Default(), Errors: errs,
		Events: events.CoreV1(), Limiter: limiter})
}

// eventsConfig is the connection Events are written over: the same server
// and credentials with a rate limiter of its own, a fifth of the pod
// client's QPS and burst (10/s, burst 20 by default), so Events never take
// a token a pod create or delete needs. Events beyond that queue in the
// recorder (up to 1,000, then they are dropped), never in front of a start.
func eventsConfig(cfg *rest.Config) *rest.Config {
	ev := rest.CopyConfig(cfg)
	ev.RateLimiter = nil
	ev.QPS, ev.Burst = max(cfg.QPS/5, 1), max(cfg.Burst/5, 1)
	ev.UserAgent = cfg.UserAgent + " (events)"
	return ev
}

// apiOptions are the HTTP API's bounds from the flags (Options spells no
// queue as a negative MaxQueued, the flag as 0).
func apiOptions(o serveOptions) httpapi.Options {
	queued := o.maxQueued
	if queued == 0 {
		queued = -1
	}
	return httpapi.Options{MaxInFlight: o.maxInFlight, MaxQueued: queued, QueueWait: o.queueWait}
}

func runServe(parent context.Context, o serveOptions) error {
	log := slog.Default()
	if o.qps <= 0 || o.burst <= 0 || o.idleCheckInterval <= 0 || o.shutdownTimeout <= 0 || o.maxInFlight <= 0 || o.queueWait <= 0 {
		return usageErrorf("--kube-qps, --kube-burst, --max-inflight, --queue-wait, --idle-check-interval and --shutdown-timeout must be > 0")
	}
	if o.maxQueued < 0 {
		return usageErrorf("--max-queued must be >= 0")
	}
	idle, err := resolveIdlePolicy(o.hubProtocol, o.idleStop, o.postgres != "")
	if err != nil {
		return err
	}
	if o.templateReload < 0 {
		return usageErrorf("--template-reload-interval must be >= 0")
	}
	tpl, tplData, err := podtemplate.LoadBytes(o.template)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	if idle.off != "" {
		log.Info(idle.off)
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	kc, err := newKubeClient(o.kubeconfig, o.qps, o.burst, tpl, m)
	if err != nil {
		return err
	}
	orch, err := orchestrator.New(orchestrator.Config{Template: tpl, Cluster: kc, Logger: log, Observer: m,
		IdleCheckInterval: o.idleCheckInterval, NoIdleStop: !idle.orchestratorSweep})
	if err != nil {
		return err
	}
	defer orch.Close()
	var hubSweep *hub2020.Sweeper
	if idle.hubSweep {
		hubSweep, err = hub2020.New(hub2020.Config{ConnString: o.postgres, Interval: o.idleCheckInterval, Logger: log}, orch)
		if err != nil {
			return withCode(ExitUsage, fmt.Errorf("--postgres: %w", err))
		}
		defer hubSweep.Close()
		log.Info("idle stop by the 2020 hub's activity: last_edited/last_active, per-project mintime and always_running")
	}
	metrics.RegisterStates(reg, orch)
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})

	apiLn, err := net.Listen("tcp", o.listen)
	if err != nil {
		return withCode(ExitUsage, fmt.Errorf("--listen: %w", err))
	}
	healthLn, err := net.Listen("tcp", o.healthListen)
	if err != nil {
		apiLn.Close()
		return withCode(ExitUsage, fmt.Errorf("--health-listen: %w", err))
	}
	onListening(apiLn.Addr(), healthLn.Addr())

	ctx, stopSignals := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	// The informer and loops outlive ctx until the HTTP servers drained,
	// so requests finishing during shutdown still see a live cache.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(parent))
	defer stopRun()
	kc.Start(runCtx)
	if o.templateReload > 0 {
		go podtemplate.Watch(runCtx, podtemplate.WatchConfig{File: o.template, Interval: o.templateReload, Loaded: tplData,
			Apply: orch.SetTemplate, Observe: m.TemplateReload, Logger: log})
	}
	dbErr := make(chan error, 1)
	go func() {
		if err := kc.WaitForSync(runCtx); err != nil {
			return
		}
		log.Info("pod cache synced; background loops running", "namespace", tpl.Namespace, "interval", o.idleCheckInterval)
		if hubSweep != nil {
			go hubSweep.Run(runCtx)
		}
		if o.hubProtocol == ProtocolDatabase {
			go func() {
				cfg := pgcontroller.Config{ConnString: o.postgres, ProjectEnv: o.projectEnv, IdleInterval: o.idleCheckInterval, Logger: log}
				if err := pgcontroller.RunWithOrchestrator(runCtx, cfg, orch, tpl); err != nil && runCtx.Err() == nil {
					dbErr <- fmt.Errorf("postgres front-end: %w", err)
				}
			}()
		}
		orch.Run(runCtx)
	}()

	servers := []*http.Server{
		{Handler: httpapi.NewAPI(orch, metricsHandler, log, apiOptions(o)), ReadHeaderTimeout: 10 * time.Second},
		{Handler: httpapi.NewHealth(orch.Ready, metricsHandler), ReadHeaderTimeout: 10 * time.Second},
	}
	serveErr := make(chan error, len(servers))
	for i, ln := range []net.Listener{apiLn, healthLn} {
		go func() {
			if err := servers[i].Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	log.Info("serving", "api", apiLn.Addr().String(), "health", healthLn.Addr().String(),
		"namespace", tpl.Namespace, "release", tpl.Release, "version", Version)

	var result error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", o.shutdownTimeout)
	case err := <-serveErr:
		result = fmt.Errorf("http server: %w", err)
	case err := <-dbErr:
		result = err
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(parent), o.shutdownTimeout)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(shutdownCtx); err != nil {
			log.Warn("http shutdown incomplete", "err", err)
			s.Close()
		}
	}
	orch.Close()
	stopRun()
	return result
}
