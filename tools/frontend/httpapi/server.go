// Package httpapi is the orchestrator's HTTP front-end, versioned under /v1:
//
//	POST /v1/projects/{id}/start    body {"quota":{...},"env":{...}} (optional) → status when running
//	POST /v1/projects/{id}/stop     → status when stopped
//	POST /v1/projects/{id}/restart  body as start → status when running
//	POST /v1/projects/{id}/touch    records activity → status
//	GET  /v1/projects/{id}          → status (from the cache)
//	GET  /v1/projects               → {"projects":[status...]} (from the cache)
//	GET  /healthz, /readyz, /metrics
//
// Errors are JSON {"error": "...", "status": {...}?}: 400 bad input (ID,
// JSON, unknown fields, quota), 404 unknown route, 405 wrong method, 409
// stopped while starting, 413 body too large, 429 too many operations in
// progress (Retry-After; see Options.MaxInFlight), 502 Kubernetes API
// failure, 503 shutting down or not ready, 504 operation timed out.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// MaxBodyBytes bounds request bodies (a start request is a few hundred
// bytes; the hub's extra environment can be a few KiB).
const MaxBodyBytes = 1 << 20

// Orchestrator is what the API drives: the project operations every
// front-end uses, plus readiness (implemented by *orchestrator.Orchestrator).
type Orchestrator interface {
	orchestrator.Projects
	Ready() bool
}

// ListResponse is the body of GET /v1/projects.
type ListResponse struct {
	Projects []orchestrator.ProjectStatus `json:"projects"`
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error  string                      `json:"error"`
	Status *orchestrator.ProjectStatus `json:"status,omitempty"`
}

// DefaultMaxInFlight is Options.MaxInFlight's default.
const DefaultMaxInFlight = 512

// DefaultMaxQueued is Options.MaxQueued's default.
const DefaultMaxQueued = 512

// DefaultQueueWait is Options.QueueWait's default: about as long as a full
// queue takes to drain at the chart's default client QPS (512 creates at
// 50 per second, plus the pods' own start).
const DefaultQueueWait = 30 * time.Second

// RetryAfterSeconds is the Retry-After of a 429 (Options.MaxInFlight).
const RetryAfterSeconds = 1

// Options tune the API.
type Options struct {
	// MaxInFlight bounds the start, restart and stop operations in progress
	// (default DefaultMaxInFlight; they wait until the project runs or is
	// gone). An operation in progress costs the process about 90 KB (two
	// goroutines and the connection's buffers besides the operation): a
	// burst of 5,000 concurrent starts held 264 MiB, more than the chart's
	// default memory limit, and the pod creates they wait for are paced by
	// the client QPS anyway (512 in flight is ten seconds of creates at 50
	// QPS).
	MaxInFlight int
	// MaxQueued more wait for a free slot, each at most QueueWait (defaults
	// DefaultMaxQueued, DefaultQueueWait; a negative MaxQueued is no
	// queue), before the operation starts; a waiting request costs its
	// goroutine and connection only. Beyond the queue, or after the wait,
	// the answer is 429 with Retry-After, and Client sends the request
	// again. The queue keeps a burst just above MaxInFlight from paying its
	// clients' retry backoff.
	MaxQueued int
	QueueWait time.Duration
}

// NewAPI returns the handler of the API listener: the /v1 routes and the
// health routes. Routing is ServeMux's method-and-path patterns; the
// method-less patterns behind each route answer other methods with a JSON
// 405 (ServeMux's own is plain text).
func NewAPI(o Orchestrator, metrics http.Handler, log *slog.Logger, opts Options) http.Handler {
	return newAPI(o, log, opts).routes(metrics)
}

func newAPI(o Orchestrator, log *slog.Logger, opts Options) *api {
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.MaxQueued < 0 {
		opts.MaxQueued = 0
	} else if opts.MaxQueued == 0 {
		opts.MaxQueued = DefaultMaxQueued
	}
	if opts.QueueWait <= 0 {
		opts.QueueWait = DefaultQueueWait
	}
	return &api{o: o, log: log, inflight: make(chan struct{}, opts.MaxInFlight), queued: make(chan struct{}, opts.MaxQueued), queueWait: opts.QueueWait}
}

func (a *api) routes(metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/projects", a.list)
	mux.HandleFunc("GET /v1/projects/{id}", a.status)
	mux.HandleFunc("POST /v1/projects/{id}/start", a.start)
	mux.HandleFunc("POST /v1/projects/{id}/restart", a.restart)
	mux.HandleFunc("POST /v1/projects/{id}/stop", a.stop)
	mux.HandleFunc("POST /v1/projects/{id}/touch", a.touch)
	mux.HandleFunc("/v1/projects", methodNotAllowed(http.MethodGet))
	mux.HandleFunc("/v1/projects/{id}", methodNotAllowed(http.MethodGet))
	for _, action := range []string{"start", "restart", "stop", "touch"} {
		mux.HandleFunc("/v1/projects/{id}/"+action, methodNotAllowed(http.MethodPost))
	}
	mux.HandleFunc("/v1/projects/{$}", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusBadRequest, project.ErrInvalidID.Error()+": empty", nil)
	})
	mux.HandleFunc("/v1/projects/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown action %q (start, stop, restart, touch)", r.PathValue("action")), nil)
	})
	addHealth(mux, a.o.Ready, metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path, nil)
	})
	return mux
}

// NewHealth returns the handler of the health listener (kubelet probes,
// Prometheus): only /healthz, /readyz and /metrics.
func NewHealth(ready func() bool, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	addHealth(mux, ready, metrics)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path+" (project operations are on the API listener)", nil)
	})
	return mux
}

