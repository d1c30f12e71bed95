package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	sigsyaml "sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// backupImageRef is the name the kind nodes know the backup image by
// (backup.image in the values below); never pulled.
const backupImageRef = "cocalc-kubernetes/backup:dev"

// TestBackupRestoresHomes is the kind tier's proof of the chart's homes
// backup: files written into a project's home (by the server, and with
// several modes, a subdirectory and a symlink by the project user) are
// backed up by the chart's CronJob (run at once as a Job from its
// jobTemplate, as `kubectl create job --from=cronjob/...` does), destroyed,
// and restored with the restore pod and command of docs/backup.md; the
// homes before and after are compared entry by entry (type, mode, owner,
// size, symlink target, content hash, file modification time).
//
// Homes only: the database backup has tests of its own (backupdb_test.go,
// backupembedded_test.go).
func TestBackupRestoresHomes(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	ns, h := installBackupRelease(t, c, "backup", func(string) map[string]string {
		return map[string]string{"backup.database.enabled": "false"}
	})

	id := project.MustParse("0d0d0d0d-0000-4000-8000-00000000000d")
	h.start(id, "")
	code, raw := h.do("POST", "/projects/"+string(id)+"/file", map[string]string{"name": "from-server.txt"}, "written by the server\n")
	require.Equal(t, 204, code, "write: %s", raw)
	// The project user's files: a private file, a script, a directory of its
	// own mode, a symlink, a hidden file, an empty file.
	home := "/projects/home/" + string(id)
	runShell(t, c, ns, "write", fmt.Sprintf(`set -e
cd %s
mkdir -m 0750 notes
printf 'private\n' > notes/secret.txt && chmod 0600 notes/secret.txt
printf '#!/bin/sh\necho hi\n' > run.sh && chmod 0755 run.sh
ln -s notes/secret.txt link
head -c 300000 /dev/urandom > notes/random.bin
: > .hidden && chmod 0640 .hidden
touch -d '2020-02-02 02:02:02' notes/secret.txt`, home))
	before := homeManifest(t, c, ns, home)
	require.Contains(t, before, "./from-server.txt f", "the server's file is in the home")
	require.Contains(t, before, "./link l 777", "the symlink is in the home")

	start := time.Now()
	runBackupJob(t, c, ns, releaseName+"-backup-homes")
	t.Logf("homes backup job: %s", time.Since(start).Round(time.Second))

	// docs/backup.md "Restore": stop the writers, then destroy the home's
	// contents (the restore target keeps the home directory itself).
	scaleServerToZero(t, c, ns)
	runShell(t, c, ns, "destroy", fmt.Sprintf("set -e; find %s -mindepth 1 -delete; ls -A %s | wc -l", home, home))
	require.NotEqual(t, before, homeManifest(t, c, ns, home), "the home was destroyed")

	start = time.Now()
	logs := runDocumentedRestore(t, c, ns, false)
	t.Logf("documented restore (as uid 2001): %s\n%s", time.Since(start).Round(time.Second), logs)
	assert.Equal(t, ownedByProjectUser(before), homeManifest(t, c, ns, home),
		"restored as uid 2001: the home that was backed up, every entry owned by 2001:2001")

	// Again with the documented root variant: owners come back too. The
	// server's file is the one owned otherwise (group 0).
	require.NotEqual(t, before, ownedByProjectUser(before), "the home has an entry owned by another user or group")
	runShell(t, c, ns, "destroy-again", fmt.Sprintf("set -e; find %s -mindepth 1 -delete", home))
	start = time.Now()
	logs = runDocumentedRestore(t, c, ns, true)
	t.Logf("documented restore (as root): %s\n%s", time.Since(start).Round(time.Second), logs)
	assert.Equal(t, before, homeManifest(t, c, ns, home), "restored as root: exactly the home that was backed up")
}

// ownedByProjectUser is a homeManifest with every entry's owner and group
// set to 2001: what a restore as the project user gives.
func ownedByProjectUser(manifest string) string {
	return regexp.MustCompile(`(?m)^(\S+ [fdl] [0-7]+) \d+ \d+ `).ReplaceAllString(manifest, "$1 2001 2001 ")
}

