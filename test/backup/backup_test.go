// Package backup proves the chart's backups restore: it runs the chart's own
// script (charts/cocalc/files/backup.sh) with the environment its CronJobs
// set, as the project uid like they do, against a real PostgreSQL (test/pg)
// and a tree of project homes, destroys both, runs the restore commands of
// docs/backup.md and compares database rows and files (content, type, mode,
// owner, modification time, symlink target).
//
// The tools come from Debian (ci/install-deps.sh: restic, postgresql); the
// test skips, naming what is missing, without them. Creating files of several
// owners and running the backup as uid 2001 needs root.
package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/test/pg"
)

const (
	// The CronJobs' uid and gid (projects.security.runAsUser/runAsGroup):
	// every project home belongs to it.
	projectUID = 2001
	// BACKUP_HOST as the chart sets it (the release's fullname).
	backupHost = "cocalc"
	password   = "correct horse battery staple"
	database   = "smc"
)

var (
	script = filepath.Join("..", "..", "charts", "cocalc", "files", "backup.sh")
	schema = filepath.Join("..", "..", "tools", "frontend", "pgcontroller", "testdata", "schema.sql")
)

// env is one setup: a repository, a database and a homes tree.
type env struct {
	t      *testing.T
	base   string // 0755, reachable by uid 2001
	repo   string
	homes  string // the homes root, as the CronJob's HOMES_PATH
	pgPort int
}

func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"restic", "pg_dump", "pg_restore", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found on PATH (%v): run `make deps` (Debian packages restic and postgresql)", tool, err)
		}
	}
	if os.Getuid() != 0 {
		t.Skip("needs root: the homes carry files of several owners, and the backup runs as uid 2001 like the CronJob")
	}
}

func newEnv(t *testing.T, s *pg.Server) *env {
	t.Helper()
	base, err := os.MkdirTemp("", "backup-test-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	e := &env{t: t, base: base, repo: filepath.Join(base, "repo"), homes: filepath.Join(base, "projects", "home"), pgPort: s.Port()}
	// The backup claim: writable by the project gid (the CronJobs' fsGroup).
	require.NoError(t, os.Mkdir(e.repo, 0o700))
	require.NoError(t, os.Chown(e.repo, 0, projectUID))
	require.NoError(t, os.Chmod(e.repo, 0o775|fs.ModeSetgid))
	require.NoError(t, os.MkdirAll(e.homes, 0o755))
	require.NoError(t, os.Chown(e.homes, projectUID, projectUID))
	for _, d := range []string{"cache-db", "cache-homes", "cache-restore"} {
		require.NoError(t, os.Mkdir(filepath.Join(base, d), 0o700))
		require.NoError(t, os.Chown(filepath.Join(base, d), projectUID, projectUID))
	}
	return e
}

// cronJobEnv is the environment a CronJob of templates/backup gives backup.sh.
func (e *env) cronJobEnv(what string, keepLast int) []string {
	v := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.base,
		"RESTIC_REPOSITORY=" + e.repo,
		"RESTIC_PASSWORD=" + password,
		"RESTIC_CACHE_DIR=" + filepath.Join(e.base, "cache-"+map[string]string{"database": "db", "homes": "homes"}[what]),
		"BACKUP_HOST=" + backupHost,
		fmt.Sprintf("KEEP_LAST=%d", keepLast),
		"KEEP_DAILY=0", "KEEP_WEEKLY=0", "KEEP_MONTHLY=0",
	}
	if what == "database" {
		v = append(v, "PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", e.pgPort), "PGDATABASE="+database,
			"PGUSER=postgres", "PGPASSWORD=unused-trust-auth")
	} else {
		v = append(v, "HOMES_PATH="+e.homes)
	}
	return v
}

// backup runs the chart's script as uid 2001 and returns its exit code and output.
func (e *env) backup(what string, keepLast int, extraEnv ...string) (int, string) {
	e.t.Helper()
	cmd := exec.Command("bash", script, what)
	abs, err := filepath.Abs(script)
	require.NoError(e.t, err)
	cmd.Args[1] = abs
	cmd.Dir = e.base
	cmd.Env = append(e.cronJobEnv(what, keepLast), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: projectUID, Gid: projectUID}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		e.t.Fatalf("run backup.sh %s: %v", what, err)
	}
	return 0, string(out)
}

