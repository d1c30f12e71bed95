package cluster

// Multi-node kind clusters (issue 15): one control plane and Workers
// workers from the same offline node image.
//
// Pod routing between nodes is host-gateway static routing, the way
// kind's own kindnet does it: every node routes each other node's
// node.spec.podCIDR via that node's address on the docker network (all
// nodes share one L2 segment, so no encapsulation, no MTU change, nothing
// to download). kube-router's BGP routing would do the same with a BGP
// mesh and its own CNI-config rewriting (written for the bridge plugin);
// a few `ip route` lines are simpler to read, and to reprogram after a
// node comes back (ProgramNodeNetwork).
//
// Each node's CNI config (ptp, like the single node's) uses that node's
// own podCIDR, allocated by the controller-manager when the node
// registers. The node image's baked config (10.244.0.0/24, ipMasq true)
// would give every node the same range and masquerade pod → pod traffic
// between nodes, so NetworkPolicy on the receiving node would see the
// sending node's address instead of the pod's. So in a multi-node cluster
// /etc/cni/net.d of every node is a host directory of its own
// (<state>/cni/<node>), empty at creation (the node stays NotReady: no pod
// lands on it with a wrong address), filled with ipMasq false and the
// node's podCIDR once it has one. Masquerading moves to the node: pod
// traffic leaving 10.244.0.0/16 is masqueraded once (COCALC-MASQ), pod →
// pod traffic never.
//
// The node image's egress guard (ci/kind/node-entrypoint.sh, on every node
// since every node runs that entrypoint) forwards pod traffic only to pod
// addresses and the test hosts. On one node that is all a pod needs; with
// several, pods must reach the other nodes (the API server endpoint on the
// control plane, NodePorts, kubelets), so a chain "multinode" of the guard
// table accepts pod traffic to the cluster's node addresses (exactly
// those), and rejects traffic other nodes forward through this one to
// anything but pods, nodes and the test hosts. The test hosts
// (cluster.OutsideHost) live in the control plane: workers route their
// ranges there.
//
// Shared project storage: kind's default StorageClass "standard" is the
// controller-manager's in-tree hostPath provisioner, whose volumes are
// /tmp/hostpath_pv/<uid> on whichever node mounts them. A host directory
// (<state>/shared) is mounted at /tmp/hostpath_pv in every node, so a
// volume is the same directory from every node, as an NFS export would be,
// and a ReadWriteMany claim on it is honest.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
)

// EnvKindState selects the state directory of the kind cluster tests
// attach to (COCALC_TEST_TIER=kind); default .cache/cluster/kind, the
// cluster `make cluster-kind` creates. `make cluster-kind NODES=3` records
// its multi-node cluster in .cache/cluster/kind-cocalc-multi.
const EnvKindState = "COCALC_KIND_STATE"

// KindMultiName is the kind cluster `make cluster-kind NODES=n` (n > 1)
// creates, beside the single-node "cocalc".
const KindMultiName = "cocalc-multi"

// Pod and test-host address ranges the multi-node network uses (the pod
// subnet of kindConfig; the outside hosts of outside.go).
const (
	kindPodSubnet  = "10.244.0.0/16"
	sharedVolumeIn = "/tmp/hostpath_pv"
)

var outsideRanges = []string{"192.0.2.0/30", "203.0.113.0/24", "169.254.169.254/32"}

// KindStateDir is the state directory of the kind cluster named name:
// .cache/cluster/kind for the default "cocalc" (unchanged), else
// .cache/cluster/kind-<name>.
func KindStateDir(name string) (string, error) {
	dir, err := SharedStateDir(TierKind)
	if err != nil || name == "" || name == "cocalc" {
		return dir, err
	}
	return dir + "-" + name, nil
}

// kindStateFromEnv is EnvKindState made absolute (relative to the
// repository root), or "" when unset.
func kindStateFromEnv() (string, error) {
	d := os.Getenv(EnvKindState)
	if d == "" || filepath.IsAbs(d) {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, d), nil
}

// kindNodeSuffixes are the kind node name suffixes (after "<cluster>-")
// of a cluster with workers workers, in kind's naming.
func kindNodeSuffixes(workers int) []string {
	s := []string{"control-plane"}
	for i := 1; i <= workers; i++ {
		if i == 1 {
			s = append(s, "worker")
		} else {
			s = append(s, fmt.Sprintf("worker%d", i))
		}
	}
	return s
}

