package chart

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"sigs.k8s.io/yaml"
)

// backupFullname is the fullname of releaseName ("cocalc" contains the chart name).
const backupFullname = "cocalc"

func backupCronJobs(m manifests) map[string]*batchv1.CronJob {
	res := map[string]*batchv1.CronJob{}
	for _, c := range all[*batchv1.CronJob](m) {
		res[c.Name] = c
	}
	return res
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	res := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		res[e.Name] = e
	}
	return res
}

func backupComponent(o object) bool {
	return o.Meta.Labels["app.kubernetes.io/component"] == "backup"
}

// Off by default: no platform install renders any backup object.
func TestBackupOffByDefault(t *testing.T) {
	for _, c := range platformCases(t) {
		t.Run(c.name, func(t *testing.T) {
			for _, o := range renderObjects(t, c) {
				assert.False(t, backupComponent(o), "%s %s rendered with backup.enabled false", o.Kind, o.Meta.Name)
				assert.NotContains(t, o.Source, "/backup/", "%s %s", o.Kind, o.Meta.Name)
			}
		})
	}
}

// The CronJobs run the chart's script with everything it reads, as the
// project user under Pod Security restricted, never twice at once, with the
// homes read-only and the repository on the kept claim.
func TestBackupCronJobs(t *testing.T) {
	m := renderObjects(t, caseByName(t, "ci-backup"))
	jobs := backupCronJobs(m)
	require.Len(t, jobs, 2)
	script, err := os.ReadFile(filepath.Join(chartDir, "files", "backup.sh"))
	require.NoError(t, err)
	cm := one[*corev1.ConfigMap](t, m, backupFullname+"-backup")
	assert.Equal(t, string(script), cm.Data["backup.sh"], "the ConfigMap carries files/backup.sh unchanged (test/backup runs that file)")

	claim := one[*corev1.PersistentVolumeClaim](t, m, backupFullname+"-backup")
	assert.Equal(t, "keep", claim.Annotations["helm.sh/resource-policy"], "the backup claim outlives uninstall")

	// Every variable backup.sh reads, by kind (the script names each; the
	// password comes from the Secret through envFrom).
	common := []string{"RESTIC_REPOSITORY", "RESTIC_CACHE_DIR", "BACKUP_HOST", "KEEP_LAST", "KEEP_DAILY", "KEEP_WEEKLY", "KEEP_MONTHLY"}
	perKind := map[string][]string{
		"database": {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD"},
		"homes":    {"HOMES_PATH"},
	}
	for _, v := range append(append(common, perKind["database"]...), "HOMES_PATH", "RESTIC_PASSWORD") {
		if !strings.HasPrefix(v, "KEEP_") {
			assert.Contains(t, string(script), v, "backup.sh does not read %s: the list here is stale", v)
		}
	}
	secret := one[*corev1.Secret](t, m, backupFullname+"-backup")
	assert.Equal(t, "not-a-real-backup-password", string(secret.Data["RESTIC_PASSWORD"]))

	for what, names := range perKind {
		cj, ok := jobs[backupFullname+"-backup-"+what]
		require.True(t, ok, "CronJob for %s", what)
		assert.Equal(t, batchv1.ForbidConcurrent, cj.Spec.ConcurrencyPolicy)
		pod := cj.Spec.JobTemplate.Spec.Template
		assert.Empty(t, podSecurityViolations(t, psaapi.LevelRestricted, metav1.ObjectMeta{Labels: pod.Labels}, pod.Spec), "%s must meet restricted", what)
		assert.False(t, ptrVal(pod.Spec.AutomountServiceAccountToken), "no token")
		assert.Equal(t, int64(2001), ptrVal(pod.Spec.SecurityContext.RunAsUser), "the homes' owner")
		require.Len(t, pod.Spec.Containers, 1)
		c := pod.Spec.Containers[0]
		assert.Equal(t, []string{"bash", "/scripts/backup.sh", what}, c.Command)
		assert.True(t, ptrVal(c.SecurityContext.ReadOnlyRootFilesystem))
		env := envOf(c)
		for _, n := range append(append([]string{}, common...), names...) {
			assert.Contains(t, env, n, "%s: backup.sh needs %s", what, n)
		}
		assert.Equal(t, backupFullname, env["BACKUP_HOST"].Value, "one host for every run, so retention groups them")
		assert.Equal(t, "/repository/restic", env["RESTIC_REPOSITORY"].Value)
		require.Len(t, c.EnvFrom, 1)
		assert.Equal(t, backupFullname+"-backup", c.EnvFrom[0].SecretRef.Name, "RESTIC_PASSWORD from the Secret")
		writable := map[string]bool{}
		for _, vm := range c.VolumeMounts {
			writable[vm.MountPath] = !vm.ReadOnly
		}
		for _, p := range []string{"/tmp", "/cache", "/repository"} {
			assert.True(t, writable[p], "%s: %s must be writable (read-only root)", what, p)
		}
		vols := map[string]corev1.Volume{}
		for _, v := range pod.Spec.Volumes {
			vols[v.Name] = v
		}
		assert.Equal(t, backupFullname+"-backup", vols["repository"].PersistentVolumeClaim.ClaimName)
		if what == "database" {
			assert.Equal(t, "10.20.0.5", env["PGHOST"].Value)
			assert.Equal(t, backupFullname+"-postgresql", env["PGPASSWORD"].ValueFrom.SecretKeyRef.Name)
			assert.NotContains(t, vols, "projects-home", "the database job needs no homes")
			continue
		}
		home, ok := vols["projects-home"]
		require.True(t, ok)
		assert.Equal(t, backupFullname+"-projects", home.PersistentVolumeClaim.ClaimName)
		assert.True(t, home.PersistentVolumeClaim.ReadOnly, "homes are mounted read-only")
		assert.Equal(t, "/projects/home", env["HOMES_PATH"].Value)
		assert.False(t, writable["/projects/home"], "homes are mounted read-only")
		// nfsServer: the claim is ReadWriteOnce on the NFS pod's node.
		require.NotNil(t, pod.Spec.Affinity, "homes pod must follow the NFS pod")
		terms := pod.Spec.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		require.Len(t, terms, 1)
		assert.Equal(t, "nfs", terms[0].LabelSelector.MatchLabels["app.kubernetes.io/component"])
		assert.Equal(t, "kubernetes.io/hostname", terms[0].TopologyKey)
	}
}

// The restic password and the database password appear only in Secrets.
func TestBackupPasswordsStayInSecrets(t *testing.T) {
	const pw = "backup-pw-7f3c1d0e9b"
	out := render(t, []string{filepath.Join(chartDir, "ci", "backup-values.yaml")}, map[string]string{"backup.password": pw})
	m := mustDecode(t, out)
	found := false
	for _, o := range m {
		b, err := yaml.Marshal(o.Obj)
		require.NoError(t, err)
		text := string(b)
		in := strings.Contains(text, pw) || strings.Contains(text, base64.StdEncoding.EncodeToString([]byte(pw)))
		if o.Kind == "Secret" {
			found = found || in
			continue
		}
		assert.False(t, in, "%s %s carries the backup password", o.Kind, o.Meta.Name)
		assert.NotContains(t, text, "not-a-real-password", "%s %s carries the database password", o.Kind, o.Meta.Name)
	}
	assert.True(t, found, "no Secret carries the backup password")
}

// A restic URL repository: no claim, credentials from the existing Secret,
// egress only to the listed store, homes only.
func TestBackupURLRepository(t *testing.T) {
	m := renderObjects(t, caseByName(t, "ci-backup-url"))
	jobs := backupCronJobs(m)
	require.Len(t, jobs, 1, "database disabled: the homes job alone")
	cj := jobs[backupFullname+"-backup-homes"]
	require.NotNil(t, cj)
	require.NotNil(t, cj.Spec.TimeZone)
	assert.Equal(t, "Europe/Berlin", *cj.Spec.TimeZone)
	c := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
	assert.Equal(t, "s3:s3.example.org/cocalc-backups/restic", envOf(c)["RESTIC_REPOSITORY"].Value)
	assert.Equal(t, "3", envOf(c)["KEEP_LAST"].Value)
	assert.Equal(t, "cocalc-backup-credentials", c.EnvFrom[0].SecretRef.Name)
	for _, v := range cj.Spec.JobTemplate.Spec.Template.Spec.Volumes {
		assert.NotEqual(t, "repository", v.Name, "a URL repository needs no claim")
		if v.PersistentVolumeClaim != nil {
			assert.Equal(t, backupFullname+"-projects", v.PersistentVolumeClaim.ClaimName)
		}
	}
	assert.Nil(t, cj.Spec.JobTemplate.Spec.Template.Spec.Affinity, "pvc mode: no NFS pod to follow")
	for _, o := range m {
		if backupComponent(o) {
			assert.NotContains(t, []string{"Secret", "PersistentVolumeClaim"}, o.Kind, "%s %s: existing Secret and URL repository", o.Kind, o.Meta.Name)
		}
	}
	np := one[*networkingv1.NetworkPolicy](t, m, backupFullname+"-backup")
	assert.Empty(t, np.Spec.Ingress)
	var cidrs []string
	for _, r := range np.Spec.Egress {
		for _, p := range r.To {
			if p.IPBlock != nil {
				cidrs = append(cidrs, p.IPBlock.CIDR)
			}
		}
	}
	assert.Equal(t, []string{"203.0.113.0/24"}, cidrs, "egress: DNS (kube-system pods) and the listed store only")
}

// The backup pods' NetworkPolicy selects them and opens only DNS and the listed database.
func TestBackupNetworkPolicy(t *testing.T) {
	m := renderObjects(t, caseByName(t, "ci-backup"))
	np := one[*networkingv1.NetworkPolicy](t, m, backupFullname+"-backup")
	for _, cj := range backupCronJobs(m) {
		assert.True(t, selects(t, np.Spec.PodSelector, cj.Spec.JobTemplate.Spec.Template.Labels), "policy must select %s", cj.Name)
	}
	assert.ElementsMatch(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, np.Spec.PolicyTypes)
	var db []networkingv1.NetworkPolicyEgressRule
	for _, r := range np.Spec.Egress {
		for _, p := range r.To {
			if p.IPBlock != nil {
				db = append(db, r)
			}
		}
	}
	require.Len(t, db, 1)
	assert.Equal(t, "10.20.0.5/32", db[0].To[0].IPBlock.CIDR)
	require.Len(t, db[0].Ports, 1)
	assert.Equal(t, int32(5432), db[0].Ports[0].Port.IntVal, "postgresql.external.port")
}

// Combinations that cannot work are refused at render time, each naming the
// key and saying why (never a CronJob that silently backs up nothing).
func TestBackupRefusals(t *testing.T) {
	ci := filepath.Join(chartDir, "ci", "backup-values.yaml")
	embedded := filepath.Join(chartDir, "ci", "backup-embedded-values.yaml")
	noDatabasePeers := filepath.Join(t.TempDir(), "no-peers.yaml")
	require.NoError(t, os.WriteFile(noDatabasePeers, []byte("backup:\n  networkPolicy:\n    database: []\n"), 0o644))
	for _, tc := range []struct {
		name  string
		files []string
		set   map[string]string
		want  *regexp.Regexp
	}{
		{"embedded database without a dump token", []string{defaultValuesFile()}, map[string]string{"backup.enabled": "true", "backup.password": "x"},
			regexp.MustCompile(`backup\.database\.dumpToken: set it \(at least 32 characters.*COCALC_DUMP_TOKEN into backup\.existingSecret.*never generates secrets`)},
		{"embedded database, image without a loopback listener", []string{embedded}, map[string]string{"hub.embeddedDatabase.activityInSmcCompute": "false"},
			regexp.MustCompile(`backup\.database\.enabled: postgresql\.mode embedded is dumped over the server pod's loopback.*activityInSmcCompute is true.*unix socket only`)},
		{"dump token too short", []string{embedded}, map[string]string{"backup.database.dumpToken": "short-token"},
			regexp.MustCompile(`backup/database/dumpToken`)},
		{"dump port out of range", []string{embedded}, map[string]string{"backup.database.dumpServer.port": "70000"},
			regexp.MustCompile(`backup/database/dumpServer/port`)},
		{"dump port taken by the orchestrator", []string{embedded}, map[string]string{"backup.database.dumpServer.port": "8471"},
			regexp.MustCompile(`backup\.database\.dumpServer\.port: must differ from the other ports of the server pod`)},
		{"dump port taken by the database", []string{embedded}, map[string]string{"backup.database.dumpServer.port": "5432"},
			regexp.MustCompile(`backup\.database\.dumpServer\.port: must differ`)},
		{"dump duration", []string{embedded}, map[string]string{"backup.database.dumpServer.maxDuration": "6 hours"},
			regexp.MustCompile(`backup/database/dumpServer/maxDuration`)},
		{"no password", []string{ci}, map[string]string{"backup.password": ""},
			regexp.MustCompile(`backup\.existingSecret: .*RESTIC_PASSWORD.*never generates passwords`)},
		{"nothing to back up", []string{ci}, map[string]string{"backup.database.enabled": "false", "backup.homes.enabled": "false"},
			regexp.MustCompile(`nothing to back up`)},
		{"database without egress", []string{ci, noDatabasePeers}, nil,
			regexp.MustCompile(`backup\.networkPolicy\.database: required`)},
		{"url without egress", []string{ci}, map[string]string{"backup.repository.type": "url", "backup.repository.url": "s3:s3.example.org/b"},
			regexp.MustCompile(`backup\.networkPolicy\.repository\.peers: required`)},
		{"url missing", []string{ci}, map[string]string{"backup.repository.type": "url"},
			regexp.MustCompile(`backup\.repository\.url: required`)},
		{"local path as url", []string{ci}, map[string]string{"backup.repository.type": "url", "backup.repository.url": "/tmp/restic"},
			regexp.MustCompile(`backup/repository/url': '/tmp/restic' does not match`)},
		{"existing claim missing", []string{ci}, map[string]string{"backup.repository.type": "existingClaim"},
			regexp.MustCompile(`backup\.repository\.existingClaim: required`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderE(t, tc.files, tc.set)
			require.Error(t, err)
			assert.Regexp(t, tc.want, err.Error())
		})
	}
	// Embedded with an existing Secret: the token is its key COCALC_DUMP_TOKEN, which the render cannot see, so
	// nothing is refused and the dump server reads that Secret.
	withSecret := mustDecode(t, render(t, []string{embedded}, map[string]string{
		"backup.database.dumpToken": "", "backup.password": "", "backup.existingSecret": "my-backup-secret",
	}))
	ref := envOf(container(t, serverDeployment(t, withSecret).Spec.Template.Spec, "db-dump"))["COCALC_DUMP_TOKEN"].ValueFrom.SecretKeyRef
	assert.Equal(t, "my-backup-secret", ref.Name)
	// Without NetworkPolicies the peers are not needed; an existing claim replaces the chart's.
	m := mustDecode(t, render(t, []string{ci, noDatabasePeers}, map[string]string{
		"networkPolicy.enabled":  "false",
		"backup.repository.type": "existingClaim", "backup.repository.existingClaim": "my-backups",
	}))
	_, made := maybe[*corev1.PersistentVolumeClaim](m, backupFullname+"-backup")
	assert.False(t, made, "existingClaim: no chart claim")
	for _, cj := range backupCronJobs(m) {
		for _, v := range cj.Spec.JobTemplate.Spec.Template.Spec.Volumes {
			if v.Name == "repository" {
				assert.Equal(t, "my-backups", v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
}
