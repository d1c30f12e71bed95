package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/wait"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/test/pg"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// hubDatabase is a real PostgreSQL database holding a hub's schema (one of
// the front-ends' testdata files, the tables as the hub creates them).
type hubDatabase struct {
	url  string
	pool *pgxpool.Pool
}

func newHubDatabase(t *testing.T, schemaFile string) *hubDatabase {
	t.Helper()
	srv := pg.Start(t)
	url := srv.CreateDatabase(t.Context(), "hub")
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	schema, err := os.ReadFile(filepath.Join(repoRoot, schemaFile))
	require.NoError(t, err)
	_, err = pool.Exec(t.Context(), string(schema))
	require.NoError(t, err, "create the hub's tables")
	return &hubDatabase{url: url, pool: pool}
}

func (h *hubDatabase) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	_, err := h.pool.Exec(t.Context(), sql, args...)
	require.NoError(t, err, sql)
}

// startForHub installs the chart and runs the orchestrator (as the chart's
// ServiceAccount) with the hub protocol's flags.
func startForHub(t *testing.T, c *cluster.Cluster, prefix string, args ...string) (ns string, orch *orchProcess) {
	t.Helper()
	ns = newNamespace(t, c, prefix, nil)
	set := mergeValues(standinValues, map[string]string{"projects.resources.ephemeralStorageLimit": ""})
	install(t, c, ns, helmOptions(t, c, ns, set, valuesFile("kind.yaml")))
	kubeconfig := serviceAccountKubeconfig(t, serviceAccountConfig(t, c, ns))
	file, _ := orchestratorTemplate(t, c, ns)
	return ns, startOrchestrator(t, kubeconfig, file, args...)
}

// pollUntil waits for cond; the bound is a liveness limit, not a speed claim.
func pollUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, limit, true, func(context.Context) (bool, error) { return cond(), nil })
	require.NoError(t, err, what)
}

// TestSmcComputeModeStopsOnlyIdleProjects: the 2020 hub's protocol with its
// database given (--postgres): two projects started through the API, with
// a 3 s idle timeout (the 2020 hub's mintime setting); the one whose
// last_edited the hub keeps refreshing keeps running past several
// timeouts, its idle twin is stopped, and the first stops once the
// refreshes end.
func TestSmcComputeModeStopsOnlyIdleProjects(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	db := newHubDatabase(t, "tools/frontend/hub2020/testdata/schema.sql")
	ns, orch := startForHub(t, c, "hub2020", "--hub-protocol=smc-compute", "--postgres="+db.url)
	busy, idle := newProjectID(), newProjectID()
	for _, id := range []project.ID{busy, idle} {
		db.exec(t, `INSERT INTO projects (project_id, settings, last_edited, state) VALUES ($1, '{"mintime": 3}', NOW(), '{"state":"running"}')`, id.String())
		st, err := orch.api.Start(t.Context(), id, orchestrator.StartRequest{})
		require.NoError(t, err)
		require.Equal(t, state.Running, st.State)
	}
	until := time.Now().Add(12 * time.Second)
	for time.Now().Before(until) {
		db.exec(t, `UPDATE projects SET last_edited = NOW() WHERE project_id = $1`, busy.String())
		time.Sleep(500 * time.Millisecond)
	}
	require.Len(t, projectPods(t, c, ns, busy), 1, "a project in use was stopped")
	require.Empty(t, projectPods(t, c, ns, idle), "the idle project still runs after four idle timeouts")
	pollUntil(t, "the project stopped once its activity ended", time.Minute, func() bool { return len(projectPods(t, c, ns, busy)) == 0 })
}

// TestDatabaseModeDrivesProjects: current CoCalc's protocol end to end on
// a real PostgreSQL holding the hub's tables: a start request written as
// the hub writes it gives a running pod and state running with its IP; a
// project whose last_edited is refreshed survives its idle timeout while
// its idle twin is stopped; a stop request removes the pod.
func TestDatabaseModeDrivesProjects(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	db := newHubDatabase(t, "tools/frontend/pgcontroller/testdata/schema.sql")
	ns, _ := startForHub(t, c, "hubdb", "--hub-protocol=database", "--postgres="+db.url)
	busy, idle := newProjectID(), newProjectID()
	request := func(id project.ID, action string) {
		db.exec(t, `UPDATE projects SET action_request =
			JSONB_SET(JSONB_SET((COALESCE(action_request, '{}'::JSONB) - 'started' - 'finished'), '{action}', $2::JSONB), '{time}', $3::JSONB)
			WHERE project_id = $1`, id.String(), fmt.Sprintf("%q", action), fmt.Sprintf("%q", time.Now().UTC().Format("2006-01-02T15:04:05.000Z")))
	}
	stateOf := func(id project.ID) (string, string) {
		var raw []byte
		require.NoError(t, db.pool.QueryRow(t.Context(), `SELECT state FROM projects WHERE project_id = $1`, id.String()).Scan(&raw))
		var s struct{ State, IP string }
		_ = json.Unmarshal(raw, &s)
		return s.State, s.IP
	}
	// A 3 s idle timeout from the site's default quotas (an on-prem site's
	// admin setting; run_quota is computed from it at each start).
	db.exec(t, `INSERT INTO server_settings (name, value) VALUES ('kucalc', 'onprem'), ('default_quotas', '{"idle_timeout": 3}')`)
	for _, id := range []project.ID{busy, idle} {
		db.exec(t, `INSERT INTO projects (project_id, state, last_edited) VALUES ($1, '{"state":"opened"}', NOW())`, id.String())
		request(id, "start")
	}
	for _, id := range []project.ID{busy, idle} {
		pollUntil(t, "state running with an IP", 2*time.Minute, func() bool {
			s, ip := stateOf(id)
			return s == string(state.Running) && ip != ""
		})
		require.Len(t, projectPods(t, c, ns, id), 1)
	}
	// The controller leaves a project alone for a while after its start;
	// the hub's last_started says that was long ago.
	db.exec(t, `UPDATE projects SET last_started = NOW() - interval '1 hour'`)
	until := time.Now().Add(12 * time.Second)
	for time.Now().Before(until) {
		db.exec(t, `UPDATE projects SET last_edited = NOW() WHERE project_id = $1`, busy.String())
		time.Sleep(500 * time.Millisecond)
	}
	require.Len(t, projectPods(t, c, ns, busy), 1, "a project in use was stopped")
	require.Empty(t, projectPods(t, c, ns, idle), "the idle project still runs after four idle timeouts")

	request(busy, "stop")
	pollUntil(t, "the stop request removed the pod", time.Minute, func() bool { return len(projectPods(t, c, ns, busy)) == 0 })
	pollUntil(t, "state opened after the stop", time.Minute, func() bool { s, _ := stateOf(busy); return s == string(state.Opened) })
}
