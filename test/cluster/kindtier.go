package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindlog "sigs.k8s.io/kind/pkg/log"
)

// KindOptions configure CreateKind.
type KindOptions struct {
	// Name of the kind cluster (its node is <Name>-control-plane).
	Name string
	// NodeImage is the node image: kindest/node where registries are
	// reachable, or the one ci/kind/images.sh builds offline.
	NodeImage string
	// StateDir receives the kubeconfig, the kind config used and state.json.
	StateDir string
	// Manifests are YAML files applied (server-side) once the node is Ready,
	// e.g. the NetworkPolicy agent; their DaemonSets and Deployments must
	// then roll out.
	Manifests []string
	// Images are local docker images loaded into the node after creation
	// (kind's image loading: nothing is pulled).
	Images []string
	// DockerShimDir holds a `docker` that maps --privileged onto what a
	// restricted host allows (ci/kind/shim); used only when the probe shows
	// `docker run --privileged` fails here.
	DockerShimDir string
	// ProbeImage is a small local image for that probe.
	ProbeImage string
	// AllowPull lets docker pull NodeImage when it is not local (an
	// upstream kindest/node where a registry is reachable). Without it a
	// missing node image is an error, never a registry request.
	AllowPull bool
	// Workers beside the control plane (0: the one-node cluster). See
	// kindmulti.go for how pods are routed between nodes and what the
	// nodes share.
	Workers int
	Logf    func(format string, args ...any)
}

// hostQuirks are the fixes a restricted host (like this project's CI VMs)
// needs; each is detected, so a normal host gets plain kind.
type hostQuirks struct {
	// privilegedFails: the capability bounding set lacks something docker's
	// --privileged asks for ("unable to apply caps").
	privilegedFails bool
	// noSysResource: runc cannot lower oom_score_adj in sandboxes.
	noSysResource bool
	// cgroupV1: kubelet >= 1.35 refuses cgroup v1 unless told otherwise.
	cgroupV1 bool
}

func detectQuirks(ctx context.Context, probeImage string) (hostQuirks, error) {
	var q hostQuirks
	var err error
	if q.privilegedFails, err = privilegedFails(ctx, probeImage); err != nil {
		return q, err
	}
	capBnd, err := boundingSet()
	if err != nil {
		return q, err
	}
	const capSysResource = 24
	q.noSysResource = capBnd&(1<<capSysResource) == 0
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err != nil {
		return q, fmt.Errorf("statfs /sys/fs/cgroup: %w", err)
	}
	q.cgroupV1 = fs.Type != unix.CGROUP2_SUPER_MAGIC
	return q, nil
}

// privilegedFails probes whether `docker run --privileged` fails here
// because the host withholds a capability.
func privilegedFails(ctx context.Context, probeImage string) (bool, error) {
	out, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--pull=never", "--privileged", "--entrypoint", "/bin/true", probeImage).CombinedOutput()
	if err == nil {
		return false, nil
	}
	if strings.Contains(string(out), "apply caps") {
		return true, nil
	}
	return false, fmt.Errorf("docker run --privileged %s: %v: %s", probeImage, err, out)
}

// UseDockerShimIfNeeded makes the kind library's docker calls go through
// the shim in shimDir when `docker run --privileged` fails here (kind's
// `docker exec --privileged` fails the same way), for commands that talk
// to an existing cluster (image loading).
func UseDockerShimIfNeeded(ctx context.Context, shimDir, probeImage string) error {
	fails, err := privilegedFails(ctx, probeImage)
	if err != nil || !fails {
		return err
	}
	return useDockerShim(shimDir)
}

// ProbeImage is the small local image (ci/kind/rootfs.sh) the probe of
// `docker run --privileged` runs.
const ProbeImage = "cocalc.local/debian-rootfs:latest"

// DockerShimDir is the repository's docker shim (ci/kind/shim).
func DockerShimDir(root string) string { return filepath.Join(root, "ci", "kind", "shim") }

var kindDocker struct {
	once sync.Once
	err  error
}

// prepareKindDocker applies the docker shim once per process when this
// host needs it, for calls into a running kind node.
func prepareKindDocker(ctx context.Context) error {
	kindDocker.once.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			kindDocker.err = err
			return
		}
		kindDocker.err = UseDockerShimIfNeeded(ctx, DockerShimDir(root), ProbeImage)
	})
	return kindDocker.err
}

