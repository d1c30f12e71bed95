package pgcontroller

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// nowJSON is the current time as the hub writes dates into JSONB (a
// JavaScript Date serialised: ISO 8601 UTC with milliseconds).
const nowJSON = `to_jsonb(to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`

// actionRequest is projects.action_request as the hub writes it.
type actionRequest struct {
	Action   string          `json:"action"`
	Time     json.RawMessage `json:"time"`
	Started  json.RawMessage `json:"started"`
	Finished json.RawMessage `json:"finished"`
}

// withLock runs f holding the advisory lock named name (lockSession). It
// returns false when another controller, or another request of this one,
// holds the lock.
func (c *controller) withLock(ctx context.Context, name string, f func()) (bool, error) {
	locked, err := c.locks.tryLock(ctx, name)
	if err != nil || !locked {
		return false, err
	}
	defer c.locks.unlock(name)
	f()
	return true, nil
}

// handleAction performs one project's pending action request, if any. An
// error means it should be retried (the worker does, rate-limited).
func (c *controller) handleAction(ctx context.Context, id project.ID) error {
	log := c.log.With("project", id)
	var performErr error
	ok, err := c.withLock(ctx, "action/"+id.String(), func() {
		performErr = c.claimAndPerform(ctx, id, log)
	})
	if err != nil {
		return fmt.Errorf("claim action request: %w", err)
	}
	if !ok {
		log.Debug("action request is handled by another controller")
	}
	return performErr
}

func (c *controller) claimAndPerform(ctx context.Context, id project.ID, log *slog.Logger) error {
	var raw []byte
	var runQuota, settings, users []byte
	err := c.pool.QueryRow(ctx, `SELECT action_request, run_quota, settings, users FROM projects WHERE project_id = $1`, id).
		Scan(&raw, &runQuota, &settings, &users)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read action request: %w", err)
	}
	req, problem := parseRequest(raw)
	if problem == "none" {
		return nil
	}
	if problem != "" {
		log.Warn("malformed action request", "request", truncate(string(raw), 200), "problem", problem)
		return c.rejectMalformed(ctx, id, raw, problem)
	}
	if len(req.Finished) > 0 && string(req.Finished) != "null" {
		return nil
	}
	if t, ok := parseJSTime(req.Time); ok && time.Since(t) > c.cfg.MaxRequestAge {
		return c.finish(ctx, id, req.Time, fmt.Errorf("request from %s expired (older than %s) before a controller could perform it", t.Format(time.RFC3339), c.cfg.MaxRequestAge))
	}
	recovering := len(req.Started) > 0 && string(req.Started) != "null"
	if recovering {
		log.Info("resuming a request another controller started but did not finish", "action", req.Action)
	}
	// Mark started (keeping the first controller's time when recovering)
	// only if the request is still the one read above.
	tag, err := c.pool.Exec(ctx, `UPDATE projects SET action_request =
			(action_request - 'err') || jsonb_build_object('started', COALESCE(NULLIF(action_request->'started', 'null'::jsonb), `+nowJSON+`), 'controller', $3::text)
		WHERE project_id = $1 AND action_request->'time' IS NOT DISTINCT FROM $2::jsonb`,
		id, jsonParam(req.Time), c.cfg.ID)
	if err != nil {
		return fmt.Errorf("mark started: %w", err)
	}
	if tag.RowsAffected() == 0 {
		c.queue.Add(id) // replaced by a newer request meanwhile: look again
		return nil
	}
	log.Info("performing action request", "action", req.Action)
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &performing{time: req.Time, cancel: cancel}
	c.mu.Lock()
	c.running[id] = p
	c.mu.Unlock()
	// A request written between the claim and now sent its notification
	// before p was registered.
	go c.cancelIfSuperseded(id, p)
	actionErr := c.perform(actx, id, req.Action, runQuota, settings, users)
	c.mu.Lock()
	delete(c.running, id)
	c.mu.Unlock()
	if ctx.Err() != nil {
		// Shutting down: leave the request started-but-unfinished; the next
		// controller (or this one after restart) performs it again.
		return nil
	}
	if errors.Is(context.Cause(actx), errSuperseded) {
		log.Info("action abandoned for a newer request", "action", req.Action)
		c.queue.Add(id)
		return nil
	}
	if actionErr != nil {
		log.Warn("action failed", "action", req.Action, "err", actionErr)
	}
	// The state first: the hub reads finished as "done" and looks at the
	// state; a start finished while the state still says starting (or has
	// no IP) makes it issue another start.
	if !c.refreshState(ctx, id) && ctx.Err() != nil {
		return nil // shutting down: the next controller performs it again
	}
	return c.finish(ctx, id, req.Time, actionErr)
}

