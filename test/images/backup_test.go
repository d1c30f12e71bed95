package images

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/yaml"
)

// backupCronJob renders the chart's homes backup CronJob (backup.enabled,
// a claim repository) with bin/helm.
func backupCronJob(t *testing.T) batchv1.CronJob {
	t.Helper()
	out, err := exec.Command(filepath.Join(repoRoot, "bin", "helm"), "template", "cocalc", filepath.Join(repoRoot, "charts", "cocalc"),
		"--set", "storage.mode=pvc", "--set", "backup.enabled=true", "--set", "backup.database.enabled=false", "--set", "backup.password=test",
		"--show-only", "templates/backup/cronjobs.yaml").CombinedOutput()
	require.NoError(t, err, "helm template (make tools): %s", out)
	var cj batchv1.CronJob
	require.NoError(t, yaml.Unmarshal(out, &cj))
	require.Equal(t, "CronJob", cj.Kind, "%s", out)
	return cj
}

// backupImageConfig is the part of an image config the chart relies on.
type backupImageConfig struct {
	Config struct {
		User       string   `json:"User"`
		Env        []string `json:"Env"`
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd"`
	} `json:"config"`
}

func readBackupConfig(t *testing.T, dir string) (ociLayout, platformImage, backupImageConfig) {
	t.Helper()
	l := readLayout(t, dir)
	require.Len(t, l.index.Manifests, 1)
	img := l.image(t, l.index.Manifests[0])
	var c backupImageConfig
	readJSON(t, l.blob(t, img.manifest.Config.Digest), &c)
	return l, img, c
}

// dockerfilePackages are the packages the Dockerfile's RUN step installs.
func dockerfilePackages(t *testing.T, d dockerfile) []string {
	t.Helper()
	runs := d.instructions(len(d.Stages)-1, "run")
	require.Len(t, runs, 1)
	m := regexp.MustCompile(`--no-install-recommends\s+([a-z0-9.+\- ]+?)\s*&&`).FindStringSubmatch(strings.Join(runs[0], " "))
	require.NotNil(t, m, "RUN installs with --no-install-recommends: %v", runs[0])
	return strings.Fields(m[1])
}

