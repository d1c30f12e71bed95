package pgcontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
)

// idleLoop requests a stop for running projects that are idle: last_edited
// older than the quota's idle timeout, and running for at least MinRun since
// last_started (CoCalc's stop-idle-projects rule). The stop is written as an
// action_request, like the hub's own idle loop does, so it goes through the
// same exactly-once path and the hub sees why the project stopped.
func (c *controller) idleLoop(ctx context.Context) {
	every(ctx, c.cfg.IdleInterval, nil, func() {
		c.safely("idle check", func() {
			if err := c.stopIdle(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("idle check failed", "err", err)
			}
		})
	})
}

func (c *controller) stopIdle(ctx context.Context) error {
	rows, err := c.pool.Query(ctx, `SELECT project_id::text, run_quota, settings, users,
			EXTRACT(EPOCH FROM now() - last_edited)::float8, EXTRACT(EPOCH FROM now() - last_started)::float8
		FROM projects WHERE state->>'state' = 'running'`)
	if err != nil {
		return err
	}
	type candidate struct {
		id                        string
		runQuota, settings, users []byte
		edited, started           *float64
	}
	var idle, active []string
	for rows.Next() {
		var r candidate
		if err := rows.Scan(&r.id, &r.runQuota, &r.settings, &r.users, &r.edited, &r.started); err != nil {
			rows.Close()
			return err
		}
		q := quotaFor(r.runQuota, r.settings, r.users, c.cfg.DefaultIdleTimeout)
		switch {
		case q.AlwaysRunning || q.IdleTimeout <= 0,
			r.edited != nil && *r.edited <= q.IdleTimeout.Seconds(),
			r.started != nil && *r.started <= c.cfg.MinRun.Seconds():
			active = append(active, r.id)
		default:
			idle = append(idle, r.id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// The orchestrator's own idle sweep only sees Start and Touch; the
	// database knows about edits. Touching active projects keeps the sweep
	// from stopping someone's work (the 2020 system's "restarts every 10
	// minutes while people are working").
	for _, raw := range active {
		id, err := project.Parse(raw)
		if err != nil {
			c.log.Warn("ignoring a running project with an invalid ID", "project", truncate(raw, 64), "err", err)
			continue
		}
		if _, err := c.projects.Touch(ctx, id); err != nil {
			c.log.Warn("cannot record project activity", "project", id, "err", err)
		}
	}
	for _, id := range idle {
		tag, err := c.pool.Exec(ctx, `UPDATE projects SET action_request =
				jsonb_build_object('action', 'stop', 'time', `+nowJSON+`, 'reason', 'idle')
			WHERE project_id = $1 AND state->>'state' = 'running' AND NOT (`+pendingPredicate+`)`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			c.log.Info("stopping idle project", "project", id)
			c.enqueue(id)
		}
	}
	return nil
}

// alwaysRunningLoop starts always-running projects that have no pod: after
// their pod died or was deleted, after a cluster restart, or when the flag
// was just set. In kucalc mode the hub leaves this to the cluster side (its
// init_start_always_running_projects runs only with other project control
// modes); the rule is the same: not deleted, always_running, and in a
// stable stopped state (opened, closed, archived, or no state).
func (c *controller) alwaysRunningLoop(ctx context.Context) {
	every(ctx, c.cfg.AlwaysRunningInterval, nil, func() {
		c.safely("stuck pod check", func() {
			if err := c.removeStuck(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("stuck pod check failed", "err", err)
			}
		})
		c.safely("always-running check", func() {
			if err := c.startAlwaysRunning(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("always-running check failed", "err", err)
			}
		})
	})
}

func (c *controller) startAlwaysRunning(ctx context.Context) error {
	const stopped = `(state IS NULL OR jsonb_typeof(state) <> 'object' OR state->>'state' IS NULL
		OR state->>'state' IN ('opened', 'closed', 'archived'))`
	rows, err := c.pool.Query(ctx, `SELECT project_id::text, run_quota, settings, users, action_request FROM projects
		WHERE deleted IS NOT TRUE AND `+stopped+`
			AND (run_quota->>'always_running' = 'true' OR settings->>'always_running' IN ('1', 'true'))
			AND NOT (`+pendingPredicate+`)`)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		var runQuota, settings, users, last []byte
		if err := rows.Scan(&id, &runQuota, &settings, &users, &last); err != nil {
			rows.Close()
			return err
		}
		if c.recentlyFailedStart(last) {
			continue // back off: a start that keeps failing is not retried every check
		}
		// The quota rule decides (run_quota wins when it carries limits).
		if quotaFor(runQuota, settings, users, c.cfg.DefaultIdleTimeout).AlwaysRunning {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		tag, err := c.pool.Exec(ctx, `UPDATE projects SET action_request =
				jsonb_build_object('action', 'start', 'time', `+nowJSON+`, 'reason', 'always_running')
			WHERE project_id = $1 AND deleted IS NOT TRUE AND `+stopped+` AND NOT (`+pendingPredicate+`)`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() > 0 {
			c.log.Info("starting always-running project", "project", id)
			c.enqueue(id)
		}
	}
	return nil
}

// recentlyFailedStart reports whether the last request was a start that
// failed less than AlwaysRunningBackoff ago.
func (c *controller) recentlyFailedStart(raw []byte) bool {
	var req struct {
		Action   string          `json:"action"`
		Err      any             `json:"err"`
		Finished json.RawMessage `json:"finished"`
	}
	if json.Unmarshal(raw, &req) != nil || req.Action != "start" || req.Err == nil {
		return false
	}
	t, ok := parseJSTime(req.Finished)
	return ok && time.Since(t) < c.cfg.AlwaysRunningBackoff
}

// removeStuck removes pods that have been starting with an error
// (crash loop, unschedulable, image pull back-off) for longer than the start
// deadline while no request of this controller handles them, e.g. a
// project that ran and then began to crash. The hub's stop does nothing
// unless the state is running, so without this nobody could stop or
// restart it; the state says opened with the reason.
func (c *controller) removeStuck(ctx context.Context) error {
	list, err := c.projects.List(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	seen := map[project.ID]bool{}
	for _, s := range list {
		if s.State != state.Starting || s.Reason == "" {
			continue
		}
		seen[s.ProjectID] = true
		c.mu.Lock()
		since, ok := c.stuckSince[s.ProjectID]
		if !ok {
			since = now
			c.stuckSince[s.ProjectID] = now
		}
		busy := c.inflight[s.ProjectID]
		c.mu.Unlock()
		if busy || now.Sub(since) < c.cfg.StartTimeout {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, c.cfg.StopTimeout)
		_, err := c.projects.Stop(sctx, s.ProjectID)
		cancel()
		if err != nil {
			c.log.Warn("cannot remove a stuck pod", "project", s.ProjectID, "err", err)
			continue
		}
		reason := fmt.Sprintf("not running for %s (%s); the project's pod was removed", c.cfg.StartTimeout, s.Reason)
		c.log.Warn("removed a stuck pod", "project", s.ProjectID, "reason", s.Reason)
		c.states.Failed(s.ProjectID, reason)
		c.mu.Lock()
		delete(c.stuckSince, s.ProjectID)
		c.mu.Unlock()
	}
	c.mu.Lock()
	for id := range c.stuckSince {
		if !seen[id] {
			delete(c.stuckSince, id)
		}
	}
	c.mu.Unlock()
	return nil
}
