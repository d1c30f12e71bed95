package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
)

// OutsideHost is a stand-in for hosts beyond the cluster (the internet, a
// cloud metadata server): a network namespace made inside the kind node,
// holding the given addresses, reached from pods through a veth pair and
// routes to exactly those addresses. Traffic a test sends to them never
// leaves the node, whatever the NetworkPolicies under test do.
type OutsideHost struct {
	node  nodes.Node
	name  string
	Addrs []netip.Addr
}

// The link network between the node and the namespace (TEST-NET-1,
// documentation space: never routed anywhere).
const (
	outsideNodeSide = "192.0.2.1"
	outsideHostSide = "192.0.2.2"
)

// StartOutsideHost creates the namespace name (at most 10 characters) in
// the kind cluster's node with addrs, and runs binary (a static program on
// this machine, copied into the node) inside it with args. Stop removes
// everything.
func (c *Cluster) StartOutsideHost(ctx context.Context, name string, addrs []netip.Addr, binary string, args ...string) (*OutsideHost, error) {
	if c.Tier != TierKind {
		return nil, fmt.Errorf("outside hosts are made in a kind node; this is the %s tier: %w", c.Tier, ErrUnsupported)
	}
	if len(name) == 0 || len(name) > 10 || strings.ContainsAny(name, " /'\"$") {
		return nil, fmt.Errorf("outside host name %q: want 1-10 plain characters", name)
	}
	node, err := c.kindNode(ctx)
	if err != nil {
		return nil, err
	}
	h := &OutsideHost{node: node, name: name, Addrs: addrs}
	bin, err := os.Open(binary)
	if err != nil {
		return nil, err
	}
	defer bin.Close()
	path := "/usr/local/bin/" + name
	if err := h.run(ctx, bin, "sh", "-c", "cat > "+path+" && chmod 0755 "+path); err != nil {
		return nil, fmt.Errorf("copy %s into node: %w", binary, err)
	}
	var script strings.Builder
	fmt.Fprintf(&script, "set -e\nip netns add %[1]s\nip link add %[1]s-n type veth peer name %[1]s-h\n", name)
	fmt.Fprintf(&script, "ip link set %[1]s-h netns %[1]s\nip addr add %[2]s/30 dev %[1]s-n\nip link set %[1]s-n up\n", name, outsideNodeSide)
	fmt.Fprintf(&script, "ip -n %[1]s link set lo up\nip -n %[1]s addr add %[2]s/30 dev %[1]s-h\nip -n %[1]s link set %[1]s-h up\n", name, outsideHostSide)
	fmt.Fprintf(&script, "ip -n %s route add default via %s\n", name, outsideNodeSide)
	for _, a := range addrs {
		fmt.Fprintf(&script, "ip -n %[1]s addr add %[2]s/32 dev %[1]s-h\nip route add %[2]s/32 via %[3]s dev %[1]s-n\n", name, a, outsideHostSide)
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	fmt.Fprintf(&script, "setsid ip netns exec %s %s %s >/var/log/%s.log 2>&1 < /dev/null &\n", name, path, strings.Join(quoted, " "), name)
	if err := h.run(ctx, nil, "sh", "-c", script.String()); err != nil {
		stopErr := h.Stop(context.WithoutCancel(ctx))
		return nil, errors.Join(fmt.Errorf("outside host %s: %w", name, err), stopErr)
	}
	return h, nil
}

// Stop kills the host's processes and removes its namespace, veth and routes.
func (h *OutsideHost) Stop(ctx context.Context) error {
	var script strings.Builder
	fmt.Fprintf(&script, "for p in $(ip netns pids %[1]s 2>/dev/null); do kill $p; done\n", h.name)
	for _, a := range h.Addrs {
		fmt.Fprintf(&script, "ip route del %s/32 2>/dev/null || true\n", a)
	}
	fmt.Fprintf(&script, "ip link del %[1]s-n 2>/dev/null || true\nip netns del %[1]s 2>/dev/null || true\nrm -f /usr/local/bin/%[1]s\n", h.name)
	return h.run(ctx, nil, "sh", "-c", script.String())
}

// kindNode returns the kind cluster's (first) node.
func (c *Cluster) kindNode(ctx context.Context) (nodes.Node, error) {
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return nil, err
	}
	if len(ns) == 1 {
		return ns[0], nil
	}
	// Several nodes (kindmulti.go): the control plane, where workers
	// route the outside hosts' addresses.
	return controlPlane(ns)
}

// kindNodes returns every node of the kind cluster (at least one). c.Name
// is the kubeconfig context, "kind-" + the kind cluster's name.
func (c *Cluster) kindNodes(ctx context.Context) ([]nodes.Node, error) {
	if c.Tier != TierKind {
		return nil, fmt.Errorf("the %s tier has no kind node: %w", c.Tier, ErrUnsupported)
	}
	if err := prepareKindDocker(ctx); err != nil {
		return nil, err
	}
	name := strings.TrimPrefix(c.Name, "kind-")
	provider := kindcluster.NewProvider(kindcluster.ProviderWithDocker())
	ns, err := provider.ListInternalNodes(name)
	if err != nil {
		return nil, fmt.Errorf("nodes of kind cluster %s: %w", name, err)
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("kind cluster %s has no nodes", name)
	}
	return ns, nil
}

// LoadImageArchive imports an image archive (docker save's form, or an OCI
// layout tar whose index names the image) into the containerd of every
// node of the kind cluster, and checks each node then knows ref.
func (c *Cluster) LoadImageArchive(ctx context.Context, archive []byte, ref string) error {
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range ns {
		if err := nodeutils.LoadImageArchive(n, bytes.NewReader(archive)); err != nil {
			return fmt.Errorf("load %s into node %s: %w", ref, n.String(), err)
		}
		if _, err := nodeutils.ImageID(n, ref); err != nil {
			return fmt.Errorf("node %s does not know %s after the import: %w", n.String(), ref, err)
		}
	}
	return nil
}

// NodeCommand runs a command in the kind cluster's node and returns its
// output (stdout and stderr).
func (c *Cluster) NodeCommand(ctx context.Context, name string, args ...string) (string, error) {
	node, err := c.kindNode(ctx)
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := node.CommandContext(ctx, name, args...)
	cmd.SetStdout(&out)
	cmd.SetStderr(&out)
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %v in node: %w: %s", name, args, err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Log returns what the host's program wrote.
func (h *OutsideHost) Log(ctx context.Context) string {
	var out bytes.Buffer
	cmd := h.node.CommandContext(ctx, "cat", "/var/log/"+h.name+".log")
	cmd.SetStdout(&out)
	_ = cmd.Run()
	return out.String()
}

func (h *OutsideHost) run(ctx context.Context, stdin *os.File, name string, args ...string) error {
	var out bytes.Buffer
	cmd := h.node.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.SetStdin(stdin)
	}
	cmd.SetStdout(&out)
	cmd.SetStderr(&out)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}
