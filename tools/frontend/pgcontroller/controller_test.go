package pgcontroller

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"gitlab.com/resurgo/cocalc-kubernetes/test/pg"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator/orchestratortest"
)

// One PostgreSQL server for the package; every test gets its own database.
var (
	shared    *pg.Server
	dbCounter atomic.Int64
)

func sharedServer(t *testing.T) *pg.Server {
	t.Helper()
	if shared == nil {
		t.Fatal("shared PostgreSQL server not started (TestMain)")
	}
	return shared
}

func TestMain(m *testing.M) { pg.Main(m, "pgcontroller", &shared) }

type env struct {
	t     *testing.T
	url   string
	pool  *pgxpool.Pool
	fake  *orchestratortest.Fake
	files projectfiles.Store
}

func newEnv(t *testing.T, srv *pg.Server) *env {
	t.Helper()
	ctx := context.Background()
	url := srv.CreateDatabase(ctx, fmt.Sprintf("t%d", dbCounter.Add(1)))
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	schema, err := os.ReadFile(filepath.Join("testdata", "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, string(schema)); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	uid := -1
	if os.Getuid() == 0 {
		uid = projectfiles.DefaultUID
	}
	return &env{t: t, url: url, pool: pool, fake: orchestratortest.New(),
		files: projectfiles.Store{Dir: filepath.Join(t.TempDir(), "home"), UID: uid, GID: uid}}
}

func (e *env) config() Config {
	return Config{
		ConnString: e.url, Files: e.files,
		Logger: slog.New(slog.NewTextHandler(testWriter{e.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		// Long scans: tests that expect a prompt reaction prove LISTEN/NOTIFY.
		ScanInterval: time.Hour, IdleInterval: time.Hour, ResyncInterval: time.Hour,
		RetryInterval: 50 * time.Millisecond,
	}
}

// start runs a controller until the test ends (or stop is called).
func (e *env) start(cfg Config, projects orchestrator.Watcher) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, projects) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	e.t.Cleanup(func() { _ = stop() })
	return stop
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) addProject(id string) {
	e.exec(`INSERT INTO projects (project_id, state) VALUES ($1, '{"state":"opened"}')`, id)
}

// request writes an action request exactly as the hub's kucalc controller
// does: jsonb_set merges {action, time} and deletes started and finished
// (a previous err stays until the controller clears it).
func (e *env) request(id, action string) {
	e.t.Helper()
	e.exec(`UPDATE projects SET action_request =
		JSONB_SET(JSONB_SET((COALESCE(action_request, '{}'::JSONB) - 'started' - 'finished'), '{action}', $2::JSONB), '{time}', $3::JSONB)
		WHERE project_id = $1`, id, fmt.Sprintf("%q", action), fmt.Sprintf("%q", time.Now().UTC().Format("2006-01-02T15:04:05.000Z")))
}

func (e *env) row(id string) (req map[string]any, state map[string]any) {
	e.t.Helper()
	var r, s []byte
	if err := e.pool.QueryRow(context.Background(), `SELECT action_request, state FROM projects WHERE project_id = $1`, id).Scan(&r, &s); err != nil {
		e.t.Fatal(err)
	}
	_ = json.Unmarshal(r, &req)
	_ = json.Unmarshal(s, &state)
	return req, state
}

// waitFinished waits until the request is finished and returns it.
func (e *env) waitFinished(id string) map[string]any {
	e.t.Helper()
	var req map[string]any
	testwait.Eventually(e.t, "action_request of "+id+" finished", func() bool {
		req, _ = e.row(id)
		return req["finished"] != nil
	})
	return req
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

const (
	p1 = "aaaaaaaa-0000-4000-8000-000000000001"
	p2 = "aaaaaaaa-0000-4000-8000-000000000002"
	p3 = "aaaaaaaa-0000-4000-8000-000000000003"
)

func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	// Admin upgrades in settings; the controller computes run_quota from
	// them on start, as KuCalc's manage did.
	e.exec(`UPDATE projects SET settings = '{"cores": 2, "cpu_shares": 256, "memory": 3000, "network": 1, "mintime": 3600}',
		action_request = '{"action": "start", "err": "old failure", "finished": "2020-01-01T00:00:00.000Z"}' WHERE project_id = $1`, p1)
	e.exec(`UPDATE projects SET env = '{"MY_VAR": "42"}' WHERE project_id = $1`, p1)
	cfg := e.config()
	cfg.ProjectEnv = map[string]string{"CONAT_SERVER": "http://cocalc-hub:5000"}
	e.start(cfg, e.fake)

	e.request(p1, "start")
	req := e.waitFinished(p1)
	if req["err"] != nil || req["started"] == nil || req["action"] != "start" {
		t.Errorf("request after start: %v", req)
	}
	testwait.Eventually(t, "state running with ip", func() bool {
		_, st := e.row(p1)
		return st["state"] == "running" && st["ip"] != nil && st["time"] != nil
	})
	calls := e.fake.Calls("start")
	if len(calls) != 1 || calls[0].Request.Quota != (podtemplate.Quota{Cores: 2, MemoryMiB: 3000, CPUShares: 250, Network: true, IdleTimeoutSeconds: 3600}) {
		t.Errorf("start calls %+v", calls)
	}
	// The environment of the hub's multi-user mode, and the secret token
	// the hub will authenticate with, handed to the project.
	var token string
	if err := e.pool.QueryRow(context.Background(), `SELECT secret_token FROM projects WHERE project_id = $1`, p1).Scan(&token); err != nil || len(token) != secretTokenLength {
		t.Fatalf("secret token %q: %v", token, err)
	}
	if b, err := os.ReadFile(filepath.Join(e.files.ProjectPath(p1), secretTokenFile)); err != nil || string(b) != token {
		t.Errorf("secret token file %q %v", b, err)
	}
	env := calls[0].Request.Env
	extra, _ := base64.StdEncoding.DecodeString(env["COCALC_EXTRA_ENV"])
	if env["COCALC_SECRET_TOKEN"] != "/home/user/.cocalc-k8s/secret-token" || env["DATA"] != "/home/user/.smc" ||
		env["CONAT_SERVER"] != "http://cocalc-hub:5000" || string(extra) != `{"MY_VAR": "42"}` {
		t.Errorf("project env %v (extra %s)", env, extra)
	}
	var lastStarted *time.Time
	if err := e.pool.QueryRow(context.Background(), `SELECT last_started FROM projects WHERE project_id = $1`, p1).Scan(&lastStarted); err != nil || lastStarted == nil {
		t.Errorf("last_started not set: %v", err)
	}

	e.request(p1, "stop")
	e.waitFinished(p1)
	testwait.Eventually(t, "state opened", func() bool { _, st := e.row(p1); return st["state"] == "opened" && st["ip"] == nil })

	e.request(p1, "restart")
	e.waitFinished(p1)
	var token2 string
	_ = e.pool.QueryRow(context.Background(), `SELECT secret_token FROM projects WHERE project_id = $1`, p1).Scan(&token2)
	if token2 != token {
		t.Error("an existing secret token must be kept across starts")
	}
	testwait.Eventually(t, "running again", func() bool { _, st := e.row(p1); return st["state"] == "running" })
	if n, m := e.fake.CountCalls("start", p1), e.fake.CountCalls("stop", p1); n != 2 || m != 2 {
		t.Errorf("after restart: %d starts, %d stops", n, m)
	}
}

func TestStartFailureIsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.fake.StartErr = func(id project.ID) error { return errors.New("image pull failed: ErrImagePull") }
	e.start(e.config(), e.fake)
	e.request(p1, "start")
	req := e.waitFinished(p1)
	if !strings.Contains(fmt.Sprint(req["err"]), "ErrImagePull") {
		t.Errorf("err not recorded: %v", req)
	}
}

func TestConcurrentControllersStartEachProjectOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.fake.StartDelay = 100 * time.Millisecond
	var ids []string
	for i := range 12 {
		id := fmt.Sprintf("bbbbbbbb-0000-4000-8000-%012d", i)
		ids = append(ids, id)
		e.addProject(id)
	}
	// Two controllers (as during a rollout) on the same database and
	// cluster, both notified of every request and both scanning often.
	cfgA, cfgB := e.config(), e.config()
	cfgA.ID, cfgB.ID = "A", "B"
	cfgA.ScanInterval, cfgB.ScanInterval = 30*time.Millisecond, 30*time.Millisecond
	e.start(cfgA, e.fake)
	e.start(cfgB, e.fake)
	time.Sleep(100 * time.Millisecond) // both LISTENing
	for _, id := range ids {
		e.request(id, "start")
	}
	for _, id := range ids {
		if req := e.waitFinished(id); req["err"] != nil {
			t.Errorf("%s: %v", id, req["err"])
		}
	}
	time.Sleep(200 * time.Millisecond) // give a duplicate a chance to show
	for _, id := range ids {
		if n := e.fake.CountCalls("start", project.ID(id)); n != 1 {
			t.Errorf("project %s started %d times", id, n)
		}
	}
}

func TestMalformedRequestsAreRecordedNotFatal(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	cases := map[string]string{
		"cccccccc-0000-4000-8000-000000000001": `"start"`,
		"cccccccc-0000-4000-8000-000000000002": `[1, 2, 3]`,
		"cccccccc-0000-4000-8000-000000000003": `{"action": 42}`,
		"cccccccc-0000-4000-8000-000000000004": `{"action": "explode", "time": "2026-01-01T00:00:00.000Z"}`,
		"cccccccc-0000-4000-8000-000000000005": `{"time": "2026-01-01T00:00:00.000Z"}`,
		"cccccccc-0000-4000-8000-000000000006": `{"action": ["start"]}`,
		"cccccccc-0000-4000-8000-000000000007": `42`,
	}
	for id := range cases {
		e.addProject(id)
	}
	e.addProject(p1)
	e.start(e.config(), e.fake)
	for id, raw := range cases {
		e.exec(`UPDATE projects SET action_request = $2::jsonb WHERE project_id = $1`, id, raw)
	}
	for id, raw := range cases {
		req := e.waitFinished(id)
		if !strings.Contains(fmt.Sprint(req["err"]), "invalid action request") {
			t.Errorf("%s: err %v", raw, req["err"])
		}
	}
	if len(e.fake.Calls("")) != 0 {
		t.Errorf("malformed requests reached the orchestrator: %+v", e.fake.Calls(""))
	}
	e.request(p1, "start") // the controller still works
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Errorf("valid request after malformed ones: %v", req)
	}
}

func TestStopSupersedesAHangingStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.fake.StartDelay = time.Hour // e.g. a huge image being pulled
	e.start(e.config(), e.fake)
	e.request(p1, "start")
	testwait.Eventually(t, "start in progress", func() bool {
		req, _ := e.row(p1)
		return req["started"] != nil && e.fake.CountCalls("start", p1) == 1
	})
	time.Sleep(10 * time.Millisecond) // distinct request time
	e.request(p1, "stop")
	req := e.waitFinished(p1)
	if req["action"] != "stop" || req["err"] != nil {
		t.Errorf("stop request %v", req)
	}
	if e.fake.CountCalls("stop", p1) != 1 {
		t.Errorf("stop not performed: %+v", e.fake.Calls(""))
	}
	testwait.Eventually(t, "state opened", func() bool { _, st := e.row(p1); return st["state"] == "opened" })
}

func TestExpiredRequestIsNotPerformed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.exec(`UPDATE projects SET action_request = jsonb_build_object('action', 'start', 'time', $2::text) WHERE project_id = $1`,
		p1, time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339))
	e.start(e.config(), e.fake)
	req := e.waitFinished(p1)
	if !strings.Contains(fmt.Sprint(req["err"]), "expired") || e.fake.CountCalls("start", p1) != 0 {
		t.Errorf("expired request: %v, %d starts", req, e.fake.CountCalls("start", p1))
	}
}

