// Package netpoleval decides whether a set of Kubernetes NetworkPolicies
// allows one connection, following the NetworkPolicy API semantics: a pod
// selected by no policy of a direction is open in that direction; a selected
// pod accepts only what some rule of some selecting policy allows; a
// connection needs both the source's egress and the destination's ingress.
//
// The chart render suite uses it to prove what the rendered policies deny
// without a cluster. One deliberate choice makes its "denied" verdicts
// conservative: an ipBlock peer matches any address in its range, pod IPs
// included (CNIs differ here; Calico matches pod IPs, others may not). A
// connection this package denies is therefore denied by every conforming CNI.
package netpoleval

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one side of a connection: a pod (PodLabels non-nil) or an
// address outside the cluster's pod network (a node, the API server, the
// internet, a metadata server).
type Endpoint struct {
	Name string
	// Namespace and NamespaceLabels of a pod; empty for non-pods.
	Namespace       string
	NamespaceLabels map[string]string
	// PodLabels is nil for non-pod endpoints.
	PodLabels map[string]string
	// NamedPorts maps container port names to numbers (destination pods).
	NamedPorts map[string]int32
	IP         netip.Addr
}

// IsPod reports whether the endpoint is a pod.
func (e Endpoint) IsPod() bool { return e.PodLabels != nil }

// Connection is one attempted flow.
type Connection struct {
	From, To Endpoint
	Port     int32
	Protocol corev1.Protocol
}

func (c Connection) String() string {
	return fmt.Sprintf("%s -> %s:%d/%s", c.From.Name, c.To.Name, c.Port, c.Protocol)
}

// Verdict explains a decision.
type Verdict struct {
	Allowed bool
	Reason  string
}

// Evaluate decides one connection against all policies (of any namespace).
func Evaluate(policies []networkingv1.NetworkPolicy, c Connection) (Verdict, error) {
	if c.Protocol == "" {
		c.Protocol = corev1.ProtocolTCP
	}
	if c.From.IsPod() {
		ok, reason, err := allowedBy(policies, c.From, networkingv1.PolicyTypeEgress, c)
		if err != nil {
			return Verdict{}, err
		}
		if !ok {
			return Verdict{Allowed: false, Reason: "egress of " + c.From.Name + ": " + reason}, nil
		}
	}
	if c.To.IsPod() {
		ok, reason, err := allowedBy(policies, c.To, networkingv1.PolicyTypeIngress, c)
		if err != nil {
			return Verdict{}, err
		}
		if !ok {
			return Verdict{Allowed: false, Reason: "ingress of " + c.To.Name + ": " + reason}, nil
		}
	}
	return Verdict{Allowed: true, Reason: "allowed"}, nil
}

// allowedBy checks one direction for the pod subject of that direction.
func allowedBy(policies []networkingv1.NetworkPolicy, subject Endpoint, dir networkingv1.PolicyType, c Connection) (bool, string, error) {
	selected := false
	for i := range policies {
		p := &policies[i]
		if p.Namespace != subject.Namespace || !hasType(p, dir) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			return false, "", fmt.Errorf("policy %s podSelector: %w", p.Name, err)
		}
		if !sel.Matches(labels.Set(subject.PodLabels)) {
			continue
		}
		selected = true
		if dir == networkingv1.PolicyTypeEgress {
			for _, r := range p.Spec.Egress {
				ok, err := ruleMatches(p.Namespace, r.To, r.Ports, c.To, c)
				if err != nil {
					return false, "", fmt.Errorf("policy %s: %w", p.Name, err)
				}
				if ok {
					return true, "policy " + p.Name, nil
				}
			}
		} else {
			for _, r := range p.Spec.Ingress {
				ok, err := ruleMatches(p.Namespace, r.From, r.Ports, c.From, c)
				if err != nil {
					return false, "", fmt.Errorf("policy %s: %w", p.Name, err)
				}
				if ok {
					return true, "policy " + p.Name, nil
				}
			}
		}
	}
	if !selected {
		return true, "not selected by any policy", nil
	}
	return false, "no rule of the selecting policies matches", nil
}

// hasType applies the API defaulting of policyTypes: Ingress always, Egress
// when egress rules exist.
func hasType(p *networkingv1.NetworkPolicy, dir networkingv1.PolicyType) bool {
	if len(p.Spec.PolicyTypes) == 0 {
		return dir == networkingv1.PolicyTypeIngress || len(p.Spec.Egress) > 0
	}
	for _, t := range p.Spec.PolicyTypes {
		if t == dir {
			return true
		}
	}
	return false
}

func ruleMatches(policyNS string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, peer Endpoint, c Connection) (bool, error) {
	if !portMatches(ports, c) {
		return false, nil
	}
	if len(peers) == 0 {
		return true, nil
	}
	for _, p := range peers {
		ok, err := peerMatches(policyNS, p, peer)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func peerMatches(policyNS string, p networkingv1.NetworkPolicyPeer, e Endpoint) (bool, error) {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return false, fmt.Errorf("peer mixes ipBlock with selectors")
		}
		return inBlock(*p.IPBlock, e.IP)
	}
	if !e.IsPod() {
		return false, nil
	}
	if p.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
		if err != nil {
			return false, err
		}
		if !sel.Matches(labels.Set(e.NamespaceLabels)) {
			return false, nil
		}
	} else if e.Namespace != policyNS {
		return false, nil
	}
	if p.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(p.PodSelector)
		if err != nil {
			return false, err
		}
		return sel.Matches(labels.Set(e.PodLabels)), nil
	}
	return true, nil
}

func inBlock(b networkingv1.IPBlock, ip netip.Addr) (bool, error) {
	if !ip.IsValid() {
		return false, nil
	}
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false, fmt.Errorf("ipBlock cidr: %w", err)
	}
	if !cidr.Contains(ip) {
		return false, nil
	}
	for _, ex := range b.Except {
		p, err := netip.ParsePrefix(ex)
		if err != nil {
			return false, fmt.Errorf("ipBlock except: %w", err)
		}
		if p.Contains(ip) {
			return false, nil
		}
	}
	return true, nil
}

func portMatches(ports []networkingv1.NetworkPolicyPort, c Connection) bool {
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
		var port int32
		if p.Port.Type == intstr.String {
			n, ok := c.To.NamedPorts[p.Port.StrVal]
			if !ok {
				continue
			}
			port = n
		} else {
			port = p.Port.IntVal
		}
		end := port
		if p.EndPort != nil {
			end = *p.EndPort
		}
		if c.Port >= port && c.Port <= end {
			return true
		}
	}
	return false
}
