package images

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Where tools/images/server/Dockerfile installs the embedded database's
// files; the wrapper and the Dockerfile must agree on them.
const (
	serverPostgresBin = "/usr/lib/postgresql/10/bin/postgres"
	serverHBAFile     = "/etc/cocalc-k8s/pg_hba.conf"
)

// The server Dockerfile wraps the postgres binary the upstream start script
// runs, refuses to build when that script starts it another way, and installs
// the image's pg_hba.conf where the wrapper points.
func TestServerDockerfilePostgresHook(t *testing.T) {
	d := parseDockerfile(t, "server")
	copies := map[string][]string{} // destination -> source, flags
	for _, in := range d.Stages[1].Instructions {
		if in.Cmd == "copy" && len(in.Args) == 2 {
			copies[in.Args[1]] = append([]string{in.Args[0]}, in.Flags...)
		}
	}
	assert.Equal(t, []string{"postgres-loopback", "--chmod=0755"}, copies[serverPostgresBin+".cocalc-k8s"])
	assert.Equal(t, []string{"pg_hba.conf", "--chmod=0644"}, copies[serverHBAFile])

	wrapper, err := os.ReadFile(filepath.Join(repoRoot, "tools", "images", "server", "postgres-loopback"))
	require.NoError(t, err)
	assert.Contains(t, string(wrapper), "hba_file="+serverHBAFile)

	// The RUN that installs the wrapper first checks the hook point in run.py
	// (the upstream start script's exact postgres command and its
	// socket-only setting), then swaps the binaries and runs the result.
	var hook string
	for _, r := range d.instructions(1, "run") {
		if s := strings.Join(r, " "); strings.Contains(s, "postgres.cocalc-k8s") {
			hook = s
		}
	}
	require.NotEmpty(t, hook, "a RUN installs the postgres wrapper")
	steps := []string{
		`grep -qF "sudo -u sage ` + serverPostgresBin + ` -D '%s' > /var/log/postgres.log" /root/run.py`,
		`grep -qF "listen_addresses=''" /root/run.py`,
		"mv postgres postgres.real",
		"mv postgres.cocalc-k8s postgres",
		"./postgres -V",
	}
	at := 0
	for _, s := range steps {
		i := strings.Index(hook[at:], s)
		require.GreaterOrEqual(t, i, 0, "%q after the previous steps in %q", s, hook)
		at += i + len(s)
	}
	assert.NotContains(t, hook, "||", "every check fails the build")
	assert.NotContains(t, hook, ";", "every check fails the build")
}

