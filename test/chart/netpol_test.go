package chart

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"gitlab.com/resurgo/cocalc-kubernetes/test/netpoleval"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// projectPod builds a runtime project pod from the rendered template with the
// orchestrator's own builder, so the policies are checked against the labels
// project pods will really carry.
func projectPod(t *testing.T, tpl *podtemplate.Template, id string, outside bool) *corev1.Pod {
	t.Helper()
	pid, err := project.Parse(id)
	require.NoError(t, err)
	pod, err := podspec.Build(tpl, podspec.Input{
		Project:   pid,
		Request:   podspec.Request{Quota: podtemplate.Quota{Network: outside}},
		NFSServer: "10.96.0.50",
	})
	require.NoError(t, err, "the orchestrator cannot build a project pod from this template")
	return pod
}

func projectPodLabels(t *testing.T, tpl *podtemplate.Template, id string, outside bool) map[string]string {
	t.Helper()
	return projectPod(t, tpl, id, outside).Labels
}

func nsLabels(ns string) map[string]string {
	return map[string]string{"kubernetes.io/metadata.name": ns}
}

func podEndpoint(name, ns, ip string, podLabels map[string]string, spec *corev1.PodSpec) netpoleval.Endpoint {
	e := netpoleval.Endpoint{Name: name, Namespace: ns, NamespaceLabels: nsLabels(ns), PodLabels: podLabels, IP: netip.MustParseAddr(ip)}
	if spec != nil {
		e.NamedPorts = netpoleval.NamedPorts(spec)
	}
	return e
}

func external(name, ip string) netpoleval.Endpoint {
	return netpoleval.Endpoint{Name: name, IP: netip.MustParseAddr(ip)}
}

// world is every endpoint the policy checks talk about, built from one render.
type world struct {
	projectA, projectB, server, nfs, dns, kubeSystemOther, monitoring netpoleval.Endpoint
	hasNFS                                                            bool
	serverPorts                                                       []int32
}

func buildWorld(t *testing.T, m manifests, tpl *podtemplate.Template) world {
	t.Helper()
	d := serverDeployment(t, m)
	w := world{
		projectA:        podEndpoint("project-a", tpl.Namespace, "10.4.1.10", projectPodLabels(t, tpl, "2e5ab7d0-0000-4000-8000-00000000000a", false), nil),
		projectB:        podEndpoint("project-b-outside", tpl.Namespace, "10.4.1.11", projectPodLabels(t, tpl, "2e5ab7d0-0000-4000-8000-00000000000b", true), nil),
		server:          podEndpoint("server", d.Namespace, "10.4.0.20", d.Spec.Template.Labels, &d.Spec.Template.Spec),
		dns:             podEndpoint("kube-dns", "kube-system", "10.4.2.2", map[string]string{"k8s-app": "kube-dns"}, nil),
		kubeSystemOther: podEndpoint("metrics-server", "kube-system", "10.4.2.3", map[string]string{"k8s-app": "metrics-server"}, nil),
		monitoring:      podEndpoint("prometheus", "monitoring", "10.4.3.3", map[string]string{"app": "prometheus"}, nil),
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			w.serverPorts = append(w.serverPorts, p.ContainerPort)
		}
	}
	if s, ok := maybe[*appsv1.StatefulSet](m, releaseName+"-nfs"); ok {
		w.nfs = podEndpoint("nfs", s.Namespace, "10.4.0.21", s.Spec.Template.Labels, &s.Spec.Template.Spec)
		w.hasNFS = true
	}
	return w
}

func selects(t *testing.T, sel metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(&sel)
	require.NoError(t, err)
	return s.Matches(labels.Set(l))
}

