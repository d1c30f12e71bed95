package e2e

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics/metricstest"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// scrapeNames returns the sample names of one /metrics scrape (text format).
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		require.Positive(t, end, "sample line %q", line)
		names[line[:end]] = true
	}
	require.NoError(t, sc.Err())
	return names
}

// The chart's alert rules and dashboard are checked (test/chart) against the
// names of the in-process registry (metricstest.Registry: metrics.New and
// RegisterStates with the Go and process collectors). A running
// orchestrator, after a start and a stop on the api tier, serves exactly
// those names: none the checks do not know, and every one they rely on,
// except the series of vectors that saw no event here (API errors).
func TestOrchestratorServesTheCheckedMetrics(t *testing.T) {
	timed(t)
	if tier, err := cluster.TierFromEnv(); err == nil && tier == cluster.TierAPI {
		for _, bin := range []string{"kube-cluster", "cocalc-k8s"} {
			if _, err := os.Stat(filepath.Join(repoRoot, "bin", bin)); err != nil {
				t.Skipf("api tier: bin/%s missing (make kube-bin build): %v", bin, err)
			}
		}
	}
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	r := installForOrchestrator(t, c, "metrics")
	id := newProjectID()
	_, err := r.orch.api.Start(t.Context(), id, orchestrator.StartRequest{})
	require.NoError(t, err, "start")
	_, err = r.orch.api.Stop(t.Context(), id)
	require.NoError(t, err, "stop")

	live := scrapeNames(t, r.orch.health+"/metrics")
	reg, _ := metricstest.Registry()
	checked, err := metricstest.Names(reg)
	require.NoError(t, err)
	var unknown, missing []string
	for n := range live {
		if !checked[n] {
			unknown = append(unknown, n)
		}
	}
	for n := range checked {
		if !live[n] && n != "cocalc_k8s_kube_api_errors_total" {
			missing = append(missing, n)
		}
	}
	sort.Strings(unknown)
	sort.Strings(missing)
	require.Empty(t, unknown, "served by the orchestrator, unknown to the chart's metric checks")
	require.Empty(t, missing, "known to the chart's metric checks, not served by the orchestrator")
	require.True(t, live["cocalc_k8s_pod_cache_synced"] && live["cocalc_k8s_start_duration_seconds_bucket"], "%v", live)
}