// shell runs one documented restore command line (as root, like the restore
// pod of docs/backup.md, so files of other owners get their owners back).
func (e *env) shell(line string) string {
	e.t.Helper()
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", line)
	cmd.Dir = e.base
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.base, "RESTIC_REPOSITORY=" + e.repo,
		"RESTIC_PASSWORD=" + password, "RESTIC_CACHE_DIR=" + filepath.Join(e.base, "cache-restore"),
		"PGHOST=127.0.0.1", fmt.Sprintf("PGPORT=%d", e.pgPort), "PGDATABASE=" + database, "PGUSER=postgres"}
	out, err := cmd.CombinedOutput()
	require.NoError(e.t, err, "%s\n%s", line, out)
	return string(out)
}

type snapshot struct {
	ID   string   `json:"id"`
	Tags []string `json:"tags"`
	Host string   `json:"hostname"`
}

func (e *env) snapshots(tag string) []snapshot {
	e.t.Helper()
	var s []snapshot
	require.NoError(e.t, json.Unmarshal([]byte(e.shell("restic snapshots --json --tag "+tag)), &s))
	return s
}

func (e *env) repoSize() int64 {
	var n int64
	require.NoError(e.t, filepath.WalkDir(e.repo, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	}))
	return n
}

func TestBackupRestore(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, conn := startFilledDatabase(ctx, t)
	e := newEnv(t, s)
	fillHomes(t, e.homes, 40)

	rowsBefore := dumpRows(ctx, t, conn)
	filesBefore := listTree(t, e.homes)

	// Back up, twice: the second run measures an incremental backup.
	timed := func(name string, f func()) time.Duration {
		start := time.Now()
		f()
		d := time.Since(start)
		t.Logf("%-28s %v", name, d.Round(time.Millisecond))
		return d
	}
	for _, what := range []string{"database", "homes"} {
		timed("first backup "+what, func() {
			code, out := e.backup(what, 7)
			require.Equal(t, 0, code, out)
		})
		t.Logf("repository after %-8s %.1f MiB", what, float64(e.repoSize())/(1<<20))
	}
	homeBytes := treeBytes(filesBefore)
	t.Logf("data: %d projects rows, homes %d entries %.1f MiB", len(rowsBefore["projects"]), len(filesBefore), float64(homeBytes)/(1<<20))
	sizeFirst := e.repoSize()
	// One changed file between runs, as on a normal night.
	changed := filepath.Join(e.homes, projectIDs[0], "notes.md")
	require.NoError(t, os.WriteFile(changed, []byte("edited after the first backup\n"), 0o644))
	require.NoError(t, os.Chown(changed, projectUID, projectUID))
	filesBefore = listTree(t, e.homes)
	timed("second backup homes", func() {
		code, out := e.backup("homes", 7)
		require.Equal(t, 0, code, out)
	})
	timed("second backup database", func() {
		code, out := e.backup("database", 7)
		require.Equal(t, 0, code, out)
	})
	t.Logf("repository after 2 runs     %.1f MiB (+%.2f MiB for the second)", float64(e.repoSize())/(1<<20), float64(e.repoSize()-sizeFirst)/(1<<20))

	for _, tag := range []string{"database", "homes"} {
		snaps := e.snapshots(tag)
		require.Len(t, snaps, 2, "snapshots tagged %s", tag)
		for _, sn := range snaps {
			assert.Equal(t, backupHost, sn.Host, "snapshots carry BACKUP_HOST, not the pod's host name")
		}
	}

	// Destroy: tables dropped or altered, every home removed.
	_, err := conn.Exec(ctx, `DROP TABLE projects; DELETE FROM copy_paths WHERE time < now() - interval '1 day'; UPDATE public_paths SET disabled = NOT disabled`)
	require.NoError(t, err)
	// The claim survives, its contents do not.
	homes, err := os.ReadDir(e.homes)
	require.NoError(t, err)
	for _, h := range homes {
		require.NoError(t, os.RemoveAll(filepath.Join(e.homes, h.Name())))
	}
	require.NotEqual(t, rowsBefore, dumpRows(ctx, t, conn), "the destruction changed nothing")

	// Restore, by the commands of docs/backup.md.
	timed("restore database", func() {
		e.shell(`restic dump --host ` + backupHost + ` --tag database latest /$PGDATABASE.dump | pg_restore --clean --if-exists --no-owner --single-transaction --dbname "$PGDATABASE"`)
	})
	timed("restore homes", func() {
		e.shell(`restic restore latest --host ` + backupHost + ` --tag homes --target ` + e.homes)
	})

	assert.Equal(t, rowsBefore, dumpRows(ctx, t, conn), "database rows after the restore")
	filesAfter := listTree(t, e.homes)
	assert.Equal(t, filesBefore, filesAfter, "homes after the restore")
}