// The policies' selectors match the pods they are written for (rendered pod
// labels and the labels the orchestrator gives project pods), and no others.
func TestNetworkPolicySelectorsMatchPods(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			tpl := projectTemplate(t, m)
			w := buildWorld(t, m, tpl)

			projects := one[*networkingv1.NetworkPolicy](t, m, releaseName+"-projects")
			server := one[*networkingv1.NetworkPolicy](t, m, releaseName+"-server")
			outside, hasOutside := maybe[*networkingv1.NetworkPolicy](m, releaseName+"-projects-outside")
			// No internet policy when no quota may grant network (projects.resources.max.network false).
			require.Equal(t, chartValues(t, c).maxNetwork, hasOutside, "projects-outside rendered")
			assert.Equal(t, tpl.Namespace, projects.Namespace)
			if hasOutside {
				assert.Equal(t, tpl.Namespace, outside.Namespace)
				assert.False(t, selects(t, outside.Spec.PodSelector, w.projectA.PodLabels), "network=none must not get internet")
				assert.True(t, selects(t, outside.Spec.PodSelector, w.projectB.PodLabels))
			}
			assert.Equal(t, tpl.SelectorLabels, projects.Spec.PodSelector.MatchLabels, "projects policy selects exactly the template's selectorLabels")
			assert.True(t, selects(t, projects.Spec.PodSelector, w.projectA.PodLabels))
			assert.True(t, selects(t, projects.Spec.PodSelector, w.projectB.PodLabels))
			assert.True(t, selects(t, server.Spec.PodSelector, w.server.PodLabels))

			// Ingress to projects names the server pod.
			require.NotEmpty(t, projects.Spec.Ingress)
			peer := projects.Spec.Ingress[0].From[0]
			require.NotNil(t, peer.PodSelector)
			assert.True(t, selects(t, *peer.PodSelector, w.server.PodLabels), "projects ingress peer must select the server pod")

			// A project of another release in the same namespace is not ours to police.
			other := projectPodLabels(t, tpl, "2e5ab7d0-0000-4000-8000-00000000000c", true)
			other[podtemplate.LabelRelease] = "another-release"
			assert.False(t, selects(t, projects.Spec.PodSelector, other))

			// No chart pod other than runtime projects is caught by the project policies.
			for _, p := range podSpecs(m) {
				assert.False(t, selects(t, projects.Spec.PodSelector, p.labels), "projects policy selects %s", p.name)
				if hasOutside {
					assert.False(t, selects(t, outside.Spec.PodSelector, p.labels), "projects-outside policy selects %s", p.name)
				}
			}
			if w.hasNFS {
				nfs := one[*networkingv1.NetworkPolicy](t, m, releaseName+"-nfs")
				assert.True(t, selects(t, nfs.Spec.PodSelector, w.nfs.PodLabels))
				assert.False(t, selects(t, nfs.Spec.PodSelector, w.server.PodLabels))
			}
		})
	}
}

type flow struct {
	from, to netpoleval.Endpoint
	port     int32
	proto    corev1.Protocol
	allowed  bool
}

