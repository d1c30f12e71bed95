package pgcontroller

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
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
	// A controller that goes away frees its locks. The server frees them
	// when the session's backend exits, a moment after the client closed
	// its connection.
	a.close()
	for _, name := range []string{"action/y", "copy/x"} {
		testwait.Eventually(t, "the closed session's lock "+name+" to be free",
			func() bool { return try(b, name) })
	}
	// Unlocking after the session ended is harmless, and the next claim
	// reconnects.
	a.unlock("action/y")
	if !try(a, "action/z") {
		t.Error("no claim after the session was re-established")
	}
}
