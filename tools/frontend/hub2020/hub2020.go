// Package hub2020 stops idle projects by the activity the 2020 CoCalc hub
// (the smc-compute protocol) records in its PostgreSQL database.
//
// The 2020 hub never tells smc-compute about activity or about a project's
// idle policy: it writes activity to projects.last_edited (touch_project,
// file use) and projects.last_active (a map account_id → ISO time, written
// by _touch_project), and computes each project's quotas as
// projects.settings (each field defaulting to DEFAULT_QUOTAS) plus the sum
// of every user's projects.users[account].upgrades (get_project_quotas of
// src/smc-hub/postgres-server-queries.coffee at 3539286c47). Its compute
// server then used mintime (seconds) as the idle timeout and treated
// always_running as an infinite mintime (compute-client.coffee set_quotas).
//
// Every interval, for the projects the orchestrator has running, Sweeper
// reads those columns and stops a project when nothing happened for longer
// than its own mintime: no edit, no user touch, no start (the orchestrator's
// start or touch, and the container's start time, count as activity). A
// project with always_running, or without a positive mintime, is never
// stopped. When the database cannot be read, or has no row for a running
// project, nothing is stopped: a missing answer is never taken for idleness.
package hub2020

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Projects is what the sweep needs from the orchestrator.
type Projects interface {
	List(ctx context.Context) ([]orchestrator.ProjectStatus, error)
	Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error)
}

// Config configures a Sweeper.
type Config struct {
	// ConnString is the 2020 hub's database (libpq key=value or URL; the
	// password may come from $PGPASSWORD).
	ConnString string
	// Interval is the period of the sweep (default 1m).
	Interval time.Duration
	// QueryTimeout bounds one read of the database (default 30s).
	QueryTimeout time.Duration
	Logger       *slog.Logger
	// Now is the local clock for the orchestrator's activity times
	// (default time.Now). Database times are aged by the database's clock.
	Now func() time.Time
}

// Sweeper reads the 2020 hub's database and stops idle projects.
type Sweeper struct {
	cfg      Config
	pool     *pgxpool.Pool
	projects Projects
	log      *slog.Logger
}

// New parses the connection string (no connection is made yet) and returns a
// Sweeper. Call Close when done.
func New(cfg Config, projects Projects) (*Sweeper, error) {
	if projects == nil {
		return nil, errors.New("hub2020: projects are required")
	}
	pc, err := pgxpool.ParseConfig(cfg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("hub database connection string: %w", err)
	}
	pc.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("hub database: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Sweeper{cfg: cfg, pool: pool, projects: projects, log: cfg.Logger}, nil
}

// Close closes the database connections.
func (s *Sweeper) Close() { s.pool.Close() }

// Run sweeps every Interval until ctx ends. Errors are logged; they never
// end the loop.
func (s *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("idle check: cannot read project activity from the hub database; no project is stopped this round", "err", err)
		}
	}
}

// Policy is a project's idle policy as the 2020 hub computed it.
type Policy struct {
	// IdleTimeout is mintime; zero means never stopped for idleness.
	IdleTimeout   time.Duration
	AlwaysRunning bool
}

// Never reports whether the project is never stopped for idleness.
func (p Policy) Never() bool { return p.AlwaysRunning || p.IdleTimeout <= 0 }

// Decision is what one sweep concluded about one running project.
type Decision struct {
	ProjectID project.ID
	Policy    Policy
	// Idle is the time since the project's last activity.
	Idle time.Duration
	// Stop is true when the project was (or was to be) stopped.
	Stop bool
	// Err is the stop's error.
	Err error
}

// Sweep reads the activity and policy of every running project and stops
// the idle ones. It returns one Decision per running project found in the
// database; an error means nothing was stopped.
func (s *Sweeper) Sweep(ctx context.Context) ([]Decision, error) {
	running := map[project.ID]orchestrator.ProjectStatus{}
	var ids []string
	list, err := s.projects.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	for _, st := range list {
		if st.State == state.Running {
			running[st.ProjectID] = st
			ids = append(ids, st.ProjectID.String())
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.read(ctx, ids)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	var out []Decision
	for _, r := range rows {
		st, ok := running[r.id]
		if !ok {
			continue
		}
		d := Decision{ProjectID: r.id, Policy: policyFor(r.settings, r.users), Idle: r.idle}
		// The orchestrator's own record: a start or touch, and the
		// container's start (a project is never stopped before it ran
		// for its mintime, as the 2020 compute server measured from the
		// last state change).
		for _, t := range []*time.Time{st.LastActivity, st.StartedAt} {
			if t != nil {
				d.Idle = min(d.Idle, max(0, now.Sub(*t)))
			}
		}
		d.Stop = !d.Policy.Never() && d.Idle > d.Policy.IdleTimeout
		out = append(out, d)
	}
	s.stop(ctx, out)
	return out, nil
}

// stop stops the idle projects, a few at a time (each stop waits until the
// pod is gone).
func (s *Sweeper) stop(ctx context.Context, ds []Decision) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := range ds {
		if !ds[i].Stop {
			continue
		}
		d := &ds[i]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.log.Info("stopping idle project", "project", d.ProjectID, "idle", d.Idle.Round(time.Second), "idle_timeout", d.Policy.IdleTimeout)
			if _, err := s.projects.Stop(ctx, d.ProjectID); err != nil {
				d.Err = err
				s.log.Warn("cannot stop idle project", "project", d.ProjectID, "err", err)
			}
		}()
	}
	wg.Wait()
}