// boundingSet reads this process's capability bounding set.
func boundingSet() (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapBnd in /proc/self/status")
}

// kindConfig is the cluster's kind configuration: one node, no default CNI
// (the node image carries a static CNI config; a policy agent is applied
// as a manifest), plus the host quirks' patches.
func kindConfig(q hostQuirks) string {
	var b strings.Builder
	b.WriteString(`kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
nodes:
- role: control-plane
`)
	// Registry host entries are read from certs.d at each pull (no
	// restart): StartNodeRegistry writes one.
	b.WriteString(`containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
`)
	if q.noSysResource {
		b.WriteString(`- |-
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
`)
	}
	if q.cgroupV1 {
		b.WriteString(`kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false
`)
	}
	return b.String()
}

// CreateKind creates a kind cluster with the kind library, applies
// o.Manifests, waits for them and CoreDNS, loads o.Images and records the
// cluster in o.StateDir for tests (COCALC_TEST_TIER=kind) to attach to.
func CreateKind(ctx context.Context, o KindOptions) (*Cluster, error) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := EnsureDocker(ctx, filepath.Join(o.StateDir, "dockerd.log"), o.Logf); err != nil {
		return nil, err
	}
	if !o.AllowPull {
		if out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Id}}", o.NodeImage).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("node image %s is not in the local docker (build it: make cluster-kind): %s", o.NodeImage, strings.TrimSpace(string(out)))
		}
	}
	q, err := detectQuirks(ctx, o.ProbeImage)
	if err != nil {
		return nil, err
	}
	if q.privilegedFails {
		o.Logf("docker cannot grant --privileged here (capability bounding set): kind runs through the shim in %s", o.DockerShimDir)
		if err := useDockerShim(o.DockerShimDir); err != nil {
			return nil, err
		}
	}
	if q.noSysResource {
		o.Logf("no CAP_SYS_RESOURCE in the bounding set: containerd restrict_oom_score_adj = true")
	}
	if q.cgroupV1 {
		o.Logf("cgroup v1 host: kubelet failCgroupV1: false")
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, err
	}
	cfg := kindConfig(q)
	if o.Workers > 0 {
		if err := prepareMultiNodeDirs(o.StateDir, o.Workers); err != nil {
			return nil, err
		}
		cfg = strings.Replace(cfg, "nodes:\n- role: control-plane\n", multiNodesYAML(o.StateDir, o.Workers), 1)
	}
	if err := os.WriteFile(filepath.Join(o.StateDir, "kind-config.yaml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	provider := kindcluster.NewProvider(kindcluster.ProviderWithDocker(), kindcluster.ProviderWithLogger(kindLogger{o.Logf}))
	existing, err := provider.List()
	if err != nil {
		return nil, fmt.Errorf("list kind clusters: %w", err)
	}
	for _, n := range existing {
		if n == o.Name {
			return nil, fmt.Errorf("kind cluster %q already exists: `make down` first", o.Name)
		}
	}
	kubeconfig := filepath.Join(o.StateDir, "kubeconfig")
	o.Logf("creating kind cluster %s from %s", o.Name, o.NodeImage)
	// Nodes of a multi-node cluster are Ready only once setUpMultiNode
	// has written their CNI configs: no waiting inside kind there.
	waitReady := 3 * time.Minute
	if o.Workers > 0 {
		waitReady = 0
	}
	err = provider.Create(o.Name,
		kindcluster.CreateWithRawConfig([]byte(cfg)),
		kindcluster.CreateWithNodeImage(o.NodeImage),
		kindcluster.CreateWithKubeconfigPath(kubeconfig),
		kindcluster.CreateWithWaitForReady(waitReady),
		kindcluster.CreateWithDisplayUsage(false),
		kindcluster.CreateWithDisplaySalutation(false))
	if err != nil {
		return nil, fmt.Errorf("kind create cluster %s: %w", o.Name, err)
	}
	c, err := connect(ctx, TierKind, "kind-"+o.Name, kubeconfig)
	if err != nil {
		return nil, err
	}
	c.caps = capsOf(TierKind)
	c.StateDir = o.StateDir
	if o.Workers > 0 {
		if err := setUpMultiNode(ctx, c, o.Name, o.StateDir, o.Logf); err != nil {
			return nil, err
		}
	}
	// CoreDNS first: it is Ready only once kube-proxy has programmed the
	// Service addresses. Add-ons that rewrite iptables (kube-router) start
	// after that, so they cannot race kube-proxy's first sync (seen here:
	// kube-proxy lost its chain jumps and never recovered).
	if err := waitRolledOut(ctx, c, "Deployment", "kube-system", "coredns"); err != nil {
		return nil, err
	}
	for _, m := range o.Manifests {
		data, err := os.ReadFile(m)
		if err != nil {
			return nil, err
		}
		// An add-on image that is never pulled must be in the node: it is
		// in the offline node image; an upstream node image gets it loaded
		// from the local docker.
		if err := loadMissingImages(ctx, o.Name, neverPulledImages(data)); err != nil {
			return nil, fmt.Errorf("%s: %w", m, err)
		}
		objs, err := ApplyYAML(ctx, c.RESTConfig, data, "cocalc-test-cluster")
		if err != nil {
			return nil, fmt.Errorf("apply %s: %w", m, err)
		}
		for _, obj := range objs {
			if err := waitRolledOut(ctx, c, obj.GetKind(), obj.GetNamespace(), obj.GetName()); err != nil {
				return nil, err
			}
		}
	}
	if err := LoadImages(ctx, o.Name, o.Images...); err != nil {
		return nil, err
	}
	st := State{Tier: TierKind, Name: c.Name, Kubeconfig: kubeconfig, Capabilities: c.Capabilities(), StartedAt: time.Now().UTC()}
	if err := WriteState(o.StateDir, st); err != nil {
		return nil, err
	}
	return c, nil
}

// DeleteKind deletes the kind cluster name (nothing if it does not exist)
// and forgets its state.
func DeleteKind(ctx context.Context, name, stateDir string, logf func(string, ...any)) error {
	if err := dockerAnswers(ctx); err != nil {
		return nil // no docker daemon, no kind cluster
	}
	provider := kindcluster.NewProvider(kindcluster.ProviderWithDocker(), kindcluster.ProviderWithLogger(kindLogger{logf}))
	names, err := provider.List()
	if err != nil {
		return fmt.Errorf("list kind clusters: %w", err)
	}
	for _, n := range names {
		if n == name {
			logf("deleting kind cluster %s", name)
			if err := provider.Delete(name, filepath.Join(stateDir, "kubeconfig")); err != nil {
				return fmt.Errorf("kind delete cluster %s: %w", name, err)
			}
		}
	}
	if err := RemoveState(stateDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// A multi-node cluster's CNI configs and shared volumes (kindmulti.go).
	for _, d := range []string{"cni", "shared"} {
		if err := os.RemoveAll(filepath.Join(stateDir, d)); err != nil {
			return err
		}
	}
	return nil
}

// LoadImages loads local docker images into every node of the kind
// cluster name, as `kind load docker-image` does: one `docker save`, then
// an import into each node's containerd.
func LoadImages(ctx context.Context, name string, images ...string) error {
	if len(images) == 0 {
		return nil
	}
	provider := kindcluster.NewProvider(kindcluster.ProviderWithDocker())
	nodes, err := provider.ListInternalNodes(name)
	if err != nil {
		return fmt.Errorf("nodes of kind cluster %s: %w", name, err)
	}
	if len(nodes) == 0 {
		return fmt.Errorf("kind cluster %s has no nodes", name)
	}
	dir, err := os.MkdirTemp("", "kind-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tar := filepath.Join(dir, "images.tar")
	args := append([]string{"save", "-o", tar}, images...)
	if out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("docker save %v: %v: %s", images, err, out)
	}
	for _, n := range nodes {
		f, err := os.Open(tar)
		if err != nil {
			return err
		}
		err = nodeutils.LoadImageArchive(n, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("load %v into node %s: %w", images, n.String(), err)
		}
	}
	return nil
}

// useDockerShim puts the shim first on PATH for the kind library (which
// runs `docker` from PATH) and tells the shim where the real docker is.
func useDockerShim(dir string) error {
	if dir == "" {
		return errors.New("docker --privileged fails on this host and no docker shim directory was given")
	}
	if _, err := os.Stat(filepath.Join(dir, "docker")); err != nil {
		return fmt.Errorf("docker shim: %w", err)
	}
	if os.Getenv("COCALC_REAL_DOCKER") == "" {
		real, err := exec.LookPath("docker")
		if err != nil {
			return fmt.Errorf("docker not on PATH: %w", err)
		}
		if filepath.Dir(real) == filepath.Clean(dir) {
			return nil // already in place
		}
		os.Setenv("COCALC_REAL_DOCKER", real)
	}
	return os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// dockerAnswers reports whether a docker daemon answers.
func dockerAnswers(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker info: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// EnsureDocker starts dockerd (logging to logPath) when no daemon answers,
// and waits up to a minute for it.
func EnsureDocker(ctx context.Context, logPath string, logf func(string, ...any)) error {
	if dockerAnswers(ctx) == nil {
		return nil
	}
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		return errors.New("no docker daemon answers and dockerd is not installed: run ci/install-deps.sh (docker.io)")
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	logf("starting dockerd (log: %s)", logPath)
	cmd := exec.Command(dockerd)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The daemon outlives this process: its own session, not our group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	_ = cmd.Process.Release()
	return wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		return dockerAnswers(ctx) == nil, nil
	})
}

// waitRolledOut waits for a DaemonSet or Deployment to be fully available;
// other kinds return at once.
func waitRolledOut(ctx context.Context, c *Cluster, kind, ns, name string) error {
	var done func(ctx context.Context) (bool, error)
	switch kind {
	case "DaemonSet":
		done = func(ctx context.Context) (bool, error) {
			ds, err := c.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return daemonSetReady(ds), nil
		}
	case "Deployment":
		done = func(ctx context.Context) (bool, error) {
			d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return deploymentReady(d), nil
		}
	default:
		return nil
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, done); err != nil {
		return fmt.Errorf("%s %s/%s not rolled out: %w", kind, ns, name, err)
	}
	return nil
}

func daemonSetReady(ds *appsv1.DaemonSet) bool {
	s := ds.Status
	return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled > 0 &&
		s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled
}

func deploymentReady(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want
}

// kindLogger sends the kind library's messages to logf.
type kindLogger struct{ logf func(string, ...any) }

func (l kindLogger) Warn(m string)             { l.logf("kind: warning: %s", m) }
func (l kindLogger) Warnf(f string, a ...any)  { l.logf("kind: warning: "+f, a...) }
func (l kindLogger) Error(m string)            { l.logf("kind: error: %s", m) }
func (l kindLogger) Errorf(f string, a ...any) { l.logf("kind: error: "+f, a...) }
func (l kindLogger) V(v kindlog.Level) kindlog.InfoLogger {
	return kindInfo{l.logf, v <= 0}
}

type kindInfo struct {
	logf    func(string, ...any)
	enabled bool
}

func (i kindInfo) Info(m string) {
	if i.enabled {
		i.logf("kind: %s", m)
	}
}

func (i kindInfo) Infof(f string, a ...any) {
	if i.enabled {
		i.logf("kind: "+f, a...)
	}
}

func (i kindInfo) Enabled() bool { return i.enabled }

// neverPulledImages lists the container images with imagePullPolicy Never
// in the workloads of a manifest stream.
func neverPulledImages(manifest []byte) []string {
	objs, err := DecodeYAML(manifest)
	if err != nil {
		return nil // ApplyYAML reports it
	}
	var out []string
	for _, u := range objs {
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			m, _ := c.(map[string]any)
			if img, _ := m["image"].(string); img != "" && m["imagePullPolicy"] == "Never" {
				out = append(out, img)
			}
		}
	}
	return out
}

// loadMissingImages loads each image the kind cluster's nodes lack.
func loadMissingImages(ctx context.Context, name string, images []string) error {
	provider := kindcluster.NewProvider(kindcluster.ProviderWithDocker())
	nodes, err := provider.ListInternalNodes(name)
	if err != nil {
		return fmt.Errorf("nodes of kind cluster %s: %w", name, err)
	}
	var missing []string
	for _, img := range images {
		for _, n := range nodes {
			if _, err := nodeutils.ImageID(n, img); err != nil {
				missing = append(missing, img)
				break
			}
		}
	}
	return LoadImages(ctx, name, missing...)
}
