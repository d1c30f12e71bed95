package pgcontroller

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestLockSessionClaimsEachNameOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	cfg, err := pgx.ParseConfig(e.url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := newLockSession(cfg, slog.Default()), newLockSession(cfg, slog.Default())
	defer a.close()
	defer b.close()
	try := func(s *lockSession, name string) bool {
		t.Helper()
		ok, err := s.tryLock(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !try(a, "action/x") {
		t.Fatal("a free lock was not claimed")
	}
	// One session holds every lock, and database session locks are
	// reentrant: the process itself must refuse a second claim.
	if try(a, "action/x") {
		t.Error("the same name claimed twice in one process")
	}
	if try(b, "action/x") {
		t.Error("another controller claimed a held lock")
	}
	if !try(a, "action/y") || !try(a, "copy/x") {
		t.Error("other names must be independent")
	}
	a.unlock("action/x")
	if !try(b, "action/x") {
		t.Error("a released lock was not free for another controller")
	}
	// A controller that goes away frees its locks.
	a.close()
	if !try(b, "action/y") || !try(b, "copy/x") {
		t.Error("the locks of a closed session were not freed")
	}
	// Unlocking after the session ended is harmless, and the next claim
	// reconnects.
	a.unlock("action/y")
	if !try(a, "action/z") {
		t.Error("no claim after the session was re-established")
	}
}