// The policy set denies what the design says it denies, and allows what CoCalc needs.
func TestNetworkPoliciesIsolateProjects(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			tpl := projectTemplate(t, m)
			w := buildWorld(t, m, tpl)
			policies := derefPolicies(all[*networkingv1.NetworkPolicy](m))
			values := chartValues(t, c)

			internet4 := external("internet-v4", "93.184.216.34")
			internet6 := external("internet-v6", "2606:2800:220:1:248:1893:25c8:1946")
			// The NetworkPolicy answers for network=outside: a quota clamped to no network (max.network
			// false) gets none whatever a pod's label says, and IPv6 only where the admin opted in.
			outside4 := values.maxNetwork
			outside6 := values.maxNetwork && values.ipv6Enabled
			denyTargets := []netpoleval.Endpoint{
				external("apiserver-node", "10.0.0.2"),
				external("kubernetes-service-vip", "10.96.0.1"),
				external("apiserver-172", "172.16.0.2"),
				external("apiserver-192", "192.168.1.2"),
				external("metadata", "169.254.169.254"),
				external("gke-metadata", "169.254.169.252"),
				external("cgnat-pod-range", "100.64.3.3"),
				external("kubelet-node", "10.128.0.5"),
				external("ula-v6", "fd00::1"),
				external("link-local-v6", "fe80::1"),
				external("nat64-private", "64:ff9b::a00:2"),
				external("nat64-local-use", "64:ff9b:1::a00:2"),
			}
			for _, cidr := range values.ipv6ClusterCIDRs {
				// The cluster's own global IPv6 pod, service and node ranges.
				p := netip.MustParsePrefix(cidr)
				denyTargets = append(denyTargets, external("ipv6-cluster-"+cidr, p.Addr().Next().String()))
			}
			for _, cidr := range values.exceptCIDRs {
				p := netip.MustParsePrefix(cidr)
				denyTargets = append(denyTargets, external("admin-except-"+cidr, p.Addr().String()))
			}

			var flows []flow
			add := func(from, to netpoleval.Endpoint, port int32, proto corev1.Protocol, allowed bool) {
				flows = append(flows, flow{from, to, port, proto, allowed})
			}
			for _, p := range []netpoleval.Endpoint{w.projectA, w.projectB} {
				// Only the server reaches projects, on any port.
				for _, port := range []int32{podtemplate.HubPort, podtemplate.RawPort, 8888} {
					add(w.server, p, port, corev1.ProtocolTCP, true)
					add(internet4, p, port, corev1.ProtocolTCP, false)
					add(w.kubeSystemOther, p, port, corev1.ProtocolTCP, false)
				}
				// Projects reach nothing inside the cluster but, in database mode, the hub's conat server
				// (CONAT_SERVER): exactly hub.port of the server pod, TCP. The 2020 hub connects to its
				// projects, never the other way: there the port stays closed like every other.
				hubOpen := values.hubProtocol == "database"
				for _, port := range append(slices.Clone(w.serverPorts), values.hubPort) {
					add(p, w.server, port, corev1.ProtocolTCP, hubOpen && port == values.hubPort)
				}
				add(p, w.server, values.hubPort, corev1.ProtocolUDP, false)
				add(p, w.server, values.hubPort+1, corev1.ProtocolTCP, false)
				if w.hasNFS {
					add(p, w.nfs, values.hubPort, corev1.ProtocolTCP, false)
				}
				add(p, w.kubeSystemOther, values.hubPort, corev1.ProtocolTCP, false)
				if w.hasNFS {
					add(p, w.nfs, 2049, corev1.ProtocolTCP, false)
				}
				add(p, w.kubeSystemOther, 443, corev1.ProtocolTCP, false)
				add(p, w.dns, 443, corev1.ProtocolTCP, false)
				for _, target := range denyTargets {
					for _, port := range []int32{80, 443, 6443, 988, 10250} {
						add(p, target, port, corev1.ProtocolTCP, false)
					}
				}
				// DNS works: the cluster resolver, or only the projects' own resolver when one is named
				// (projects.dns.nameservers): the cluster resolver would answer any name, a tunnel out.
				if len(values.projectNameservers) > 0 {
					for _, ip := range values.projectNameservers {
						resolver := external("projects-resolver-"+ip, ip)
						add(p, resolver, 53, corev1.ProtocolUDP, true)
						add(p, resolver, 53, corev1.ProtocolTCP, true)
						add(p, resolver, 443, corev1.ProtocolTCP, false)
					}
					add(p, w.dns, 53, corev1.ProtocolUDP, false)
					add(p, w.dns, 53, corev1.ProtocolTCP, false)
				} else if values.dnsKubeSystem {
					add(p, w.dns, 53, corev1.ProtocolUDP, true)
					add(p, w.dns, 53, corev1.ProtocolTCP, true)
				}
			}
			// Projects never reach each other.
			for _, port := range []int32{podtemplate.HubPort, podtemplate.RawPort, 22, 8080} {
				add(w.projectA, w.projectB, port, corev1.ProtocolTCP, false)
				add(w.projectB, w.projectA, port, corev1.ProtocolTCP, false)
			}
			// Internet only with network=outside, IPv6 only when opted in.
			add(w.projectA, internet4, 443, corev1.ProtocolTCP, false)
			add(w.projectA, internet6, 443, corev1.ProtocolTCP, false)
			add(w.projectB, internet4, 443, corev1.ProtocolTCP, outside4)
			add(w.projectB, internet6, 443, corev1.ProtocolTCP, outside6)
			// The web UI is reachable; the orchestrator's API never is (it listens on loopback) and
			// its health port only from what the admin lists.
			add(internet4, w.server, int32(values.httpPort), corev1.ProtocolTCP, true)
			add(internet4, w.server, int32(values.httpsPort), corev1.ProtocolTCP, true)
			add(internet4, w.server, 8471, corev1.ProtocolTCP, false)
			// The hub port is for projects only.
			add(internet4, w.server, values.hubPort, corev1.ProtocolTCP, false)
			add(w.kubeSystemOther, w.server, values.hubPort, corev1.ProtocolTCP, false)
			add(w.monitoring, w.server, 8471, corev1.ProtocolTCP, values.healthFromMonitoring)
			if w.hasNFS {
				add(w.server, w.nfs, 2049, corev1.ProtocolTCP, true)
				add(w.nfs, internet4, 443, corev1.ProtocolTCP, false)
				add(w.nfs, w.server, int32(values.httpPort), corev1.ProtocolTCP, false)
				// Kubelets mount from node IPs: exactly networkPolicy.nfs.nodeCIDRs (required in this mode,
				// never a /0), so pods of other namespaces and every other address are kept off.
				require.NotEmpty(t, values.nodeCIDRs, "mode nfsServer renders only with node CIDRs")
				for _, pod := range []netpoleval.Endpoint{w.monitoring, w.kubeSystemOther, w.dns} {
					require.False(t, values.nodeCIDRsContain(pod.IP), "test world: pod %s inside the node CIDRs", pod.Name)
					add(pod, w.nfs, 2049, corev1.ProtocolTCP, false)
				}
				for _, cidr := range values.nodeCIDRs {
					p := netip.MustParsePrefix(cidr)
					node := external("node-in-"+cidr, p.Addr().Next().String())
					add(node, w.nfs, 2049, corev1.ProtocolTCP, true)
					add(node, w.nfs, 111, corev1.ProtocolTCP, false)
					if beyond, ok := addrAfter(p); ok && !values.nodeCIDRsContain(beyond) {
						add(external("beyond-"+cidr, beyond.String()), w.nfs, 2049, corev1.ProtocolTCP, false)
					}
				}
				add(internet4, w.nfs, 2049, corev1.ProtocolTCP, false)
				add(internet6, w.nfs, 2049, corev1.ProtocolTCP, false)
			}
			if c.name == "ci-everything-on" {
				// Admin-listed rules are appended verbatim.
				add(w.projectA, external("licence-server", "10.50.0.10"), 27000, corev1.ProtocolTCP, true)
				add(w.projectA, external("licence-server", "10.50.0.10"), 27001, corev1.ProtocolTCP, false)
				add(w.monitoring, w.projectA, 9100, corev1.ProtocolTCP, true)
				add(w.monitoring, w.projectA, podtemplate.RawPort, corev1.ProtocolTCP, false)
			}
			require.Greater(t, len(flows), 50)
			for _, f := range flows {
				conn := netpoleval.Connection{From: f.from, To: f.to, Port: f.port, Protocol: f.proto}
				v, err := netpoleval.Evaluate(policies, conn)
				require.NoError(t, err)
				assert.Equal(t, f.allowed, v.Allowed, "%s: %s", conn, v.Reason)
			}
		})
	}
}

