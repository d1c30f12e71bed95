package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	sigsyaml "sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// postgresImageRef is the kind nodes' name for the PostgreSQL stand-in
// (test/standins/postgres: Debian's postgresql), never pulled.
const postgresImageRef = "cocalc-kubernetes/postgres-standin:dev"

// TestBackupRestoresDatabase is the kind tier's proof of the chart's
// database backup: an external PostgreSQL (a pod of Debian's postgresql in
// the release's namespace) holds the hub database; rows of several types
// are written, the chart's database CronJob runs (as a Job from its
// jobTemplate) through the backup pods' NetworkPolicy, the tables are
// dropped, and docs/backup.md's restore pod and database command bring
// them back; the rows and the schema are compared.
func TestBackupRestoresDatabase(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	c.RequireCapability(t, cluster.NetworkPolicyEnforced)
	loadPostgresImage(t, c)
	const pgPassword = "kind-database-password"
	var pgHost string
	ns, _ := installBackupRelease(t, c, "backupdb", func(ns string) map[string]string {
		pgHost = "postgres." + ns + ".svc"
		return map[string]string{
			"postgresql.mode":                                              "external",
			"postgresql.external.host":                                     pgHost,
			"postgresql.external.password":                                 pgPassword,
			"hub.externalPostgresInSmcCompute":                             "true",
			"hub.embeddedDatabase.activityInSmcCompute":                    "false",
			"backup.homes.enabled":                                         "false",
			"backup.networkPolicy.database[0].podSelector.matchLabels.app": "postgres-standin",
		}
	})
	startPostgres(t, c, ns, pgPassword)

	psql(t, c, ns, pgHost, "seed", seedSQL)
	before := databaseManifest(t, c, ns, pgHost)
	require.Contains(t, before, "accounts 501", "the seed is in the database")

	start := time.Now()
	runBackupJob(t, c, ns, releaseName+"-backup-database")
	t.Logf("database backup job: %s", time.Since(start).Round(time.Second))

	// docs/backup.md "Restore": stop the writers, then lose the data.
	scaleServerToZero(t, c, ns)
	psql(t, c, ns, pgHost, "destroy", destroySQL)
	require.Equal(t, "0", strings.TrimSpace(psql(t, c, ns, pgHost, "gone", countObjectsSQL)), "no table, view, index or sequence is left")

	start = time.Now()
	pod, _ := documentedRestore(t, ns, false)
	dbCmd := documentedDatabaseRestore(t)
	ctr := &pod.Spec.Containers[0]
	ctr.Image, ctr.ImagePullPolicy = backupImageRef, corev1.PullNever
	ctr.Command = []string{"bash", "-c", "set -eo pipefail; restic snapshots; " + dbCmd}
	ctr.Env = append(ctr.Env, documentedPostgresEnv(t, ns, pgHost)...)
	logs := runPodToEnd(t, c, ns, &pod)
	t.Logf("documented database restore: %s\n%s", time.Since(start).Round(time.Second), logs)
	assert.Equal(t, before, databaseManifest(t, c, ns, pgHost), "the restored database is the database that was backed up")
}

// The hub's data of the database backup tests: several types, NULLs, a
// large value, a sequence, an index and a view, so a restore that drops any
// of them shows.
const seedSQL = `
CREATE TABLE accounts (account_id uuid PRIMARY KEY, email text UNIQUE, created timestamptz, settings jsonb, avatar bytea, balance numeric(12,2));
CREATE TABLE projects (id serial PRIMARY KEY, owner uuid REFERENCES accounts, title text, last_edited timestamptz);
CREATE INDEX projects_last_edited ON projects (last_edited);
CREATE VIEW active AS SELECT title FROM projects WHERE last_edited > '2026-01-01';
INSERT INTO accounts SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'user' || i || '@example.org',
  '2026-02-03 04:05:06+00'::timestamptz + i * interval '1 hour', jsonb_build_object('theme', 'dark', 'n', i),
  decode(repeat(md5(i::text), 64), 'hex'), i * 1.25 FROM generate_series(1, 500) i;
INSERT INTO accounts VALUES ('00000000-0000-4000-8000-999999999999', NULL, NULL, NULL, NULL, NULL);
INSERT INTO projects (owner, title, last_edited) SELECT account_id, 'project ' || md5(email), created FROM accounts WHERE email IS NOT NULL;
`

