package e2e

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// This file is an evaluator of networking.k8s.io/v1 NetworkPolicy
// semantics, used to compute the truth table over the live policies.
//
// Why not sigs.k8s.io/network-policy-api's policy-assistant: the module
// the Go proxy serves (v0.3.0) holds only the AdminNetworkPolicy API types;
// policy-assistant lives under cmd/policy-assistant, which is not a
// published module (its import path does not resolve through the proxy),
// so it cannot be pinned in a go.mod here. The semantics it would apply
// are small and fully specified by the API reference; each rule below
// cites the part of the spec it implements, and netpol_eval_unit_test.go
// checks each one.

// endpoint is one side of a connection: a pod (Namespace set) or an
// address outside the pod network.
type endpoint struct {
	Name string
	// Pod endpoints: namespace, its labels, the pod's labels, and its
	// named container ports (for policies that name ports).
	Namespace       string
	NamespaceLabels map[string]string
	PodLabels       map[string]string
	NamedPorts      map[string]corev1.ContainerPort
	IP              netip.Addr
}

func (e endpoint) isPod() bool { return e.Namespace != "" }

// connection is a (source, destination, port) triple.
type connection struct {
	From, To endpoint
	Port     int32
	Protocol corev1.Protocol
}

func (c connection) String() string {
	return fmt.Sprintf("%s -> %s:%d/%s", c.From.Name, c.To.Name, c.Port, c.Protocol)
}

// verdict is the evaluator's answer with the reason.
type verdict struct {
	Allowed bool
	Reason  string
}

// evaluate decides whether policies allow c: the source's egress AND the
// destination's ingress must both allow it ("both the egress policy on the
// source pod and the ingress policy on the destination pod need to allow
// the connection").
func evaluate(policies []networkingv1.NetworkPolicy, c connection) verdict {
	if c.From.isPod() {
		if ok, why := direction(policies, c, networkingv1.PolicyTypeEgress); !ok {
			return verdict{false, "egress of " + c.From.Name + ": " + why}
		}
	}
	if c.To.isPod() {
		if ok, why := direction(policies, c, networkingv1.PolicyTypeIngress); !ok {
			return verdict{false, "ingress of " + c.To.Name + ": " + why}
		}
	}
	return verdict{true, ""}
}

// direction evaluates one side. A pod is isolated for a direction when at
// least one policy in its namespace selects it and lists that policy type;
// an isolated pod admits exactly the union of the matching rules.
func direction(policies []networkingv1.NetworkPolicy, c connection, dir networkingv1.PolicyType) (bool, string) {
	subject, peer := c.From, c.To
	if dir == networkingv1.PolicyTypeIngress {
		subject, peer = c.To, c.From
	}
	isolated := false
	for _, p := range policies {
		if p.Namespace != subject.Namespace || !selects(&p.Spec.PodSelector, subject.PodLabels) || !hasType(p.Spec, dir) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeEgress {
			for _, r := range p.Spec.Egress {
				if peersMatch(r.To, p.Namespace, peer) && portsMatch(r.Ports, c) {
					return true, ""
				}
			}
		} else {
			for _, r := range p.Spec.Ingress {
				if peersMatch(r.From, p.Namespace, peer) && portsMatch(r.Ports, c) {
					return true, ""
				}
			}
		}
	}
	if !isolated {
		return true, ""
	}
	return false, "no rule allows it"
}

// hasType applies the policyTypes default: Ingress always, Egress when the
// policy has egress rules.
func hasType(spec networkingv1.NetworkPolicySpec, dir networkingv1.PolicyType) bool {
	if len(spec.PolicyTypes) == 0 {
		return dir == networkingv1.PolicyTypeIngress || len(spec.Egress) > 0
	}
	for _, t := range spec.PolicyTypes {
		if t == dir {
			return true
		}
	}
	return false
}

// selects reports whether a label selector matches; an empty selector
// matches everything, an invalid one nothing.
func selects(sel *metav1.LabelSelector, set map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(set))
}

// peersMatch: an empty peer list matches all sources/destinations; else
// any peer must match.
func peersMatch(peers []networkingv1.NetworkPolicyPeer, policyNamespace string, e endpoint) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if peerMatches(p, policyNamespace, e) {
			return true
		}
	}
	return false
}

// peerMatches: ipBlock matches by address (cidr minus except);
// podSelector alone means pods of the policy's namespace; namespaceSelector
// alone means all pods of the selected namespaces; both together means the
// selected pods in the selected namespaces. Selectors never match
// addresses outside the pod network.
func peerMatches(p networkingv1.NetworkPolicyPeer, policyNamespace string, e endpoint) bool {
	if p.IPBlock != nil {
		return ipBlockContains(p.IPBlock, e.IP)
	}
	if !e.isPod() {
		return false
	}
	if p.NamespaceSelector != nil {
		if !selects(p.NamespaceSelector, e.NamespaceLabels) {
			return false
		}
	} else if e.Namespace != policyNamespace {
		return false
	}
	if p.PodSelector != nil {
		return selects(p.PodSelector, e.PodLabels)
	}
	return true
}

func ipBlockContains(b *networkingv1.IPBlock, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !cidr.Contains(ip) {
		return false
	}
	for _, ex := range b.Except {
		if p, err := netip.ParsePrefix(ex); err == nil && p.Contains(ip) {
			return false
		}
	}
	return true
}

// portsMatch: an empty list matches every port and protocol; a port entry
// defaults to protocol TCP, matches every port of its protocol when port
// is unset, a range with endPort, and a named port against the
// destination pod's container ports.
func portsMatch(ports []networkingv1.NetworkPolicyPort, c connection) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if proto != c.Protocol {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.String { // a named port of the destination
			if cp, ok := c.To.NamedPorts[p.Port.StrVal]; ok && cp.ContainerPort == c.Port && protocolOf(cp) == c.Protocol {
				return true
			}
			continue
		}
		lo, hi := p.Port.IntVal, p.Port.IntVal
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if c.Port >= lo && c.Port <= hi {
			return true
		}
	}
	return false
}

func protocolOf(p corev1.ContainerPort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}