// A pg_dump that fails leaves no snapshot behind (retention would count it
// as a good one), and the run fails.
func TestFailedDumpLeavesNoSnapshot(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := pg.Start(t)
	url := s.CreateDatabase(ctx, database)
	e := newEnv(t, s)
	code, out := e.backup("database", 7)
	require.Equal(t, 0, code, out)

	// Fails before writing anything: restic stores no empty snapshot.
	code, out = e.backup("database", 7, "PGDATABASE=no_such_database")
	require.NotEqual(t, 0, code, "a failed pg_dump must fail the run:\n%s", out)
	assert.Contains(t, out, "pg_dump failed")
	assert.Len(t, e.snapshots("database"), 1, "only the good snapshot remains:\n%s", out)

	// Fails in the middle of its output: a table under row-level security
	// that the dumping user may read only in part makes pg_dump stop at its
	// data, after the archive's header and table of contents went out; restic
	// would keep that truncated dump as the newest snapshot.
	addPartialDumpUser(ctx, t, url)
	code, out = e.backup("database", 7, "PGUSER="+partialDumpUser)
	require.NotEqual(t, 0, code, "a failed pg_dump must fail the run:\n%s", out)
	assert.Contains(t, out, "row-level security", "pg_dump failed where intended")
	assert.Regexp(t, `pg_dump failed \(exit 1\); its incomplete snapshot [0-9a-f]{8,} was removed`, out, "restic had stored the truncated dump")
	assert.Len(t, e.snapshots("database"), 1, "only the good snapshot remains:\n%s", out)

	// A wrong repository password never re-initialises the repository.
	code, out = e.backup("database", 7, "RESTIC_PASSWORD=wrong")
	require.NotEqual(t, 0, code, out)
	assert.Len(t, e.snapshots("database"), 1)
}

// Retention: KEEP_LAST=2 keeps two snapshots of each kind, whatever the
// other kind holds, across runs (BACKUP_HOST groups them).
func TestRetention(t *testing.T) {
	requireTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := pg.Start(t)
	s.CreateDatabase(ctx, database)
	e := newEnv(t, s)
	require.NoError(t, os.WriteFile(filepath.Join(e.homes, "f"), []byte("x"), 0o644))
	for i := range 3 {
		require.NoError(t, os.WriteFile(filepath.Join(e.homes, "f"), []byte(fmt.Sprint(i)), 0o644))
		code, out := e.backup("homes", 2)
		require.Equal(t, 0, code, out)
	}
	code, out := e.backup("database", 2)
	require.Equal(t, 0, code, out)
	assert.Len(t, e.snapshots("homes"), 2, "KEEP_LAST=2 after 3 homes runs")
	assert.Len(t, e.snapshots("database"), 1, "homes retention must not touch database snapshots")
	// The newest homes snapshot is the last run's.
	assert.Equal(t, "2", e.shell(`restic dump --host `+backupHost+` --tag homes latest /f`))
}

// startFilledDatabase starts a PostgreSQL with the hub's schema and 20,000
// projects rows plus the other tables' (fillDatabase) in the database
// "smc", and a connection to it closed when the test ends.
func startFilledDatabase(ctx context.Context, t *testing.T) (*pg.Server, *pgx.Conn) {
	t.Helper()
	s := pg.Start(t)
	conn, err := pgx.Connect(ctx, s.CreateDatabase(ctx, database))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	fillDatabase(ctx, t, conn, 20000)
	return s, conn
}

// partialDumpUser is the role addPartialDumpUser makes: pg_dump as it fails
// in the middle of its output.
const partialDumpUser = "dumper"

