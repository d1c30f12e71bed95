package e2e

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/test/netpoleval"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Addresses outside the pod network. They are only evaluated, never
// contacted: 203.0.113.10 is a documentation address (RFC 5737).
var (
	metadataIP  = netip.MustParseAddr("169.254.169.254")
	internetIP  = netip.MustParseAddr("203.0.113.10")
	internet6IP = netip.MustParseAddr("2001:4860:4860::8888")
	// nodeIP is a kubelet's address inside testNodeCIDR (networkPolicy.nfs.nodeCIDRs).
	nodeIP = netip.MustParseAddr("172.31.250.10")
)

// designedAllowed is the isolation the chart promises (defaults: storage
// nfsServer, server egress allowAll, IPv6 egress off, NFS reachable from
// networkPolicy.nfs.nodeCIDRs = testNodeCIDR). Every other (source,
// destination, port) of the table must be denied.
//   - projects reach DNS only; a network=outside project also public
//     addresses (never cluster, private or metadata addresses);
//   - only the server reaches projects, on any port;
//   - the server reaches everything (allowAll: SMTP, PostgreSQL, API);
//   - anyone reaches the server's http/https, nobody its health port;
//   - the NFS server initiates nothing; it accepts 2049 from the server
//     and the node CIDRs only: not from project pods, pods of other
//     namespaces (a monitoring pod, DNS), the API server or the internet;
//   - network=outside reaches public IPv4 only (IPv6 is opt-in).
var designedAllowed = map[string]bool{
	"projectA -> dns:53/UDP": true, "projectA -> dns:53/TCP": true,
	"projectB -> dns:53/UDP": true, "projectB -> dns:53/TCP": true,
	"projectB -> internet:443/TCP": true,

	"server -> projectA:6000/TCP": true, "server -> projectA:6001/TCP": true,
	"server -> projectB:6000/TCP": true, "server -> projectB:6001/TCP": true,
	"server -> nfs:2049/TCP": true, "server -> dns:53/UDP": true, "server -> dns:53/TCP": true,
	"server -> apiserver:APIPORT/TCP": true, "server -> metadata:80/TCP": true, "server -> internet:443/TCP": true,

	"server -> internet6:443/TCP": true, "server -> node:10250/TCP": true, "server -> monitoring:9090/TCP": true,

	"dns -> server:HTTP/TCP": true, "dns -> server:HTTPS/TCP": true,
	"monitoring -> server:HTTP/TCP": true, "monitoring -> server:HTTPS/TCP": true,
	"apiserver -> server:HTTP/TCP": true, "apiserver -> server:HTTPS/TCP": true,
	"metadata -> server:HTTP/TCP": true, "metadata -> server:HTTPS/TCP": true,
	"internet -> server:HTTP/TCP": true, "internet -> server:HTTPS/TCP": true,
	"internet6 -> server:HTTP/TCP": true, "internet6 -> server:HTTPS/TCP": true,
	"node -> server:HTTP/TCP": true, "node -> server:HTTPS/TCP": true,
	"node -> nfs:2049/TCP": true,
}

