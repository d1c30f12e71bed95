package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/dbdump"
)

// embeddedDBContainer is the test's stand-in for the server image's
// embedded PostgreSQL: a container of the server pod.
const embeddedDBContainer = "embedded-postgres"

// TestBackupRestoresEmbeddedDatabase is the kind tier's proof of the
// embedded database's backup. The hub stand-in has no database, so the
// test gives the server pod one the way the chart's server image has it:
// Debian's PostgreSQL (test/standins/postgres) in a container of the server
// pod, listening on the pod's loopback only, with the server image's own
// client authentication file (tools/images/server/pg_hba.conf: trust for
// smc from 127.0.0.1). Then: rows are written; a pod outside the backup
// cannot fetch a dump even with the token (the NetworkPolicy); the database
// CronJob runs as a Job and gets the dump from the server pod's db-dump
// container; the tables are dropped; docs/backup.md's embedded restore
// (restic dump in the restore pod piped into pg_restore in db-dump) brings
// them back, compared object by object and row by row.
func TestBackupRestoresEmbeddedDatabase(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	c.RequireCapability(t, cluster.NetworkPolicyEnforced)
	loadPostgresImage(t, c)
	token := strings.Repeat("kind-dump-token-", 3)
	ns, _ := installBackupRelease(t, c, "backupemb", func(string) map[string]string {
		return map[string]string{"backup.homes.enabled": "false", "backup.database.dumpToken": token}
	})
	start := time.Now()
	server := addEmbeddedDatabase(t, c, ns)
	t.Logf("server pod with its embedded database ready: %s", time.Since(start).Round(time.Second))
	sql := func(sql string) string {
		return string(execIn(t, c, ns, server, embeddedDBContainer, nil,
			"psql", "-h", "127.0.0.1", "-U", "smc", "-d", "smc", "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql))
	}
	sql(seedSQL)
	before := sql(manifestSQL)
	require.Contains(t, before, "accounts 501", "the seed is in the database")

	start = time.Now()
	runBackupJob(t, c, ns, releaseName+"-backup-database")
	t.Logf("database backup job through the dump server: %s", time.Since(start).Round(time.Second))

	// The token alone is not enough: a pod that is not the database backup's is kept off by the
	// server's NetworkPolicy (the connection is rejected or dropped; the dump server, which just
	// served the Job, never answers it).
	cj, err := c.Client.BatchV1().CronJobs(ns).Get(t.Context(), releaseName+"-backup-database", metav1.GetOptions{})
	require.NoError(t, err)
	var dumpURL string
	for _, e := range cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "DUMP_URL" {
			dumpURL = e.Value
		}
	}
	require.NotEmpty(t, dumpURL, "the database CronJob's DUMP_URL")
	fetch := func(name string, labels map[string]string, script string) string {
		return runPodToEnd(t, c, ns, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: name + "-", Labels: labels},
			Spec: corev1.PodSpec{
				RestartPolicy:                corev1.RestartPolicyNever,
				AutomountServiceAccountToken: ptr.To(false),
				SecurityContext:              restrictedPodSecurity(),
				Containers: []corev1.Container{{
					Name: "fetch", Image: backupImageRef, ImagePullPolicy: corev1.PullNever,
					Command:         []string{"bash", "-c", script},
					Env:             []corev1.EnvVar{{Name: "DUMP_URL", Value: dumpURL}, {Name: dbdump.TokenEnv, Value: token}},
					SecurityContext: restrictedContainerSecurity(),
				}},
			},
		})
	}
	// The same pod with the database backup's labels gets the dump: the labels are the only difference.
	got := fetch("as-backup", cj.Spec.JobTemplate.Spec.Template.Labels, `set -o pipefail; cocalc-dbdump fetch -url "$DUMP_URL" -timeout 60s | { head -c 5; cat >/dev/null; }`)
	assert.Equal(t, "PGDMP", got, "a pod with the database backup's labels and the token")
	out := fetch("not-backup", nil, `! cocalc-dbdump fetch -url "$DUMP_URL" -timeout 20s >/dev/null`)
	assert.Regexp(t, `dial tcp [0-9.]+:[0-9]+: connect: (connection refused|connection timed out)|no complete dump within -timeout 20s`, out,
		"kept off by the policy, not answered by the server")
	assert.NotContains(t, out, "answered")

	sql(destroySQL)
	require.Equal(t, "0", strings.TrimSpace(sql(countObjectsSQL)), "no table, view, index or sequence is left")

	// docs/backup.md, "Embedded database": the restore pod's restic dump piped into db-dump's pg_restore.
	start = time.Now()
	dump, restore := documentedEmbeddedRestore(t)
	pod, _ := documentedRestore(t, ns, false)
	ctr := &pod.Spec.Containers[0]
	ctr.Image, ctr.ImagePullPolicy = backupImageRef, corev1.PullNever
	pods := c.Client.CoreV1().Pods(ns)
	_, err = pods.Create(t.Context(), &pod, metav1.CreateOptions{})
	require.NoError(t, err)
	defer func() {
		_ = pods.Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}()
	require.Eventually(t, func() bool {
		p, err := pods.Get(t.Context(), pod.Name, metav1.GetOptions{})
		require.NoError(t, err)
		return p.Status.Phase == corev1.PodRunning
	}, 3*time.Minute, time.Second, "the restore pod did not start")
	archive := execIn(t, c, ns, pod.Name, ctr.Name, nil, dump...)
	require.True(t, bytes.HasPrefix(archive, []byte("PGDMP")), "restic dump gives a pg_dump custom archive")
	execIn(t, c, ns, server, "db-dump", bytes.NewReader(archive), restore...)
	t.Logf("documented embedded restore (%d bytes): %s", len(archive), time.Since(start).Round(time.Second))
	assert.Equal(t, before, sql(manifestSQL), "the restored database is the database that was backed up")
}