// addPartialDumpUser makes pg_dump as partialDumpUser stop at a table under
// row-level security that it may read only in part, after the archive's
// header, table of contents and a first table's rows went out.
func addPartialDumpUser(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE ROLE `+partialDumpUser+` LOGIN;
CREATE TABLE a_plain (id int); INSERT INTO a_plain SELECT generate_series(1, 50000);
CREATE TABLE z_guarded (id int, owner text); INSERT INTO z_guarded VALUES (1, 'someone');
ALTER TABLE z_guarded ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON z_guarded USING (owner = current_user);
GRANT SELECT ON a_plain, z_guarded TO `+partialDumpUser)
	require.NoError(t, err)
}

var projectIDs = []string{
	"1f0e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
	"2a3b4c5d-6e7f-4a8b-9cad-becfd0e1f2a3",
	"3c4d5e6f-7a8b-4c9d-8eaf-b0c1d2e3f4a5",
}

func fillDatabase(ctx context.Context, t *testing.T, conn *pgx.Conn, rows int) {
	t.Helper()
	sql, err := os.ReadFile(schema)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, string(sql))
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `
INSERT INTO projects (project_id, title, users, settings, state, run_quota, last_edited, deleted, env, secret_token)
SELECT md5(i::text)::uuid, 'project ' || i || E' \u00e9\t''quoted''',
       jsonb_build_object(md5((i+1)::text)::uuid, '{"group":"owner"}'::jsonb),
       '{"cores":1,"memory":1000}', jsonb_build_object('state', 'opened', 'time', '2026-11-30T10:00:00.123Z'),
       '{"network":false}', timestamp '2026-01-01' + i * interval '1 minute', i % 17 = 0,
       CASE WHEN i % 3 = 0 THEN NULL ELSE '{"A":"b"}'::jsonb END, repeat(md5(i::text), 4)
FROM generate_series(1, $1) AS i`, rows)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `
INSERT INTO copy_paths (id, time, source_project_id, source_path, target_project_id, exclude, scheduled)
SELECT md5('c' || i)::uuid, now() - i * interval '1 hour', md5(i::text)::uuid, 'src/' || i, md5((i+2)::text)::uuid,
       ARRAY['*.tmp', 'x y'], NULL FROM generate_series(1, 200) AS i;
INSERT INTO public_paths (id, project_id, path, disabled, created)
SELECT encode(sha256(i::text::bytea), 'hex')::char(40), md5(i::text)::uuid, 'pub/' || i, i % 2 = 0, now()
FROM generate_series(1, 100) AS i`)
	require.NoError(t, err)
}

// dumpRows returns every row of the three tables as JSON text, in key order.
func dumpRows(ctx context.Context, t *testing.T, conn *pgx.Conn) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for table, key := range map[string]string{"projects": "project_id", "copy_paths": "id", "public_paths": "id"} {
		var exists bool
		require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists))
		if !exists {
			out[table] = nil
			continue
		}
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT to_jsonb(t)::text FROM %s t ORDER BY %s`, table, key))
		require.NoError(t, err)
		for rows.Next() {
			var s string
			require.NoError(t, rows.Scan(&s))
			out[table] = append(out[table], s)
		}
		require.NoError(t, rows.Err())
	}
	return out
}

