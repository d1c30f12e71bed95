package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// NodeRegistryPort is where StartNodeRegistry's registry listens, on the
// kind node's own address.
const NodeRegistryPort = 5000

// StartNodeRegistry runs an OCI registry (binary: CNCF distribution's
// registry, bin/registry) inside the kind cluster's first node, on
// <node IP>:NodeRegistryPort, and gives every node's containerd a registry
// host entry for that address (/etc/containerd/certs.d/<addr>/hosts.toml:
// plain HTTP, pull and resolve), the way an air-gapped site points its
// nodes at its own registry. Images pushed there (over plain HTTP, from
// this machine: the node is the test cluster's own) are then pulled by the
// kubelet like any image: no `kind load`. It returns the address
// (host:port). Idempotent: a registry already running is reused, with its
// content.
func (c *Cluster) StartNodeRegistry(ctx context.Context, binary string) (string, error) {
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return "", err
	}
	ip, _, err := ns[0].IP()
	if err != nil {
		return "", fmt.Errorf("address of node %s: %w", ns[0].String(), err)
	}
	addr := net.JoinHostPort(ip, fmt.Sprint(NodeRegistryPort))
	if !registryAnswers(ctx, addr) {
		exe, err := os.ReadFile(binary)
		if err != nil {
			return "", fmt.Errorf("registry binary (make bin/registry): %w", err)
		}
		config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: /var/lib/cocalc-registry
  delete:
    enabled: false
http:
  addr: %s
`, addr)
		node := ns[0]
		steps := []struct {
			stdin []byte
			cmd   string
		}{
			{exe, "cat > /usr/local/bin/cocalc-registry && chmod 0755 /usr/local/bin/cocalc-registry"},
			{[]byte(config), "mkdir -p /etc/cocalc-registry && cat > /etc/cocalc-registry/config.yml"},
			// Detached from the exec session; no tracing exporter: nothing
			// leaves the node.
			{nil, "OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true nohup /usr/local/bin/cocalc-registry serve /etc/cocalc-registry/config.yml >/var/log/cocalc-registry.log 2>&1 &"},
		}
		for _, s := range steps {
			cmd := node.CommandContext(ctx, "sh", "-c", s.cmd)
			if s.stdin != nil {
				cmd.SetStdin(bytes.NewReader(s.stdin))
			}
			var out bytes.Buffer
			cmd.SetStdout(&out)
			cmd.SetStderr(&out)
			if err := cmd.Run(); err != nil {
				return "", fmt.Errorf("node registry on %s: %s: %w: %s", node.String(), s.cmd, err, out.String())
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for !registryAnswers(ctx, addr) {
			if time.Now().After(deadline) {
				log, _ := c.NodeCommand(ctx, "cat", "/var/log/cocalc-registry.log")
				return "", fmt.Errorf("node registry not answering on %s after 30 s; its log:\n%s", addr, log)
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	hosts := fmt.Sprintf(`# cocalc-kubernetes test tier: the node registry, over plain HTTP.
server = "http://%s"

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, addr, addr)
	for _, n := range ns {
		cmd := n.CommandContext(ctx, "sh", "-c", fmt.Sprintf("mkdir -p /etc/containerd/certs.d/%s && cat > /etc/containerd/certs.d/%s/hosts.toml", addr, addr))
		cmd.SetStdin(strings.NewReader(hosts))
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("registry host entry on node %s: %w", n.String(), err)
		}
	}
	return addr, nil
}

// registryAnswers reports whether an OCI registry answers GET /v2/ on addr.
func registryAnswers(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// RemoveImages removes the images refs name from every kind node's
// runtime (those a node lacks are skipped), so the next pod that uses one
// makes the kubelet pull it. Removing an image removes it under every
// name it has on the node.
func (c *Cluster) RemoveImages(ctx context.Context, refs ...string) error {
	ns, err := c.kindNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range ns {
		for _, ref := range refs {
			var out bytes.Buffer
			cmd := n.CommandContext(ctx, "sh", "-c", `crictl inspecti "$1" >/dev/null 2>&1 || exit 0; crictl rmi "$1"`, "sh", ref)
			cmd.SetStdout(&out)
			cmd.SetStderr(&out)
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("remove image %s from node %s: %w: %s", ref, n.String(), err, out.String())
			}
		}
	}
	return nil
}