// destroySQL loses the data; countObjectsSQL then counts what is left of the schema.
const (
	destroySQL      = `DROP VIEW active; DROP TABLE projects; DROP TABLE accounts;`
	countObjectsSQL = `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`
)

// manifestSQL is what a restore must bring back: each table's row count and
// an md5 of its rows in key order, the schema's objects (tables, views,
// indexes, sequences with their positions).
const manifestSQL = `
SELECT 'object ' || c.relkind::text || ' ' || c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'public' ORDER BY c.relname;
SELECT 'accounts ' || count(*) || ' ' || coalesce(md5(string_agg(a::text, '|' ORDER BY account_id)), '-') FROM accounts a;
SELECT 'projects ' || count(*) || ' ' || coalesce(md5(string_agg(p::text, '|' ORDER BY id)), '-') FROM projects p;
SELECT 'sequence ' || last_value FROM projects_id_seq;
SELECT 'view ' || count(*) FROM active;`

// loadPostgresImage builds the PostgreSQL stand-in (debootstrap, cached)
// into an image and loads it into the kind nodes as postgresImageRef.
func loadPostgresImage(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	start := time.Now()
	rootfs, err := exec.CommandContext(t.Context(), filepath.Join(repoRoot, "test", "standins", "postgres", "rootfs.sh")).Output()
	require.NoError(t, err, "test/standins/postgres/rootfs.sh (root and debootstrap): %v", err)
	out := filepath.Join(t.TempDir(), "postgres")
	b, err := exec.CommandContext(t.Context(), "make", "-C", repoRoot, "bin/imagebuild").CombinedOutput()
	require.NoError(t, err, "%s", b)
	cmd := exec.CommandContext(t.Context(), filepath.Join(repoRoot, "bin", "imagebuild"), "rootfs",
		"-rootfs", strings.TrimSpace(string(rootfs)), "-config", "backup", "-module", repoRoot, "-out", out, "-version", "dev")
	cmd.Env = append(cmd.Environ(), "SOURCE_DATE_EPOCH=0")
	b, err = cmd.CombinedOutput()
	require.NoError(t, err, "imagebuild rootfs: %s", b)
	require.NoError(t, c.LoadImageArchive(t.Context(), layoutArchive(t, out, postgresImageRef), postgresImageRef))
	t.Logf("PostgreSQL stand-in image loaded: %s", time.Since(start).Round(time.Second))
}

// startPostgres runs the external PostgreSQL: a pod (uid 2001, restricted)
// that initialises a cluster in an emptyDir with password authentication
// over TCP for user smc, database smc, and a Service "postgres" for it.
func startPostgres(t *testing.T, c *cluster.Cluster, ns, password string) {
	t.Helper()
	labels := map[string]string{"app": "postgres-standin"}
	_, err := c.Client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 5432, TargetPort: intstr.FromInt32(5432)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	script := `set -e
printf '%s' "$PGPASSWORD" > /tmp/pw
initdb -D /tmp/data -U smc --pwfile=/tmp/pw --auth-host=scram-sha-256 --auth-local=trust >/dev/null
rm /tmp/pw
echo "host all all 0.0.0.0/0 scram-sha-256" >> /tmp/data/pg_hba.conf
postgres -D /tmp/data -c listen_addresses='*' -c unix_socket_directories=/tmp &
until pg_isready -h /tmp -q; do sleep 0.2; done
createdb -h /tmp -U smc smc
wait`
	_, err = c.Client.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres", Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			SecurityContext:              restrictedPodSecurity(),
			Containers: []corev1.Container{{
				Name: "postgres", Image: postgresImageRef, ImagePullPolicy: corev1.PullNever,
				Command: []string{"bash", "-c", script},
				Env:     []corev1.EnvVar{{Name: "PGPASSWORD", Value: password}},
				Ports:   []corev1.ContainerPort{{ContainerPort: 5432}},
				// Ready once the database exists; generous timeouts, so a
				// busy node never takes the Service's endpoint away.
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"psql", "-h", "/tmp", "-U", "smc", "-d", "smc", "-c", "select 1"}}},
					PeriodSeconds: 2, TimeoutSeconds: 15, FailureThreshold: 10,
				},
				SecurityContext: restrictedContainerSecurity(),
				VolumeMounts:    []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
			}},
			Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), "postgres", metav1.GetOptions{})
		require.NoError(t, err)
		return podReady(p)
	}, 2*time.Minute, time.Second, "the PostgreSQL stand-in never became ready")
}

