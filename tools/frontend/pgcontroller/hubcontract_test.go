package pgcontroller

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator/orchestratortest"
)

// These tests hold the controller to what current CoCalc's hub
// (server/projects/control/kucalc.ts, secret-token.ts, the database's
// touch_project and always-running.ts) expects of the cluster side.

// silentWatch is the fake without watch events: the controller learns the
// state only from its own reads after an action.
type silentWatch struct{ *orchestratortest.Fake }

func (silentWatch) Watch(ctx context.Context) <-chan orchestrator.ProjectStatus {
	ch := make(chan orchestrator.ProjectStatus)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

// TestFinishedOnlyAfterStateIsRunning: the hub's start waits for
// action_request.finished and then reads state; a start finished while the
// state still says opened or starting (no ip) makes it start again. A
// trigger records the state at the moment finished is written.
func TestFinishedOnlyAfterStateIsRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.exec(`CREATE TABLE finished_log (project_id UUID, state JSONB)`)
	e.exec(`CREATE FUNCTION log_finished() RETURNS TRIGGER AS $$ BEGIN
		IF NEW.action_request->>'finished' IS NOT NULL AND OLD.action_request->>'finished' IS NULL THEN
			INSERT INTO finished_log VALUES (NEW.project_id, NEW.state);
		END IF;
		RETURN NEW;
	END $$ LANGUAGE plpgsql`)
	e.exec(`CREATE TRIGGER log_finished BEFORE UPDATE ON projects FOR EACH ROW EXECUTE PROCEDURE log_finished()`)
	ids := []string{p1, p2, p3}
	for _, id := range ids {
		e.addProject(id)
	}
	e.start(e.config(), silentWatch{e.fake})
	for _, id := range ids {
		e.request(id, "start")
	}
	for _, id := range ids {
		if req := e.waitFinished(id); req["err"] != nil {
			t.Fatalf("start %s: %v", id, req["err"])
		}
	}
	rows, err := e.pool.Query(context.Background(), `SELECT project_id::text, state->>'state', COALESCE(state->>'ip', '') FROM finished_log`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, st, ip string
		if err := rows.Scan(&id, &st, &ip); err != nil {
			t.Fatal(err)
		}
		n++
		if st != "running" || ip == "" {
			t.Errorf("%s: finished written while state was %q ip %q; want running with an ip", id, st, ip)
		}
	}
	if n != len(ids) {
		t.Errorf("%d finished writes logged, want %d", n, len(ids))
	}
}

// TestSecretTokenRaceWithTheHub: the hub's getProjectSecretToken reads
// secret_token and, when empty, writes a fresh one unconditionally. If that
// write lands after the controller created its own token, the project must
// end up with the hub's token in its file (it reads the file at startup,
// so it is restarted once).
func TestSecretTokenRaceWithTheHub(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	hubToken := strings.Repeat("H", secretTokenLength)
	var once sync.Once
	var hubErr atomic.Value
	e.fake.StartErr = func(id project.ID) error {
		// The hub read no token before the controller wrote one; its
		// UPDATE arrives while the pod starts.
		once.Do(func() {
			if _, err := e.pool.Exec(context.Background(), `UPDATE projects SET secret_token=$1 WHERE project_id=$2`, hubToken, id); err != nil {
				hubErr.Store(err)
			}
		})
		return nil
	}
	e.start(e.config(), e.fake)
	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("start: %v", req["err"])
	}
	if err := hubErr.Load(); err != nil {
		t.Fatal(err)
	}
	var token string
	if err := e.pool.QueryRow(context.Background(), `SELECT secret_token FROM projects WHERE project_id = $1`, p1).Scan(&token); err != nil {
		t.Fatal(err)
	}
	if token != hubToken {
		t.Fatalf("database token %q, want the hub's", token)
	}
	if got := readTokenFile(t, e, e.fake.Calls("start")[0].Request.Env); got != hubToken {
		t.Errorf("token file %q, want the hub's %q", got, hubToken)
	}
	if n := e.fake.CountCalls("start", p1); n != 2 {
		t.Errorf("%d starts, want 2 (restarted once with the hub's token)", n)
	}
	testwait.Eventually(t, "running", func() bool { _, st := e.row(p1); return st["state"] == "running" })
}

// TestSecretTokenSurvivesAClearedDataDir: project images' init may empty
// ~/.smc (DATA); the token file must not live there.
func TestSecretTokenSurvivesAClearedDataDir(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.start(e.config(), e.fake)
	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("start: %v", req["err"])
	}
	env := e.fake.Calls("start")[0].Request.Env
	if !strings.HasPrefix(env["DATA"], "/home/user/") {
		t.Fatalf("DATA %q", env["DATA"])
	}
	// What an init script clearing its data directory does.
	if err := os.RemoveAll(filepath.Join(e.files.ProjectPath(p1), strings.TrimPrefix(env["DATA"], "/home/user/"))); err != nil {
		t.Fatal(err)
	}
	var token string
	if err := e.pool.QueryRow(context.Background(), `SELECT secret_token FROM projects WHERE project_id = $1`, p1).Scan(&token); err != nil {
		t.Fatal(err)
	}
	if got := readTokenFile(t, e, env); got != token || token == "" {
		t.Errorf("token file after clearing %s: %q, want %q", env["DATA"], got, token)
	}
}