// fillHomes writes homes as projects leave them: files of several modes and
// sizes (compressible text and random bytes), nested and empty directories,
// symlinks, a few files of other owners; everything else belongs to 2001.
func fillHomes(t *testing.T, root string, filesPerProject int) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, 2))
	type entry struct {
		path string
		mode fs.FileMode
		uid  int
		data []byte
		link string
	}
	var entries []entry
	for p, id := range projectIDs {
		home := filepath.Join(root, id)
		entries = append(entries,
			entry{path: home, mode: fs.ModeDir | 0o755, uid: projectUID},
			entry{path: home + "/.smc", mode: fs.ModeDir | 0o700, uid: projectUID},
			entry{path: home + "/.smc/secret_token", mode: 0o600, uid: projectUID, data: []byte("token-" + id)},
			entry{path: home + "/empty", mode: fs.ModeDir | 0o750, uid: projectUID},
			entry{path: home + "/bin", mode: fs.ModeDir | 0o755, uid: projectUID},
			entry{path: home + "/bin/run.sh", mode: 0o755, uid: projectUID, data: []byte("#!/bin/sh\necho hi\n")},
			entry{path: home + "/readonly.txt", mode: 0o444, uid: projectUID, data: []byte("read only\n")},
			entry{path: home + "/notes.md", mode: 0o644, uid: projectUID, data: []byte("# notes\n")},
			entry{path: home + "/latest", link: "bin/run.sh", uid: projectUID},
			entry{path: home + "/dangling", link: "../nowhere", uid: projectUID},
			// Left by a root process or another image's user: readable by 2001.
			entry{path: home + "/from-root.log", mode: 0o644, uid: 0, data: []byte("root wrote this\n")},
			entry{path: home + "/from-sage", mode: 0o664, uid: 1000, data: []byte("uid 1000\n")},
			entry{path: home + "/data", mode: fs.ModeDir | 0o2775, uid: projectUID},
		)
		for i := range filesPerProject {
			var data []byte
			if i%2 == 0 {
				data = bytes.Repeat([]byte(fmt.Sprintf("line %d of project %d\n", i, p)), 2000+rnd.IntN(20000))
			} else {
				data = make([]byte, 16<<10+rnd.IntN(256<<10))
				for j := range data {
					data[j] = byte(rnd.Uint32())
				}
			}
			entries = append(entries, entry{path: fmt.Sprintf("%s/data/f%03d.bin", home, i), mode: []fs.FileMode{0o644, 0o600, 0o640, 0o664}[i%4], uid: projectUID, data: data})
		}
	}
	mtime := time.Date(2026, 11, 30, 12, 34, 56, 789000000, time.UTC)
	for _, en := range entries {
		switch {
		case en.link != "":
			require.NoError(t, os.Symlink(en.link, en.path))
		case en.mode.IsDir():
			require.NoError(t, os.Mkdir(en.path, 0o700))
		default:
			require.NoError(t, os.WriteFile(en.path, en.data, 0o600))
		}
		require.NoError(t, os.Lchown(en.path, en.uid, en.uid))
		if en.link == "" {
			// After chown, which clears setgid.
			require.NoError(t, os.Chmod(en.path, en.mode.Perm()|en.mode&fs.ModeSetgid))
		}
	}
	// Directories last: writing into them moved their times.
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].link == "" {
			require.NoError(t, os.Chtimes(entries[i].path, mtime, mtime))
		}
	}
}

// file is what a restore must bring back of one tree entry.
type file struct {
	Mode     string
	UID, GID uint32
	Size     int64
	MTime    string
	SHA256   string
	Link     string
}

func listTree(t *testing.T, root string) map[string]file {
	t.Helper()
	out := map[string]file{}
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		f := file{Mode: info.Mode().String(), UID: st.Uid, GID: st.Gid}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			f.Link, err = os.Readlink(path)
		case info.Mode().IsRegular():
			f.Size = info.Size()
			f.MTime = info.ModTime().UTC().Format(time.RFC3339Nano)
			var b []byte
			b, err = os.ReadFile(path)
			sum := sha256.Sum256(b)
			f.SHA256 = hex.EncodeToString(sum[:])
		case info.IsDir() && path != root:
			// The root is the claim's own directory: restores write into it.
			f.MTime = info.ModTime().UTC().Format(time.RFC3339Nano)
		}
		rel, _ := filepath.Rel(root, path)
		out[rel] = f
		return err
	}))
	return out
}

func treeBytes(m map[string]file) int64 {
	var n int64
	for _, f := range m {
		n += f.Size
	}
	return n
}

// A repository volume that ignores fsGroup (hostPath, NFS) and is not
// writable by the backup's uid: the run fails saying what to change,
// instead of restic's bare "permission denied".
func TestUnwritableRepositoryVolumeSaysHow(t *testing.T) {
	requireTools(t)
	e := newEnv(t, pg.Start(t))
	require.NoError(t, os.WriteFile(filepath.Join(e.homes, "file"), []byte("x"), 0o644))
	// The claim's root as such a volume leaves it: root's, mode 0755.
	require.NoError(t, os.Chown(e.repo, 0, 0))
	require.NoError(t, os.Chmod(e.repo, 0o755))
	code, out := e.backup("homes", 7, "RESTIC_REPOSITORY="+filepath.Join(e.repo, "restic"))
	require.NotEqual(t, 0, code, out)
	assert.Contains(t, out, e.repo+" is not writable by uid 2001")
	assert.Contains(t, out, `docs/backup.md "Repository ownership"`)
	_, err := os.Stat(filepath.Join(e.repo, "restic"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "nothing was created")

	// Made writable as docs/backup.md says: the same run succeeds.
	require.NoError(t, os.Chown(e.repo, projectUID, projectUID))
	code, out = e.backup("homes", 7, "RESTIC_REPOSITORY="+filepath.Join(e.repo, "restic"))
	require.Equal(t, 0, code, out)
}
