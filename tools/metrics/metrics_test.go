package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
)

type fakeStates struct{}

func (fakeStates) StateCounts() (map[state.State]int, int) {
	return map[state.State]int{state.Running: 3, state.Starting: 1}, 2
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	RegisterStates(reg, fakeStates{})
	m.Operation("start", "ok", 2*time.Second)
	m.Operation("start", "timeout", time.Minute)
	m.Operation("stop", "ok", time.Second)
	m.APIError("create", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("x")))
	m.APIError("get", errors.New("connection refused"))

	if got := testutil.ToFloat64(m.operations.WithLabelValues("start", "ok")); got != 1 {
		t.Fatalf("start ok = %v", got)
	}
	if got := testutil.ToFloat64(m.apiErrors.WithLabelValues("create", "Forbidden")); got != 1 {
		t.Fatalf("api errors = %v", got)
	}
	if got := testutil.ToFloat64(m.apiErrors.WithLabelValues("get", "Transport")); got != 1 {
		t.Fatalf("transport errors = %v", got)
	}
	if n := testutil.CollectAndCount(m.startLatency); n != 2 {
		t.Fatalf("latency series = %d", n)
	}
	expected := `
# HELP cocalc_k8s_projects Projects with a pod, by state.
# TYPE cocalc_k8s_projects gauge
cocalc_k8s_projects{state="opened"} 0
cocalc_k8s_projects{state="running"} 3
cocalc_k8s_projects{state="starting"} 1
cocalc_k8s_projects{state="stopping"} 0
# HELP cocalc_k8s_stale_pods Project pods whose spec differs from the current template (replaced on next start).
# TYPE cocalc_k8s_stale_pods gauge
cocalc_k8s_stale_pods 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "cocalc_k8s_projects", "cocalc_k8s_stale_pods"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}
}
