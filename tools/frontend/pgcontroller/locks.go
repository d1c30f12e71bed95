package pgcontroller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// lockKey namespaces advisory locks so they cannot collide with the hub's.
const lockKey = `hashtextextended('cocalc-k8s/' || $1::text, 0)`

// lockSession holds every advisory lock of the controller on one database
// session of its own. A lock is the claim on a request while it is
// performed (minutes, for a start waiting for its pod): with one pooled
// connection per lock, the pool's size bounded how many requests could be
// performed at once, and projects that never start held every connection.
// The session's end frees its locks, so a crashed controller's requests
// are taken over by the next one, as before.
//
// Session locks are reentrant within a session; held keeps a name claimed
// at most once in this process, as a session per lock did. When the
// session breaks, its locks are gone in the database; names still being
// performed stay claimed here until released, and the next lock reconnects.
type lockSession struct {
	cfg  *pgx.ConnConfig
	log  *slog.Logger
	mu   sync.Mutex
	conn *pgx.Conn
	held map[string]bool
}

func newLockSession(cfg *pgx.ConnConfig, log *slog.Logger) *lockSession {
	return &lockSession{cfg: cfg, log: log, held: map[string]bool{}}
}

// tryLock claims name; false when another session (another controller) or
// another request of this process holds it.
func (s *lockSession) tryLock(ctx context.Context, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[name] {
		return false, nil
	}
	if s.conn == nil || s.conn.IsClosed() {
		conn, err := pgx.ConnectConfig(ctx, s.cfg.Copy())
		if err != nil {
			return false, fmt.Errorf("lock session: %w", err)
		}
		s.conn = conn
	}
	var locked bool
	if err := s.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`, name).Scan(&locked); err != nil {
		s.endLocked()
		return false, fmt.Errorf("advisory lock %s: %w", name, err)
	}
	if locked {
		s.held[name] = true
	}
	return locked, nil
}

// unlock releases name. A session that cannot unlock is ended, which is
// the other way to drop its locks.
func (s *lockSession) unlock(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, name)
	if s.conn == nil {
		return // the session ended, and its locks with it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`)`, name); err != nil {
		s.log.Warn("advisory unlock failed; ending the lock session", "lock", name, "err", err)
		s.endLocked()
	}
}

func (s *lockSession) endLocked() {
	if s.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.conn.Close(ctx)
	s.conn = nil
}

// close ends the session (shutdown).
func (s *lockSession) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked()
}
