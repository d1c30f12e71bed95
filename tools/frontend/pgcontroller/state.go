package pgcontroller

import (
	"context"
	"sync"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
)

// stateWriter mirrors pod states into projects.state and projects.status.
// It keeps only the latest status per project and retries writes while the
// database is away, so no change is lost across a database restart. Writes
// are serialised and always take the latest status, so a slow background
// flush never overwrites a newer state written by WriteNow.
type stateWriter struct {
	c       *controller
	mu      sync.Mutex
	pending map[string]hubcontrol.Status
	// failed holds why a project's start failed and its pod was removed:
	// it is reported with "opened" until the project starts again.
	failed map[string]string
	kick   chan struct{}
	// wmu serialises database writes.
	wmu sync.Mutex
}

func newStateWriter(c *controller) *stateWriter {
	return &stateWriter{c: c, pending: map[string]hubcontrol.Status{}, failed: map[string]string{}, kick: make(chan struct{}, 1)}
}

// Put records a status to be written.
func (w *stateWriter) Put(s hubcontrol.Status) {
	if s.ProjectID == "" {
		return
	}
	w.mu.Lock()
	w.putLocked(s)
	w.mu.Unlock()
	kick(w.kick)
}

func (w *stateWriter) putLocked(s hubcontrol.Status) {
	switch s.State {
	case hubcontrol.Starting, hubcontrol.Running:
		delete(w.failed, s.ProjectID) // a new start: the old failure is over
	case hubcontrol.Opened:
		if s.Error == "" {
			s.Error = w.failed[s.ProjectID]
		}
	}
	w.pending[s.ProjectID] = s
}

// Failed records why a start failed (its pod was removed): the project is
// reported opened with this error until it starts again.
func (w *stateWriter) Failed(id, reason string) {
	w.mu.Lock()
	w.failed[id] = reason
	w.putLocked(hubcontrol.Status{ProjectID: id, State: hubcontrol.Opened, Error: reason})
	w.mu.Unlock()
	kick(w.kick)
}

// WriteNow records s and writes the project's latest status before it
// returns, retrying until it is written or ctx ends.
func (w *stateWriter) WriteNow(ctx context.Context, s hubcontrol.Status) error {
	w.mu.Lock()
	w.putLocked(s)
	w.mu.Unlock()
	delay := w.c.cfg.RetryInterval
	for {
		err := w.writePending(ctx, s.ProjectID)
		if err == nil || ctx.Err() != nil {
			return err
		}
		w.c.log.Warn("cannot write project state; retrying", "project", s.ProjectID, "err", err)
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(delay*2, 10*time.Second)
	}
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
	ids := make([]string, 0, len(w.pending))
	for id := range w.pending {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	ok := true
	for _, id := range ids {
		if err := w.writePending(ctx, id); err != nil {
			if ctx.Err() == nil {
				w.c.log.Warn("cannot write project state; will retry", "project", id, "err", err)
			}
			ok = false
		}
	}
	return ok
}

// writePending writes the latest pending status of one project, if any.
func (w *stateWriter) writePending(ctx context.Context, id string) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	s, ok := w.pending[id]
	w.mu.Unlock()
	if !ok {
		return nil
	}
	if err := w.write(ctx, s); err != nil {
		return err
	}
	w.mu.Lock()
	if w.pending[id] == s {
		delete(w.pending, id)
	}
	w.mu.Unlock()
	return nil
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