func TestCrashBetweenStartedAndFinishedIsRecovered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	stuck := orchestratortest.New()
	stuck.StartDelay = time.Hour
	stopA := e.start(e.config(), stuck)
	e.request(p1, "start")
	var started any
	testwait.Eventually(t, "request started by A", func() bool {
		req, _ := e.row(p1)
		started = req["started"]
		return started != nil && stuck.CountCalls("start", p1) == 1
	})
	if err := stopA(); err != nil { // A dies mid-start
		t.Fatal(err)
	}
	if req, _ := e.row(p1); req["finished"] != nil {
		t.Fatalf("a controller that died must not mark the request finished: %v", req)
	}
	e.start(e.config(), e.fake)
	req := e.waitFinished(p1)
	if req["err"] != nil || req["started"] != started {
		t.Errorf("recovered request %v (started must stay %v)", req, started)
	}
	if n := e.fake.CountCalls("start", p1); n != 1 {
		t.Errorf("recovery performed start %d times", n)
	}
}

func TestDatabaseRestartMidRun(t *testing.T) {
	t.Parallel()
	srv := pg.Start(t) // its own server: this test stops it
	e := newEnv(t, srv)
	e.addProject(p1)
	e.addProject(p2)
	e.start(e.config(), e.fake)
	e.request(p1, "start")
	e.waitFinished(p1)

	srv.Stop()
	// A pod event while the database is down must not be lost.
	e.fake.Set(orchestrator.ProjectStatus{ProjectID: p1, Status: state.Status{State: state.Starting, Reason: "CrashLoopBackOff"}})
	time.Sleep(300 * time.Millisecond)
	srv.Restart()

	testwait.Eventually(t, "state written after the database came back", func() bool {
		var st []byte
		if err := e.pool.QueryRow(context.Background(), `SELECT state FROM projects WHERE project_id = $1`, p1).Scan(&st); err != nil {
			return false
		}
		return strings.Contains(string(st), "CrashLoopBackOff") && strings.Contains(string(st), `"starting"`)
	})
	// The listener reconnected: a new request is seen without a scan.
	testwait.Eventually(t, "request accepted after restart", func() bool {
		_, err := e.pool.Exec(context.Background(), `UPDATE projects SET action_request = jsonb_build_object('action', 'start', 'time', $2::text) WHERE project_id = $1`,
			p2, time.Now().UTC().Format(time.RFC3339Nano))
		return err == nil
	})
	if req := e.waitFinished(p2); req["err"] != nil {
		t.Errorf("after restart: %v", req)
	}
}

