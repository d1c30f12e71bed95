// Package dbdump streams pg_dump of a database that only its own pod can
// reach (the server image's embedded PostgreSQL, on the pod's loopback) to
// the chart's scheduled backup in another pod.
//
// The server runs beside the database, in the same pod, and answers one
// request: POST /dump with the shared token as a bearer token. It runs
// pg_dump (libpq reads PGHOST, PGPORT, PGDATABASE and PGUSER from the
// environment) and streams its output as the response body. The body alone
// cannot say whether pg_dump finished: a dump that fails half way still
// ends the stream. So the outcome travels in the HTTP trailer StatusTrailer,
// sent after the last byte: "ok", or "failed: <why>". Fetch, the client,
// turns everything but "ok" into an error, so a truncated dump is never
// mistaken for a backup.
//
// One dump runs at a time; a second request is refused (409), never queued.
// A dump ends when pg_dump does, when the client goes away, or after
// MaxDuration, whichever comes first; pg_dump is killed in the last two cases.
package dbdump

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"time"
)

const (
	// DumpPath is the one route that dumps.
	DumpPath = "/dump"
	// HealthPath answers 200 while the server runs (its liveness probe).
	HealthPath = "/healthz"
	// StatusTrailer carries the dump's outcome after the body: "ok" or "failed: ...".
	StatusTrailer = "Cocalc-Dump-Status"
	// StatusOK is StatusTrailer's value for a complete dump.
	StatusOK = "ok"
	// MinTokenLength is the shortest token the server accepts (a 30-byte
	// random value, base64-encoded, is 40 characters).
	MinTokenLength = 32
	// TokenEnv is the environment variable both sides read the token from.
	TokenEnv = "COCALC_DUMP_TOKEN"
	// stderrTail is how much of pg_dump's standard error is kept for the status.
	stderrTail = 2048
	// waitDelay bounds the wait for pg_dump's pipes after it was killed.
	waitDelay = 10 * time.Second
)

// Server answers DumpPath. The zero value is not usable: use NewServer.
type Server struct {
	token       []byte
	command     []string
	env         []string
	maxDuration time.Duration
	log         *slog.Logger
	busy        sync.Mutex
}

// Config is what NewServer needs.
type Config struct {
	// Token is the shared secret. Shorter than MinTokenLength (or empty, when
	// the Secret lacks the key) makes every dump request fail with 503 and a
	// message saying so, while the server itself keeps running: it is a
	// container of the server pod, and a crashing one would take the pod
	// out of its Service.
	Token string
	// Command is pg_dump and its arguments, e.g. {"pg_dump", "--format=custom", "--no-password"}.
	Command []string
	// Env is the command's environment (libpq's PG* variables); nil inherits ours.
	Env []string
	// MaxDuration ends a dump that runs longer (pg_dump is killed).
	MaxDuration time.Duration
	// Log receives one line per request outcome.
	Log *slog.Logger
}

// NewServer checks cfg and returns the server.
func NewServer(cfg Config) (*Server, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("dbdump: no dump command")
	}
	if cfg.MaxDuration <= 0 {
		return nil, fmt.Errorf("dbdump: max duration %v must be positive", cfg.MaxDuration)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		token:       []byte(cfg.Token),
		command:     cfg.Command,
		env:         cfg.Env,
		maxDuration: cfg.MaxDuration,
		log:         log,
	}, nil
}

// TokenProblem says why the configured token cannot be used, or "" when it can.
func (s *Server) TokenProblem() string {
	switch {
	case len(s.token) == 0:
		return fmt.Sprintf("no dump token: %s is empty (its Secret lacks the key)", TokenEnv)
	case len(s.token) < MinTokenLength:
		return fmt.Sprintf("the dump token is %d characters, shorter than %d", len(s.token), MinTokenLength)
	}
	return ""
}

// Handler serves DumpPath and HealthPath.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc(DumpPath, s.dump)
	return mux
}

func (s *Server) dump(w http.ResponseWriter, r *http.Request) {
	log := s.log.With("remote", r.RemoteAddr)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if p := s.TokenProblem(); p != "" {
		log.Error("dump refused", "reason", p)
		http.Error(w, p, http.StatusServiceUnavailable)
		return
	}
	if !s.authorized(r) {
		log.Warn("dump refused: wrong or missing bearer token")
		http.Error(w, "wrong or missing bearer token", http.StatusUnauthorized)
		return
	}
	if !s.busy.TryLock() {
		log.Warn("dump refused: another dump is running")
		http.Error(w, "another dump is running", http.StatusConflict)
		return
	}
	defer s.busy.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), s.maxDuration)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.command[0], s.command[1:]...)
	cmd.Env = s.env
	cmd.WaitDelay = waitDelay
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		http.Error(w, "cannot start the dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		log.Error("dump not started", "err", err)
		http.Error(w, "cannot start the dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	log.Info("dump started", "command", s.command[0])
	w.Header().Set("Trailer", StatusTrailer)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	n, copyErr := io.Copy(w, stdout)
	if copyErr != nil {
		// The client is gone: nothing will read the rest.
		cancel()
	}
	waitErr := cmd.Wait()
	status := StatusOK
	switch {
	case copyErr != nil:
		status = "failed: sending the dump: " + copyErr.Error()
	case ctx.Err() == context.DeadlineExceeded:
		status = fmt.Sprintf("failed: the dump ran longer than %v and was stopped", s.maxDuration)
	case waitErr != nil:
		status = "failed: " + waitErr.Error()
		if tail := stderr.String(); tail != "" {
			status += ": " + tail
		}
	}
	w.Header().Set(StatusTrailer, headerValue(status))
	attrs := []any{"bytes", n, "seconds", time.Since(start).Seconds()}
	if status != StatusOK {
		log.Error("dump failed", append(attrs, "status", status)...)
		return
	}
	log.Info("dump sent", attrs...)
}

func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), s.token) == 1
}

// headerValue makes s one valid header line: control characters become
// spaces, and it is cut to 1 KiB.
func headerValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c == 0x7f {
			b[i] = ' '
		}
	}
	if len(b) > 1024 {
		b = b[:1024]
	}
	return strings.TrimSpace(string(b))
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