// psql runs sql against the external database as the hub's user, from a
// pod with the backup image's client (no NetworkPolicy in the way: the
// pod is not one of the release's).
func psql(t *testing.T, c *cluster.Cluster, ns, host, name, sql string) string {
	t.Helper()
	return runPodToEnd(t, c, ns, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "psql-" + name + "-"},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			SecurityContext:              restrictedPodSecurity(),
			Containers: []corev1.Container{{
				Name: "psql", Image: backupImageRef, ImagePullPolicy: corev1.PullNever,
				Command: []string{"psql", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql},
				Env: []corev1.EnvVar{
					{Name: "PGHOST", Value: host}, {Name: "PGUSER", Value: "smc"}, {Name: "PGDATABASE", Value: "smc"},
					{Name: "PGPASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: releaseName + "-postgresql"}, Key: "password"}}},
				},
				SecurityContext: restrictedContainerSecurity(),
			}},
		},
	})
}

// databaseManifest runs manifestSQL against the external database.
func databaseManifest(t *testing.T, c *cluster.Cluster, ns, host string) string {
	t.Helper()
	return psql(t, c, ns, host, "manifest", manifestSQL)
}

// documentedDatabaseRestore is docs/backup.md's database restore command.
func documentedDatabaseRestore(t *testing.T) string {
	t.Helper()
	b, err := readRepoFile("docs/backup.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^restic dump --host \S+ --tag database latest .*\| pg_restore .*$`).FindString(b)
	require.NotEmpty(t, m, "docs/backup.md has the database restore command")
	return m
}

// documentedPostgresEnv is the PG* environment of docs/backup.md's restore
// pod, with the placeholder host filled in.
func documentedPostgresEnv(t *testing.T, ns, host string) []corev1.EnvVar {
	t.Helper()
	b, err := readRepoFile("docs/backup.md")
	require.NoError(t, err)
	var env []corev1.EnvVar
	for _, l := range regexp.MustCompile(`(?m)^ *- (\{name: PG.*\})`).FindAllStringSubmatch(b, -1) {
		line := strings.NewReplacer("$FULL", releaseName, "$NS", ns, "<postgresql.external.host>", host).Replace(l[1])
		line = regexp.MustCompile(`\s+#.*$`).ReplaceAllString(line, "")
		var e corev1.EnvVar
		require.NoError(t, sigsyaml.UnmarshalStrict([]byte(line), &e), "docs/backup.md restore pod env %s", l[1])
		env = append(env, e)
	}
	names := map[string]bool{}
	for _, e := range env {
		names[e.Name] = true
	}
	for _, want := range []string{"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"} {
		require.True(t, names[want], "docs/backup.md's restore pod sets %s", want)
	}
	return env
}

func readRepoFile(rel string) (string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	return string(b), err
}

// createClaim makes a 1 GiB ReadWriteOnce claim of the default class.
func createClaim(t *testing.T, c *cluster.Cluster, ns, name string) {
	t.Helper()
	_, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Create(t.Context(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err, "claim %s", name)
}
