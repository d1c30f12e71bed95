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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/pgcontroller"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/kube"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

type serveOptions struct {
	template          string
	listen            string
	healthListen      string
	kubeconfig        string
	qps               float32
	burst             int
	idleCheckInterval time.Duration
	idleStop          string
	shutdownTimeout   time.Duration
	// postgres, when set, also runs the hub-database front-end (current
	// CoCalc's kucalc protocol); projectEnv is handed to its projects.
	postgres   string
	projectEnv map[string]string
}

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

Background loops run every --idle-check-interval: idle projects are stopped
(per-project idle timeout from the start quota, default from the template;
only where something reports activity, see --idle-stop), pods stuck Pending
or ended beyond timeouts.pendingSeconds are deleted, and
pods built from an older template are counted as stale (replaced on their
next start, never killed while running).

On SIGTERM or SIGINT it stops accepting requests, lets running requests
finish for up to --shutdown-timeout, then exits 0.`,
		Example: `  cocalc-k8s serve --log-format json
  cocalc-k8s serve --kubeconfig ~/.kube/config --template ./template.yaml --listen 127.0.0.1:8470`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.template, "template", podtemplate.DefaultPath, "project pod template file (the chart's ConfigMap key)")
	f.StringVar(&o.listen, "listen", fmt.Sprintf("127.0.0.1:%d", DefaultAPIPort), "address of the project API")
	f.StringVar(&o.healthListen, "health-listen", fmt.Sprintf(":%d", DefaultHealthPort), "address of /healthz, /readyz and /metrics")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)")
	f.Float32Var(&o.qps, "kube-qps", 50, "Kubernetes API client queries per second")
	f.IntVar(&o.burst, "kube-burst", 100, "Kubernetes API client burst")
	f.DurationVar(&o.idleCheckInterval, "idle-check-interval", time.Minute, "period of the idle-stop and clean-up loops")
	f.StringVar(&o.idleStop, "idle-stop", "auto", "stop projects idle longer than their idle timeout: auto (only with --postgres, whose front-end reports the hub's activity), on (something calls the API's touch), off")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long running requests may finish after SIGTERM")
	f.StringVar(&o.postgres, "postgres", "", "hub PostgreSQL connection string: also serve current CoCalc's database protocol (projects.action_request, copy_paths); the password may come from $PGPASSWORD")
	f.StringToStringVar(&o.projectEnv, "project-env", nil, "KEY=VALUE added to every project's environment by the --postgres front-end (e.g. CONAT_SERVER=http://cocalc-server:80)")
	return cmd
}

// resolveIdleStop turns --idle-stop into orchestrator.Config.NoIdleStop.
// The idle sweep measures time since the last activity, so it may run only
// where a front-end reports activity: the database front-end does (the
// hub's last_edited); smc-compute cannot (the 2020 hub sends none), and a
// sweep there would stop busy projects by age.
func resolveIdleStop(mode string, activitySource bool) (noIdleStop bool, err error) {
	switch mode {
	case "auto":
		return !activitySource, nil
	case "on":
		return false, nil
	case "off":
		return true, nil
	}
	return false, usageErrorf("--idle-stop must be auto, on or off, not %q", mode)
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
	cfg.QPS, cfg.Burst = qps, burst
	cfg.UserAgent = "cocalc-k8s/" + Version
	cs, err := newClientset(cfg)
	if err != nil {
		return nil, withCode(ExitUsage, fmt.Errorf("kubernetes client: %w", err))
	}
	return kube.New(cs, kube.Config{Namespace: tpl.Namespace, Selector: tpl.SelectorLabels, Logger: slog.Default(), Errors: errs})
}

func runServe(parent context.Context, o serveOptions) error {
	log := slog.Default()
	if o.qps <= 0 || o.burst <= 0 || o.idleCheckInterval <= 0 || o.shutdownTimeout <= 0 {
		return usageErrorf("--kube-qps, --kube-burst, --idle-check-interval and --shutdown-timeout must be > 0")
	}
	noIdleStop, err := resolveIdleStop(o.idleStop, o.postgres != "")
	if err != nil {
		return err
	}
	tpl, err := podtemplate.Load(o.template)
	if err != nil {
		return withCode(ExitUsage, err)
	}
	if noIdleStop {
		log.Info("idle stop is off: no activity source (--postgres, or --idle-stop=on where something calls touch); running projects are never stopped for their age")
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	kc, err := newKubeClient(o.kubeconfig, o.qps, o.burst, tpl, m)
	if err != nil {
		return err
	}
	orch, err := orchestrator.New(orchestrator.Config{Template: tpl, Cluster: kc, Logger: log, Observer: m,
		IdleCheckInterval: o.idleCheckInterval, NoIdleStop: noIdleStop})
	if err != nil {
		return err
	}
	defer orch.Close()
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
	dbErr := make(chan error, 1)
	go func() {
		if err := kc.WaitForSync(runCtx); err != nil {
			return
		}
		log.Info("pod cache synced; background loops running", "namespace", tpl.Namespace, "interval", o.idleCheckInterval)
		if o.postgres != "" {
			go func() {
				cfg := pgcontroller.Config{ConnString: o.postgres, ProjectEnv: o.projectEnv, Logger: log}
				if err := pgcontroller.RunWithOrchestrator(runCtx, cfg, orch, tpl); err != nil && runCtx.Err() == nil {
					dbErr <- fmt.Errorf("postgres front-end: %w", err)
				}
			}()
		}
		orch.Run(runCtx)
	}()

	servers := []*http.Server{
		{Handler: httpapi.NewAPI(orch, metricsHandler, log), ReadHeaderTimeout: 10 * time.Second},
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