// TestNetworkPolicyTruthTable evaluates every (source, destination, port)
// against the NetworkPolicies read back from the API server, with project
// pods started by the orchestrator, and asserts the designed matrix.
func TestNetworkPolicyTruthTable(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	ns := newNamespace(t, c, "netpol", nil)
	set := mergeValues(standinValues, map[string]string{"projects.resources.ephemeralStorageLimit": ""})
	install(t, c, ns, helmOptions(t, c, ns, set)) // defaults: nfsServer
	tplFile, _ := orchestratorTemplate(t, c, ns)
	orch := startOrchestrator(t, serviceAccountKubeconfig(t, serviceAccountConfig(t, c, ns)), tplFile)
	idA, idB := newProjectID(), newProjectID()
	_, err := orch.api.Start(t.Context(), idA, orchestrator.StartRequest{})
	require.NoError(t, err, "start project A")
	_, err = orch.api.Start(t.Context(), idB, orchestrator.StartRequest{Quota: podtemplate.Quota{Network: true}})
	require.NoError(t, err, "start project B (network)")

	ctx := t.Context()
	policies, err := c.Client.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, policies.Items)
	nsLabels := func(name string) map[string]string {
		o, err := c.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return o.Labels
	}
	podEndpoint := func(name string, p corev1.Pod) netpoleval.Endpoint {
		require.NotEmpty(t, p.Status.PodIP, "pod %s has no IP", p.Name)
		return netpoleval.Endpoint{Name: name, Namespace: p.Namespace, NamespaceLabels: nsLabels(p.Namespace), PodLabels: p.Labels,
			NamedPorts: netpoleval.NamedPorts(&p.Spec), IP: netip.MustParseAddr(p.Status.PodIP)}
	}
	onePod := func(selector string) corev1.Pod {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		require.NoError(t, err)
		require.Len(t, pods.Items, 1, "pods %s", selector)
		return pods.Items[0]
	}
	projectA := podEndpoint("projectA", projectPods(t, c, ns, idA)[0])
	projectB := podEndpoint("projectB", projectPods(t, c, ns, idB)[0])
	serverPod := onePod("app.kubernetes.io/component=server")
	server := podEndpoint("server", serverPod)
	nfs := podEndpoint("nfs", onePod("app.kubernetes.io/component=nfs"))
	require.Contains(t, server.NamedPorts, "http")
	require.Contains(t, server.NamedPorts, "https")
	httpPort, httpsPort := server.NamedPorts["http"].ContainerPort, server.NamedPorts["https"].ContainerPort

	// DNS: the api tier runs no CoreDNS; a pod with its labels in the live
	// kube-system namespace stands for it (policies select it by namespace).
	dns := netpoleval.Endpoint{Name: "dns", Namespace: "kube-system", NamespaceLabels: nsLabels("kube-system"),
		PodLabels: map[string]string{"k8s-app": "kube-dns"}, IP: netip.MustParseAddr("10.244.255.10")}
	if pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"}); err == nil && len(pods.Items) > 0 && pods.Items[0].Status.PodIP != "" {
		dns = podEndpoint("dns", pods.Items[0])
	}
	// The API server: the live address and port of the "kubernetes" Service's endpoints.
	apiIP, apiPort := apiServerAddress(t, c)
	apiserver := netpoleval.Endpoint{Name: "apiserver", IP: apiIP}
	metadata := netpoleval.Endpoint{Name: "metadata", IP: metadataIP}
	internet := netpoleval.Endpoint{Name: "internet", IP: internetIP}
	internet6 := netpoleval.Endpoint{Name: "internet6", IP: internet6IP}
	node := netpoleval.Endpoint{Name: "node", IP: nodeIP}
	// A pod of another namespace (its own live namespace), e.g. a monitoring agent.
	otherNS := newNamespace(t, c, "netpol-other", nil)
	monitoring := netpoleval.Endpoint{Name: "monitoring", Namespace: otherNS, NamespaceLabels: nsLabels(otherNS),
		PodLabels: map[string]string{"app": "prometheus"}, IP: netip.MustParseAddr("10.244.254.20")}
	require.True(t, netip.MustParsePrefix(testNodeCIDR).Contains(node.IP))
	for _, e := range []netpoleval.Endpoint{projectA, projectB, server, dns, monitoring, apiserver, metadata, internet} {
		require.False(t, netip.MustParsePrefix(testNodeCIDR).Contains(e.IP), "%s inside the node CIDR", e.Name)
	}

	type target struct {
		ep    netpoleval.Endpoint
		ports []netpoleval.Connection // From is filled in per source
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	ports := func(ep netpoleval.Endpoint, pp ...any) target {
		tg := target{ep: ep}
		for i := 0; i < len(pp); i += 2 {
			tg.ports = append(tg.ports, netpoleval.Connection{To: ep, Port: pp[i].(int32), Protocol: pp[i+1].(corev1.Protocol)})
		}
		return tg
	}
	targets := []target{
		ports(projectA, int32(podtemplate.HubPort), tcp, int32(podtemplate.RawPort), tcp),
		ports(projectB, int32(podtemplate.HubPort), tcp, int32(podtemplate.RawPort), tcp),
		ports(server, httpPort, tcp, httpsPort, tcp, int32(8471), tcp),
		ports(nfs, int32(2049), tcp),
		ports(dns, int32(53), udp, int32(53), tcp),
		ports(apiserver, apiPort, tcp),
		ports(metadata, int32(80), tcp),
		ports(internet, int32(443), tcp),
		ports(internet6, int32(443), tcp),
		ports(node, int32(10250), tcp),
		ports(monitoring, int32(9090), tcp),
	}
	sources := []netpoleval.Endpoint{projectA, projectB, server, nfs, dns, monitoring, apiserver, metadata, internet, internet6, node}
	chartPods := map[string]bool{"projectA": true, "projectB": true, "server": true, "nfs": true}
	key := func(cn netpoleval.Connection) string {
		s := cn.String()
		s = strings.Replace(s, fmt.Sprintf("server:%d/", httpPort), "server:HTTP/", 1)
		s = strings.Replace(s, fmt.Sprintf("server:%d/", httpsPort), "server:HTTPS/", 1)
		return strings.Replace(s, fmt.Sprintf("apiserver:%d/", apiPort), "apiserver:APIPORT/", 1)
	}

	var table strings.Builder
	fmt.Fprintf(&table, "\n%-12s %-12s %-10s %-8s %s\n", "SOURCE", "DESTINATION", "PORT", "RESULT", "WHY")
	rows, wrong := 0, 0
	for _, src := range sources {
		for _, dst := range targets {
			if src.Name == dst.ep.Name || (!chartPods[src.Name] && !chartPods[dst.ep.Name]) {
				continue // no chart policy applies between two outside endpoints
			}
			for _, cn := range dst.ports {
				cn.From = src
				got, err := netpoleval.Evaluate(policies.Items, cn)
				require.NoError(t, err, "evaluate %s", cn)
				want := designedAllowed[key(cn)]
				result := map[bool]string{true: "allow", false: "deny"}[got.Allowed]
				mark := ""
				if got.Allowed != want {
					mark = "  <-- designed: " + map[bool]string{true: "allow", false: "deny"}[want]
					wrong++
					t.Errorf("%s: %s, designed %v (%s)", key(cn), result, want, got.Reason)
				}
				fmt.Fprintf(&table, "%-12s %-12s %-10s %-8s %s%s\n", src.Name, dst.ep.Name, fmt.Sprintf("%d/%s", cn.Port, cn.Protocol), result, got.Reason, mark)
				rows++
			}
		}
	}
	t.Logf("NetworkPolicy truth table over %d live policies (%d rows, %d off design):%s", len(policies.Items), rows, wrong, table.String())
	// Every designed allowance was evaluated (a typo in designedAllowed would pass silently otherwise).
	seen := map[string]bool{}
	for _, src := range sources {
		for _, dst := range targets {
			for _, cn := range dst.ports {
				cn.From = src
				seen[key(cn)] = true
			}
		}
	}
	for k := range designedAllowed {
		require.True(t, seen[k], "designedAllowed entry %q matches no row", k)
	}
}

// apiServerAddress returns the address and port of the kubernetes
// Service's endpoints (the API server as pods reach it after DNAT).
func apiServerAddress(t *testing.T, c *cluster.Cluster) (netip.Addr, int32) {
	t.Helper()
	slices, err := c.Client.DiscoveryV1().EndpointSlices("default").List(t.Context(), metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
	if err == nil {
		for _, s := range slices.Items {
			if len(s.Endpoints) > 0 && len(s.Endpoints[0].Addresses) > 0 && len(s.Ports) > 0 && s.Ports[0].Port != nil {
				return netip.MustParseAddr(s.Endpoints[0].Addresses[0]), *s.Ports[0].Port
			}
		}
	}
	u, err := url.Parse(c.RESTConfig.Host)
	require.NoError(t, err)
	ap, err := netip.ParseAddrPort(u.Host)
	require.NoError(t, err, "API server address from %s", c.RESTConfig.Host)
	return ap.Addr(), int32(ap.Port())
}