// rootfsPackages is PACKAGES of tools/images/backup/rootfs.sh.
func rootfsPackages(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "tools", "images", "backup", "rootfs.sh"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^PACKAGES=(\S+)$`).FindSubmatch(b)
	require.NotNil(t, m, "rootfs.sh sets PACKAGES")
	return strings.Split(string(m[1]), ",")
}

// The backup image's two recipes (Dockerfile, and debootstrap + imagebuild
// -config backup) agree with each other and with the chart's CronJobs:
// same packages, the project uid the pods run as, HOME on the /tmp emptyDir
// (the root filesystem is read-only), and no entrypoint in the way of the
// CronJob's `bash /scripts/backup.sh`. Offline: the builder's configuration
// is read from a layout built of a one-file root filesystem.
func TestBackupImageConfig(t *testing.T) {
	d := parseDockerfile(t, "backup")
	final := len(d.Stages) - 1
	assert.ElementsMatch(t, dockerfilePackages(t, d), rootfsPackages(t), "Dockerfile and rootfs.sh install the same packages")

	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc", "debian_version"), []byte("12\n"), 0o644))
	out := filepath.Join(t.TempDir(), "backup")
	build(t, orchEpoch, "rootfs", "-rootfs", root, "-config", "backup", "-out", out, "-version", testVersion)
	_, img, cfg := readBackupConfig(t, out)

	users := d.instructions(final, "user")
	require.Len(t, users, 1)
	assert.Equal(t, users[0], []string{cfg.Config.User}, "imagebuild's user is the Dockerfile's")
	cmds := d.instructions(final, "cmd")
	require.Len(t, cmds, 1)
	assert.Equal(t, cmds[0], cfg.Config.Cmd, "imagebuild's CMD is the Dockerfile's")
	entry := d.instructions(final, "entrypoint")
	require.Len(t, entry, 1)
	assert.Empty(t, entry[0], "the Dockerfile clears ENTRYPOINT")
	assert.Empty(t, cfg.Config.Entrypoint, "no entrypoint: the CronJob's command runs as given")
	for _, env := range d.instructions(final, "env") {
		// ENV k=v: BuildKit's parser gives key, value pairs.
		for i := 0; i+1 < len(env); i += 2 {
			assert.Contains(t, cfg.Config.Env, env[i]+"="+env[i+1], "imagebuild sets the Dockerfile's ENV")
		}
	}

	// cocalc-dbdump: both recipes put the same program at the same place, on the image's PATH, where the chart's
	// db-dump container and backup.sh call it by name.
	const dbdumpPath = "/usr/local/bin/cocalc-dbdump"
	hdr := img.files[dbdumpPath]
	require.NotNil(t, hdr, "imagebuild adds %s", dbdumpPath)
	assert.NotZero(t, hdr.Mode&0o111, "%s is executable", dbdumpPath)
	assert.Greater(t, hdr.Size, int64(1<<20), "%s is a built program", dbdumpPath)
	var builder int = -1
	for i, st := range d.Stages {
		if st.Name == "dbdump" {
			builder = i
		}
	}
	require.NotEqual(t, -1, builder, "the Dockerfile has a stage dbdump")
	runs := d.instructions(builder, "run")
	require.Len(t, runs, 1)
	assert.Contains(t, strings.Join(runs[0], " "), "CGO_ENABLED=0 go build")
	assert.Contains(t, strings.Join(runs[0], " "), "./tools/cmd/cocalc-dbdump", "the Dockerfile builds the package imagebuild builds")
	var copied bool
	for _, in := range d.Stages[final].Instructions {
		if in.Cmd == "copy" && slices.Contains(in.Flags, "--from=dbdump") {
			require.Len(t, in.Args, 2)
			assert.Equal(t, dbdumpPath, in.Args[1], "the Dockerfile installs it where imagebuild does")
			copied = true
		}
	}
	assert.True(t, copied, "the final stage copies cocalc-dbdump from the dbdump stage")
	var path string
	for _, e := range cfg.Config.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	assert.Contains(t, filepath.SplitList(path), filepath.Dir(dbdumpPath), "on the image's PATH")
	server, err := exec.Command(filepath.Join(repoRoot, "bin", "helm"), "template", "cocalc", filepath.Join(repoRoot, "charts", "cocalc"),
		"-f", filepath.Join(repoRoot, "charts", "cocalc", "ci", "backup-embedded-values.yaml"),
		"--show-only", "templates/server/deployment.yaml").CombinedOutput()
	require.NoError(t, err, "%s", server)
	var dep appsv1.Deployment
	require.NoError(t, yaml.Unmarshal(server, &dep))
	var dumpContainer bool
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name == "db-dump" {
			require.NotEmpty(t, c.Command)
			assert.Equal(t, filepath.Base(dbdumpPath), c.Command[0], "the db-dump container runs it by name")
			dumpContainer = true
		}
	}
	assert.True(t, dumpContainer, "the server pod has the db-dump container")

	cj := backupCronJob(t)
	pod := cj.Spec.JobTemplate.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	assert.Equal(t, fmt.Sprintf("%d:%d", *pod.SecurityContext.RunAsUser, *pod.SecurityContext.RunAsGroup), cfg.Config.User,
		"the image's user is the uid:gid the CronJob runs as (and owns the homes)")
	require.GreaterOrEqual(t, len(c.Command), 2)
	assert.Equal(t, "bash", c.Command[0], "the CronJob runs the script with the image's bash")
	assert.True(t, strings.HasPrefix(c.Command[1], "/scripts/"), "the script comes from the ConfigMap mount: %v", c.Command)
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	assert.True(t, mounts[filepath.Dir(c.Command[1])], "the script's directory is mounted")
	var home string
	for _, e := range cfg.Config.Env {
		if v, ok := strings.CutPrefix(e, "HOME="); ok {
			home = v
		}
	}
	require.NotEmpty(t, home, "the image sets HOME (uid 2001 has no passwd entry)")
	assert.True(t, mounts[home], "the image's HOME %s is a writable mount in the CronJob (read-only root)", home)
	require.NotNil(t, c.SecurityContext.ReadOnlyRootFilesystem)
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	for _, e := range c.Env {
		if e.Name == "HOME" {
			assert.Equal(t, home, e.Value, "the CronJob's HOME is the image's")
		}
	}
}

// The backup image built for real: Debian's packages by debootstrap (root,
// 5-25 min cold, then cached), one layer, and the chart's backup.sh run from
// its own files as the CronJob runs it (uid 2001, read-only root, /tmp
// writable), into a repository restic then lists.
func TestBackupImage(t *testing.T) {
	if os.Getenv("COCALC_BUILD_BACKUP_IMAGE") != "1" {
		t.Skip("COCALC_BUILD_BACKUP_IMAGE is not 1: a cold debootstrap of the backup image costs 5-25 min, so `make test` does not build it (the kind tier's backup test does)")
	}
	if os.Getuid() != 0 {
		t.Skipf("debootstrap and chroot need root; this test runs as uid %d", os.Getuid())
	}
	for _, p := range []string{"debootstrap", "unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed: `make deps`", p)
		}
	}
	start := time.Now()
	out, err := exec.Command(filepath.Join(repoRoot, "tools", "images", "backup", "rootfs.sh")).Output()
	require.NoError(t, err, "rootfs.sh")
	rootfs := strings.TrimSpace(string(out))
	t.Logf("root filesystem %s: %s", rootfs, time.Since(start).Round(time.Millisecond))

	dir := filepath.Join(t.TempDir(), "backup")
	digest, took := build(t, orchEpoch, "rootfs", "-rootfs", rootfs, "-config", "backup", "-out", dir, "-version", testVersion)
	t.Logf("backup layer and layout: %s", took.Round(time.Millisecond))
	again, _ := build(t, orchEpoch, "rootfs", "-rootfs", rootfs, "-config", "backup", "-out", filepath.Join(t.TempDir(), "backup"), "-version", testVersion)
	assert.Equal(t, digest, again, "the same root filesystem gives the same image")

	l, img, cfg := readBackupConfig(t, dir)
	assert.Equal(t, "linux/amd64", img.platform)
	t.Logf("image %s: %d files", digest, len(img.files))
	for _, f := range []string{"/usr/bin/restic", "/usr/bin/pg_dump", "/usr/local/bin/cocalc-dbdump", "/usr/bin/pg_restore", "/usr/bin/bash", "/usr/bin/ssh", "/etc/ssl/certs/ca-certificates.crt"} {
		assert.NotNil(t, img.files[f], "%s in the image", f)
	}
	for name := range img.files {
		assert.False(t, strings.HasPrefix(name, "/var/lib/apt/lists/"), "%s: no apt lists", name)
		assert.False(t, strings.HasPrefix(name, "/dev/"), "%s: the runtime provides /dev", name)
	}

	unpacked := t.TempDir()
	unpack(t, l, img, unpacked)
	homes, repo := t.TempDir(), t.TempDir()
	require.NoError(t, os.Chown(repo, 2001, 2001))
	home := filepath.Join(homes, "2e5ab7d0-0000-4000-8000-00000000000e")
	require.NoError(t, os.MkdirAll(filepath.Join(home, "sub"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, "sub", "notes.txt"), []byte("kept\n"), 0o640))
	for _, p := range []string{home, filepath.Join(home, "sub"), filepath.Join(home, "sub", "notes.txt")} {
		require.NoError(t, os.Chown(p, 2001, 2001))
	}
	for _, d := range []string{"proc", "dev", "repository", "projects/home", "scripts", "tmp"} {
		require.NoError(t, os.MkdirAll(filepath.Join(unpacked, d), 0o755))
	}
	// The pod: /proc and /dev, an emptyDir on /tmp, the repository claim, the homes
	// claim read-only, the ConfigMap's script; the root read-only.
	script := fmt.Sprintf(`set -e
mount --bind %[1]s %[1]s && mount -o remount,bind,ro %[1]s
mount -t proc proc %[1]s/proc
mount --rbind /dev %[1]s/dev
mount -t tmpfs tmpfs %[1]s/tmp
mount --bind %[2]s %[1]s/repository
mount --bind -o ro %[3]s %[1]s/projects/home
mount --bind -o ro %[4]s %[1]s/scripts
exec chroot --userspec=%[5]s %[1]s "$@"`, unpacked, repo, homes, filepath.Join(repoRoot, "charts", "cocalc", "files"), cfg.Config.User)
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "RESTIC_REPOSITORY=/repository/restic", "RESTIC_PASSWORD=image-test",
		"RESTIC_CACHE_DIR=/tmp/cache", "BACKUP_HOST=cocalc", "HOMES_PATH=/projects/home",
		"KEEP_LAST=3", "KEEP_DAILY=0", "KEEP_WEEKLY=0", "KEEP_MONTHLY=0"}
	inPod := func(args ...string) string {
		cmd := exec.Command("unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script, "sh"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%v in the image: %s", args, out)
		return string(out)
	}
	start = time.Now()
	log := inPod("bash", "/scripts/backup.sh", "homes")
	t.Logf("backup.sh homes: %s\n%s", time.Since(start).Round(time.Millisecond), log)
	var snaps []struct {
		Tags  []string `json:"tags"`
		Paths []string `json:"paths"`
	}
	require.NoError(t, json.Unmarshal([]byte(inPod("restic", "snapshots", "--json", "--host", "cocalc")), &snaps))
	require.Len(t, snaps, 1)
	assert.Equal(t, []string{"homes"}, snaps[0].Tags)
	ls := inPod("restic", "ls", "latest", "--tag", "homes")
	assert.Contains(t, ls, "/2e5ab7d0-0000-4000-8000-00000000000e/sub/notes.txt", "the home's file is in the snapshot")
	assert.Contains(t, inPod("pg_dump", "--version"), "pg_dump (PostgreSQL)")
}