func TestNetworkPoliciesCanBeDisabled(t *testing.T) {
	m := mustDecode(t, render(t, nil, map[string]string{"networkPolicy.enabled": "false"}))
	assert.Empty(t, all[*networkingv1.NetworkPolicy](m))
}

func derefPolicies(ps []*networkingv1.NetworkPolicy) []networkingv1.NetworkPolicy {
	res := make([]networkingv1.NetworkPolicy, len(ps))
	for i, p := range ps {
		res[i] = *p
	}
	return res
}

// policyValues are the few values the policy expectations depend on, read
// from the merged values of a case (chart defaults overlaid by its files).
type policyValues struct {
	httpPort, httpsPort  float64
	dnsKubeSystem        bool
	exceptCIDRs          []string
	nodeCIDRs            []string
	healthFromMonitoring bool
	maxNetwork           bool     // projects.resources.max.network
	ipv6Enabled          bool     // networkPolicy.projects.outside.ipv6.enabled
	ipv6ClusterCIDRs     []string // networkPolicy.projects.outside.ipv6.clusterCIDRs
	projectNameservers   []string // projects.dns.nameservers
	hubProtocol          string   // hub.protocol
	hubPort              int32    // hub.port
}

// addrAfter returns the first address past a prefix, if there is one.
func addrAfter(p netip.Prefix) (netip.Addr, bool) {
	b := p.Masked().Addr().AsSlice()
	host := len(b)*8 - p.Bits()
	// Add 1 << host to the network address, byte by byte with carry.
	i, carry := len(b)-1-host/8, 1<<(host%8)
	for ; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry
		b[i], carry = byte(sum), sum>>8
	}
	if carry > 0 {
		return netip.Addr{}, false // the prefix ends the address space
	}
	a, _ := netip.AddrFromSlice(b)
	return a, true
}