// The wrapper and pg_hba.conf, run with a local PostgreSQL on a data
// directory set up as the upstream run.py sets it up on first boot
// (pg_hba.conf "local all all trust"; an empty listen_addresses and a socket
// directory appended to postgresql.conf; the initdb superuser plus smc):
// the orchestrator's connection (chart default: 127.0.0.1, user and
// database smc, no password) is accepted over TCP, nothing else is, and the
// hub's socket still works.
func TestServerPostgresLoopback(t *testing.T) {
	pgBin := localPostgres(t)
	var cred *syscall.Credential
	if os.Getuid() == 0 { // postgres refuses root
		u, err := user.Lookup("nobody")
		require.NoError(t, err)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	}
	// Not t.TempDir: its parent is 0700 and the server user must reach it.
	base, err := os.MkdirTemp("", "server-pg-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))

	// The image's files as the Dockerfile installs them, but in base: the
	// wrapper next to the real binary, its hba_file pointed at the copy.
	src := filepath.Join(repoRoot, "tools", "images", "server")
	wrapper, err := os.ReadFile(filepath.Join(src, "postgres-loopback"))
	require.NoError(t, err)
	hba := filepath.Join(base, "pg_hba.conf")
	hbaData, err := os.ReadFile(filepath.Join(src, "pg_hba.conf"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(hba, hbaData, 0o644))
	binDir := filepath.Join(base, "bin")
	require.NoError(t, os.Mkdir(binDir, 0o755))
	require.NoError(t, os.Symlink(filepath.Join(pgBin, "postgres"), filepath.Join(binDir, "postgres.real")))
	postgres := filepath.Join(binDir, "postgres")
	require.NoError(t, os.WriteFile(postgres, []byte(strings.ReplaceAll(string(wrapper), serverHBAFile, hba)), 0o755))

	version, err := exec.Command(postgres, "-V").CombinedOutput()
	require.NoError(t, err, "%s", version)
	assert.Contains(t, string(version), "(PostgreSQL)", "other calls pass through (the Dockerfile's build check)")

	// First boot as run.py does it. The port is this test's only addition
	// (a free one instead of 5432); the wrapper does not touch it.
	owned := filepath.Join(base, "data")
	require.NoError(t, os.Mkdir(owned, 0o700))
	if cred != nil {
		require.NoError(t, os.Chown(owned, int(cred.Uid), int(cred.Gid)))
	}
	pgdata := filepath.Join(owned, "pgdata")
	socket := filepath.Join(pgdata, "socket")
	initdb := exec.Command(filepath.Join(pgBin, "initdb"), "-D", pgdata, "-U", "sage", "--no-sync")
	initdb.Dir = base
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := initdb.CombinedOutput()
	require.NoError(t, err, "initdb: %s", out)
	require.NoError(t, os.WriteFile(filepath.Join(pgdata, "pg_hba.conf"), []byte("local all all trust"), 0o600))
	port := freeLoopbackPort(t)
	conf, err := os.OpenFile(filepath.Join(pgdata, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fmt.Fprintf(conf, "\nunix_socket_directories = '%s'\nlisten_addresses=''\nport=%d\n", socket, port)
	require.NoError(t, err)
	require.NoError(t, conf.Close())
	require.NoError(t, os.Mkdir(socket, 0o700))
	if cred != nil {
		require.NoError(t, os.Chown(socket, int(cred.Uid), int(cred.Gid)))
	}

	logPath := filepath.Join(base, "postgres.log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(postgres, "-D", pgdata) // run.py's call
	cmd.Dir = base
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("postgres log:\n%s", b)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	viaSocket := fmt.Sprintf("host=%s port=%d user=sage dbname=postgres", socket, port)
	var admin *pgx.Conn
	for admin == nil {
		admin, err = pgx.Connect(ctx, viaSocket)
		if err != nil {
			select {
			case <-done:
				t.Fatalf("postgres exited: %v", err)
			case <-ctx.Done():
				t.Fatalf("postgres did not answer on its socket: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	defer admin.Close(ctx)
	// run.py's createuser -sE smc; the hub creates its database.
	_, err = admin.Exec(ctx, "CREATE ROLE smc SUPERUSER LOGIN")
	require.NoError(t, err)
	_, err = admin.Exec(ctx, "CREATE DATABASE smc OWNER smc")
	require.NoError(t, err)

	tcp := func(user, db string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", port, user, db)
	}
	conn, err := pgx.Connect(ctx, tcp("smc", "smc"))
	require.NoError(t, err, "the orchestrator's connection")
	var listen string
	require.NoError(t, conn.QueryRow(ctx, "SHOW listen_addresses").Scan(&listen))
	assert.Equal(t, "127.0.0.1", listen, "loopback only, whatever postgresql.conf says")
	require.NoError(t, conn.Close(ctx))

	for _, c := range [][2]string{{"sage", "smc"}, {"smc", "postgres"}, {"sage", "postgres"}} {
		conn, err := pgx.Connect(ctx, tcp(c[0], c[1]))
		if err == nil {
			conn.Close(ctx)
		}
		assert.ErrorContains(t, err, "no pg_hba.conf entry", "user %s, database %s over TCP", c[0], c[1])
	}
	var one int
	require.NoError(t, admin.QueryRow(ctx, "SELECT 1").Scan(&one), "the hub's socket still trusts local users")
}

// localPostgres returns a directory with initdb and postgres (the newest
// Debian postgresql package, or PATH), or skips.
func localPostgres(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		return dir
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	if len(matches) > 0 {
		return filepath.Dir(matches[0])
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	t.Skip("no PostgreSQL server binaries (initdb, postgres): run `make deps` to install Debian's postgresql package")
	return ""
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
