package hub2020

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"gitlab.com/resurgo/cocalc-kubernetes/test/pg"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

var (
	shared    *pg.Server
	dbCounter atomic.Int64
)

func TestMain(m *testing.M) { pg.Main(m, "hub2020", &shared) }

// hubDB is a database with the 2020 projects table. Its time zone is far
// from UTC, as a hub's may be: the hub writes last_edited with its
// session's NOW() into a TIMESTAMP column.
type hubDB struct {
	t    *testing.T
	url  string
	pool *pgxpool.Pool
}

func newHubDB(t *testing.T, srv *pg.Server) *hubDB {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("hub%d", dbCounter.Add(1))
	url := srv.CreateDatabase(ctx, name)
	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %q SET timezone = 'Pacific/Auckland'`, name)); err != nil {
		t.Fatal(err)
	}
	admin.Close()
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
	return &hubDB{t: t, url: url, pool: pool}
}

func (h *hubDB) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.pool.Exec(context.Background(), sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// addProject inserts a project as the 2020 hub does (settings from
// DEFAULT_QUOTAS unless given) with last_edited idle ago.
func (h *hubDB) addProject(id project.ID, settings, users string, idle time.Duration) {
	h.t.Helper()
	h.exec(`INSERT INTO projects (project_id, settings, users, last_edited, state)
		VALUES ($1, $2::jsonb, $3::jsonb, now() - make_interval(secs => $4), '{"state":"running"}')`,
		id.String(), nullable(settings), nullable(users), idle.Seconds())
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// touchProject is the hub's touch_project (file use, directory listings):
// last_edited = NOW() in the hub's session.
func (h *hubDB) touchProject(id project.ID) {
	h.exec(`UPDATE projects SET last_edited = NOW() WHERE project_id = $1`, id.String())
}

// userTouch is the hub's _touch_project: last_active[account] = the hub's
// JavaScript Date, stored as JSON (UTC, "Z"); here last_edited is left as
// it was to show last_active alone counts.
func (h *hubDB) userTouch(id project.ID, account string, at time.Time) {
	h.exec(`UPDATE projects SET last_active = COALESCE(last_active, '{}'::jsonb) || jsonb_build_object($2::text, $3::text)
		WHERE project_id = $1`, id.String(), account, at.UTC().Format("2006-01-02T15:04:05.000Z"))
}

// fakeOrch stands in for the orchestrator: running projects and stops.
type fakeOrch struct {
	mu      sync.Mutex
	running map[project.ID]orchestrator.ProjectStatus
	stopped []project.ID
}

func newFakeOrch() *fakeOrch { return &fakeOrch{running: map[project.ID]orchestrator.ProjectStatus{}} }

// run adds a running project whose container started startedAgo ago.
func (f *fakeOrch) run(id project.ID, startedAgo time.Duration) {
	t := time.Now().Add(-startedAgo)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[id] = orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Running, StartedAt: &t}}
}

func (f *fakeOrch) List(context.Context) ([]orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []orchestrator.ProjectStatus
	for _, st := range f.running {
		out = append(out, st)
	}
	return out, nil
}

func (f *fakeOrch) Stop(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.running, id)
	f.stopped = append(f.stopped, id)
	return orchestrator.ProjectStatus{ProjectID: id}, nil
}

func (f *fakeOrch) wasStopped(id project.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.stopped, id)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newSweeper(t *testing.T, url string, orch Projects, interval time.Duration, logTo io.Writer) *Sweeper {
	t.Helper()
	if logTo == nil {
		logTo = testWriter{t}
	}
	s, err := New(Config{ConnString: url, Interval: interval, QueryTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logTo, nil))}, orch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func id(n int) project.ID {
	return project.ID(fmt.Sprintf("bbbbbbbb-0000-4000-8000-%012d", n))
}

// TestRefreshedProjectSurvivesIdleOneStops runs the loop with a 1 s
// mintime: a project whose user keeps working (the hub refreshing
// last_edited) outlives its idle timeout several times over, its idle twin
// is stopped, and once the work stops the first is stopped too.
func TestRefreshedProjectSurvivesIdleOneStops(t *testing.T) {
	t.Parallel()
	h := newHubDB(t, shared)
	orch := newFakeOrch()
	busy, idle := id(1), id(2)
	for _, p := range []project.ID{busy, idle} {
		h.addProject(p, `{"mintime": 1}`, "", 0)
		orch.run(p, time.Hour)
	}
	s := newSweeper(t, h.url, orch, 100*time.Millisecond, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)

	working := time.Now().Add(4 * time.Second)
	for time.Now().Before(working) {
		h.touchProject(busy)
		time.Sleep(200 * time.Millisecond)
	}
	if orch.wasStopped(busy) {
		t.Fatal("a project in use was stopped")
	}
	if !orch.wasStopped(idle) {
		t.Fatal("the idle project was not stopped within 4 idle timeouts")
	}
	testwait.Eventually(t, "the project stopped after its user left", func() bool { return orch.wasStopped(busy) })
}

// TestPolicyFromHubDatabase checks the 2020 quota rules on one sweep:
// settings (DEFAULT_QUOTAS when missing) plus users' upgrades, and
// always_running.
func TestPolicyFromHubDatabase(t *testing.T) {
	t.Parallel()
	h := newHubDB(t, shared)
	orch := newFakeOrch()
	const owner, collab = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	tests := []struct {
		name      string
		settings  string
		users     string
		idle      time.Duration
		started   time.Duration // orchestrator: container started this long ago
		noRow     bool
		lastTouch time.Duration // a user's last_active this long ago (0: none)
		wantStop  bool
		wantIdle  time.Duration // expected policy, 0 = never
	}{
		{name: "default mintime, active 20 min ago", idle: 20 * time.Minute, started: 3 * time.Hour, wantIdle: 1800 * time.Second},
		{name: "default mintime, idle 40 min", idle: 40 * time.Minute, started: 3 * time.Hour, wantStop: true, wantIdle: 1800 * time.Second},
		{name: "settings without mintime default it", settings: `{"cores": 2, "memory": 2000}`, idle: 40 * time.Minute, started: 3 * time.Hour, wantStop: true, wantIdle: 1800 * time.Second},
		{name: "mintime upgrade raises the timeout", settings: `{"mintime": "3600"}`,
			users: `{"` + owner + `": {"group": "owner", "upgrades": {"mintime": 3600, "memory": 1000}}, "` + collab + `": {"group": "collaborator"}}`,
			idle:  90 * time.Minute, started: 5 * time.Hour, wantIdle: 2 * time.Hour},
		{name: "upgraded project idle beyond its own timeout", settings: `{"mintime": 3600}`,
			users: `{"` + owner + `": {"upgrades": {"mintime": 3600}}, "` + collab + `": {"upgrades": {"mintime": 1800}}}`,
			idle:  3 * time.Hour, started: 5 * time.Hour, wantStop: true, wantIdle: 9000 * time.Second},
		{name: "always_running upgrade", users: `{"` + owner + `": {"upgrades": {"always_running": 1}}}`, idle: 240 * time.Hour, started: 300 * time.Hour},
		{name: "always_running setting (boolean)", settings: `{"always_running": true}`, idle: 240 * time.Hour, started: 300 * time.Hour},
		{name: "mintime 0 never stops, as the compute server skipped it", settings: `{"mintime": 0}`, idle: 240 * time.Hour, started: 300 * time.Hour},
		{name: "a user touched it recently", idle: 5 * time.Hour, lastTouch: 10 * time.Minute, started: 6 * time.Hour, wantIdle: 1800 * time.Second},
		{name: "a user touched it long ago", idle: 5 * time.Hour, lastTouch: 2 * time.Hour, started: 6 * time.Hour, wantStop: true, wantIdle: 1800 * time.Second},
		{name: "just started", idle: 50 * time.Hour, started: 5 * time.Minute, wantIdle: 1800 * time.Second},
		{name: "no row in the hub database", noRow: true, started: 300 * time.Hour},
	}
	for i, tc := range tests {
		p := id(100 + i)
		if !tc.noRow {
			h.addProject(p, tc.settings, tc.users, tc.idle)
		}
		if tc.lastTouch > 0 {
			h.userTouch(p, owner, time.Now().Add(-tc.lastTouch))
		}
		orch.run(p, tc.started)
	}
	// A stopped project with an old last_edited: not the sweep's business.
	h.addProject(id(99), "", "", 100*time.Hour)

	ds, err := newSweeper(t, h.url, orch, time.Hour, nil).Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[project.ID]Decision{}
	for _, d := range ds {
		byID[d.ProjectID] = d
	}
	for i, tc := range tests {
		p := id(100 + i)
		d, found := byID[p]
		if stopped := orch.wasStopped(p); stopped != tc.wantStop {
			t.Errorf("%s: stopped=%v, want %v (decision %+v)", tc.name, stopped, tc.wantStop, d)
		}
		if tc.noRow {
			if found {
				t.Errorf("%s: decision without data: %+v", tc.name, d)
			}
			continue
		}
		if d.Policy.IdleTimeout != tc.wantIdle && !d.Policy.Never() {
			t.Errorf("%s: idle timeout %s, want %s", tc.name, d.Policy.IdleTimeout, tc.wantIdle)
		}
		if (tc.wantIdle == 0) != d.Policy.Never() {
			t.Errorf("%s: never=%v, want %v", tc.name, d.Policy.Never(), tc.wantIdle == 0)
		}
	}
	if orch.wasStopped(id(99)) {
		t.Error("a project the orchestrator does not run was stopped")
	}
}

// TestDatabaseDownStopsNothing: when the hub database cannot be read, no
// project is stopped, however old its last known activity; when it is back,
// the sweep works again.
func TestDatabaseDownStopsNothing(t *testing.T) {
	t.Parallel()
	srv := pg.Start(t) // its own server: this test stops it
	h := newHubDB(t, srv)
	orch := newFakeOrch()
	p := id(1)
	h.addProject(p, "", "", 10*time.Hour)
	orch.run(p, 10*time.Hour)
	var logs syncBuffer
	s := newSweeper(t, h.url, orch, 50*time.Millisecond, &logs)
	h.pool.Close()
	srv.Stop()

	if _, err := s.Sweep(context.Background()); err == nil {
		t.Fatal("sweep with the database down reported no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	testwait.Eventually(t, "a logged failed idle check", func() bool { return strings.Contains(logs.String(), "no project is stopped") })
	time.Sleep(300 * time.Millisecond) // several more failing rounds
	cancel()
	<-done
	if orch.wasStopped(p) {
		t.Fatal("a project was stopped while the hub database was down")
	}

	srv.Restart()
	testwait.Eventually(t, "the sweep after the database came back", func() bool {
		_, err := s.Sweep(context.Background())
		return err == nil
	})
	if !orch.wasStopped(p) {
		t.Fatal("the idle project was not stopped once the database answered")
	}
}

func TestParseFloatLikeJavaScript(t *testing.T) {
	for in, want := range map[string]float64{"1000": 1000, " 36000 ": 36000, "1.5e3": 1500, "1800s": 1800, "-2": -2} {
		if got := parseFloat(in); got != want {
			t.Errorf("parseFloat(%q) = %v, want %v", in, got, want)
		}
	}
	for _, in := range []string{"", "abc", "x1"} {
		if got := parseFloat(in); got == got {
			t.Errorf("parseFloat(%q) = %v, want NaN", in, got)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
