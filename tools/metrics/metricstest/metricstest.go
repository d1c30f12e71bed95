// Package metricstest builds the orchestrator's metrics registry exactly as
// `cocalc-k8s serve` does (metrics.New plus metrics.RegisterStates) and
// exercises every vector, so that a Gather returns every family and label
// the binary can export. The docs table (docs/metrics.md) and the chart's
// alert and dashboard checks (test/chart) are tested against it.
package metricstest

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// States is a fixed metrics.StateSource.
type States struct {
	Counts map[state.State]int
	Stale  int
	Synced bool
}

// StateCounts implements metrics.StateSource.
func (s States) StateCounts() (map[state.State]int, int) { return s.Counts, s.Stale }

// Ready implements metrics.StateSource.
func (s States) Ready() bool { return s.Synced }

// Registry returns a registry with every metric of the binary, each vector
// with at least one child: what `cocalc-k8s serve` registers, including the
// handler's own promhttp_metric_handler_errors_total.
func Registry() (*prometheus.Registry, *metrics.Metrics) {
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	metrics.RegisterStates(reg, States{Counts: map[state.State]int{state.Running: 1}, Synced: true})
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	for _, op := range []string{"start", "stop"} {
		for _, r := range []string{orchestrator.ResultOK, orchestrator.ResultError, orchestrator.ResultTimeout, orchestrator.ResultInvalid} {
			m.Operation(op, r, time.Second)
		}
	}
	m.APIError("create", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("denied")))
	m.APIError("get", errors.New("connection refused"))
	for _, r := range metrics.SweepReasons {
		m.SweepDeletion(r)
	}
	m.TemplateReload("ok")
	return reg, m
}

// Names returns every sample name a scrape of reg can contain: each
// family's name (a histogram's only as _bucket, _sum and _count), plus _sum
// and _count for summaries.
func Names(reg prometheus.Gatherer) (map[string]bool, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		switch mf.GetType().String() {
		case "HISTOGRAM", "GAUGE_HISTOGRAM":
			names[n+"_bucket"], names[n+"_sum"], names[n+"_count"] = true, true, true
		case "SUMMARY":
			names[n], names[n+"_sum"], names[n+"_count"] = true, true, true
		default:
			names[n] = true
		}
	}
	return names, nil
}