// multiNodesYAML is the nodes section of a multi-node kind config: every
// node gets its own CNI config directory and the shared volume directory.
func multiNodesYAML(stateDir string, workers int) string {
	var b strings.Builder
	b.WriteString("nodes:\n")
	for i, s := range kindNodeSuffixes(workers) {
		role := "worker"
		if i == 0 {
			role = "control-plane"
		}
		fmt.Fprintf(&b, "- role: %s\n  extraMounts:\n", role)
		fmt.Fprintf(&b, "  - hostPath: %s\n    containerPath: /etc/cni/net.d\n", filepath.Join(stateDir, "cni", s))
		fmt.Fprintf(&b, "  - hostPath: %s\n    containerPath: %s\n", filepath.Join(stateDir, "shared"), sharedVolumeIn)
	}
	return b.String()
}

// prepareMultiNodeDirs makes the host directories multiNodesYAML mounts
// (empty CNI directories: a node stays NotReady until its config is
// written).
func prepareMultiNodeDirs(stateDir string, workers int) error {
	for _, s := range kindNodeSuffixes(workers) {
		d := filepath.Join(stateDir, "cni", s)
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Project homes are written by uid 2001 in pods; the provisioner's
	// directories are made by the kubelet (root) inside.
	return os.MkdirAll(filepath.Join(stateDir, "shared"), 0o777)
}

// cniConfig is a node's CNI config: the node image's ptp chain with the
// node's own podCIDR and no masquerading (ProgramNodeNetwork does it once,
// for traffic leaving the pod network).
func cniConfig(podCIDR string) ([]byte, error) {
	cfg := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "cocalc-kind",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"ipMasq": false,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": podCIDR}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
				"mtu": 1500,
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
			map[string]any{"type": "loopback"},
		},
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// setUpMultiNode runs after `kind create` of a multi-node cluster: each
// node's CNI config from its podCIDR, routes and guard rules, the admin
// kubeconfig kube-router reads on every node, then every node Ready.
func setUpMultiNode(ctx context.Context, c *Cluster, name, stateDir string, logf func(string, ...any)) error {
	var list *corev1.NodeList
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		list, err = c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, n := range list.Items {
			if n.Spec.PodCIDR == "" {
				return false, nil
			}
		}
		return len(list.Items) > 1, nil
	})
	if err != nil {
		return fmt.Errorf("nodes never got pod CIDRs: %w", err)
	}
	for _, n := range list.Items {
		suffix := strings.TrimPrefix(n.Name, name+"-")
		data, err := cniConfig(n.Spec.PodCIDR)
		if err != nil {
			return err
		}
		path := filepath.Join(stateDir, "cni", suffix, "10-cocalc.conflist")
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
		logf("node %s: pod CIDR %s", n.Name, n.Spec.PodCIDR)
	}
	if err := copyAdminConf(ctx, c); err != nil {
		return err
	}
	if err := c.ProgramNodeNetwork(ctx); err != nil {
		return err
	}
	return c.WaitNodesReady(ctx, 3*time.Minute)
}

// copyAdminConf puts the control plane's admin kubeconfig on every worker:
// kube-router (ci/kind/kube-router.yaml) reads it on each node, and a
// worker joined by kubeadm has only its kubelet's.
func copyAdminConf(ctx context.Context, c *Cluster) error {
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return err
	}
	cp, err := controlPlane(ns)
	if err != nil {
		return err
	}
	var conf bytes.Buffer
	cmd := cp.CommandContext(ctx, "cat", "/etc/kubernetes/admin.conf")
	cmd.SetStdout(&conf)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("read admin.conf: %w", err)
	}
	for _, n := range ns {
		if n.String() == cp.String() {
			continue
		}
		cmd := n.CommandContext(ctx, "sh", "-c", "umask 077 && cat > /etc/kubernetes/admin.conf")
		cmd.SetStdin(bytes.NewReader(conf.Bytes()))
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("admin.conf on %s: %w", n.String(), err)
		}
	}
	return nil
}

func controlPlane(ns []nodes.Node) (nodes.Node, error) {
	for _, n := range ns {
		if r, err := n.Role(); err == nil && r == "control-plane" {
			return n, nil
		}
	}
	return nil, errors.New("kind cluster has no control-plane node")
}

// nodeNet is a node's address and pod range.
type nodeNet struct{ name, ip, podCIDR string }

