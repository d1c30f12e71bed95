// Package metrics holds the orchestrator's Prometheus metrics: operations by
// kind and result, start latency, background deletions, projects by state
// and the pod cache's sync state (read at scrape time), stale pods,
// Kubernetes API errors and project template reloads. docs/metrics.md lists
// them (TestMetricsDoc keeps it equal to what New and RegisterStates export).
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
)

const namespace = "cocalc_k8s"

// Metrics implements orchestrator.Observer and kube.ErrorObserver.
type Metrics struct {
	operations     *prometheus.CounterVec
	startLatency   *prometheus.HistogramVec
	apiErrors      *prometheus.CounterVec
	sweepDeletions *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	reloadOK       prometheus.Gauge
}

// StateSource reports projects per state and the number of stale pods, and
// whether the pod cache has synced.
type StateSource interface {
	StateCounts() (map[state.State]int, int)
	Ready() bool
}

// Label values of the bounded label sets (docs/metrics.md).
var (
	// SweepReasons are the reasons of cocalc_k8s_sweep_deletions_total.
	SweepReasons = []string{"idle", "pending", "ended"}
	// ReloadResults are the results of cocalc_k8s_template_reloads_total
	// (podtemplate.ReloadOK, ReloadInvalid, ReloadRefused).
	ReloadResults = []string{"ok", "invalid", "refused"}
)

// New registers the metrics (and the Go and process collectors) on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "operations_total",
			Help: "Finished project operations by operation (start, stop; a restart counts as both) and result (ok, error, timeout, invalid).",
		}, []string{"operation", "result"}),
		startLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "start_duration_seconds",
			Help:    "Time from a start request to the project running (or failing), by result.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
		}, []string{"result"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "kube_api_errors_total",
			Help: "Failed Kubernetes API requests by verb and reason (each attempt, including retried ones).",
		}, []string{"verb", "reason"}),
		sweepDeletions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sweep_deletions_total",
			Help: "Project pods deleted by the background sweep, by reason (idle: idle timeout, pending: never started within the pending timeout, ended: failed or exited).",
		}, []string{"reason"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "template_reloads_total",
			Help: "Changes of the mounted project pod template file, by result (ok: applied, invalid: does not validate, refused: needs a restart).",
		}, []string{"result"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "template_last_reload_successful",
			Help: "1 when the running project pod template is the mounted file's content (last change applied), 0 when the last change was not applied.",
		}),
	}
	// A new counter reads 0 rather than being absent, so that rate() and
	// increase() see the first event.
	for _, r := range SweepReasons {
		m.sweepDeletions.WithLabelValues(r)
	}
	for _, r := range ReloadResults {
		m.reloads.WithLabelValues(r)
	}
	m.reloadOK.Set(1)
	reg.MustRegister(m.operations, m.startLatency, m.apiErrors, m.sweepDeletions, m.reloads, m.reloadOK,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Operation records one finished operation.
func (m *Metrics) Operation(op, result string, took time.Duration) {
	m.operations.WithLabelValues(op, result).Inc()
	if op == "start" {
		m.startLatency.WithLabelValues(result).Observe(took.Seconds())
	}
}

// SweepDeletion records one pod deleted by the background sweep; reason is
// one of SweepReasons.
func (m *Metrics) SweepDeletion(reason string) {
	m.sweepDeletions.WithLabelValues(reason).Inc()
}

// TemplateReload records one change of the template file; result is one of
// ReloadResults.
func (m *Metrics) TemplateReload(result string) {
	m.reloads.WithLabelValues(result).Inc()
	if result == "ok" {
		m.reloadOK.Set(1)
	} else {
		m.reloadOK.Set(0)
	}
}

// APIError records one failed API request.
func (m *Metrics) APIError(verb string, err error) {
	reason := string(apierrors.ReasonForError(err))
	if reason == "" {
		reason = "Transport"
	}
	m.apiErrors.WithLabelValues(verb, reason).Inc()
}

// RegisterStates exports projects by state, stale pods and the cache's sync
// state, computed from src at each scrape (no API calls: src reads the
// informer cache).
func RegisterStates(reg prometheus.Registerer, src StateSource) {
	reg.MustRegister(&stateCollector{src: src})
}

var (
	projectsDesc = prometheus.NewDesc(namespace+"_projects", "Projects with a pod, by state.", []string{"state"}, nil)
	staleDesc    = prometheus.NewDesc(namespace+"_stale_pods", "Project pods whose spec differs from the current template (replaced on next start).", nil, nil)
	syncedDesc   = prometheus.NewDesc(namespace+"_pod_cache_synced", "1 when the project pod cache (informer) has synced and status answers are complete (/readyz), else 0.", nil, nil)
)

type stateCollector struct{ src StateSource }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- projectsDesc
	ch <- staleDesc
	ch <- syncedDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts, stale := c.src.StateCounts()
	for _, s := range []state.State{state.Opened, state.Starting, state.Running, state.Stopping} {
		ch <- prometheus.MustNewConstMetric(projectsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, float64(stale))
	synced := 0.0
	if c.src.Ready() {
		synced = 1
	}
	ch <- prometheus.MustNewConstMetric(syncedDesc, prometheus.GaugeValue, synced)
}