// readTokenFile reads the file COCALC_SECRET_TOKEN names, in the home dir.
func readTokenFile(t *testing.T, e *env, env map[string]string) string {
	t.Helper()
	rel, ok := strings.CutPrefix(env["COCALC_SECRET_TOKEN"], "/home/user/")
	if !ok {
		t.Fatalf("COCALC_SECRET_TOKEN %q is not in the home", env["COCALC_SECRET_TOKEN"])
	}
	b, err := os.ReadFile(filepath.Join(e.files.ProjectPath(p1), rel))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// TestTimestampsInADatabaseNotInUTC: the hub writes last_edited with NOW()
// into a "timestamp without time zone" column, i.e. as wall time in its
// session's zone, the database default. Here that is UTC-11: a project just
// edited must not look 11 hours idle, a project idle for 2 hours must still
// be stopped, and last_started must be written in the same convention.
func TestTimestampsInADatabaseNotInUTC(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	var db string
	if err := e.pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	e.exec(fmt.Sprintf(`ALTER DATABASE %q SET timezone TO 'Pacific/Pago_Pago'`, db))
	hub, err := pgxpool.New(context.Background(), e.url) // the hub's sessions
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	hubExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := hub.Exec(context.Background(), sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var tz string
	if err := hub.QueryRow(context.Background(), `SHOW timezone`).Scan(&tz); err != nil || tz != "Pacific/Pago_Pago" {
		t.Fatalf("hub session time zone %q %v", tz, err)
	}
	for _, id := range []string{p1, p2, p3} {
		e.addProject(id)
	}
	for _, id := range []string{p1, p2} {
		e.fake.Set(orchestrator.ProjectStatus{ProjectID: project.ID(id), Status: state.Status{State: state.Running, IP: "10.0.0.9"}})
	}
	hubExec(`UPDATE projects SET state = '{"state": "running", "ip": "10.0.0.9"}', run_quota = '{"cpu_limit": 1, "idle_timeout": 1800}',
		last_started = NOW() - interval '3 hours' WHERE project_id IN ($1, $2)`, p1, p2)
	hubExec(`UPDATE projects SET last_edited = NOW() WHERE project_id = $1`, p1)                      // in use
	hubExec(`UPDATE projects SET last_edited = NOW() - interval '2 hours' WHERE project_id = $1`, p2) // idle

	cfg := e.config()
	cfg.IdleInterval = 100 * time.Millisecond
	e.start(cfg, e.fake)
	testwait.Eventually(t, "idle project stopped", func() bool {
		req, _ := e.row(p2)
		return req["action"] == "stop" && req["finished"] != nil
	})
	time.Sleep(300 * time.Millisecond) // a few more idle checks
	if req, _ := e.row(p1); req != nil {
		t.Errorf("project edited just now got %v", req)
	}

	e.request(p3, "start")
	if req := e.waitFinished(p3); req["err"] != nil {
		t.Fatalf("start: %v", req["err"])
	}
	var skew float64
	if err := hub.QueryRow(context.Background(), `SELECT abs(EXTRACT(EPOCH FROM NOW() - last_started))::float8 FROM projects WHERE project_id = $1`, p3).Scan(&skew); err != nil {
		t.Fatal(err)
	}
	if skew > 60 {
		t.Errorf("last_started is %.0f s off the hub's NOW()", skew)
	}
}

// TestStuckStartIsRemovedAndReported: a pod that crash-loops (or cannot be
// scheduled) until the start deadline is removed, the state says opened
// with the reason, and the next stop and start work (the hub's stop does
// nothing unless the state is running).
func TestStuckStartIsRemovedAndReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	var stuck atomic.Bool
	stuck.Store(true)
	e.fake.StartErr = func(id project.ID) error {
		if !stuck.Load() {
			return nil
		}
		// The pod exists and crash-loops until the orchestrator gives up.
		e.fake.Set(orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Starting, Reason: "CrashLoopBackOff"}})
		time.Sleep(400 * time.Millisecond)
		return fmt.Errorf("start %s: timed out, project is starting: CrashLoopBackOff: %w", id, context.DeadlineExceeded)
	}
	cfg := e.config()
	cfg.StartTimeout = 300 * time.Millisecond
	e.start(cfg, e.fake)

	e.request(p1, "start")
	req := e.waitFinished(p1)
	if !strings.Contains(fmt.Sprint(req["err"]), "CrashLoopBackOff") {
		t.Errorf("request err %v", req["err"])
	}
	testwait.Eventually(t, "opened with the reason", func() bool {
		_, st := e.row(p1)
		return st["state"] == "opened" && strings.Contains(fmt.Sprint(st["error"]), "CrashLoopBackOff")
	})
	if st, _ := e.fake.Status(context.Background(), p1); st.State != state.Opened {
		t.Errorf("pod still there: %+v", st)
	}
	time.Sleep(100 * time.Millisecond) // late watch events must not clear the reason
	if _, st := e.row(p1); st["state"] != "opened" || st["error"] == nil {
		t.Errorf("state after watch events %v", st)
	}

	e.request(p1, "stop")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Errorf("stop after a failed start: %v", req["err"])
	}
	stuck.Store(false)
	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("next start: %v", req["err"])
	}
	testwait.Eventually(t, "running without the old error", func() bool {
		_, st := e.row(p1)
		return st["state"] == "running" && st["error"] == nil
	})
}

