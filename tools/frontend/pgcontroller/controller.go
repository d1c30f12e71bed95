// Package pgcontroller serves current CoCalc's "kucalc" project protocol
// from the hub's PostgreSQL database, so a current hub runs projects on
// Kubernetes with no hub changes:
//
//   - the hub writes projects.action_request = {action: start|stop|restart,
//     time}; the controller performs it through the orchestrator and writes
//     action_request.started, .finished and .err;
//   - projects.state ({state, time, ip, error}) and projects.status follow
//     the pods (the orchestrator's watch), and are reconciled periodically;
//   - running projects idle longer than their quota's idle timeout
//     (last_edited, with a minimum run time after last_started) get a stop
//     request, exactly as the hub's own idle loop would write it;
//   - copy_paths rows are executed with tools/core/projectfiles and marked
//     finished (with error when they fail).
//
// New requests are noticed at once through LISTEN/NOTIFY (the controller's
// own triggers, and the channel of the hub's synctable trigger when it
// exists), with a periodic scan as safety net. Each request is claimed with
// a session advisory lock plus the started marker, so two controllers never
// perform one request twice, and a request a crashed controller left started
// but unfinished is performed again by the next one (Start and Stop are
// idempotent in the orchestrator).
package pgcontroller

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Config configures the controller. Zero durations take the defaults.
type Config struct {
	// ConnString is the hub database (libpq URL or key=value string).
	ConnString string
	// Files is the homes root used for copy_paths.
	Files  projectfiles.Store
	Logger *slog.Logger
	// ID names this controller in logs and in action_request.controller.
	ID string

	// ScanInterval is the safety-net scan for missed notifications (10s).
	ScanInterval time.Duration
	// IdleInterval is how often idle projects are looked for (1m).
	IdleInterval time.Duration
	// MinRun is the minimum run time after last_started before an idle
	// stop (10m, as CoCalc's MINRUN_S).
	MinRun time.Duration
	// DefaultIdleTimeout applies when neither run_quota nor settings name
	// one (30m, CoCalc's default mintime; RunWithOrchestrator takes the
	// template's resources.default.idleTimeoutSeconds).
	DefaultIdleTimeout time.Duration
	// AlwaysRunningInterval is how often always-running projects without a
	// pod are started (15s, as the hub's own loop).
	AlwaysRunningInterval time.Duration
	// AlwaysRunningBackoff: an always-running project whose last start
	// failed is not started again before this long (5m).
	AlwaysRunningBackoff time.Duration
	// ResyncInterval re-lists all pods into projects.state (5m).
	ResyncInterval time.Duration
	// StartTimeout, StopTimeout and CopyTimeout bound one operation
	// (5m, 2m, 5m; a copy_paths row's timeout column overrides CopyTimeout;
	// RunWithOrchestrator takes start and stop from the template). A start
	// not running by StartTimeout has its pod removed.
	StartTimeout, StopTimeout, CopyTimeout time.Duration
	// MaxRequestAge: older unfinished requests are answered with an error
	// instead of being performed (1h), so a controller coming back after an
	// outage does not start projects nobody waits for any more.
	MaxRequestAge time.Duration
	// ProjectHome is the home directory inside project pods (the chart
	// template's storage.mountPath), for paths handed to projects
	// ("/home/user").
	ProjectHome string
	// ProjectEnv is added to every project's environment: what current
	// CoCalc projects need to reach the hub, e.g. CONAT_SERVER and
	// BASE_PATH (the hub's multi-user mode sets the same variables).
	ProjectEnv map[string]string
	// Resources, when set (RunWithOrchestrator: the template's), clamps the
	// run_quota written back to the hub to what the pod gets.
	Resources *podtemplate.Resources

	// Workers bounds concurrent actions (DefaultWorkers). A start holds
	// its worker until the project runs or its deadline passes (minutes
	// for a pod that never becomes ready), so with a few workers a few
	// projects that never start held every other start of the site back.
	// A waiting action costs a goroutine, not a database connection; pod
	// creates are paced by the orchestrator's client QPS.
	Workers int
	// CopyWorkers bounds concurrent copy_paths rows (4); two copies that
	// involve the same project never run at once.
	CopyWorkers int
	// RetryInterval is the first delay after an error (500ms): of the one
	// retry schedule (backoff) and of a request's rate-limited retries,
	// doubling up to maxRetryDelay.
	RetryInterval time.Duration

	// copyFiles replaces Files.Copy in tests (a copy that hangs until its
	// deadline).
	copyFiles func(context.Context, projectfiles.CopyRequest) error
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ScanInterval, 10*time.Second)
	def(&c.IdleInterval, time.Minute)
	def(&c.MinRun, 10*time.Minute)
	def(&c.DefaultIdleTimeout, 30*time.Minute)
	def(&c.ResyncInterval, 5*time.Minute)
	def(&c.AlwaysRunningInterval, 15*time.Second)
	def(&c.AlwaysRunningBackoff, 5*time.Minute)
	def(&c.StartTimeout, 5*time.Minute)
	def(&c.StopTimeout, 2*time.Minute)
	def(&c.CopyTimeout, 5*time.Minute)
	def(&c.MaxRequestAge, time.Hour)
	def(&c.RetryInterval, 500*time.Millisecond)
	if c.ProjectHome == "" {
		c.ProjectHome = "/home/user"
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.CopyWorkers <= 0 {
		c.CopyWorkers = 4
	}
	if c.copyFiles == nil {
		c.copyFiles = c.Files.Copy
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
}

// Notification channels of the controller's own triggers.
const (
	actionChannel = "cocalc_k8s_action_request"
	copyChannel   = "cocalc_k8s_copy_paths"
)

// hubChannel is the channel of the trigger the hub's kucalc controller
// creates for its synctable on projects(state, action_request) while it
// waits for a start or stop (postgres-synctable.coffee trigger_name).
var hubChannel = func() string {
	sum := sha1.Sum([]byte("projects project_id | action_request state"))
	return "change_" + hex.EncodeToString(sum[:])[:16]
}()

// controller is one running instance.
type controller struct {
	cfg      Config
	log      *slog.Logger
	pool     *pgxpool.Pool
	locks    *lockSession
	projects orchestrator.Watcher
	states   *stateWriter
	// queue holds projects whose action request needs a look. It never
	// holds a project twice, and a project added while a worker handles it
	// is handled again afterwards; failures are retried rate-limited.
	queue workqueue.TypedRateLimitingInterface[project.ID]

	mu sync.Mutex
	// inflight: projects a worker is handling now.
	inflight map[project.ID]bool
	// running maps a project to the request being performed, so a newer
	// request (e.g. stop while an image pull drags on) can cancel it.
	running map[project.ID]*performing
	// stuckSince is when a pod was first seen starting with an error.
	stuckSince map[project.ID]time.Time

	// Optional columns of newer hub schemas (found by checkSchema).
	hasSecretToken, hasEnv bool

	scanNow  chan struct{}
	copyNow  chan struct{}
	resyncCh chan struct{}
}

// Run serves the protocol until ctx ends. Database outages are retried
// forever; the returned error is ctx's end (nil) or a configuration error
// (unusable connection string, tables or columns the hub would have).
func Run(ctx context.Context, cfg Config, projects orchestrator.Watcher) error {
	cfg.setDefaults()
	if !filepath.IsAbs(cfg.Files.Dir) {
		return fmt.Errorf("pgcontroller: Files.Dir (the project homes root) must be an absolute path, got %q", cfg.Files.Dir)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		return fmt.Errorf("database connection string: %w", err)
	}
	// No time zone is forced: the session keeps the database's default, as
	// the hub's sessions do, so timestamp (without time zone) columns the
	// hub fills with NOW() (last_edited) compare correctly with now() and
	// LOCALTIMESTAMP whatever zone the database runs in. Dates in JSON
	// (action_request) are explicit UTC ("…Z") and unaffected.
	pcfg.ConnConfig.RuntimeParams["application_name"] = "cocalc-k8s-controller"
	// Requests hold a pooled connection only for their queries, not while
	// they are performed (their claims are on the lock session): the pool
	// does not grow with Workers. With the lock session and LISTEN, the
	// controller uses at most MaxConns + 2 database connections.
	pcfg.MaxConns = int32(min(cfg.Workers, maxActionConns) + cfg.CopyWorkers + 4)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("database pool: %w", err)
	}
	defer pool.Close()
	log := cfg.Logger.With("controller", cfg.ID)
	locks := newLockSession(pcfg.ConnConfig, log)
	defer locks.close()

	c := &controller{
		cfg: cfg, log: log, pool: pool, locks: locks, projects: projects,
		inflight: map[project.ID]bool{}, running: map[project.ID]*performing{}, stuckSince: map[project.ID]time.Time{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(rateLimiter(cfg),
			workqueue.TypedRateLimitingQueueConfig[project.ID]{Name: "pgcontroller-actions"}),
		scanNow: make(chan struct{}, 1), copyNow: make(chan struct{}, 1), resyncCh: make(chan struct{}, 1),
	}
	c.states = newStateWriter(c)
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
		c.states.queue.ShutDown()
	}()

	if err := c.waitForSchema(ctx); err != nil {
		return err
	}

	var wg sync.WaitGroup
	spawn := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	for range cfg.Workers {
		spawn(c.worker)
	}
	spawn(c.listen)
	spawn(c.scanLoop)
	spawn(c.copyLoop)
	spawn(c.idleLoop)
	spawn(c.alwaysRunningLoop)
	spawn(c.states.run)
	spawn(c.watchLoop)
	wg.Wait()
	return nil
}