// performing is a request in progress.
type performing struct {
	time   json.RawMessage
	cancel context.CancelCauseFunc
}

var errSuperseded = errors.New("superseded by a newer action request")

// cancelIfSuperseded cancels the performed request when the row now holds a
// different one (the hub replaced it): the orchestrator then aborts, e.g., a
// start stuck pulling an image, and the newer request runs next.
func (c *controller) cancelIfSuperseded(id project.ID, p *performing) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var t []byte
	if err := c.pool.QueryRow(ctx, `SELECT action_request->'time' FROM projects WHERE project_id = $1`, id).Scan(&t); err != nil {
		return
	}
	if !jsonEqual(t, p.time) {
		p.cancel(errSuperseded)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return len(a) == 0 && len(b) == 0
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// parseRequest returns the request, or a problem description; "none" means
// there is nothing to do.
func parseRequest(raw []byte) (actionRequest, string) {
	var req actionRequest
	if len(raw) == 0 || string(raw) == "null" {
		return req, "none"
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return req, "action_request is not a JSON object"
	}
	if f, ok := obj["finished"]; ok && string(f) != "null" {
		return req, "none"
	}
	if err := json.Unmarshal(raw, &req); err != nil {
		return req, fmt.Sprintf("action_request has a field of the wrong type: %v", err)
	}
	switch req.Action {
	case "start", "stop", "restart":
		return req, ""
	case "":
		return req, "action_request has no action"
	default:
		return req, fmt.Sprintf("unsupported action %q (supported: start, stop, restart)", truncate(req.Action, 40))
	}
}

// rejectMalformed records the problem as the request's error and finishes
// it, so the hub stops waiting and the controller never retries it.
func (c *controller) rejectMalformed(ctx context.Context, id project.ID, raw []byte, problem string) error {
	_, err := c.pool.Exec(ctx, `UPDATE projects SET action_request =
			CASE WHEN jsonb_typeof(action_request) = 'object'
				THEN action_request || jsonb_build_object('err', $2::text, 'finished', `+nowJSON+`)
				ELSE jsonb_build_object('err', $2::text, 'finished', `+nowJSON+`, 'invalid', action_request)
			END
		WHERE project_id = $1 AND action_request = $3::jsonb`, id, "invalid action request: "+problem, string(raw))
	if err != nil {
		return fmt.Errorf("record malformed request: %w", err)
	}
	return nil
}

// finish writes finished (and err) if the request is still the same one.
// A lost connection is retried on fresh ones until ctx ends.
func (c *controller) finish(ctx context.Context, id project.ID, reqTime json.RawMessage, actionErr error) error {
	var errText *string
	if actionErr != nil {
		s := actionErr.Error()
		errText = &s
	}
	const q = `UPDATE projects SET action_request =
			CASE WHEN $3::text IS NULL THEN action_request - 'err'
				ELSE action_request || jsonb_build_object('err', $3::text) END
			|| jsonb_build_object('finished', ` + nowJSON + `)
		WHERE project_id = $1 AND action_request->'time' IS NOT DISTINCT FROM $2::jsonb
			AND COALESCE(action_request->'finished', 'null'::jsonb) = 'null'::jsonb`
	var tag pgconn.CommandTag
	var err error
	rerr := c.retry(ctx, func(ctx context.Context) (bool, error) {
		tag, err = c.pool.Exec(ctx, q, id, jsonParam(reqTime), errText)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("cannot record finished action; retrying", "project", id, "err", err)
		}
		return err == nil, nil
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("record finished: %w", err)
	}
	if tag.RowsAffected() == 0 {
		c.queue.Add(id) // a new request arrived while performing this one
	}
	return nil
}

// perform runs the action through the orchestrator.
func (c *controller) perform(ctx context.Context, id project.ID, action string, runQuota, settings, users []byte) error {
	start := func() error {
		// The orchestrator creates the home directory before the pod.
		// The hub leaves run_quota to the cluster side (KuCalc's manage).
		if rq := c.writeRunQuota(ctx, id.String()); rq != nil {
			runQuota = rq
		}
		q := quotaFor(runQuota, settings, users, c.cfg.DefaultIdleTimeout)
		env, token, err := c.projectEnv(ctx, id)
		if err != nil {
			return err
		}
		req := orchestrator.StartRequest{Quota: q.Quota, Env: env}
		if err := c.startWithin(ctx, id, req); err != nil {
			return err
		}
		if token != "" {
			if err := c.keepTokenInStep(ctx, id, token, req); err != nil {
				return err
			}
		}
		// last_started in the database's time zone, as the hub's own NOW()
		// writes (the session keeps the database's default time zone).
		if _, err := c.pool.Exec(ctx, `UPDATE projects SET last_started = LOCALTIMESTAMP WHERE project_id = $1`, id); err != nil {
			c.log.Warn("cannot record last_started", "project", id, "err", err)
		}
		return nil
	}
	stop := func() error {
		sctx, cancel := context.WithTimeout(ctx, c.cfg.StopTimeout)
		defer cancel()
		if _, err := c.projects.Stop(sctx, id); err != nil {
			return fmt.Errorf("stop: %w", err)
		}
		return nil
	}
	switch action {
	case "start":
		return start()
	case "stop":
		return stop()
	case "restart":
		if err := stop(); err != nil {
			return err
		}
		return start()
	}
	return fmt.Errorf("unsupported action %q", action)
}

// startWithin starts the project within StartTimeout (the template's start
// deadline). A start that fails or does not finish in time (crash loop,
// unschedulable, image never pulled) leaves no pod behind: the hub's stop
// only acts on running projects, so a pod left "starting" could be neither
// stopped nor restarted. The state then says opened, with the reason.
func (c *controller) startWithin(ctx context.Context, id project.ID, req orchestrator.StartRequest) error {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.StartTimeout)
	_, err := c.projects.Start(sctx, id, req)
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// Superseded by a newer request or shutting down: the pod stays for
		// the request that follows.
		return fmt.Errorf("start: %w", err)
	}
	reason := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		reason = fmt.Sprintf("not running after %s", c.cfg.StartTimeout)
	}
	if st, serr := c.projects.Status(ctx, id); serr == nil {
		if st.State == state.Running {
			return nil // it made it after all
		}
		if st.Reason != "" && !strings.Contains(reason, st.Reason) {
			reason += ": " + st.Reason
		}
	}
	stopCtx, cancelStop := context.WithTimeout(ctx, c.cfg.StopTimeout)
	defer cancelStop()
	if _, serr := c.projects.Stop(stopCtx, id); serr != nil {
		msg := fmt.Sprintf("start failed (%s); removing its pod failed: %v", reason, serr)
		c.states.Failed(id, msg)
		return errors.New(msg)
	}
	msg := fmt.Sprintf("start failed (%s); the project's pod was removed", reason)
	c.log.Warn("start failed; pod removed", "project", id, "reason", reason)
	c.states.Failed(id, msg)
	return errors.New(msg)
}