func TestAddrAfter(t *testing.T) {
	for prefix, want := range map[string]string{
		"10.128.0.0/20": "10.128.16.0", "10.0.0.0/16": "10.1.0.0", "10.0.0.255/32": "10.0.1.0",
		"10.255.0.0/16": "11.0.0.0", "fd00:1::/64": "fd00:1:0:1::", "2001:db8:43::/112": "2001:db8:43::1:0",
		"255.0.0.0/8": "",
	} {
		got, ok := addrAfter(netip.MustParsePrefix(prefix))
		if want == "" {
			assert.False(t, ok, prefix)
			continue
		}
		require.True(t, ok, prefix)
		assert.Equal(t, want, got.String(), prefix)
	}
}

func (v policyValues) nodeCIDRsContain(ip netip.Addr) bool {
	for _, cidr := range v.nodeCIDRs {
		if netip.MustParsePrefix(cidr).Contains(ip) {
			return true
		}
	}
	return false
}

func chartValues(t *testing.T, c valuesCase) policyValues {
	t.Helper()
	v := mergedValues(t, c)
	get := func(path ...string) any {
		var cur any = v
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("values %v: not a map at %s", path, p)
			}
			cur = m[p]
		}
		return cur
	}
	strs := func(x any) []string {
		var res []string
		for _, s := range x.([]any) {
			res = append(res, s.(string))
		}
		return res
	}
	pv := policyValues{
		httpPort:           get("server", "ports", "http").(float64),
		httpsPort:          get("server", "ports", "https").(float64),
		dnsKubeSystem:      get("networkPolicy", "dns", "kubeSystem").(bool),
		exceptCIDRs:        strs(get("networkPolicy", "projects", "outside", "exceptCIDRs")),
		nodeCIDRs:          strs(get("networkPolicy", "nfs", "nodeCIDRs")),
		maxNetwork:         get("projects", "resources", "max", "network").(bool),
		ipv6Enabled:        get("networkPolicy", "projects", "outside", "ipv6", "enabled").(bool),
		ipv6ClusterCIDRs:   strs(get("networkPolicy", "projects", "outside", "ipv6", "clusterCIDRs")),
		projectNameservers: strs(get("projects", "dns", "nameservers")),
		hubProtocol:        get("hub", "protocol").(string),
		hubPort:            int32(get("hub", "port").(float64)),
	}
	pv.healthFromMonitoring = fmt.Sprint(get("networkPolicy", "server", "healthFrom")) != "[]"
	return pv
}

// A project pod built from each rendered template carries the policies'
// selector labels, the chart's extra labels, and never ArgoCD's tracking label.
func TestProjectPodsFromTemplate(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tpl := projectTemplate(t, renderObjects(t, c))
			maxNetwork := chartValues(t, c).maxNetwork
			for _, outside := range []bool{false, true} {
				pod := projectPod(t, tpl, "2e5ab7d0-0000-4000-8000-00000000000d", outside)
				assert.Subset(t, pod.Labels, tpl.SelectorLabels)
				assert.Subset(t, pod.Labels, tpl.Labels)
				assert.NotContains(t, pod.Labels, "app.kubernetes.io/instance")
				assert.Equal(t, tpl.Namespace, pod.Namespace)
				// projects.resources.max.network false clamps a requested network off.
				want := podtemplate.NetworkNone
				if outside && maxNetwork {
					want = podtemplate.NetworkOutside
				}
				assert.Equal(t, want, pod.Labels[podtemplate.LabelNetwork])
				require.NotNil(t, pod.Spec.AutomountServiceAccountToken)
				assert.False(t, *pod.Spec.AutomountServiceAccountToken)
			}
		})
	}
}
