// Package metrics holds the orchestrator's Prometheus metrics: operations by
// kind and result, start latency, projects by state (read from the cache at
// scrape time), stale pods and Kubernetes API errors.
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
	operations   *prometheus.CounterVec
	startLatency *prometheus.HistogramVec
	apiErrors    *prometheus.CounterVec
}

// StateSource reports projects per state and the number of stale pods.
type StateSource interface {
	StateCounts() (map[state.State]int, int)
}

// New registers the metrics (and the Go and process collectors) on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "operations_total",
			Help: "Project operations by kind (start, stop, restart, touch) and result (ok, error, timeout, invalid).",
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
	}
	reg.MustRegister(m.operations, m.startLatency, m.apiErrors,
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

// APIError records one failed API request.
func (m *Metrics) APIError(verb string, err error) {
	reason := string(apierrors.ReasonForError(err))
	if reason == "" {
		reason = "Transport"
	}
	m.apiErrors.WithLabelValues(verb, reason).Inc()
}

// RegisterStates exports projects by state and stale pods, computed from
// src at each scrape (no API calls: src reads the informer cache).
func RegisterStates(reg prometheus.Registerer, src StateSource) {
	reg.MustRegister(&stateCollector{src: src})
}

var (
	projectsDesc = prometheus.NewDesc(namespace+"_projects", "Projects with a pod, by state.", []string{"state"}, nil)
	staleDesc    = prometheus.NewDesc(namespace+"_stale_pods", "Project pods whose spec differs from the current template (replaced on next start).", nil, nil)
)

type stateCollector struct{ src StateSource }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- projectsDesc
	ch <- staleDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts, stale := c.src.StateCounts()
	for _, s := range []state.State{state.Opened, state.Starting, state.Running, state.Stopping} {
		ch <- prometheus.MustNewConstMetric(projectsDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, float64(stale))
}