// keepTokenInStep handles the hub's read-then-write of the secret token
// (getProjectSecretToken: SELECT, and when empty an unconditional UPDATE): a
// hub that read no token just before this controller wrote one overwrites
// it, and the project then holds a token the hub rejects. After the start
// the database is read again; if the token changed, the file is rewritten
// and the project restarted once, since projects read the file at startup.
func (c *controller) keepTokenInStep(ctx context.Context, id project.ID, written string, req orchestrator.StartRequest) error {
	var now *string
	if err := c.pool.QueryRow(ctx, `SELECT secret_token FROM projects WHERE project_id = $1`, id).Scan(&now); err != nil {
		return fmt.Errorf("re-read secret token: %w", err)
	}
	if now == nil || *now == "" || *now == written {
		return nil
	}
	c.log.Warn("the hub replaced the secret token during the start; restarting the project with it", "project", id)
	if err := c.cfg.Files.WriteFile(id.String(), secretTokenFile, []byte(*now), 0o600); err != nil {
		return fmt.Errorf("write secret token: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.StopTimeout)
	_, err := c.projects.Stop(sctx, id)
	cancel()
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return c.startWithin(ctx, id, req)
}

// secretTokenLength is current CoCalc's SECRET_TOKEN_LENGTH.
const secretTokenLength = 32

// secretTokenFile is where the secret token is written, relative to the
// home: outside ~/.smc, which project images' init scripts may clear.
const secretTokenFile = ".cocalc-k8s/secret-token"

// projectEnv is the environment current CoCalc projects expect from the
// hub's multi-user mode (control/util.ts getEnvironment): the secret token
// file (which the hub also reads from projects.secret_token to authenticate
// to the project), the data directory, the user's extra variables from
// projects.env (COCALC_EXTRA_ENV, base64 JSON) and the configured variables.
// It also returns the token written ("" when the schema has none).
func (c *controller) projectEnv(ctx context.Context, id project.ID) (map[string]string, string, error) {
	env := map[string]string{}
	data := path.Join(c.cfg.ProjectHome, ".smc")
	env["DATA"], env["LOGS"] = data, data
	var token string
	if c.hasSecretToken {
		var err error
		token, err = c.secretToken(ctx, id)
		if err != nil {
			return nil, "", err
		}
		if err := c.cfg.Files.WriteFile(id.String(), secretTokenFile, []byte(token), 0o600); err != nil {
			return nil, "", fmt.Errorf("write secret token: %w", err)
		}
		env["COCALC_SECRET_TOKEN"] = path.Join(c.cfg.ProjectHome, secretTokenFile)
	}
	if c.hasEnv {
		var extra []byte
		if err := c.pool.QueryRow(ctx, `SELECT COALESCE(env, '{}'::jsonb) FROM projects WHERE project_id = $1`, id).Scan(&extra); err != nil {
			return nil, "", fmt.Errorf("read project env: %w", err)
		}
		var m map[string]any
		if json.Unmarshal(extra, &m) != nil {
			extra = []byte("{}") // a malformed env must not block the start
		}
		env["COCALC_EXTRA_ENV"] = base64.StdEncoding.EncodeToString(extra)
	}
	for k, v := range c.cfg.ProjectEnv {
		env[k] = v
	}
	return env, token, nil
}

// secretToken returns the project's secret token, creating it the way the
// hub does (getProjectSecretToken) when missing; the UPDATE keeps a token a
// hub wrote concurrently.
func (c *controller) secretToken(ctx context.Context, id project.ID) (string, error) {
	fresh, err := randomToken(secretTokenLength)
	if err != nil {
		return "", err
	}
	var token string
	err = c.pool.QueryRow(ctx, `UPDATE projects SET secret_token = COALESCE(NULLIF(secret_token, ''), $2)
		WHERE project_id = $1 RETURNING secret_token`, id, fresh).Scan(&token)
	if err != nil {
		return "", fmt.Errorf("secret token: %w", err)
	}
	return token, nil
}

func randomToken(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("random token: %w", err)
		}
		for _, x := range buf {
			// Rejection keeps every character equally likely.
			if int(x) < 256/len(alphabet)*len(alphabet) && len(out) < n {
				out = append(out, alphabet[int(x)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// refreshState writes the project's current state right after an action,
// before the action is marked finished. It reports whether the state was
// written; reading it from the orchestrator is tried for up to
// refreshAttempts steps of the backoff.
func (c *controller) refreshState(ctx context.Context, id project.ID) bool {
	var st orchestrator.ProjectStatus
	attempts := 0
	err := c.retry(ctx, func(ctx context.Context) (bool, error) {
		var err error
		if st, err = c.projects.Status(ctx, id); err == nil {
			return true, nil
		}
		c.log.Warn("cannot read state after action", "project", id, "err", err)
		if attempts++; attempts == refreshAttempts {
			return false, err
		}
		return false, nil
	})
	return err == nil && c.states.WriteNow(ctx, st) == nil
}

// refreshAttempts bounds reading the state after an action.
const refreshAttempts = 5

// hubPayloadProjectID extracts the project_id from a synctable trigger
// notification: ["UPDATE", {"project_id": ...}, {"project_id": ...}].
func hubPayloadProjectID(payload string) string {
	var v []json.RawMessage
	if json.Unmarshal([]byte(payload), &v) != nil {
		return ""
	}
	for _, o := range v[min(1, len(v)):] {
		var obj struct {
			ProjectID string `json:"project_id"`
		}
		if json.Unmarshal(o, &obj) == nil && obj.ProjectID != "" {
			return obj.ProjectID
		}
	}
	return ""
}

// parseJSTime reads a JSON date as the hub writes it.
func parseJSTime(raw json.RawMessage) (time.Time, bool) {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// jsonParam passes raw JSON (or SQL NULL when absent) as a jsonb parameter.
func jsonParam(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	return string(raw)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