// loadBackupImage builds the backup image (make image-backup, an OCI
// layout in out/images/backup; root and debootstrap, cached after the
// first time) and loads it into every kind node as backupImageRef, as
// cluster.LoadImages loads docker images: one archive imported into each
// node's containerd. The archive is the layout plus a manifest.json naming
// the image (the docker-save form containerd's importer takes the name from).
func loadBackupImage(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	start := time.Now()
	out, err := exec.CommandContext(t.Context(), "make", "-C", repoRoot, "image-backup").CombinedOutput()
	require.NoError(t, err, "make image-backup (root and debootstrap: tools/images/backup/README.md):\n%s", out)
	t.Logf("make image-backup: %s", time.Since(start).Round(time.Second))
	archive := layoutArchive(t, filepath.Join(repoRoot, "out", "images", "backup"), backupImageRef)

	require.NoError(t, c.LoadImageArchive(t.Context(), archive, backupImageRef))
	t.Logf("backup image loaded into the kind nodes: %s", time.Since(start).Round(time.Second))
}

// layoutArchive tars an OCI layout of one single-platform image named ref,
// as `docker save` writes one: index.json's entry annotated with the full
// name (io.containerd.image.name, what containerd's importer names the
// image by) and a manifest.json with RepoTags (docker load's).
func layoutArchive(t *testing.T, dir, ref string) []byte {
	t.Helper()
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	blob := func(d string) string { return "blobs/" + strings.Replace(d, ":", "/", 1) }
	read := func(p string, v any) {
		b, err := os.ReadFile(filepath.Join(dir, p))
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, v))
	}
	var idx struct{ Manifests []descriptor }
	read("index.json", &idx)
	require.Len(t, idx.Manifests, 1, "%s: one entry", dir)
	d := idx.Manifests[0]
	var rawIdx map[string]any
	read("index.json", &rawIdx)
	entry := rawIdx["manifests"].([]any)[0].(map[string]any)
	repo, tag, ok := strings.Cut(ref, ":")
	require.True(t, ok && strings.Count(repo, "/") == 1 && !strings.Contains(repo, "."), "%s: <org>/<name>:<tag> on Docker Hub's default", ref)
	entry["annotations"] = map[string]string{
		"io.containerd.image.name":          "docker.io/" + ref,
		"org.opencontainers.image.ref.name": tag,
	}
	ij, err := json.Marshal(rawIdx)
	require.NoError(t, err)
	if d.MediaType == "application/vnd.oci.image.index.v1+json" {
		var inner struct{ Manifests []descriptor }
		read(blob(d.Digest), &inner)
		require.Len(t, inner.Manifests, 1, "%s: the backup image has one platform", dir)
		d = inner.Manifests[0]
	}
	var m struct {
		Config descriptor
		Layers []descriptor
	}
	read(blob(d.Digest), &m)
	dm := []map[string]any{{"Config": blob(m.Config.Digest), "RepoTags": []string{ref}, "Layers": func() []string {
		var ls []string
		for _, l := range m.Layers {
			ls = append(ls, blob(l.Digest))
		}
		return ls
	}()}}
	mj, err := json.Marshal(dm)
	require.NoError(t, err)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	require.NoError(t, filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if rel == "index.json" {
			b = ij
		}
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(b))}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}))
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: int64(len(mj))}))
	_, err = tw.Write(mj)
	require.NoError(t, err)
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// installBackupRelease is the prologue of the backup tests: the backup image
// loaded, a namespace, the repository claim made before the release (under
// the name the chart would give its own claim, which docs/backup.md's restore
// pod mounts: helm install --wait waits for the release's claims to bind, and
// a WaitForFirstConsumer class binds the chart's own claim only when the
// first backup runs) and owned by the backup's uid (the kind tier's hostPath
// volumes ignore fsGroup: docs/backup.md "Repository ownership"), then the
// release with the backups on, suspended (they run when a test starts them),
// from that claim and the local backup image; set(namespace) adds or
// overrides values.
func installBackupRelease(t *testing.T, c *cluster.Cluster, prefix string, set func(ns string) map[string]string) (string, hub) {
	t.Helper()
	loadBackupImage(t, c)
	ns := newNamespace(t, c, prefix, nil)
	repoClaim := releaseName + "-backup"
	createClaim(t, c, ns, repoClaim)
	chownRepository(t, c, ns, repoClaim)
	repo, tag, _ := strings.Cut(backupImageRef, ":")
	values := map[string]string{
		"backup.enabled":                  "true",
		"backup.suspend":                  "true",
		"backup.password":                 "kind-backup-test",
		"backup.repository.type":          "existingClaim",
		"backup.repository.existingClaim": repoClaim,
		"backup.image.repository":         repo,
		"backup.image.tag":                tag,
		"backup.image.pullPolicy":         "Never",
	}
	maps.Copy(values, set(ns))
	return ns, installInCluster(t, c, ns, values)
}

