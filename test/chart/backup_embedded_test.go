package chart

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"

	"gitlab.com/resurgo/cocalc-kubernetes/test/netpoleval"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/dbdump"
)

// embeddedDumpToken is backup.database.dumpToken of ci/backup-embedded-values.yaml.
const embeddedDumpToken = "not-a-real-dump-token-0123456789abcdef"

func hasArg(c corev1.Container, prefix string) (string, bool) {
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		if v, ok := strings.CutPrefix(a, prefix); ok {
			return v, true
		}
	}
	return "", false
}

// The embedded database (on the server pod's loopback only) is backed up
// through the server pod's dump server: the container runs cocalc-dbdump
// serve from the backup image against hub.embeddedDatabase, listens on its
// named port, gets the token and nothing else of the backup Secret, and the
// database CronJob calls it through its Service at the path the program
// serves.
func TestBackupEmbeddedDatabase(t *testing.T) {
	m := renderObjects(t, caseByName(t, "ci-backup-embedded"))
	d := serverDeployment(t, m)
	spec := d.Spec.Template.Spec
	dump := container(t, spec, "db-dump")
	cj := backupCronJobs(m)[backupFullname+"-backup-database"]
	require.NotNil(t, cj, "database CronJob")
	job := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]

	assert.Equal(t, job.Image, dump.Image, "the backup image runs both sides")
	assert.Equal(t, []string{"cocalc-dbdump", "serve"}, dump.Command[:2])
	listen, ok := hasArg(dump, "--listen=")
	require.True(t, ok, "serve --listen")
	require.Len(t, dump.Ports, 1)
	port := dump.Ports[0]
	assert.Equal(t, "db-dump", port.Name)
	assert.Equal(t, ":"+strconv.Itoa(int(port.ContainerPort)), listen, "listens on its container port, on the pod IP")
	_, ok = hasArg(dump, "--max-duration=6h")
	assert.True(t, ok, "backup.database.dumpServer.maxDuration")

	// libpq reaches the embedded database as the orchestrator does (hub.embeddedDatabase: loopback).
	env := envOf(dump)
	for k, want := range map[string]string{"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": "smc", "PGUSER": "smc"} {
		assert.Equal(t, want, env[k].Value, k)
	}
	_, hasPassword := env["PGPASSWORD"]
	assert.False(t, hasPassword, "trust on loopback: no password")
	tok := env[dbdump.TokenEnv]
	require.NotNil(t, tok.ValueFrom, "the token comes from the Secret")
	ref := tok.ValueFrom.SecretKeyRef
	require.NotNil(t, ref)
	assert.Equal(t, backupFullname+"-backup", ref.Name)
	assert.Equal(t, dbdump.TokenEnv, ref.Key)
	require.NotNil(t, ref.Optional)
	assert.True(t, *ref.Optional, "a Secret without the key must not keep the server pod from starting")
	for _, c := range spec.Containers {
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				assert.NotEqual(t, backupFullname+"-backup", ef.SecretRef.Name, "%s: the backup Secret's other keys (the repository password) stay out of the server pod", c.Name)
			}
		}
	}
	secret := one[*corev1.Secret](t, m, backupFullname+"-backup")
	assert.Equal(t, embeddedDumpToken, string(secret.Data[dbdump.TokenEnv]))
	require.NotNil(t, dump.LivenessProbe)
	assert.Equal(t, dbdump.HealthPath, dump.LivenessProbe.HTTPGet.Path)
	assert.Nil(t, dump.ReadinessProbe, "the dump server must never take the server out of its Service")

	// The container alone meets restricted, in the root-based server pod.
	alone := corev1.PodSpec{SecurityContext: spec.SecurityContext, Containers: []corev1.Container{dump}}
	assert.Empty(t, podSecurityViolations(t, psaapi.LevelRestricted, metav1.ObjectMeta{}, alone))
	assert.Equal(t, int64(2001), *dump.SecurityContext.RunAsUser)
	assert.Empty(t, dump.VolumeMounts, "it needs no volume: the dump streams")

	// The Service reaches that port of the server pod, and the Job's URL is the Service's.
	svc := one[*corev1.Service](t, m, backupFullname+"-db-dump")
	assert.Equal(t, corev1.ServiceTypeClusterIP, svc.Spec.Type)
	assert.True(t, selects(t, metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels))
	require.Len(t, svc.Spec.Ports, 1)
	assert.Equal(t, "db-dump", svc.Spec.Ports[0].TargetPort.StrVal)
	jobEnv := envOf(job)
	u, err := url.Parse(jobEnv["DUMP_URL"].Value)
	require.NoError(t, err, "DUMP_URL")
	assert.Equal(t, "http", u.Scheme)
	assert.Equal(t, svc.Name+"."+svc.Namespace+".svc", u.Hostname())
	assert.Equal(t, strconv.Itoa(int(svc.Spec.Ports[0].Port)), u.Port())
	assert.Equal(t, dbdump.DumpPath, u.Path)
	assert.Equal(t, "smc", jobEnv["PGDATABASE"].Value, "names the dump file in the snapshot")
	for _, k := range []string{"PGHOST", "PGPASSWORD"} {
		_, ok := jobEnv[k]
		assert.False(t, ok, "%s: the Job never connects to the database itself", k)
	}
	require.Len(t, job.EnvFrom, 1)
	assert.Equal(t, ref.Name, job.EnvFrom[0].SecretRef.Name, "the Job gets the token from the same Secret")
}