// requiredColumns are the columns of the hub's schema this protocol uses.
var requiredColumns = map[string][]string{
	"projects":   {"project_id", "action_request", "state", "status", "run_quota", "settings", "users", "last_edited", "last_started"},
	"copy_paths": {"id", "time", "source_project_id", "source_path", "target_project_id", "target_path", "overwrite_newer", "delete_missing", "backup", "public", "exclude", "timeout", "scheduled", "started", "finished", "error", "expire"},
}

// DefaultWorkers is Config.Workers' default: enough concurrent actions
// for a large course starting at once (50 pod creates a second at the
// chart's default client QPS, each project a few seconds to ready) with
// room for projects that never start.
const DefaultWorkers = 256

// maxActionConns bounds the database connections of the action workers.
const maxActionConns = 16

// maxRetryDelay caps the retry schedule and the rate-limited retries.
const maxRetryDelay = 10 * time.Second

// backoff is the one retry schedule of the controller (database or
// orchestrator errors): RetryInterval doubling up to maxRetryDelay, with
// jitter, then every maxRetryDelay until the context ends.
func (c *controller) backoff() wait.Backoff {
	return wait.Backoff{Duration: c.cfg.RetryInterval, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: maxRetryDelay}
}

// retry calls f at once and then on the backoff schedule until it reports
// done or fails for good (a non-nil error), or ctx ends (ctx's error).
func (c *controller) retry(ctx context.Context, f func(context.Context) (done bool, err error)) error {
	return c.backoff().DelayFunc().Until(ctx, true, false, f)
}