// runShell runs script with the backup image's bash as the project user,
// the projects claim mounted read-write at /projects/home (as the restore
// pod has it), and returns its output. The pod meets Pod Security
// "restricted".
func runShell(t *testing.T, c *cluster.Cluster, ns, name, script string) string {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "backup-test-" + name + "-"},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			SecurityContext:              restrictedPodSecurity(),
			Containers: []corev1.Container{{
				Name: "shell", Image: backupImageRef, ImagePullPolicy: corev1.PullNever,
				Command:         []string{"bash", "-c", script},
				SecurityContext: restrictedContainerSecurity(),
				VolumeMounts:    []corev1.VolumeMount{{Name: "homes", MountPath: "/projects/home"}},
			}},
			Volumes: []corev1.Volume{{Name: "homes", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: projectsClaimName},
			}}},
		},
	}
	return runPodToEnd(t, c, ns, pod)
}

// chownRepository is docs/backup.md "Repository ownership": a one-off pod
// as root makes the repository claim's root owned by the backup's uid.
func chownRepository(t *testing.T, c *cluster.Cluster, ns, claim string) {
	t.Helper()
	runPodToEnd(t, c, ns, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "backup-chown-"},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name: "chown", Image: backupImageRef, ImagePullPolicy: corev1.PullNever,
				Command:         []string{"chown", "2001:2001", "/repository"},
				SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](0)},
				VolumeMounts:    []corev1.VolumeMount{{Name: "repository", MountPath: "/repository"}},
			}},
			Volumes: []corev1.Volume{{Name: "repository", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
			}}},
		},
	})
}

// restrictedPodSecurity and restrictedContainerSecurity are Pod Security
// "restricted" as the project user (uid and gid 2001), for the test's own
// pods.
func restrictedPodSecurity() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](2001), RunAsGroup: ptr.To[int64](2001),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func restrictedContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// runPodToEnd creates pod, waits until it ends, requires it to succeed,
// deletes it and returns its log.
func runPodToEnd(t *testing.T, c *cluster.Cluster, ns string, pod *corev1.Pod) string {
	t.Helper()
	pods := c.Client.CoreV1().Pods(ns)
	p, err := pods.Create(t.Context(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	defer func() {
		_ = pods.Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}()
	require.Eventually(t, func() bool {
		p, err = pods.Get(t.Context(), p.Name, metav1.GetOptions{})
		require.NoError(t, err)
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	}, 3*time.Minute, time.Second, "pod %s did not end", p.Name)
	logs, err := pods.GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(t.Context())
	require.NoError(t, err)
	require.Equal(t, corev1.PodSucceeded, p.Status.Phase, "pod %s failed:\n%s", p.Name, logs)
	return string(logs)
}

// homeManifest lists every entry of home (relative path, type, mode,
// numeric owner and group, symlink target; for regular files the size,
// modification time and a content hash), sorted. Directory sizes are left
// out: they depend on the filesystem's history, not on the restore.
func homeManifest(t *testing.T, c *cluster.Cluster, ns, home string) string {
	t.Helper()
	return runShell(t, c, ns, "list", fmt.Sprintf(`set -eo pipefail
cd %s
find . -printf '%%p %%y %%m %%U %%G %%l\n' | sort
find . -type f -printf '%%p %%s %%T@\n' | sort
find . -type f -print0 | sort -z | xargs -0r sha256sum`, home))
}

// runBackupJob runs the CronJob name now: a Job made from its jobTemplate
// (what `kubectl create job --from=cronjob/<name>` does), which must
// complete.
func runBackupJob(t *testing.T, c *cluster.Cluster, ns, name string) {
	t.Helper()
	cj, err := c.Client.BatchV1().CronJobs(ns).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name + "-manual",
			Labels:      cj.Spec.JobTemplate.Labels,
			Annotations: map[string]string{"cronjob.kubernetes.io/instantiate": "manual"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: ptr.To(true),
			}},
		},
		Spec: cj.Spec.JobTemplate.Spec,
	}
	job, err = c.Client.BatchV1().Jobs(ns).Create(t.Context(), job, metav1.CreateOptions{})
	require.NoError(t, err)
	var done batchv1.JobConditionType
	require.Eventually(t, func() bool {
		j, err := c.Client.BatchV1().Jobs(ns).Get(t.Context(), job.Name, metav1.GetOptions{})
		require.NoError(t, err)
		for _, cond := range j.Status.Conditions {
			if (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) && cond.Status == corev1.ConditionTrue {
				done = cond.Type
				return true
			}
		}
		return false
	}, 5*time.Minute, 2*time.Second, "job %s did not finish", job.Name)
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "job-name=" + job.Name})
	require.NoError(t, err)
	var logs strings.Builder
	for _, p := range pods.Items {
		b, _ := c.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(t.Context())
		fmt.Fprintf(&logs, "--- %s (%s)\n%s", p.Name, p.Status.Phase, b)
	}
	require.Equal(t, batchv1.JobComplete, done, "job %s:\n%s", job.Name, logs.String())
	t.Logf("job %s:\n%s", job.Name, logs.String())
}

