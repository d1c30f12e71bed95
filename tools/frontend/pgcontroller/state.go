package pgcontroller

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// stateWriter mirrors pod states into projects.state and projects.status.
// It keeps only the latest status per project in pending and a work queue
// of projects to write; a failed write is retried rate-limited, so no
// change is lost across a database restart. Writes are serialised and
// always take the latest status, so a queued write never overwrites a newer
// state written by WriteNow.
type stateWriter struct {
	c       *controller
	mu      sync.Mutex
	pending map[project.ID]orchestrator.ProjectStatus
	// failed holds why a project's start failed and its pod was removed:
	// it is reported with "opened" until the project starts again.
	failed map[project.ID]string
	queue  workqueue.TypedRateLimitingInterface[project.ID]
	// wmu serialises database writes.
	wmu sync.Mutex
}

func newStateWriter(c *controller) *stateWriter {
	return &stateWriter{c: c, pending: map[project.ID]orchestrator.ProjectStatus{}, failed: map[project.ID]string{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(rateLimiter(c.cfg),
			workqueue.TypedRateLimitingQueueConfig[project.ID]{Name: "pgcontroller-states"})}
}

// Put records a status to be written.
func (w *stateWriter) Put(s orchestrator.ProjectStatus) {
	if s.ProjectID == "" {
		return
	}
	w.mu.Lock()
	w.putLocked(s)
	w.mu.Unlock()
	w.queue.Add(s.ProjectID)
}

func (w *stateWriter) putLocked(s orchestrator.ProjectStatus) {
	switch s.State {
	case state.Starting, state.Running:
		delete(w.failed, s.ProjectID) // a new start: the old failure is over
	case state.Opened:
		if s.Reason == "" {
			s.Reason = w.failed[s.ProjectID]
		}
	}
	w.pending[s.ProjectID] = s
}

// Failed records why a start failed (its pod was removed): the project is
// reported opened with this error until it starts again.
func (w *stateWriter) Failed(id project.ID, reason string) {
	w.mu.Lock()
	w.failed[id] = reason
	w.putLocked(orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Opened, Reason: reason}})
	w.mu.Unlock()
	w.queue.Add(id)
}

// WriteNow records s and writes the project's latest status before it
// returns, retrying on the controller's backoff until it is written or ctx
// ends.
func (w *stateWriter) WriteNow(ctx context.Context, s orchestrator.ProjectStatus) error {
	w.mu.Lock()
	w.putLocked(s)
	w.mu.Unlock()
	return w.c.retry(ctx, func(ctx context.Context) (bool, error) {
		err := w.writePending(ctx, s.ProjectID)
		if err != nil && ctx.Err() == nil {
			w.c.log.Warn("cannot write project state; retrying", "project", s.ProjectID, "err", err)
		}
		return err == nil, nil
	})
}

// run writes queued states until the queue shuts down.
func (w *stateWriter) run(ctx context.Context) {
	for {
		id, shutdown := w.queue.Get()
		if shutdown {
			return
		}
		if err := w.writePending(ctx, id); err != nil && ctx.Err() == nil {
			w.c.log.Warn("cannot write project state; will retry", "project", id, "err", err)
			w.queue.AddRateLimited(id)
		} else {
			w.queue.Forget(id)
		}
		w.queue.Done(id)
	}
}

// writePending writes the latest pending status of one project, if any.
func (w *stateWriter) writePending(ctx context.Context, id project.ID) error {
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
	if cur, ok := w.pending[id]; ok && sameStatus(cur, s) {
		delete(w.pending, id)
	}
	w.mu.Unlock()
	return nil
}

// sameStatus compares what write puts into the database.
func sameStatus(a, b orchestrator.ProjectStatus) bool {
	return a.State == b.State && a.IP == b.IP && a.Reason == b.Reason && startedAt(a) == startedAt(b)
}

func startedAt(s orchestrator.ProjectStatus) int64 {
	if s.StartedAt == nil {
		return 0
	}
	return s.StartedAt.UnixMilli()
}

// write sets projects.state = {state, time, ip?, error?} when state, ip or
// error changed (time is when the state was last computed, as in kucalc),
// and keeps status.start_ts (ms) in step with the running container.
func (w *stateWriter) write(ctx context.Context, s orchestrator.ProjectStatus) error {
	var ip, errText, startTS any
	if s.IP != "" && s.State == state.Running {
		ip = s.IP
	}
	if s.Reason != "" {
		errText = s.Reason
	}
	if s.State == state.Running && s.StartedAt != nil && !s.StartedAt.IsZero() {
		startTS = s.StartedAt.UnixMilli()
	}
	_, err := w.c.pool.Exec(ctx, `UPDATE projects SET
			state = jsonb_strip_nulls(jsonb_build_object('state', $2::text, 'time', `+nowJSON+`, 'ip', $3::text, 'error', $4::text)),
			status = (COALESCE(status, '{}'::jsonb) - 'start_ts') || jsonb_strip_nulls(jsonb_build_object('start_ts', $5::bigint))
		WHERE project_id = $1 AND (state IS NULL OR jsonb_typeof(state) <> 'object'
			OR state->>'state' IS DISTINCT FROM $2 OR state->>'ip' IS DISTINCT FROM $3 OR state->>'error' IS DISTINCT FROM $4)`,
		s.ProjectID.String(), string(s.State), ip, errText, startTS)
	return err
}

// watchLoop feeds the orchestrator's state changes (pushed by its informer's
// change notifications) to the writer, and reconciles everything at start
// and every ResyncInterval.
func (c *controller) watchLoop(ctx context.Context) {
	ch := c.projects.Watch(ctx)
	c.resync(ctx)
	t := time.NewTicker(c.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.resync(ctx)
		case <-c.resyncCh:
			c.resync(ctx)
		case s, ok := <-ch:
			if !ok {
				return
			}
			c.states.Put(s)
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
		ids = append(ids, s.ProjectID.String())
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
		var raw string
		if rows.Scan(&raw) != nil {
			continue
		}
		if id, err := project.Parse(raw); err == nil {
			c.states.Put(orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Opened}})
		}
	}
}