// Only the database backup's pods reach the dump server: not the homes
// backup, not projects, not the monitoring namespace, not the internet; and
// the backup pods reach nothing else of the server pod.
func TestBackupEmbeddedDatabaseNetworkPolicy(t *testing.T) {
	c := caseByName(t, "ci-backup-embedded")
	m := renderObjects(t, c)
	tpl := projectTemplate(t, m)
	w := buildWorld(t, m, tpl)
	policies := derefPolicies(all[*networkingv1.NetworkPolicy](m))
	jobs := backupCronJobs(m)
	ns := jobs[backupFullname+"-backup-database"].Namespace
	dbJob := podEndpoint("backup-database", ns, "10.4.5.1", jobs[backupFullname+"-backup-database"].Spec.JobTemplate.Spec.Template.Labels, nil)
	homesJob := podEndpoint("backup-homes", ns, "10.4.5.2", jobs[backupFullname+"-backup-homes"].Spec.JobTemplate.Spec.Template.Labels, nil)
	port := container(t, serverDeployment(t, m).Spec.Template.Spec, "db-dump").Ports[0].ContainerPort
	for _, f := range []flow{
		{dbJob, w.server, port, corev1.ProtocolTCP, true},
		{homesJob, w.server, port, corev1.ProtocolTCP, false},
		{w.projectA, w.server, port, corev1.ProtocolTCP, false},
		{w.projectB, w.server, port, corev1.ProtocolTCP, false},
		{w.monitoring, w.server, port, corev1.ProtocolTCP, false},
		{w.kubeSystemOther, w.server, port, corev1.ProtocolTCP, false},
		{external("internet", "93.184.216.34"), w.server, port, corev1.ProtocolTCP, false},
		{dbJob, w.server, port, corev1.ProtocolUDP, false},
		{dbJob, w.server, 5432, corev1.ProtocolTCP, false},
		{dbJob, w.server, 8471, corev1.ProtocolTCP, false},
		{dbJob, w.projectA, port, corev1.ProtocolTCP, false},
	} {
		conn := netpoleval.Connection{From: f.from, To: f.to, Port: f.port, Protocol: f.proto}
		v, err := netpoleval.Evaluate(policies, conn)
		require.NoError(t, err)
		assert.Equal(t, f.allowed, v.Allowed, "%s: %s", conn, v.Reason)
	}
}

// Nothing of the dump server is rendered without an embedded database backup.
func TestBackupDumpServerOnlyForEmbedded(t *testing.T) {
	for _, name := range []string{"ci-backup", "ci-database-embedded"} {
		m := renderObjects(t, caseByName(t, name))
		for _, c := range serverDeployment(t, m).Spec.Template.Spec.Containers {
			assert.NotEqual(t, "db-dump", c.Name, name)
		}
		_, ok := maybe[*corev1.Service](m, backupFullname+"-db-dump")
		assert.False(t, ok, name)
	}
}

// Backup settings that are not the dump server's own leave the server pod
// alone: a helm upgrade that changes them restarts nothing users are on.
func TestBackupSettingsDoNotRestartServer(t *testing.T) {
	c := caseByName(t, "ci-backup-embedded")
	base := serverDeployment(t, renderObjects(t, c)).Spec.Template
	for _, set := range []map[string]string{
		{"backup.database.schedule": "0 4 * * *"},
		{"backup.homes.schedule": "30 5 * * *"},
		{"backup.homes.enabled": "false"},
		{"backup.retention.keepDaily": "30"},
		{"backup.suspend": "true"},
		{"backup.resources.limits.memory": "4Gi"},
	} {
		m := mustDecode(t, render(t, c.files, set))
		assert.Equal(t, base, serverDeployment(t, m).Spec.Template, "%v changed the server pod", set)
	}
	m := mustDecode(t, render(t, c.files, map[string]string{"backup.database.dumpServer.maxDuration": "2h"}))
	assert.NotEqual(t, base, serverDeployment(t, m).Spec.Template, "the dump server's own settings are in the server pod")
}