// scaleServerToZero is the first step of docs/backup.md's restore: no
// server (hub and orchestrator), no project pods.
func scaleServerToZero(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	deps := c.Client.AppsV1().Deployments(ns)
	s, err := deps.GetScale(t.Context(), serverName, metav1.GetOptions{})
	require.NoError(t, err)
	s.Spec.Replicas = 0
	_, err = deps.UpdateScale(t.Context(), serverName, s, metav1.UpdateOptions{})
	require.NoError(t, err)
	sel := "app.kubernetes.io/component=project"
	require.NoError(t, c.Client.CoreV1().Pods(ns).DeleteCollection(t.Context(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel}))
	require.Eventually(t, func() bool {
		for _, s := range []string{sel, "app.kubernetes.io/component=server"} {
			pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: s})
			require.NoError(t, err)
			if len(pods.Items) > 0 {
				return false
			}
		}
		return true
	}, 3*time.Minute, time.Second, "server and project pods still there")
}

// documentedRestore reads docs/backup.md's restore pod (NS and FULL
// substituted for ns and releaseName; the PG* variables left out, since a
// homes-only release has no external database) and its homes restore
// command (every home from the newest snapshot).
func documentedRestore(t *testing.T, ns string, asRoot bool) (corev1.Pod, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "backup.md"))
	require.NoError(t, err)
	doc := string(b)
	m := regexp.MustCompile(`(?s)kubectl -n \$NS apply -f - <<EOF\n(.*?)\nEOF\n`).FindStringSubmatch(doc)
	require.NotNil(t, m, "docs/backup.md has the restore pod's heredoc")
	if asRoot {
		// "As root, to restore owners": the two securityContext lines replaced.
		root := regexp.MustCompile("(?s)As root, to restore owners:.*?```yaml\n(  securityContext: [^\n]*)\n(      securityContext: [^\n]*)\n```").FindStringSubmatch(doc)
		require.NotNil(t, root, "docs/backup.md has the root variant's two securityContext lines")
		podLine := regexp.MustCompile(`(?m)^  securityContext: .*$`)
		ctrLine := regexp.MustCompile(`(?m)^      securityContext: .*$`)
		require.Len(t, podLine.FindAllString(m[1], -1), 1, "one pod securityContext line to replace")
		require.Len(t, ctrLine.FindAllString(m[1], -1), 1, "one container securityContext line to replace")
		m[1] = ctrLine.ReplaceAllLiteralString(podLine.ReplaceAllLiteralString(m[1], root[1]), root[2])
	}
	cmd := regexp.MustCompile(`(?m)^restic restore latest --host (\S+) --tag homes --target (\S+)$`).FindStringSubmatch(doc)
	require.NotNil(t, cmd, "docs/backup.md has the homes restore command")
	require.Equal(t, releaseName, cmd[1], "the documented --host is the fullname of a release named %s", releaseName)

	var lines []string
	for _, l := range strings.Split(m[1], "\n") {
		if strings.Contains(l, "{name: PG") {
			continue
		}
		lines = append(lines, l)
	}
	manifest := strings.NewReplacer("$FULL", releaseName, "$NS", ns).Replace(strings.Join(lines, "\n"))
	var pod corev1.Pod
	require.NoError(t, sigsyaml.UnmarshalStrict([]byte(manifest), &pod), "the documented restore pod:\n%s", manifest)
	require.Len(t, pod.Spec.Containers, 1)
	require.Equal(t, []string{"sleep", "infinity"}, pod.Spec.Containers[0].Command, "the documented pod waits for kubectl exec")
	return pod, cmd[0]
}