// networkScript is what ProgramNodeNetwork runs on node self: routes to
// the other nodes' pods, the test hosts via the control plane (workers),
// one masquerade for pod traffic leaving the pod network, and the guard's
// multinode chain. Idempotent: routes are replaced, chains flushed and
// refilled.
func networkScript(self nodeNet, all []nodeNet, controlPlaneIP string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	var ips []string
	for _, n := range all {
		ips = append(ips, n.ip)
		if n.name == self.name {
			continue
		}
		fmt.Fprintf(&b, "ip route replace %s via %s\n", n.podCIDR, n.ip)
	}
	if self.ip != controlPlaneIP {
		for _, r := range outsideRanges {
			fmt.Fprintf(&b, "ip route replace %s via %s\n", r, controlPlaneIP)
		}
	}
	fmt.Fprintf(&b, `iptables -t nat -N COCALC-MASQ 2>/dev/null || true
iptables -t nat -F COCALC-MASQ
iptables -t nat -A COCALC-MASQ -d %[1]s -j RETURN
iptables -t nat -A COCALC-MASQ -j MASQUERADE
iptables -t nat -C POSTROUTING -s %[1]s -m comment --comment cocalc-multinode -j COCALC-MASQ 2>/dev/null ||
  iptables -t nat -A POSTROUTING -s %[1]s -m comment --comment cocalc-multinode -j COCALC-MASQ
`, kindPodSubnet)
	set := strings.Join(ips, ", ")
	fmt.Fprintf(&b, `nft -f - <<'NFT'
add chain inet cocalc_guard multinode
flush chain inet cocalc_guard multinode
add rule inet cocalc_guard multinode ip saddr %[1]s ip daddr { %[2]s } accept
add rule inet cocalc_guard multinode ip saddr { %[2]s } ip daddr != { %[1]s, %[3]s } ip daddr != { %[2]s } counter reject with icmpx type admin-prohibited
NFT
nft list chain inet cocalc_guard forward | grep -q 'jump multinode' || nft insert rule inet cocalc_guard forward jump multinode
`, kindPodSubnet, set, strings.Join(outsideRanges, ", "))
	return b.String()
}

// ProgramNodeNetwork (re)programs the pod network of a multi-node kind
// cluster on every running node from the nodes' current addresses and pod
// CIDRs. Routes and rules live in a node's network namespace, which a
// restarted node container gets anew: call it after StartNode. One node:
// nothing to do.
func (c *Cluster) ProgramNodeNetwork(ctx context.Context) error {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(list.Items) < 2 {
		return nil
	}
	var all []nodeNet
	var cpIP string
	for _, n := range list.Items {
		nn := nodeNet{name: n.Name, podCIDR: n.Spec.PodCIDR}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address).To4() != nil {
				nn.ip = a.Address
			}
		}
		if nn.ip == "" || nn.podCIDR == "" {
			return fmt.Errorf("node %s has no IPv4 address or pod CIDR yet", n.Name)
		}
		if _, ok := n.Labels["node-role.kubernetes.io/control-plane"]; ok {
			cpIP = nn.ip
		}
		all = append(all, nn)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	if cpIP == "" {
		return errors.New("no control-plane node")
	}
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range ns {
		var self nodeNet
		for _, nn := range all {
			if nn.name == n.String() {
				self = nn
			}
		}
		if self.name == "" {
			return fmt.Errorf("kind node %s is not a Kubernetes node", n.String())
		}
		var out bytes.Buffer
		cmd := n.CommandContext(ctx, "bash", "-c", networkScript(self, all, cpIP))
		cmd.SetStdout(&out)
		cmd.SetStderr(&out)
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("program the pod network on %s: %w: %s", n.String(), err, strings.TrimSpace(out.String()))
		}
	}
	return nil
}

// WaitNodesReady waits until every node is Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	var notReady []string
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		notReady = notReady[:0]
		for _, n := range list.Items {
			if !NodeReady(&n) {
				notReady = append(notReady, n.Name)
			}
		}
		return len(notReady) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not Ready: %v: %w", notReady, err)
	}
	return nil
}

// NodeReady reports whether n's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// StopNode stops the kind node container name (`docker stop`): the node is
// lost, not drained; its kubelet stops posting status.
func (c *Cluster) StopNode(ctx context.Context, name string) error {
	if _, err := c.kindNodeNamed(ctx, name); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "docker", "stop", name).CombinedOutput(); err != nil {
		return fmt.Errorf("docker stop %s: %v: %s", name, err, out)
	}
	return nil
}

// StartNode starts a stopped kind node container again, waits for it to be
// Ready and reprograms the pod network (the container's network namespace
// is new).
func (c *Cluster) StartNode(ctx context.Context, name string) error {
	if out, err := exec.CommandContext(ctx, "docker", "start", name).CombinedOutput(); err != nil {
		return fmt.Errorf("docker start %s: %v: %s", name, err, out)
	}
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return err == nil && NodeReady(n), nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready after start: %w", name, err)
	}
	return c.ProgramNodeNetwork(ctx)
}

// NodeCommandOn runs a command in the kind node named node.
func (c *Cluster) NodeCommandOn(ctx context.Context, node, name string, args ...string) (string, error) {
	n, err := c.kindNodeNamed(ctx, node)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := n.CommandContext(ctx, name, args...)
	cmd.SetStdout(&out)
	cmd.SetStderr(&out)
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %v in node %s: %w: %s", name, args, node, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (c *Cluster) kindNodeNamed(ctx context.Context, name string) (nodes.Node, error) {
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		if n.String() == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no kind node %s", name)
}
