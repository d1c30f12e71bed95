package netpoleval

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func pod(name, ns string, ip string, l map[string]string) Endpoint {
	return Endpoint{
		Name: name, Namespace: ns, IP: netip.MustParseAddr(ip), PodLabels: l,
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": ns},
		NamedPorts: map[string]corev1.ContainerPort{
			"http": {Name: "http", ContainerPort: 8080},
			"dns":  {Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
		},
	}
}

func ext(name, ip string) Endpoint { return Endpoint{Name: name, IP: netip.MustParseAddr(ip)} }

func policy(ns string, sel map[string]string, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, eg []networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: sel},
			PolicyTypes: types, Ingress: in, Egress: eg,
		},
	}
}

func tcp(port intstr.IntOrString) networkingv1.NetworkPolicyPort {
	p := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &p, Port: &port}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// ingressFrom is a policy selecting app=<app> in ns with one ingress rule.
func ingressFrom(ns, app string, rule networkingv1.NetworkPolicyIngressRule) networkingv1.NetworkPolicy {
	return policy(ns, map[string]string{"app": app}, nil, []networkingv1.NetworkPolicyIngressRule{rule}, nil)
}

func egressTo(ns, app string, rule networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy {
	return policy(ns, map[string]string{"app": app}, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, nil, []networkingv1.NetworkPolicyEgressRule{rule})
}

func TestEvaluate(t *testing.T) {
	a := pod("a", "ns", "10.0.0.1", map[string]string{"app": "a"})
	b := pod("b", "ns", "10.0.0.2", map[string]string{"app": "b"})
	other := pod("o", "other", "10.0.1.1", map[string]string{"app": "b"})
	otherA := pod("oa", "other", "10.0.1.2", map[string]string{"app": "a"})
	internet := ext("internet", "8.8.8.8")
	metadata := ext("metadata", "169.254.169.254")
	tcpProto, udpProto := corev1.ProtocolTCP, corev1.ProtocolUDP
	port := func(p int32) *intstr.IntOrString { v := intstr.FromInt32(p); return &v }
	named := func(n string) *intstr.IntOrString { v := intstr.FromString(n); return &v }

	denyAllA := policy("ns", map[string]string{"app": "a"}, []networkingv1.PolicyType{"Ingress", "Egress"}, nil, nil)
	// No policyTypes and no rules: the API defaults to Ingress only.
	denyIngressB := policy("ns", map[string]string{"app": "b"}, nil, nil, nil)
	bFromA := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{
		From:  []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "a")}},
		Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromString("http"))},
	})
	aInternet := egressTo("ns", "a", networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
		CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8", "169.254.0.0/16"}}}}})
	end := int32(9000)
	rangePort := tcp(intstr.FromInt32(8000))
	rangePort.EndPort = &end
	aRange := egressTo("ns", "a", networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{rangePort}})
	nsSel := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{
		NamespaceSelector: sel("kubernetes.io/metadata.name", "other"),
	}}})
	// namespaceSelector and podSelector in ONE peer: both must match.
	nsAndPod := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{
		NamespaceSelector: sel("kubernetes.io/metadata.name", "other"), PodSelector: sel("app", "a"),
	}}})
	// The same selectors in TWO peers: either may match.
	nsOrPod := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: sel("kubernetes.io/metadata.name", "other")}, {PodSelector: sel("app", "a")},
	}})
	anyNamespace := ingressFrom("ns", "a", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}})
	allowAllToB := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{})
	aToBByIP := egressTo("ns", "a", networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.2/32"}}}})
	defaultProto := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: port(53)}}})
	tcpAnyPort := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcpProto}}})
	namedDefaultProto := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: named("http")}}})
	namedUDP := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udpProto, Port: named("dns")}}})
	namedTCPOnUDPPort := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcpProto, Port: named("dns")}}})
	namedMissing := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: named("metrics")}}})
	bFromAAnyPort := ingressFrom("ns", "b", networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "a")}}})
	aEgressAll := policy("ns", map[string]string{"app": "a"}, nil, nil, []networkingv1.NetworkPolicyEgressRule{{}})
	// No policyTypes, but egress rules: the API defaults to Ingress and Egress.
	aEgressInternetOnly := policy("ns", map[string]string{"app": "a"}, nil, nil, []networkingv1.NetworkPolicyEgressRule{{
		To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "8.8.8.8/32"}}},
	}})
	egressOnlyA := policy("ns", map[string]string{"app": "a"}, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, nil, nil)

	cases := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		conn     Connection
		want     bool
	}{
		// Isolation and policyTypes.
		{"no policies allow everything", nil, Connection{From: a, To: b, Port: 1}, true},
		{"deny-all blocks egress", []networkingv1.NetworkPolicy{denyAllA}, Connection{From: a, To: b, Port: 80}, false},
		{"deny-all blocks ingress", []networkingv1.NetworkPolicy{denyAllA}, Connection{From: b, To: a, Port: 80}, false},
		{"policyTypes default: ingress isolation with no rules denies", []networkingv1.NetworkPolicy{denyIngressB}, Connection{From: a, To: b, Port: 80}, false},
		{"policyTypes default: no egress isolation without egress rules", []networkingv1.NetworkPolicy{denyIngressB}, Connection{From: b, To: a, Port: 80}, true},
		{"policyTypes default: egress rules add Egress (allowed)", []networkingv1.NetworkPolicy{aEgressInternetOnly}, Connection{From: a, To: internet, Port: 443}, true},
		{"policyTypes default: egress rules add Egress (denied)", []networkingv1.NetworkPolicy{aEgressInternetOnly}, Connection{From: a, To: metadata, Port: 80}, false},
		{"policyTypes default: egress rules keep Ingress", []networkingv1.NetworkPolicy{aEgressInternetOnly}, Connection{From: b, To: a, Port: 80}, false},
		{"egress type with no rules denies external", []networkingv1.NetworkPolicy{egressOnlyA}, Connection{From: a, To: internet, Port: 443}, false},
		{"egress-only policy leaves ingress open", []networkingv1.NetworkPolicy{aInternet}, Connection{From: b, To: a, Port: 22}, true},
		{"policy of another namespace does not apply", []networkingv1.NetworkPolicy{denyIngressB}, Connection{From: a, To: other, Port: 80}, true},
		{"rules of several policies add up", []networkingv1.NetworkPolicy{denyIngressB, bFromAAnyPort}, Connection{From: a, To: b, Port: 80}, true},
		{"egress allowed but ingress denied", []networkingv1.NetworkPolicy{denyIngressB, aEgressAll}, Connection{From: a, To: b, Port: 80}, false},
		{"empty rule allows all sources and protocols", []networkingv1.NetworkPolicy{allowAllToB}, Connection{From: other, To: b, Port: 1, Protocol: corev1.ProtocolUDP}, true},

		// Peers.
		{"other namespace does not match podSelector", []networkingv1.NetworkPolicy{bFromA}, Connection{From: otherA, To: b, Port: 8080}, false},
		{"namespaceSelector matches other namespace", []networkingv1.NetworkPolicy{nsSel}, Connection{From: other, To: b, Port: 1}, true},
		{"namespaceSelector rejects own namespace", []networkingv1.NetworkPolicy{nsSel}, Connection{From: a, To: b, Port: 1}, false},
		{"namespace and pod selector in one peer: both match", []networkingv1.NetworkPolicy{nsAndPod}, Connection{From: otherA, To: b, Port: 1}, true},
		{"namespace and pod selector in one peer: pod mismatch", []networkingv1.NetworkPolicy{nsAndPod}, Connection{From: other, To: b, Port: 1}, false},
		{"namespace and pod selector in one peer: namespace mismatch", []networkingv1.NetworkPolicy{nsAndPod}, Connection{From: a, To: b, Port: 1}, false},
		{"namespace and pod selector in two peers: namespace", []networkingv1.NetworkPolicy{nsOrPod}, Connection{From: other, To: b, Port: 1}, true},
		{"namespace and pod selector in two peers: pod", []networkingv1.NetworkPolicy{nsOrPod}, Connection{From: a, To: b, Port: 1}, true},
		{"selectors never match external addresses", []networkingv1.NetworkPolicy{anyNamespace}, Connection{From: internet, To: a, Port: 80}, false},
		{"ipBlock allows internet", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: internet, Port: 443}, true},
		{"ipBlock except blocks metadata", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: metadata, Port: 80}, false},
		{"ipBlock except blocks pods by IP", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: b, Port: 80}, false},
		{"ipBlock matches pod addresses too", []networkingv1.NetworkPolicy{aToBByIP}, Connection{From: a, To: b, Port: 80}, true},
		{"ipv6 outside an ipv4 block", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: ext("v6", "2001:db8::1"), Port: 443}, false},

		// Ports and protocols.
		{"named port allowed", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: b, Port: 8080}, true},
		{"other port denied", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: b, Port: 8081}, false},
		{"udp denied on tcp rule", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: b, Port: 8080, Protocol: corev1.ProtocolUDP}, false},
		{"connection protocol defaults to TCP", []networkingv1.NetworkPolicy{defaultProto}, Connection{From: a, To: b, Port: 53}, true},
		{"port protocol defaults to TCP", []networkingv1.NetworkPolicy{defaultProto}, Connection{From: a, To: b, Port: 53, Protocol: corev1.ProtocolUDP}, false},
		{"protocol without port: all its ports", []networkingv1.NetworkPolicy{tcpAnyPort}, Connection{From: a, To: b, Port: 6001}, true},
		{"protocol without port: other protocols denied", []networkingv1.NetworkPolicy{tcpAnyPort}, Connection{From: a, To: b, Port: 6001, Protocol: corev1.ProtocolUDP}, false},
		{"named port with default protocol resolves on the destination", []networkingv1.NetworkPolicy{namedDefaultProto}, Connection{From: a, To: b, Port: 8080}, true},
		{"named UDP port matches its container port", []networkingv1.NetworkPolicy{namedUDP}, Connection{From: a, To: b, Port: 5353, Protocol: corev1.ProtocolUDP}, true},
		{"named port needs the container port's protocol", []networkingv1.NetworkPolicy{namedTCPOnUDPPort}, Connection{From: a, To: b, Port: 5353}, false},
		{"named port missing on the destination", []networkingv1.NetworkPolicy{namedMissing}, Connection{From: a, To: b, Port: 9100}, false},
		{"named port of the source does not count", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: Endpoint{Name: "b-no-ports", Namespace: "ns", PodLabels: map[string]string{"app": "b"}, IP: netip.MustParseAddr("10.0.0.3")}, Port: 8080}, false},
		{"port range inside", []networkingv1.NetworkPolicy{aRange}, Connection{From: a, To: internet, Port: 8500}, true},
		{"port range upper bound inclusive", []networkingv1.NetworkPolicy{aRange}, Connection{From: a, To: internet, Port: 9000}, true},
		{"port range outside", []networkingv1.NetworkPolicy{aRange}, Connection{From: a, To: internet, Port: 9001}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Evaluate(tc.policies, tc.conn)
			if err != nil {
				t.Fatal(err)
			}
			if v.Allowed != tc.want {
				t.Fatalf("%s: allowed=%v (%s), want %v", tc.conn, v.Allowed, v.Reason, tc.want)
			}
		})
	}
}