// TestDocumentedRestorePod checks, on every tier, that docs/backup.md's
// restore pod is a valid Pod that mounts what the chart's homes backup
// wrote where the restore command reads it: the chart's claims, the
// CronJob's repository path and Secret, as the CronJob's user.
func TestDocumentedRestorePod(t *testing.T) {
	pod, cmd := documentedRestore(t, "cocalc", false)
	ctr := pod.Spec.Containers[0]
	mounts := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	claims := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims[v.Name] = v.PersistentVolumeClaim.ClaimName
		}
	}
	assert.Equal(t, projectsClaimName, claims["homes"], "the homes volume is the chart's projects claim")
	assert.Equal(t, releaseName+"-backup", claims["repository"], "the repository volume is the chart's backup claim")
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	assert.True(t, strings.HasPrefix(env["RESTIC_REPOSITORY"], mounts["repository"]+"/"), "RESTIC_REPOSITORY %q is on the repository mount %q", env["RESTIC_REPOSITORY"], mounts["repository"])
	target := strings.Fields(cmd)[len(strings.Fields(cmd))-1]
	assert.Equal(t, mounts["homes"], target, "the restore target is where the homes claim is mounted")
	require.Len(t, ctr.EnvFrom, 1)
	assert.Equal(t, releaseName+"-backup", ctr.EnvFrom[0].SecretRef.Name, "RESTIC_PASSWORD from the chart's Secret")
	require.NotNil(t, pod.Spec.SecurityContext.RunAsUser)
	assert.EqualValues(t, 2001, *pod.Spec.SecurityContext.RunAsUser, "the project user, as the CronJob runs")
	// fsGroup makes the repository writable; on volumes whose ownership the
	// kubelet manages, OnRootMismatch keeps it from re-owning (and setting
	// setgid on) every directory of every home on each start.
	if pod.Spec.SecurityContext.FSGroup != nil {
		require.NotNil(t, pod.Spec.SecurityContext.FSGroupChangePolicy)
		assert.Equal(t, corev1.FSGroupChangeOnRootMismatch, *pod.Spec.SecurityContext.FSGroupChangePolicy)
	}

	// The root variant: root, with the capabilities to enter other users'
	// directories and set owners, modes and times, and no more.
	root, _ := documentedRestore(t, "cocalc", true)
	require.NotNil(t, root.Spec.SecurityContext.RunAsUser)
	assert.EqualValues(t, 0, *root.Spec.SecurityContext.RunAsUser)
	caps := root.Spec.Containers[0].SecurityContext.Capabilities
	require.NotNil(t, caps)
	assert.Equal(t, []corev1.Capability{"ALL"}, caps.Drop)
	assert.ElementsMatch(t, []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"}, caps.Add)
	assert.Equal(t, ctr.VolumeMounts, root.Spec.Containers[0].VolumeMounts, "only the security context differs")
}

// runDocumentedRestore runs docs/backup.md's restore pod with the backup
// image loaded here and the documented homes restore command as its command
// instead of an interactive shell. Returns its log.
func runDocumentedRestore(t *testing.T, c *cluster.Cluster, ns string, asRoot bool) string {
	t.Helper()
	pod, cmd := documentedRestore(t, ns, asRoot)
	ctr := &pod.Spec.Containers[0]
	ctr.Image = backupImageRef
	ctr.ImagePullPolicy = corev1.PullNever
	ctr.Command = []string{"bash", "-c", "set -e; restic snapshots; " + cmd}
	pod.Namespace = ns
	return runPodToEnd(t, c, ns, &pod)
}