// TestAlwaysRunningProjectsAreRestarted: in kucalc mode nothing else starts
// always-running projects; the shapes are the hub's (run_quota from the
// quota function, or the 2020 settings.always_running = 1).
func TestAlwaysRunningProjectsAreRestarted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	const p4 = "aaaaaaaa-0000-4000-8000-000000000004"
	for _, id := range []string{p1, p2, p3, p4} {
		e.addProject(id)
	}
	// run_quota as left by an earlier start; the site license the hub's
	// hook recorded keeps always_running when it is recomputed.
	e.exec(`UPDATE projects SET run_quota = '{"cpu_limit": 1, "memory_limit": 1000, "always_running": true}',
		site_license = '{"0b3e6c55-0000-4000-8000-000000000001": {"quota": {"always_running": true, "member": true, "ram": 1}, "status": "active"}}'
		WHERE project_id IN ($1, $2)`, p1, p2)
	e.exec(`UPDATE projects SET deleted = true WHERE project_id = $1`, p2)
	e.exec(`UPDATE projects SET settings = '{"always_running": 1}', state = NULL WHERE project_id = $1`, p3)
	e.exec(`UPDATE projects SET run_quota = '{"cpu_limit": 1, "memory_limit": 1000, "always_running": false}' WHERE project_id = $1`, p4)
	cfg := e.config()
	cfg.AlwaysRunningInterval = 100 * time.Millisecond
	e.start(cfg, e.fake)

	for _, id := range []string{p1, p3} {
		testwait.Eventually(t, id+" started", func() bool { _, st := e.row(id); return st["state"] == "running" })
	}
	// The pod dies (node lost, evicted, deleted by hand).
	e.fake.Set(orchestrator.ProjectStatus{ProjectID: p1, Status: state.Status{State: state.Opened}})
	testwait.Eventually(t, "restarted after its pod died", func() bool {
		_, st := e.row(p1)
		return e.fake.CountCalls("start", p1) == 2 && st["state"] == "running"
	})
	if req, _ := e.row(p1); req["reason"] != "always_running" {
		t.Errorf("request %v", req)
	}
	if n, m := e.fake.CountCalls("start", p2), e.fake.CountCalls("start", p4); n != 0 || m != 0 {
		t.Errorf("deleted project started %d times, ordinary one %d times", n, m)
	}
}

// TestCrashLoopAfterRunningIsRemoved: a project that started and then
// crash-loops is "starting" with an error and no request handles it; after
// the start deadline its pod is removed and the state says why, so the
// hub can start it again.
func TestCrashLoopAfterRunningIsRemoved(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	cfg := e.config()
	cfg.StartTimeout = 300 * time.Millisecond
	cfg.AlwaysRunningInterval = 50 * time.Millisecond
	e.start(cfg, e.fake)
	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("start: %v", req["err"])
	}
	e.fake.Set(orchestrator.ProjectStatus{ProjectID: p1, Status: state.Status{State: state.Starting, Reason: "CrashLoopBackOff"}})
	testwait.Eventually(t, "opened with the reason", func() bool {
		_, st := e.row(p1)
		return st["state"] == "opened" && strings.Contains(fmt.Sprint(st["error"]), "CrashLoopBackOff")
	})
	if e.fake.CountCalls("stop", p1) != 1 {
		t.Errorf("%d stops, want 1", e.fake.CountCalls("stop", p1))
	}
	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("start again: %v", req["err"])
	}
}

// TestAlwaysRunningBacksOffAfterAFailedStart: an always-running project
// whose start fails is not started again at every check.
func TestAlwaysRunningBacksOffAfterAFailedStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.exec(`UPDATE projects SET run_quota = '{"cpu_limit": 1, "always_running": true}', settings = '{"always_running": 1}' WHERE project_id = $1`, p1)
	e.fake.StartErr = func(project.ID) error { return fmt.Errorf("ErrImagePull") }
	cfg := e.config()
	cfg.AlwaysRunningInterval = 50 * time.Millisecond
	e.start(cfg, e.fake)
	testwait.Eventually(t, "a start attempted", func() bool { req, _ := e.row(p1); return req["finished"] != nil })
	time.Sleep(500 * time.Millisecond) // ten checks
	if n := e.fake.CountCalls("start", p1); n != 1 {
		t.Errorf("%d starts within the back-off, want 1", n)
	}
}
