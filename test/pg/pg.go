// Package pg starts throwaway PostgreSQL servers for tests: a fresh cluster
// (initdb) in a temporary directory, listening on a free loopback port only,
// with trust authentication for the superuser "postgres".
//
// The server binaries come from Debian's postgresql package (installed by
// `make deps`). When the test runs as root, initdb and postgres (which refuse
// to run as root) run as the unprivileged user "nobody". The postmaster is a
// direct child started with a parent-death signal and is stopped by the
// test's cleanup, so no server outlives its test.
package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one running (or stopped) test cluster.
type Server struct {
	fatalf  func(string, ...any)
	bin     string
	base    string
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logf *os.File
}

// Start creates and starts a cluster; it is stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := create(t.Fatalf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("postgres log:\n%s", s.logTail())
		}
	})
	s.Restart()
	return s
}

// StartMain is Start for TestMain, where no testing.TB exists: the caller
// must call Close. Failures after startup panic.
func StartMain() (*Server, error) {
	s, err := create(func(format string, a ...any) { panic(fmt.Sprintf(format, a...)) })
	if err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		s.Close()
		return nil, fmt.Errorf("%w\npostgres log:\n%s", err, s.logTail())
	}
	return s, nil
}

// Main is a TestMain that shares one server between a package's tests: it
// sets *shared, runs the tests, stops the server and exits. A server that
// cannot start fails the package (never a skip: CI installs PostgreSQL, and
// a missing server must be noticed rather than turn the suite green); what
// names the package in that message.
//
// Usage: func TestMain(m *testing.M) { pg.Main(m, "pgcontroller", &shared) }
func Main(m *testing.M, what string, shared **Server) {
	s, err := StartMain()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests need PostgreSQL: %v\n", what, err)
		os.Exit(1)
	}
	*shared = s
	code := m.Run()
	s.Close()
	os.Exit(code)
}

func create(fatalf func(string, ...any)) (*Server, error) {
	bin, err := findBin()
	if err != nil {
		return nil, fmt.Errorf("%v: run `make deps` to install Debian's postgresql package", err)
	}
	s := &Server{fatalf: fatalf, bin: bin}
	if os.Getuid() == 0 {
		s.cred, err = nobody()
		if err != nil {
			return nil, fmt.Errorf("running as root needs an unprivileged user for postgres: %w", err)
		}
	}
	// Not t.TempDir: its parent is 0700, and the server user must reach
	// its data directory.
	s.base, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	if err := s.init(); err != nil {
		_ = os.RemoveAll(s.base)
		return nil, err
	}
	return s, nil
}

func (s *Server) init() error {
	if err := os.Chmod(s.base, 0o755); err != nil {
		return err
	}
	s.dataDir = filepath.Join(s.base, "data")
	if err := os.Mkdir(s.dataDir, 0o700); err != nil {
		return err
	}
	if s.cred != nil {
		if err := os.Chown(s.dataDir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return err
		}
	}
	initdb := exec.Command(filepath.Join(s.bin, "initdb"), "-D", s.dataDir, "-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	initdb.Dir = s.base
	if out, err := initdb.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %v\n%s", err, out)
	}
	var err error
	if s.port, err = freePort(); err != nil {
		return err
	}
	s.logPath = filepath.Join(s.base, "postgres.log")
	s.logf, err = os.Create(s.logPath)
	return err
}

// Close stops the server and removes its files.
func (s *Server) Close() {
	s.Stop()
	if s.logf != nil {
		s.logf.Close()
	}
	_ = os.RemoveAll(s.base)
}

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), 4000)
}

// ConnString returns a libpq URL for database db ("postgres" if empty).
func (s *Server) ConnString(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// Port is the loopback TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// Restart starts the server (again) on the same port and data directory and
// waits until it accepts connections.
func (s *Server) Restart() {
	if err := s.start(); err != nil {
		s.fatalf("%v", err)
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"),
		"-D", s.dataDir, "-p", strconv.Itoa(s.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+s.dataDir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=16MB",
	)
	cmd.Dir = s.dataDir
	cmd.Stdout, cmd.Stderr = s.logf, s.logf
	// SIGQUIT is postgres' immediate shutdown: if the test binary dies,
	// the server and its backends go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err == nil {
			c.Close()
			// Accepting TCP is not yet accepting queries during
			// recovery; the status line of postmaster.pid is.
			if s.ready() {
				return nil
			}
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("postgres exited during startup:\n%s", s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections on port %d within 30s", s.port)
		}
	}
}

func (s *Server) ready() bool {
	b, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	// Line 8 of postmaster.pid is the status ("ready" once it accepts).
	return len(lines) >= 8 && strings.TrimSpace(lines[7]) == "ready"
}

// Stop shuts the server down (fast mode: connections are closed) and waits
// for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		// Kill the whole process group (postmaster and backends).
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
}

// CreateDatabase creates a fresh database and returns its connection
// string; tests that share a server use one database each.
func (s *Server) CreateDatabase(ctx context.Context, name string) string {
	conn, err := pgx.Connect(ctx, s.ConnString(""))
	if err != nil {
		s.fatalf("connect to test server: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+quoteIdent(name)); err != nil {
		s.fatalf("create database %s: %v", name, err)
	}
	return s.ConnString(name)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// findBin returns the newest /usr/lib/postgresql/<v>/bin with initdb and
// postgres (Debian does not put them on PATH).
func findBin() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err != nil {
			return "", fmt.Errorf("PG_BINDIR=%s has no initdb: %w", dir, err)
		}
		return dir, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(matches, func(i, j int) bool { return version(matches[i]) > version(matches[j]) })
	for _, m := range matches {
		dir := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or PATH")
}

func version(p string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return v
}

func nobody() (*syscall.Credential, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
