package cluster

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestCNIConfigUsesTheNodesRangeWithoutMasquerade(t *testing.T) {
	data, err := cniConfig("10.244.2.0/24")
	require.NoError(t, err)
	var cfg struct {
		Plugins []struct {
			Type   string `json:"type"`
			IPMasq *bool  `json:"ipMasq"`
			IPAM   struct {
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	require.NoError(t, json.Unmarshal(data, &cfg))
	require.Equal(t, "ptp", cfg.Plugins[0].Type)
	require.NotNil(t, cfg.Plugins[0].IPMasq)
	require.False(t, *cfg.Plugins[0].IPMasq, "pod → pod traffic between nodes must keep the pod's address")
	require.Equal(t, "10.244.2.0/24", cfg.Plugins[0].IPAM.Ranges[0][0].Subnet)
}

func TestMultiNodesYAMLMountsPerNodeCNIAndSharedVolumes(t *testing.T) {
	y := multiNodesYAML("/state", 2)
	require.Equal(t, 1, strings.Count(y, "role: control-plane"))
	require.Equal(t, 2, strings.Count(y, "role: worker"))
	for _, d := range []string{"/state/cni/control-plane", "/state/cni/worker", "/state/cni/worker2"} {
		require.Contains(t, y, "hostPath: "+d+"\n    containerPath: /etc/cni/net.d")
	}
	require.Equal(t, 3, strings.Count(y, "hostPath: /state/shared\n    containerPath: /tmp/hostpath_pv"))
}

func TestNetworkScript(t *testing.T) {
	all := []nodeNet{
		{name: "m-control-plane", ip: "172.18.0.5", podCIDR: "10.244.0.0/24"},
		{name: "m-worker", ip: "172.18.0.4", podCIDR: "10.244.2.0/24"},
		{name: "m-worker2", ip: "172.18.0.3", podCIDR: "10.244.1.0/24"},
	}
	w := networkScript(all[1], all, "172.18.0.5")
	require.Contains(t, w, "ip route replace 10.244.0.0/24 via 172.18.0.5\n")
	require.Contains(t, w, "ip route replace 10.244.1.0/24 via 172.18.0.3\n")
	require.NotContains(t, w, "10.244.2.0/24 via", "no route to its own pods")
	require.Contains(t, w, "ip route replace 203.0.113.0/24 via 172.18.0.5\n", "workers reach the test hosts through the control plane")
	require.Contains(t, w, "-A COCALC-MASQ -d 10.244.0.0/16 -j RETURN", "pod → pod is never masqueraded")
	require.Contains(t, w, "ip saddr 10.244.0.0/16 ip daddr { 172.18.0.5, 172.18.0.4, 172.18.0.3 } accept")
	cp := networkScript(all[0], all, "172.18.0.5")
	require.NotContains(t, cp, "203.0.113.0/24 via", "the control plane holds the test hosts itself")
}

// TestMultiNodeEgressGuardOnEveryNode inspects every node of a multi-node
// kind cluster: the node image's guard, its multinode chain admitting
// exactly the cluster's node addresses, routes to the other nodes' pods.
// Inspected, not probed (a probe would send to an outside address).
func TestMultiNodeEgressGuardOnEveryNode(t *testing.T) {
	c := Get(t)
	if c.Tier != TierKind {
		t.Skipf("the egress guard is part of the offline kind node image; this is the %s tier", c.Tier)
	}
	list, err := c.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	if len(list.Items) < 2 {
		t.Skipf("one node: make cluster-kind NODES=3 and COCALC_KIND_STATE=.cache/cluster/kind-%s", KindMultiName)
	}
	ips := map[string]string{}
	for _, n := range list.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address).To4() != nil {
				ips[n.Name] = a.Address
			}
		}
	}
	for _, n := range list.Items {
		out, err := c.NodeCommandOn(t.Context(), n.Name, "nft", "list", "table", "inet", "cocalc_guard")
		require.NoError(t, err, "guard table on %s", n.Name)
		require.Contains(t, out, "ip saddr 10.244.0.0/16 ip daddr != { 10.244.0.0/16, 169.254.169.254, 192.0.2.0/30, 203.0.113.0/24 }", n.Name)
		require.Contains(t, out, "jump multinode", n.Name)
		require.Contains(t, out, "ip daddr 10.96.0.0/16", n.Name)
		for _, ip := range ips {
			require.Contains(t, out, ip, "%s's guard does not know node %s", n.Name, ip)
		}
		routes, err := c.NodeCommandOn(t.Context(), n.Name, "ip", "route")
		require.NoError(t, err)
		for _, o := range list.Items {
			if o.Name != n.Name {
				require.Contains(t, routes, o.Spec.PodCIDR+" via "+ips[o.Name], "%s has no route to %s's pods", n.Name, o.Name)
			}
		}
		masq, err := c.NodeCommandOn(t.Context(), n.Name, "iptables", "-t", "nat", "-S", "COCALC-MASQ")
		require.NoError(t, err)
		require.Contains(t, masq, "-d 10.244.0.0/16 -j RETURN", n.Name)
	}
}
