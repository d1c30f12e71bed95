package homedir

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

var pid = project.MustParse("7b3a4b32-8f0e-4c1a-9d2e-0123456789ab")

// owner is 2001 when the test runs as root (as the orchestrator does),
// else the test user (chown to another uid needs CAP_CHOWN).
func maker(t *testing.T) Maker {
	t.Helper()
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 2001, 2001
	}
	return Maker{Root: t.TempDir(), UID: uid, GID: gid}
}

func owner(t *testing.T, p string) (int, int, os.FileMode) {
	t.Helper()
	info, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := info.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), info.Mode()
}

func TestEnsureCreatesOwnedPrivateHome(t *testing.T) {
	m := maker(t)
	home, err := m.Ensure(pid)
	if err != nil {
		t.Fatal(err)
	}
	if home != filepath.Join(m.Root, pid.String()) {
		t.Fatalf("home = %s", home)
	}
	uid, gid, mode := owner(t, home)
	if uid != m.UID || gid != m.GID || mode != os.ModeDir|0o700 {
		t.Fatalf("home owned %d:%d mode %v, want %d:%d drwx------", uid, gid, mode, m.UID, m.GID)
	}
	// Idempotent, and content is left alone.
	if err := os.WriteFile(filepath.Join(home, "notebook.ipynb"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(pid); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, "notebook.ipynb")); err != nil {
		t.Fatal("existing content lost")
	}
}

func TestEnsureFixesOwnershipOfExistingHome(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	m := maker(t)
	home := filepath.Join(m.Root, pid.String())
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(pid); err != nil {
		t.Fatal(err)
	}
	if uid, gid, _ := owner(t, home); uid != 2001 || gid != 2001 {
		t.Fatalf("owner %d:%d after Ensure", uid, gid)
	}
}

func TestEnsureRefusesSymlinkedHome(t *testing.T) {
	m := maker(t)
	victim := t.TempDir()
	if err := os.Symlink(victim, filepath.Join(m.Root, pid.String())); err != nil {
		t.Fatal(err)
	}
	before, _, _ := owner(t, victim)
	_, err := m.Ensure(pid)
	if !errors.Is(err, ErrUnsafeHome) {
		t.Fatalf("symlinked home: err = %v, want ErrUnsafeHome", err)
	}
	if after, _, _ := owner(t, victim); after != before {
		t.Fatal("symlink target was chowned")
	}
}

func TestEnsureRefusesFileInPlaceOfHome(t *testing.T) {
	m := maker(t)
	if err := os.WriteFile(filepath.Join(m.Root, pid.String()), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(pid); !errors.Is(err, ErrUnsafeHome) {
		t.Fatalf("file as home: err = %v", err)
	}
}

func TestEnsureRefusesBadIDs(t *testing.T) {
	m := maker(t)
	for _, bad := range []project.ID{"", "..", "../escape", "a/b", project.ID("7B3A4B32-8F0E-4C1A-9D2E-0123456789AB")} {
		if _, err := m.Ensure(bad); !errors.Is(err, project.ErrInvalidID) {
			t.Errorf("Ensure(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
	entries, _ := os.ReadDir(m.Root)
	if len(entries) != 0 || func() bool { _, err := os.Stat(filepath.Join(filepath.Dir(m.Root), "escape")); return err == nil }() {
		t.Fatal("a bad ID created something")
	}
}

func TestEnsureNeedsRoot(t *testing.T) {
	m := maker(t)
	m.Root = filepath.Join(m.Root, "not-mounted")
	if _, err := m.Ensure(pid); err == nil {
		t.Fatal("missing root silently created")
	}
}