type row struct {
	id              project.ID
	settings, users []byte
	// idle is the time since last_edited or the latest last_active value
	// by the database's clock (infinite when neither is set).
	idle time.Duration
}

// read fetches the rows of the given projects. last_edited is TIMESTAMP
// without time zone written with the hub session's NOW(), so it is aged in
// SQL within a session that keeps the database's time zone; last_active
// values are JSON times (UTC, "Z") and are aged against the database's
// clock too.
func (s *Sweeper) read(ctx context.Context, ids []string) ([]row, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.QueryTimeout)
	defer cancel()
	q, err := s.pool.Query(ctx, `SELECT project_id::text, settings, users, last_active,
			EXTRACT(EPOCH FROM now() - last_edited)::float8, EXTRACT(EPOCH FROM now())::float8
		FROM projects WHERE project_id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	var out []row
	for q.Next() {
		var id string
		var r row
		var lastActive []byte
		var edited *float64
		var dbNow float64
		if err := q.Scan(&id, &r.settings, &r.users, &lastActive, &edited, &dbNow); err != nil {
			return nil, err
		}
		pid, err := project.Parse(id)
		if err != nil {
			continue
		}
		r.id = pid
		idle := math.Inf(1)
		if edited != nil {
			idle = *edited
		}
		if t, ok := latest(lastActive); ok {
			idle = min(idle, dbNow-float64(t.UnixNano())/1e9)
		}
		r.idle = ageDuration(idle)
		out = append(out, r)
	}
	return out, q.Err()
}

// ageDuration converts seconds to a Duration: a time in the future (clock
// skew) is no idleness, no activity at all is the longest Duration.
func ageDuration(sec float64) time.Duration {
	switch {
	case sec <= 0 || math.IsNaN(sec):
		return 0
	case sec >= math.MaxInt64/float64(time.Second):
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(sec * float64(time.Second))
}

// latest is the latest time in a last_active map; malformed values are
// ignored.
func latest(raw []byte) (time.Time, bool) {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return time.Time{}, false
	}
	var best time.Time
	found := false
	for _, v := range m {
		s, ok := v.(string)
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			continue
		}
		if !found || t.After(best) {
			best, found = t, true
		}
	}
	return best, found
}

// defaultQuotas are the 2020 DEFAULT_QUOTAS fields that make the idle policy
// (src/smc-util/upgrade-spec.js).
var defaultQuotas = map[string]float64{"mintime": 1800, "always_running": 0}

// policyFor computes mintime and always_running as get_project_quotas did:
// settings (NULL means DEFAULT_QUOTAS; a missing field its default; values
// coerced with parseFloat, booleans as 1/0) plus the sum of every user's
// upgrades.
func policyFor(settingsJSON, usersJSON []byte) Policy {
	var settings map[string]any
	_ = json.Unmarshal(settingsJSON, &settings)
	var users map[string]struct {
		Upgrades map[string]any `json:"upgrades"`
	}
	_ = json.Unmarshal(usersJSON, &users)
	total := func(field string) float64 {
		v := defaultQuotas[field]
		if x, ok := settings[field]; ok && x != nil {
			v = coerce(x)
		}
		for _, u := range users {
			if x, ok := u.Upgrades[field]; ok && x != nil {
				v += coerce(x)
			}
		}
		return v
	}
	var p Policy
	if a := total("always_running"); a != 0 && !math.IsNaN(a) {
		p.AlwaysRunning = true
		return p
	}
	if m := total("mintime"); m > 0 && !math.IsNaN(m) && !math.IsInf(m, 0) {
		p.IdleTimeout = ageDuration(m)
	}
	return p
}

// coerce is the hub's coerce_codomain_to_numbers for one value: true → 1,
// false → 0, anything else parseFloat (NaN when not a number).
func coerce(x any) float64 {
	switch v := x.(type) {
	case bool:
		if v {
			return 1
		}
		return 0
	case float64:
		return v
	case string:
		return parseFloat(v)
	}
	return math.NaN()
}

// parseFloat is JavaScript's parseFloat: the longest numeric prefix after
// leading white space ("1000MB" is 1000), NaN without one.
func parseFloat(s string) float64 {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	s = s[i:]
	for end := len(s); end > 0; end-- {
		if f, err := strconv.ParseFloat(s[:end], 64); err == nil {
			return f
		}
	}
	return math.NaN()
}
