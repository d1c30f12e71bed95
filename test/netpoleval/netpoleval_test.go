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
		NamedPorts:      map[string]int32{"http": 8080},
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

func TestEvaluate(t *testing.T) {
	a := pod("a", "ns", "10.0.0.1", map[string]string{"app": "a"})
	b := pod("b", "ns", "10.0.0.2", map[string]string{"app": "b"})
	other := pod("o", "other", "10.0.1.1", map[string]string{"app": "b"})
	internet := ext("internet", "8.8.8.8")
	metadata := ext("metadata", "169.254.169.254")

	denyAllA := policy("ns", map[string]string{"app": "a"}, []networkingv1.PolicyType{"Ingress", "Egress"}, nil, nil)
	bFromA := policy("ns", map[string]string{"app": "b"}, nil,
		[]networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}}},
			Ports: []networkingv1.NetworkPolicyPort{tcp(intstr.FromString("http"))},
		}}, nil)
	aInternet := policy("ns", map[string]string{"app": "a"}, []networkingv1.PolicyType{"Egress"}, nil,
		[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8", "169.254.0.0/16"}}}}}})
	end := int32(9000)
	rangePort := tcp(intstr.FromInt32(8000))
	rangePort.EndPort = &end
	aRange := policy("ns", map[string]string{"app": "a"}, []networkingv1.PolicyType{"Egress"}, nil,
		[]networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{rangePort}}})
	nsSel := policy("ns", map[string]string{"app": "b"}, nil,
		[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "other"}},
		}}}}, nil)

	cases := []struct {
		name     string
		policies []networkingv1.NetworkPolicy
		conn     Connection
		want     bool
	}{
		{"no policies allow everything", nil, Connection{From: a, To: b, Port: 1}, true},
		{"deny-all blocks egress", []networkingv1.NetworkPolicy{denyAllA}, Connection{From: a, To: b, Port: 80}, false},
		{"deny-all blocks ingress", []networkingv1.NetworkPolicy{denyAllA}, Connection{From: b, To: a, Port: 80}, false},
		{"named port allowed", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: b, Port: 8080}, true},
		{"other port denied", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: b, Port: 8081}, false},
		{"udp denied on tcp rule", []networkingv1.NetworkPolicy{bFromA}, Connection{From: a, To: b, Port: 8080, Protocol: corev1.ProtocolUDP}, false},
		{"other namespace does not match podSelector", []networkingv1.NetworkPolicy{bFromA}, Connection{From: pod("a2", "other", "10.0.1.2", map[string]string{"app": "a"}), To: b, Port: 8080}, false},
		{"namespaceSelector matches other namespace", []networkingv1.NetworkPolicy{nsSel}, Connection{From: other, To: b, Port: 1}, true},
		{"namespaceSelector rejects own namespace", []networkingv1.NetworkPolicy{nsSel}, Connection{From: a, To: b, Port: 1}, false},
		{"ipBlock allows internet", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: internet, Port: 443}, true},
		{"ipBlock except blocks metadata", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: metadata, Port: 80}, false},
		{"ipBlock except blocks pods by IP", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: b, Port: 80}, false},
		{"ipv6 outside an ipv4 block", []networkingv1.NetworkPolicy{aInternet}, Connection{From: a, To: ext("v6", "2001:db8::1"), Port: 443}, false},
		{"port range inside", []networkingv1.NetworkPolicy{aRange}, Connection{From: a, To: internet, Port: 8500}, true},
		{"port range outside", []networkingv1.NetworkPolicy{aRange}, Connection{From: a, To: internet, Port: 9001}, false},
		{"egress-only policy leaves ingress open", []networkingv1.NetworkPolicy{aInternet}, Connection{From: b, To: a, Port: 22}, true},
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

func TestEvaluateRejectsBrokenPolicies(t *testing.T) {
	bad := policy("ns", map[string]string{"app": "a"}, []networkingv1.PolicyType{"Egress"}, nil,
		[]networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "not-a-cidr"}}}}})
	a := pod("a", "ns", "10.0.0.1", map[string]string{"app": "a"})
	if _, err := Evaluate([]networkingv1.NetworkPolicy{bad}, Connection{From: a, To: ext("x", "1.1.1.1"), Port: 1}); err == nil {
		t.Fatal("want an error for an unparsable CIDR")
	}
}