func TestNamedPorts(t *testing.T) {
	spec := &corev1.PodSpec{Containers: []corev1.Container{
		{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9999}}},
		{Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
	}}
	got := NamedPorts(spec)
	if len(got) != 2 || got["http"].ContainerPort != 8080 || got["dns"].Protocol != corev1.ProtocolUDP {
		t.Fatalf("NamedPorts = %v, want http:8080 and dns:53/UDP only", got)
	}
	if len(NamedPorts(nil)) != 0 {
		t.Fatal("NamedPorts(nil) is not empty")
	}
}

// TestEvaluateRejectsBrokenPolicies: a policy the evaluator cannot read is
// an error, never a silent "no match" (which would read as a deny).
func TestEvaluateRejectsBrokenPolicies(t *testing.T) {
	a := pod("a", "ns", "10.0.0.1", map[string]string{"app": "a"})
	b := pod("b", "ns", "10.0.0.2", map[string]string{"app": "b"})
	badSelector := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Bogus", Values: []string{"a"}}}}
	udp := corev1.ProtocolUDP
	named := intstr.FromString("http")
	num := intstr.FromInt32(9000)
	lower, end := int32(80), int32(90)
	aEgress := func(r networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy { return egressTo("ns", "a", r) }
	toBlock := func(b networkingv1.IPBlock) networkingv1.NetworkPolicy {
		return aEgress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &b}}})
	}
	toPeer := func(p networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicy {
		return aEgress(networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{p}})
	}
	withPorts := func(p networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicy {
		return aEgress(networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{p}})
	}
	brokenSubject := policy("ns", nil, nil, nil, nil)
	brokenSubject.Spec.PodSelector = *badSelector

	cases := []struct {
		name   string
		policy networkingv1.NetworkPolicy
		to     Endpoint
	}{
		{"unparsable cidr", toBlock(networkingv1.IPBlock{CIDR: "not-a-cidr"}), ext("x", "1.1.1.1")},
		{"unparsable except", toBlock(networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/99"}}), ext("x", "1.1.1.1")},
		{"unparsable cidr against a pod without address", toBlock(networkingv1.IPBlock{CIDR: "nope"}), Endpoint{Name: "no-ip", Namespace: "ns", PodLabels: map[string]string{}}},
		{"ipBlock mixed with a selector", toPeer(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}, PodSelector: sel("app", "b")}), b},
		{"empty peer", toPeer(networkingv1.NetworkPolicyPeer{}), b},
		{"malformed peer podSelector", toPeer(networkingv1.NetworkPolicyPeer{PodSelector: badSelector}), b},
		{"malformed peer namespaceSelector", toPeer(networkingv1.NetworkPolicyPeer{NamespaceSelector: badSelector}), b},
		{"malformed policy podSelector", brokenSubject, b},
		{"endPort with a named port", withPorts(networkingv1.NetworkPolicyPort{Port: &named, EndPort: &end}), b},
		{"endPort below port", withPorts(networkingv1.NetworkPolicyPort{Port: &num, EndPort: &lower}), b},
		{"endPort without port", withPorts(networkingv1.NetworkPolicyPort{Protocol: &udp, EndPort: &end}), b},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := Connection{From: a, To: tc.to, Port: 9000}
			if v, err := Evaluate([]networkingv1.NetworkPolicy{tc.policy}, conn); err == nil {
				t.Fatalf("%s: no error, verdict %+v", conn, v)
			}
		})
	}
}