func addHealth(mux *http.ServeMux, ready func() bool, metrics http.Handler) {
	// GET patterns also match HEAD.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready() {
			writeError(w, http.StatusServiceUnavailable, "pod cache not synced yet", nil)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("/healthz", methodNotAllowed(http.MethodGet, http.MethodHead))
	mux.HandleFunc("/readyz", methodNotAllowed(http.MethodGet, http.MethodHead))
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
}

type api struct {
	o   Orchestrator
	log *slog.Logger
	// inflight holds a token per waiting operation in progress, queued
	// one per request waiting for such a token (Options).
	inflight  chan struct{}
	queued    chan struct{}
	queueWait time.Duration
}

// admit takes an in-flight slot, waiting in the queue for one when all
// are taken; it answers 429 and returns false when the queue is full or
// the wait ends, and returns false without answering when the client went
// away.
func (a *api) admit(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	release = func() { <-a.inflight }
	select {
	case a.inflight <- struct{}{}:
		return release, true
	default:
	}
	select {
	case a.queued <- struct{}{}:
		defer func() { <-a.queued }()
	default:
		a.tooMany(w)
		return nil, false
	}
	wait := time.NewTimer(a.queueWait)
	defer wait.Stop()
	select {
	case a.inflight <- struct{}{}:
		return release, true
	case <-wait.C:
		a.tooMany(w)
		return nil, false
	case <-r.Context().Done():
		return nil, false
	}
}

func (a *api) tooMany(w http.ResponseWriter) {
	w.Header().Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%d project operations in progress and %d waiting, the most this API takes at once; retry after %d s", cap(a.inflight), cap(a.queued), RetryAfterSeconds), nil)
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	l, err := a.o.List(r.Context())
	if err != nil {
		writeError(w, StatusCode(err), err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, ListResponse{Projects: l})
}

// projectID parses the {id} path segment; on error it has answered 400.
func projectID(w http.ResponseWriter, r *http.Request) (project.ID, bool) {
	id, err := project.Parse(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return "", false
	}
	return id, true
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	st, err := a.o.Status(r.Context(), id)
	if err != nil {
		writeError(w, StatusCode(err), err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) start(w http.ResponseWriter, r *http.Request) {
	a.withRequest(w, r, "start", a.o.Start)
}

func (a *api) restart(w http.ResponseWriter, r *http.Request) {
	a.withRequest(w, r, "restart", a.o.Restart)
}

func (a *api) stop(w http.ResponseWriter, r *http.Request) {
	a.noBody(w, r, "stop", true, a.o.Stop)
}

func (a *api) touch(w http.ResponseWriter, r *http.Request) {
	a.noBody(w, r, "touch", false, a.o.Touch)
}

// withRequest runs an operation that takes a start request body.
func (a *api) withRequest(w http.ResponseWriter, r *http.Request, action string, op func(context.Context, project.ID, orchestrator.StartRequest) (orchestrator.ProjectStatus, error)) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	var req orchestrator.StartRequest
	if code, err := decodeBody(w, r, &req); err != nil {
		writeError(w, code, err.Error(), nil)
		return
	}
	release, ok := a.admit(w, r)
	if !ok {
		return
	}
	defer release()
	st, err := op(r.Context(), id, req)
	a.answer(w, action, id, st, err)
}

// noBody runs an operation whose body must be empty (or {}); waits says
// whether it waits for the cluster (and so takes an in-flight slot).
func (a *api) noBody(w http.ResponseWriter, r *http.Request, action string, waits bool, op func(context.Context, project.ID) (orchestrator.ProjectStatus, error)) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	if code, err := decodeBody(w, r, &struct{}{}); err != nil {
		writeError(w, code, err.Error(), nil)
		return
	}
	if waits {
		release, ok := a.admit(w, r)
		if !ok {
			return
		}
		defer release()
	}
	st, err := op(r.Context(), id)
	a.answer(w, action, id, st, err)
}

func (a *api) answer(w http.ResponseWriter, action string, id project.ID, st orchestrator.ProjectStatus, err error) {
	if err != nil {
		code := StatusCode(err)
		if code >= 500 {
			a.log.Warn("project operation failed", "action", action, "project", id, "code", code, "err", err)
		}
		writeError(w, code, err.Error(), &st)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// StatusCode maps an orchestrator error to an HTTP status.
func StatusCode(err error) int {
	switch {
	case orchestrator.IsInvalidInput(err):
		return http.StatusBadRequest
	case errors.Is(err, orchestrator.ErrTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, orchestrator.ErrStoppedWhileStarting):
		return http.StatusConflict
	case errors.Is(err, orchestrator.ErrShutdown), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	case apierrors.ReasonForError(err) != "" || errors.Is(err, context.DeadlineExceeded):
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

// decodeBody decodes an optional JSON body strictly: unknown fields and
// trailing data are errors, an empty body means the zero value.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) (int, error) {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", MaxBodyBytes)
		}
		return http.StatusBadRequest, fmt.Errorf("read request body: %w", err)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return 0, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", ct)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return http.StatusBadRequest, fmt.Errorf("invalid JSON body: %w", err)
	}
	if dec.More() {
		return http.StatusBadRequest, errors.New("invalid JSON body: trailing data after the object")
	}
	return 0, nil
}

// methodNotAllowed answers a known path called with another method.
func methodNotAllowed(methods ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(methods, ", ")), nil)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string, st *orchestrator.ProjectStatus) {
	if st != nil && st.ProjectID == "" {
		st = nil
	}
	writeJSON(w, code, ErrorResponse{Error: msg, Status: st})
}