func TestScanIsTheSafetyNet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	cfg := e.config()
	cfg.ScanInterval = 50 * time.Millisecond
	e.start(cfg, e.fake)
	testwait.Eventually(t, "trigger installed", func() bool {
		var n int
		_ = e.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_trigger WHERE tgname = 'cocalc_k8s_action_request'`).Scan(&n)
		return n == 1
	})
	e.exec(`DROP TRIGGER cocalc_k8s_action_request ON projects`) // no more notifications
	e.request(p1, "start")
	e.waitFinished(p1)
}

func TestCopyPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	write := func(project, rel, content string) {
		p := filepath.Join(e.files.ProjectPath(project), rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(p1, "course/hw1.ipynb", "{}")
	write(p1, "course/.smc/secret_token", "secret")
	write(p1, "course/skip.tmp", "tmp")
	write(p2, "hw/extra", "x")
	e.start(e.config(), e.fake)
	insert := func(id, src, srcPath, dst, dstPath string, extra string) {
		e.exec(`INSERT INTO copy_paths (id, time, source_project_id, source_path, target_project_id, target_path, exclude, delete_missing, scheduled)
			VALUES ($1, now() AT TIME ZONE 'UTC', $2, $3, $4, $5, ARRAY['*.tmp'], true, `+extra+`)`, id, src, srcPath, dst, dstPath)
	}
	ok, bad, later := "dddddddd-0000-4000-8000-000000000001", "dddddddd-0000-4000-8000-000000000002", "dddddddd-0000-4000-8000-000000000003"
	insert(ok, p1, "course", p2, "hw", "NULL")
	insert(bad, p1, "../"+p2, p3, "stolen", "NULL")
	insert(later, p1, "course", p3, "later", "now() AT TIME ZONE 'UTC' + interval '1 day'")
	get := func(id string) (started, finished *time.Time, errText *string) {
		if err := e.pool.QueryRow(context.Background(), `SELECT started, finished, error FROM copy_paths WHERE id = $1`, id).Scan(&started, &finished, &errText); err != nil {
			t.Fatal(err)
		}
		return
	}
	testwait.Eventually(t, "copies finished", func() bool {
		_, f1, _ := get(ok)
		_, f2, _ := get(bad)
		return f1 != nil && f2 != nil
	})
	if s, _, errText := get(ok); errText != nil || s == nil {
		t.Errorf("ok copy: started %v error %v", s, errText)
	}
	if _, _, errText := get(bad); errText == nil || !strings.Contains(*errText, "must not contain a '..' segment") {
		t.Errorf("escaping copy must fail: %v", errText)
	}
	if s, f, _ := get(later); s != nil || f != nil {
		t.Error("a scheduled copy ran early")
	}
	b, err := os.ReadFile(filepath.Join(e.files.ProjectPath(p2), "hw/hw1.ipynb"))
	if err != nil || string(b) != "{}" {
		t.Errorf("copied file: %q %v", b, err)
	}
	for _, rel := range []string{"hw/.smc", "hw/skip.tmp", "hw/extra"} {
		if _, err := os.Lstat(filepath.Join(e.files.ProjectPath(p2), rel)); err == nil {
			t.Errorf("%s must not exist (excluded or deleted)", rel)
		}
	}
	if _, err := os.Stat(filepath.Join(e.files.ProjectPath(p3), "stolen")); err == nil {
		t.Error("escaping copy wrote files")
	}
}

func TestIdleProjectsAreStopped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	for _, id := range []string{p1, p2, p3} {
		e.addProject(id)
		if _, err := e.fake.Start(context.Background(), project.ID(id), orchestrator.StartRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	e.exec(`UPDATE projects SET state = '{"state": "running"}', last_started = now() AT TIME ZONE 'UTC' - interval '1 hour'`)
	// p1: idle 2h with a 1h timeout. p2: always running. p3: edited recently.
	e.exec(`UPDATE projects SET run_quota = '{"cpu_limit": 1, "idle_timeout": 3600}', last_edited = now() AT TIME ZONE 'UTC' - interval '2 hours' WHERE project_id = $1`, p1)
	e.exec(`UPDATE projects SET run_quota = '{"cpu_limit": 1, "idle_timeout": 3600, "always_running": true}', last_edited = now() AT TIME ZONE 'UTC' - interval '2 hours' WHERE project_id = $1`, p2)
	e.exec(`UPDATE projects SET settings = '{"mintime": 3600}', last_edited = now() AT TIME ZONE 'UTC' - interval '5 minutes' WHERE project_id = $1`, p3)
	cfg := e.config()
	cfg.IdleInterval = 50 * time.Millisecond
	e.start(cfg, e.fake)
	req := e.waitFinished(p1)
	if req["action"] != "stop" || req["reason"] != "idle" || req["err"] != nil {
		t.Errorf("idle stop request %v", req)
	}
	time.Sleep(200 * time.Millisecond) // several more idle checks
	for _, id := range []string{p2, p3} {
		if n := e.fake.CountCalls("stop", project.ID(id)); n != 0 {
			t.Errorf("%s stopped though not idle", id)
		}
		if e.fake.CountCalls("touch", project.ID(id)) == 0 {
			t.Errorf("active project %s not touched (the orchestrator's sweep would stop it)", id)
		}
	}
	if n := e.fake.CountCalls("touch", p1); n != 0 {
		t.Errorf("idle project touched %d times", n)
	}
}

func TestResyncMarksVanishedPodsOpened(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.addProject(p2)
	if _, err := e.fake.Start(context.Background(), p1, orchestrator.StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.exec(`UPDATE projects SET state = '{"state": "running", "ip": "10.9.9.9"}' WHERE project_id = $1`, p2) // its pod is gone
	e.start(e.config(), e.fake)
	testwait.Eventually(t, "states reconciled", func() bool {
		_, s1 := e.row(p1)
		_, s2 := e.row(p2)
		return s1["state"] == "running" && s1["ip"] != nil && s2["state"] == "opened" && s2["ip"] == nil
	})
}

func TestWrongDatabaseIsAConfigurationError(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	url := srv.CreateDatabase(context.Background(), fmt.Sprintf("t%d", dbCounter.Add(1)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	files := projectfiles.Store{Dir: t.TempDir(), UID: -1, GID: -1}
	err := Run(ctx, Config{ConnString: url, Files: files, RetryInterval: 10 * time.Millisecond}, orchestratortest.New())
	var se schemaError
	if !errors.As(err, &se) || len(se.missing) == 0 {
		t.Errorf("got %v", err)
	}
	if err := Run(ctx, Config{ConnString: "postgres://%zz", Files: files}, orchestratortest.New()); err == nil {
		t.Error("bad connection string accepted")
	}
	if err := Run(ctx, Config{ConnString: url}, orchestratortest.New()); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("missing homes root accepted: %v", err)
	}
}

var _ = pgx.ErrNoRows

func TestCopyLeftStartedByACrashIsResumed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	p := filepath.Join(e.files.ProjectPath(p1), "notes.md")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("# notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	const id = "eeeeeeee-0000-4000-8000-000000000001"
	// started an hour ago by a controller that died: finished never came.
	e.exec(`INSERT INTO copy_paths (id, time, source_project_id, source_path, target_project_id, target_path, started)
		VALUES ($1, now() AT TIME ZONE 'UTC' - interval '1 hour', $2, 'notes.md', $3, 'copy.md', now() AT TIME ZONE 'UTC' - interval '1 hour')`, id, p1, p2)
	e.start(e.config(), e.fake)
	var finished *time.Time
	var errText *string
	testwait.Eventually(t, "copy finished", func() bool {
		_ = e.pool.QueryRow(context.Background(), `SELECT finished, error FROM copy_paths WHERE id = $1`, id).Scan(&finished, &errText)
		return finished != nil
	})
	if errText != nil {
		t.Errorf("error %s", *errText)
	}
	if b, err := os.ReadFile(filepath.Join(e.files.ProjectPath(p2), "copy.md")); err != nil || string(b) != "# notes" {
		t.Errorf("copied %q %v", b, err)
	}
}

func TestExplicitNullMarkersAreUnset(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.start(e.config(), e.fake)
	e.exec(`UPDATE projects SET action_request = jsonb_build_object('action', 'start', 'time', $2::text, 'started', null, 'finished', null) WHERE project_id = $1`,
		p1, time.Now().UTC().Format(time.RFC3339Nano))
	req := e.waitFinished(p1)
	if _, ok := req["started"].(string); !ok || req["err"] != nil {
		t.Errorf("request %v: started must be a time", req)
	}
}

func TestProjectsThatNeverStartHoldNoOtherStartBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	// More projects that never start than a small worker pool has workers
	// (a crash loop or an image that cannot be pulled, each until its
	// start deadline), with the default configuration.
	const n = 40
	stuck := map[project.ID]bool{}
	var stuckIDs []string
	for i := range n {
		id := fmt.Sprintf("%08d-0000-4000-8000-000000000000", i+1)
		stuck[project.MustParse(id)] = true
		stuckIDs = append(stuckIDs, id)
		e.addProject(id)
	}
	e.addProject(p1)
	e.fake.StartDelayFor = func(id project.ID) time.Duration {
		if stuck[id] {
			return time.Hour
		}
		return 0
	}
	e.start(e.config(), e.fake)
	for _, id := range stuckIDs {
		e.request(id, "start")
	}
	testwait.Eventually(t, "every stuck start in progress at once", func() bool {
		for _, id := range stuckIDs {
			if e.fake.CountCalls("start", project.MustParse(id)) != 1 {
				return false
			}
		}
		return true
	})
	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("start behind stuck projects: %v", req)
	}
	testwait.Eventually(t, "p1 running", func() bool { _, st := e.row(p1); return st["state"] == "running" })
}