// documentedEmbeddedRestore is docs/backup.md's embedded database restore,
// the two commands of its pipe: restic dump in the restore pod, pg_restore
// in the server pod's db-dump container.
func documentedEmbeddedRestore(t *testing.T) (dump, restore []string) {
	t.Helper()
	b, err := readRepoFile("docs/backup.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^kubectl -n \$NS exec restore -- (restic dump [^|]+?) \| kubectl -n \$NS exec -i deploy/\$FULL-server -c db-dump -- (pg_restore .+)$`).FindStringSubmatch(b)
	require.NotNil(t, m, "docs/backup.md has the embedded database's restore command")
	require.NotContains(t, m[0], `"`, "the command's words need no shell")
	return strings.Fields(m[1]), strings.Fields(m[2])
}

// addEmbeddedDatabase gives the server pod the embedded database of the
// chart's server image (see TestBackupRestoresEmbeddedDatabase) and waits
// until the new server pod is Ready; it returns that pod's name.
func addEmbeddedDatabase(t *testing.T, c *cluster.Cluster, ns string) string {
	t.Helper()
	hba, err := os.ReadFile(filepath.Join(repoRoot, "tools", "images", "server", "pg_hba.conf"))
	require.NoError(t, err)
	script := `set -e
initdb -D /tmp/data -U smc --auth=trust >/dev/null
printf '%s\n' "$HBA" > /tmp/data/pg_hba.conf
postgres -D /tmp/data -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp &
until pg_isready -h /tmp -q; do sleep 0.2; done
createdb -h /tmp -U smc smc
wait`
	deps := c.Client.AppsV1().Deployments(ns)
	d, err := deps.Get(t.Context(), serverName, metav1.GetOptions{})
	require.NoError(t, err)
	spec := &d.Spec.Template.Spec
	spec.Containers = append(spec.Containers, corev1.Container{
		Name: embeddedDBContainer, Image: postgresImageRef, ImagePullPolicy: corev1.PullNever,
		Command: []string{"bash", "-c", script},
		Env:     []corev1.EnvVar{{Name: "HBA", Value: string(hba)}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"psql", "-h", "127.0.0.1", "-U", "smc", "-d", "smc", "-c", "select 1"}}},
			PeriodSeconds: 2, TimeoutSeconds: 15, FailureThreshold: 10,
		},
		SecurityContext: func() *corev1.SecurityContext {
			s := restrictedContainerSecurity()
			s.RunAsUser, s.RunAsGroup, s.RunAsNonRoot = ptr.To[int64](2001), ptr.To[int64](2001), ptr.To(true)
			return s
		}(),
		VolumeMounts: []corev1.VolumeMount{{Name: "embedded-postgres", MountPath: "/tmp"}},
	})
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "embedded-postgres", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	d, err = deps.Update(t.Context(), d, metav1.UpdateOptions{})
	require.NoError(t, err)
	var name string
	require.Eventually(t, func() bool {
		cur, err := deps.Get(t.Context(), serverName, metav1.GetOptions{})
		require.NoError(t, err)
		if !deploymentRolledOut(cur, d.Generation) {
			return false
		}
		pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
		require.NoError(t, err)
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && podReady(&p) && len(p.Spec.Containers) == len(spec.Containers) {
				name = p.Name
				return true
			}
		}
		return false
	}, 5*time.Minute, 2*time.Second, "the server pod with the embedded database never became Ready")
	return name
}

// deploymentRolledOut: the controller saw generation and every replica runs it.
func deploymentRolledOut(d *appsv1.Deployment, generation int64) bool {
	s := d.Status
	return s.ObservedGeneration >= generation && d.Spec.Replicas != nil &&
		s.UpdatedReplicas == *d.Spec.Replicas && s.ReadyReplicas == *d.Spec.Replicas && s.Replicas == *d.Spec.Replicas
}

// execIn runs cmd in a container (kubectl exec), with stdin when not nil,
// and returns its standard output; it must exit 0.
func execIn(t *testing.T, c *cluster.Cluster, ns, pod, container string, stdin io.Reader, cmd ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	req := c.Client.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(c.RESTConfig, "GET", req.URL().String())
	require.NoError(t, err)
	spdy, err := remotecommand.NewSPDYExecutor(c.RESTConfig, "POST", req.URL())
	require.NoError(t, err)
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &stdout, Stderr: &stderr})
	require.NoError(t, err, "exec %v in %s/%s: %s", cmd, pod, container, stderr.String())
	return stdout.Bytes()
}

// TestDocumentedEmbeddedRestore checks, on every tier, that docs/backup.md's
// embedded restore reads the snapshot the database CronJob writes and
// restores it in one transaction into the database the dump server dumps.
func TestDocumentedEmbeddedRestore(t *testing.T) {
	dump, restore := documentedEmbeddedRestore(t)
	assert.Equal(t, []string{"restic", "dump", "--host", releaseName, "--tag", "database", "latest", "/smc.dump"}, dump,
		"the newest database snapshot of a release named %s, whose file is /<hub.embeddedDatabase.database>.dump", releaseName)
	assert.Equal(t, "pg_restore", restore[0])
	for _, flag := range []string{"--clean", "--if-exists", "--no-owner", "--single-transaction"} {
		assert.Contains(t, restore, flag)
	}
	assert.Equal(t, "smc", restore[len(restore)-1], "--dbname is the embedded database")
}
