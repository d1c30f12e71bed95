package pgcontroller

import (
	"context"
	"sync"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
)

// stateWriter mirrors pod states into projects.state and projects.status.
// It keeps only the latest status per project and retries writes while the
// database is away, so no change is lost across a database restart.
type stateWriter struct {
	c       *controller
	mu      sync.Mutex
	pending map[string]hubcontrol.Status
	kick    chan struct{}
}

func newStateWriter(c *controller) *stateWriter {
	return &stateWriter{c: c, pending: map[string]hubcontrol.Status{}, kick: make(chan struct{}, 1)}
}

// Put records a status to be written.
func (w *stateWriter) Put(s hubcontrol.Status) {
	if s.ProjectID == "" {
		return
	}
	w.mu.Lock()
	w.pending[s.ProjectID] = s
	w.mu.Unlock()
	kick(w.kick)
}

func (w *stateWriter) run(ctx context.Context) {
	delay := w.c.cfg.RetryInterval
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-time.After(delay):
		}
		if w.flush(ctx) {
			delay = w.c.cfg.RetryInterval
		} else {
			delay = min(delay*2, 10*time.Second)
		}
	}
}

// flush writes every pending status; it reports whether all succeeded.
func (w *stateWriter) flush(ctx context.Context) bool {
	w.mu.Lock()
	batch := make([]hubcontrol.Status, 0, len(w.pending))
	for _, s := range w.pending {
		batch = append(batch, s)
	}
	w.mu.Unlock()
	ok := true
	for _, s := range batch {
		if err := w.write(ctx, s); err != nil {
			if ctx.Err() == nil {
				w.c.log.Warn("cannot write project state; will retry", "project", s.ProjectID, "err", err)
			}
			ok = false
			continue
		}
		w.mu.Lock()
		if w.pending[s.ProjectID] == s {
			delete(w.pending, s.ProjectID)
		}
		w.mu.Unlock()
	}
	return ok
}

// write sets projects.state = {state, time, ip?, error?} when state, ip or
// error changed (time is when the state was last computed, as in kucalc),
// and keeps status.start_ts (ms) in step with the running container.
func (w *stateWriter) write(ctx context.Context, s hubcontrol.Status) error {
	var ip, errText, startTS any
	if s.IP != "" && s.State == hubcontrol.Running {
		ip = s.IP
	}
	if s.Error != "" {
		errText = s.Error
	}
	if s.State == hubcontrol.Running && !s.StartedAt.IsZero() {
		startTS = s.StartedAt.UnixMilli()
	}
	_, err := w.c.pool.Exec(ctx, `UPDATE projects SET
			state = jsonb_strip_nulls(jsonb_build_object('state', $2::text, 'time', `+nowJSON+`, 'ip', $3::text, 'error', $4::text)),
			status = (COALESCE(status, '{}'::jsonb) - 'start_ts') || jsonb_strip_nulls(jsonb_build_object('start_ts', $5::bigint))
		WHERE project_id = $1 AND (state IS NULL OR jsonb_typeof(state) <> 'object'
			OR state->>'state' IS DISTINCT FROM $2 OR state->>'ip' IS DISTINCT FROM $3 OR state->>'error' IS DISTINCT FROM $4)`,
		s.ProjectID, string(s.State), ip, errText, startTS)
	return err
}

// watchLoop feeds the orchestrator's state changes to the writer and
// reconciles everything at start, periodically, and after the watch breaks.
func (c *controller) watchLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.ResyncInterval)
	defer t.Stop()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		ch, err := c.projects.Watch(wctx)
		if err != nil {
			cancel()
			c.log.Warn("cannot watch projects; retrying", "err", err)
			if !sleep(ctx, c.cfg.RetryInterval) {
				return
			}
			continue
		}
		c.resync(ctx)
	events:
		for {
			select {
			case <-ctx.Done():
				cancel()
				return
			case <-t.C:
				c.resync(ctx)
			case <-c.resyncCh:
				c.resync(ctx)
			case s, ok := <-ch:
				if !ok {
					break events
				}
				c.states.Put(s)
			}
		}
		cancel()
		c.log.Warn("project watch ended; re-listing and watching again")
		if !sleep(ctx, c.cfg.RetryInterval) {
			return
		}
	}
}

// resync writes every pod's status and marks projects the database thinks
// are active but that have no pod as opened (e.g. pods deleted while the
// controller was down).
func (c *controller) resync(ctx context.Context) {
	list, err := c.projects.List(ctx)
	if err != nil {
		c.log.Warn("cannot list projects for resync", "err", err)
		return
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		c.states.Put(s)
		ids = append(ids, s.ProjectID)
	}
	rows, err := c.pool.Query(ctx, `SELECT project_id::text FROM projects
		WHERE state->>'state' IN ('running', 'starting', 'stopping') AND NOT (project_id::text = ANY($1::text[]))`, ids)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot read active projects for resync", "err", err)
		}
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if rows.Scan(&id) == nil {
			c.states.Put(hubcontrol.Status{ProjectID: id, State: hubcontrol.Opened})
		}
	}
}
