package backup

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/test/pg"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/dbdump"
)

var dumpToken = strings.Repeat("0123456789abcdef", 3)

// dumpServer is `cocalc-dbdump serve` as the server pod's db-dump container
// runs it: as uid 2001, libpq's variables pointing at the database (the
// chart: hub.embeddedDatabase on loopback), the token from the environment.
type dumpServer struct {
	url string
	bin string // the directory holding cocalc-dbdump, for the backup Job's PATH
}

// buildDumpTool builds cocalc-dbdump into dir/bin (readable by uid 2001).
func buildDumpTool(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	cmd := exec.Command("go", "build", "-o", filepath.Join(bin, "cocalc-dbdump"), "gitlab.com/resurgo/cocalc-kubernetes/tools/cmd/cocalc-dbdump")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func startDumpServer(t *testing.T, bin string, pgPort int, pgUser string) dumpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "cocalc-dbdump"), "serve", "-listen="+addr)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/tmp", dbdump.TokenEnv + "=" + dumpToken,
		"PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", pgPort), "PGDATABASE=" + database, "PGUSER=" + pgUser}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: projectUID, Gid: projectUID}}
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		t.Logf("cocalc-dbdump serve log:\n%s", log)
	})
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, time.Minute, 20*time.Millisecond, "cocalc-dbdump serve did not listen")
	return dumpServer{url: "http://" + addr + dbdump.DumpPath, bin: bin}
}

// jobEnv is what the database CronJob sets for postgresql.mode embedded: the
// dump server and its token, and PGDATABASE for the snapshot's file name.
// PGHOST/PGPORT point nowhere: the Job cannot reach the embedded database
// itself, and the test proves it does not need to.
func (d dumpServer) jobEnv(token string) []string {
	return []string{"DUMP_URL=" + d.url, dbdump.TokenEnv + "=" + token,
		"PATH=" + d.bin + ":" + os.Getenv("PATH"), "PGHOST=127.0.0.1", "PGPORT=1", "PGPASSWORD="}
}

// The embedded database's backup: backup.sh fetches the dump from
// cocalc-dbdump serve (the server pod's side) instead of running pg_dump,
// and the documented restore brings every row back.
func TestEmbeddedDatabaseBackupRestore(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, conn := startFilledDatabase(ctx, t)
	e := newEnv(t, s)
	d := startDumpServer(t, buildDumpTool(t, e.base), s.Port(), "postgres")
	rowsBefore := dumpRows(ctx, t, conn)

	start := time.Now()
	code, out := e.backup("database", 7, d.jobEnv(dumpToken)...)
	require.Equal(t, 0, code, out)
	t.Logf("backup through the dump server: %v, repository %.1f MiB", time.Since(start).Round(time.Millisecond), float64(e.repoSize())/(1<<20))
	require.Len(t, e.snapshots("database"), 1)

	_, err := conn.Exec(ctx, `DROP TABLE projects; UPDATE public_paths SET disabled = NOT disabled`)
	require.NoError(t, err)
	require.NotEqual(t, rowsBefore, dumpRows(ctx, t, conn), "the destruction changed nothing")
	e.shell(`restic dump --host ` + backupHost + ` --tag database latest /$PGDATABASE.dump | pg_restore --clean --if-exists --no-owner --single-transaction --dbname "$PGDATABASE"`)
	assert.Equal(t, rowsBefore, dumpRows(ctx, t, conn), "database rows after the restore")
}

// Failures on the server's side reach the Job: a wrong token and a pg_dump
// that fails half way both fail the run, with the reason in its log, and
// leave no snapshot that retention would count as good.
func TestEmbeddedDatabaseFailuresLeaveNoSnapshot(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := pg.Start(t)
	url := s.CreateDatabase(ctx, database)
	e := newEnv(t, s)
	bin := buildDumpTool(t, e.base)
	good := startDumpServer(t, bin, s.Port(), "postgres")
	code, out := e.backup("database", 7, good.jobEnv(dumpToken)...)
	require.Equal(t, 0, code, out)

	code, out = e.backup("database", 7, good.jobEnv(strings.Repeat("x", len(dumpToken)))...)
	require.NotEqual(t, 0, code, "a refused dump must fail the run:\n%s", out)
	assert.Contains(t, out, "401")
	assert.Len(t, e.snapshots("database"), 1, "only the good snapshot remains:\n%s", out)

	// pg_dump stops at a table under row-level security after the archive's
	// header went out (as in TestFailedDumpLeavesNoSnapshot), on the server's side.
	addPartialDumpUser(ctx, t, url)
	partial := startDumpServer(t, bin, s.Port(), partialDumpUser)
	code, out = e.backup("database", 7, partial.jobEnv(dumpToken)...)
	require.NotEqual(t, 0, code, "a failed pg_dump must fail the run:\n%s", out)
	assert.Contains(t, out, "row-level security", "pg_dump's message reaches the Job's log")
	assert.Regexp(t, `pg_dump failed \(exit 1\); its incomplete snapshot [0-9a-f]{8,} was removed`, out, "restic had stored the truncated dump")
	assert.Len(t, e.snapshots("database"), 1, "only the good snapshot remains:\n%s", out)
}
