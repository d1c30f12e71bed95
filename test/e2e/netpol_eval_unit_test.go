package e2e

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestEvaluatorSemantics pins each rule of the NetworkPolicy spec the
// evaluator implements, so the truth table rests on tested semantics.
func TestEvaluatorSemantics(t *testing.T) {
	pod := func(name, ns string, lbl map[string]string, ip string) endpoint {
		return endpoint{Name: name, Namespace: ns, NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns},
			PodLabels: lbl, IP: netip.MustParseAddr(ip),
			NamedPorts: map[string]corev1.ContainerPort{"http": {Name: "http", ContainerPort: 8080}}}
	}
	a := pod("a", "ns1", map[string]string{"app": "a"}, "10.244.0.1")
	b := pod("b", "ns1", map[string]string{"app": "b"}, "10.244.0.2")
	c := pod("c", "ns2", map[string]string{"app": "b"}, "10.244.0.3")
	ext := endpoint{Name: "ext", IP: netip.MustParseAddr("203.0.113.10")}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	sel := func(kv ...string) *metav1.LabelSelector {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return &metav1.LabelSelector{MatchLabels: m}
	}
	np := func(ns string, spec networkingv1.NetworkPolicySpec) networkingv1.NetworkPolicy {
		return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns}, Spec: spec}
	}
	port := func(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }
	named := func(n string) *intstr.IntOrString { v := intstr.FromString(n); return &v }
	end := int32(90)

	denyIngressB := np("ns1", networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "b")})
	cases := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		conn     connection
		want     bool
	}{
		{"no policy allows", nil, connection{a, b, 80, tcp}, true},
		{"policyTypes default: ingress isolation with no rules denies", []networkingv1.NetworkPolicy{denyIngressB}, connection{a, b, 80, tcp}, false},
		{"policyTypes default: no egress isolation without egress rules", []networkingv1.NetworkPolicy{denyIngressB}, connection{b, a, 80, tcp}, true},
		{"policy of another namespace does not apply", []networkingv1.NetworkPolicy{denyIngressB}, connection{a, c, 80, tcp}, true},
		{"egress type with no rules denies", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}})}, connection{a, ext, 443, tcp}, false},
		{"empty rule allows all", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{}}})}, connection{c, b, 1, udp}, true},
		{"podSelector alone: same namespace only", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "b")}}}}})},
			connection{c, a, 80, tcp}, false},
		{"namespaceSelector alone: every pod there", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("kubernetes.io/metadata.name", "ns2")}}}}})},
			connection{c, a, 80, tcp}, true},
		{"namespace and pod selector in one peer: AND", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: sel("kubernetes.io/metadata.name", "ns2"), PodSelector: sel("app", "x")}}}}})},
			connection{c, a, 80, tcp}, false},
		{"selectors never match external addresses", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}})},
			connection{ext, a, 80, tcp}, false},
		{"ipBlock except excludes", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"203.0.113.0/24"}}}}}}})},
			connection{a, ext, 443, tcp}, false},
		{"ipBlock matches pod addresses too", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.244.0.2/32"}}}}}})},
			connection{a, b, 80, tcp}, true},
		{"port protocol defaults to TCP", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(53)}}}}})},
			connection{a, b, 53, udp}, false},
		{"port range with endPort", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(80), EndPort: &end}}}}})},
			connection{a, b, 85, tcp}, true},
		{"protocol without port: all its ports", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp}}}}})},
			connection{a, b, 6001, tcp}, true},
		{"named port resolves on the destination", []networkingv1.NetworkPolicy{np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: named("http")}}}}})},
			connection{a, b, 8080, tcp}, true},
		{"rules of several policies add up", []networkingv1.NetworkPolicy{denyIngressB, np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "b"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "a")}}}}})},
			connection{a, b, 80, tcp}, true},
		{"egress allowed but ingress denied", []networkingv1.NetworkPolicy{denyIngressB, np("ns1", networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "a"), Egress: []networkingv1.NetworkPolicyEgressRule{{}}})},
			connection{a, b, 80, tcp}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := evaluate(tc.policies, tc.conn); got.Allowed != tc.want {
				t.Errorf("%s: allowed=%v (%s), want %v", tc.conn, got.Allowed, got.Reason, tc.want)
			}
		})
	}
}
