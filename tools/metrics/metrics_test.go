package metrics_test

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics/metricstest"
)

var update = flag.Bool("update", false, "rewrite the generated table in docs/metrics.md")

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	metrics.RegisterStates(reg, metricstest.States{Counts: map[state.State]int{state.Running: 3, state.Starting: 1}, Stale: 2})
	m.Operation("start", "ok", 2*time.Second)
	m.Operation("start", "timeout", time.Minute)
	m.Operation("stop", "ok", time.Second)
	m.APIError("create", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("x")))
	m.APIError("get", errors.New("connection refused"))
	m.SweepDeletion("pending")
	m.TemplateReload("invalid")

	expected := `
# HELP cocalc_k8s_kube_api_errors_total Failed Kubernetes API requests by verb and reason (each attempt, including retried ones).
# TYPE cocalc_k8s_kube_api_errors_total counter
cocalc_k8s_kube_api_errors_total{reason="Forbidden",verb="create"} 1
cocalc_k8s_kube_api_errors_total{reason="Transport",verb="get"} 1
# HELP cocalc_k8s_pod_cache_synced 1 when the project pod cache (informer) has synced and status answers are complete (/readyz), else 0.
# TYPE cocalc_k8s_pod_cache_synced gauge
cocalc_k8s_pod_cache_synced 0
# HELP cocalc_k8s_projects Projects with a pod, by state.
# TYPE cocalc_k8s_projects gauge
cocalc_k8s_projects{state="opened"} 0
cocalc_k8s_projects{state="running"} 3
cocalc_k8s_projects{state="starting"} 1
cocalc_k8s_projects{state="stopping"} 0
# HELP cocalc_k8s_stale_pods Project pods whose spec differs from the current template (replaced on next start).
# TYPE cocalc_k8s_stale_pods gauge
cocalc_k8s_stale_pods 2
# HELP cocalc_k8s_sweep_deletions_total Project pods deleted by the background sweep, by reason (idle: idle timeout, pending: never started within the pending timeout, ended: failed or exited).
# TYPE cocalc_k8s_sweep_deletions_total counter
cocalc_k8s_sweep_deletions_total{reason="ended"} 0
cocalc_k8s_sweep_deletions_total{reason="idle"} 0
cocalc_k8s_sweep_deletions_total{reason="pending"} 1
# HELP cocalc_k8s_template_last_reload_successful 1 when the running project pod template is the mounted file's content (last change applied), 0 when the last change was not applied.
# TYPE cocalc_k8s_template_last_reload_successful gauge
cocalc_k8s_template_last_reload_successful 0
# HELP cocalc_k8s_template_reloads_total Changes of the mounted project pod template file, by result (ok: applied, invalid: does not validate, refused: needs a restart).
# TYPE cocalc_k8s_template_reloads_total counter
cocalc_k8s_template_reloads_total{result="invalid"} 1
cocalc_k8s_template_reloads_total{result="ok"} 0
cocalc_k8s_template_reloads_total{result="refused"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"cocalc_k8s_kube_api_errors_total", "cocalc_k8s_pod_cache_synced", "cocalc_k8s_projects", "cocalc_k8s_stale_pods",
		"cocalc_k8s_sweep_deletions_total", "cocalc_k8s_template_last_reload_successful", "cocalc_k8s_template_reloads_total"); err != nil {
		t.Fatal(err)
	}
	m.TemplateReload("ok")
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cocalc_k8s_template_last_reload_successful 1 when the running project pod template is the mounted file's content (last change applied), 0 when the last change was not applied.
# TYPE cocalc_k8s_template_last_reload_successful gauge
cocalc_k8s_template_last_reload_successful 1
`), "cocalc_k8s_template_last_reload_successful"); err != nil {
		t.Fatalf("a good reload after a bad one: %v", err)
	}
	if n := testutil.CollectAndCount(reg, "cocalc_k8s_start_duration_seconds"); n != 2 {
		t.Fatalf("start latency series = %d, want one per result seen (ok, timeout)", n)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}
}

// The naming rules of https://prometheus.io/docs/practices/naming/ on every
// family the binary exports: one prefix, counters end in _total, durations
// are in seconds with the unit in the name, no label repeats the metric's
// prefix, and every label has a bounded value set (checked here by name).
func TestMetricNamingConventions(t *testing.T) {
	reg, _ := metricstest.Registry()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	bounded := map[string]bool{"operation": true, "result": true, "state": true, "verb": true, "reason": true}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "cocalc_k8s_") {
			continue
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			if !strings.HasSuffix(name, "_total") {
				t.Errorf("counter %s does not end in _total", name)
			}
		default:
			if strings.HasSuffix(name, "_total") {
				t.Errorf("%s %s ends in _total", mf.GetType(), name)
			}
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM && !strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_bytes") {
			t.Errorf("histogram %s has no base unit suffix", name)
		}
		for _, bad := range []string{"_milliseconds", "_ms", "_minutes", "_count_total"} {
			if strings.Contains(name, bad) {
				t.Errorf("%s: not a base unit or a doubled suffix (%s)", name, bad)
			}
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !bounded[l.GetName()] {
					t.Errorf("%s: label %q is not one of the bounded label sets", name, l.GetName())
				}
			}
		}
	}
}

const (
	docFile    = "../../docs/metrics.md"
	beginTable = "<!-- BEGIN metrics table: generated by `go test ./tools/metrics -run TestMetricsDoc -update` -->"
	endTable   = "<!-- END metrics table -->"
)

// docTable renders every cocalc_k8s_* family the binary exports.
func docTable(t *testing.T) string {
	reg, _ := metricstest.Registry()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("| Metric | Type | Labels | Meaning |\n|---|---|---|---|\n")
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "cocalc_k8s_") {
			continue
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		var names []string
		for l := range labels {
			names = append(names, "`"+l+"`")
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", mf.GetName(), strings.ToLower(mf.GetType().String()),
			strings.Join(names, ", "), strings.ReplaceAll(mf.GetHelp(), "|", "\\|"))
	}
	return b.String()
}

// docs/metrics.md lists exactly what the binary exports.
func TestMetricsDoc(t *testing.T) {
	data, err := os.ReadFile(docFile)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, beginTable), strings.Index(doc, endTable)
	if i < 0 || j < i {
		t.Fatalf("%s: markers %q ... %q missing", docFile, beginTable, endTable)
	}
	want := doc[:i] + beginTable + "\n" + docTable(t) + endTable + doc[j+len(endTable):]
	if *update {
		if err := os.WriteFile(docFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if doc != want {
		t.Fatalf("%s is stale: run go test ./tools/metrics -run TestMetricsDoc -update\nwant table:\n%s", docFile, docTable(t))
	}
}