// rateLimiter paces a failed project's retries: RetryInterval doubling up
// to maxRetryDelay per project, reset when handling succeeds.
func rateLimiter(cfg Config) workqueue.TypedRateLimiter[project.ID] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[project.ID](cfg.RetryInterval, maxRetryDelay)
}

// waitForSchema retries until the database answers, then checks that the
// hub's tables exist (a wrong database is a configuration error).
func (c *controller) waitForSchema(ctx context.Context) error {
	err := c.retry(ctx, func(ctx context.Context) (bool, error) {
		err := c.checkSchema(ctx)
		var se schemaError
		if err == nil || errors.As(err, &se) {
			return true, err
		}
		c.log.Warn("database not reachable, retrying", "err", err)
		return false, nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type schemaError struct{ missing []string }

func (e schemaError) Error() string {
	return fmt.Sprintf("the database lacks columns the CoCalc hub creates: %v (is this the hub's database?)", e.missing)
}

func (c *controller) checkSchema(ctx context.Context) error {
	rows, err := c.pool.Query(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name IN ('projects', 'copy_paths')`)
	if err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var t, col string
		if err := rows.Scan(&t, &col); err != nil {
			return fmt.Errorf("read schema: %w", err)
		}
		have[t+"."+col] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read schema: %w", err)
	}
	var missing []string
	for t, cols := range requiredColumns {
		for _, col := range cols {
			if !have[t+"."+col] {
				missing = append(missing, t+"."+col)
			}
		}
	}
	if len(missing) > 0 {
		return schemaError{missing}
	}
	c.hasSecretToken, c.hasEnv = have["projects.secret_token"], have["projects.env"]
	return nil
}

// installTriggers creates (or replaces) the controller's notification
// triggers. They only send the row's id, so they are cheap and independent
// of the hub's own synctable triggers. Failure (e.g. no privilege) is logged
// and the periodic scan keeps everything working, only slower.
func (c *controller) installTriggers(ctx context.Context, conn *pgx.Conn) {
	stmts := []string{
		`CREATE OR REPLACE FUNCTION cocalc_k8s_notify_action_request() RETURNS TRIGGER AS $$
		BEGIN
			-- Only unfinished requests: the controller's own "finished"
			-- writes need no reaction.
			IF NEW.action_request IS NOT NULL
				AND COALESCE(NEW.action_request->'finished', 'null'::jsonb) = 'null'::jsonb
				AND (TG_OP = 'INSERT' OR NEW.action_request IS DISTINCT FROM OLD.action_request) THEN
				PERFORM pg_notify('` + actionChannel + `', NEW.project_id::text);
			END IF;
			RETURN NULL;
		END; $$ LANGUAGE plpgsql`,
		createTriggerOnce("cocalc_k8s_action_request", `CREATE TRIGGER cocalc_k8s_action_request
			AFTER INSERT OR UPDATE OF action_request ON projects
			FOR EACH ROW EXECUTE PROCEDURE cocalc_k8s_notify_action_request()`),
		`CREATE OR REPLACE FUNCTION cocalc_k8s_notify_copy_paths() RETURNS TRIGGER AS $$
		BEGIN
			PERFORM pg_notify('` + copyChannel + `', NEW.id::text);
			RETURN NULL;
		END; $$ LANGUAGE plpgsql`,
		createTriggerOnce("cocalc_k8s_copy_paths", `CREATE TRIGGER cocalc_k8s_copy_paths
			AFTER INSERT ON copy_paths
			FOR EACH ROW EXECUTE PROCEDURE cocalc_k8s_notify_copy_paths()`),
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			c.log.Warn("cannot install notification trigger; relying on the periodic scan", "err", err)
			return
		}
	}
}

// createTriggerOnce wraps CREATE TRIGGER so it is idempotent on every
// PostgreSQL version (CREATE OR REPLACE TRIGGER needs 14).
func createTriggerOnce(name, create string) string {
	return `DO $do$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '` + name + `' AND NOT tgisinternal) THEN
			` + create + `;
		END IF;
	END $do$`
}

// listen keeps one connection LISTENing and turns notifications into work.
// After every (re)connect it requests a full scan: notifications sent while
// disconnected are lost.
func (c *controller) listen(ctx context.Context) {
	for ctx.Err() == nil {
		_ = c.retry(ctx, func(ctx context.Context) (bool, error) {
			connected := false
			err := c.listenOnce(ctx, func() { connected = true })
			if ctx.Err() != nil {
				return true, nil
			}
			c.log.Warn("notification connection lost, reconnecting", "err", err)
			// After a working connection the schedule starts afresh.
			return connected, nil
		})
	}
}

func (c *controller) listenOnce(ctx context.Context, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, c.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	c.installTriggers(ctx, conn)
	for _, ch := range []string{actionChannel, copyChannel, hubChannel} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	connected()
	kick(c.scanNow)
	kick(c.copyNow)
	kick(c.resyncCh)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case actionChannel:
			c.enqueue(n.Payload)
		case copyChannel:
			kick(c.copyNow)
		case hubChannel:
			if id := hubPayloadProjectID(n.Payload); id != "" {
				c.enqueue(id)
			}
		}
	}
}

// scanLoop is the safety net: it enqueues every unfinished request.
func (c *controller) scanLoop(ctx context.Context) {
	every(ctx, c.cfg.ScanInterval, c.scanNow, func() {
		ids, err := c.pendingProjects(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("scan for action requests failed", "err", err)
			}
			return
		}
		for _, id := range ids {
			c.enqueue(id)
		}
	})
}

// every runs fn each interval and whenever wake fires (wake may be nil),
// until ctx ends.
func every(ctx context.Context, interval time.Duration, wake <-chan struct{}, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		fn()
	}
}

// pendingPredicate selects action requests without a finished marker
// (including malformed ones, which get an error recorded).
const pendingPredicate = `action_request IS NOT NULL AND jsonb_typeof(action_request) <> 'null'
	AND NOT (jsonb_typeof(action_request) = 'object' AND COALESCE(action_request->'finished', 'null'::jsonb) <> 'null'::jsonb)`

func (c *controller) pendingProjects(ctx context.Context) ([]string, error) {
	rows, err := c.pool.Query(ctx, `SELECT project_id::text FROM projects WHERE `+pendingPredicate)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// enqueue schedules a project's request (an ID from the database or a
// notification; one that project.Parse refuses is logged and dropped). A
// project being handled is looked at again when its handling ends, and the
// request it performs is cancelled if a newer one replaced it.
func (c *controller) enqueue(rawID string) {
	id, err := project.Parse(rawID)
	if err != nil {
		c.log.Warn("ignoring an action request for an invalid project ID", "project", truncate(rawID, 64), "err", err)
		return
	}
	c.enqueueID(id)
}

func (c *controller) enqueueID(id project.ID) {
	c.queue.Add(id)
	c.mu.Lock()
	p := c.running[id]
	c.mu.Unlock()
	if p != nil {
		go c.cancelIfSuperseded(id, p)
	}
}

// worker handles queued projects until the queue shuts down.
func (c *controller) worker(ctx context.Context) {
	for c.handleNext(ctx) {
	}
}

func (c *controller) handleNext(ctx context.Context) bool {
	id, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(id)
	c.mu.Lock()
	c.inflight[id] = true
	c.mu.Unlock()
	err := errors.New("panic")
	c.safely("action request of "+id.String(), func() { err = c.handleAction(ctx, id) })
	c.mu.Lock()
	delete(c.inflight, id)
	c.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		c.log.Warn("action request handling failed; will retry", "project", id, "err", err, "retries", c.queue.NumRequeues(id))
		c.queue.AddRateLimited(id)
		return true
	}
	c.queue.Forget(id)
	return true
}

// safely runs f and turns a panic into an error log: one request with data
// nobody anticipated must not take down the controller serving all others.
func (c *controller) safely(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic while handling "+what, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	f()
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
