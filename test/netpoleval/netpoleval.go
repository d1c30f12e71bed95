// Package netpoleval decides whether a set of Kubernetes NetworkPolicies
// (networking.k8s.io/v1) allows one connection, following the API's
// semantics: a pod selected by no policy of a direction is open in that
// direction; a selected pod accepts only the union of what the rules of its
// selecting policies allow; a connection needs both the source's egress and
// the destination's ingress.
//
// Both test suites use it: the chart render suite (test/chart) proves what
// the rendered policies allow and deny without a cluster, and the e2e
// truth table (test/e2e) evaluates the policies read back from a live API
// server. Why an evaluator of our own: sigs.k8s.io/network-policy-api's
// policy-assistant is not a published Go module (the module the proxy
// serves holds only the AdminNetworkPolicy types), so it cannot be pinned
// in a go.mod. The semantics are small and fully specified by the API
// reference; netpoleval_test.go pins each rule.
//
// One deliberate choice makes "denied" verdicts conservative: an ipBlock
// peer matches any address in its range, pod IPs included (CNIs differ
// here; Calico matches pod IPs, others may not). A connection this package
// denies is therefore denied by every conforming CNI.
//
// A malformed policy (unparsable selector, CIDR, or port) is an error, not
// a silent "no match": a verdict computed from a policy the evaluator did
// not understand would prove nothing. The error surfaces when an
// evaluation reaches the malformed part.
package netpoleval

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Endpoint is one side of a connection: a pod, or an address outside the
// cluster's pod network (a node, the API server, the internet, a metadata
// server).
type Endpoint struct {
	Name string
	// Namespace and NamespaceLabels of a pod; empty for non-pods.
	Namespace       string
	NamespaceLabels map[string]string
	// PodLabels of a pod; nil for non-pods.
	PodLabels map[string]string
	// NamedPorts are the pod's named container ports (see NamedPorts),
	// against which a policy's named ports resolve when the pod is the
	// destination.
	NamedPorts map[string]corev1.ContainerPort
	IP         netip.Addr
}

// IsPod reports whether the endpoint is a pod: it has a namespace or pod
// labels. Only pods are subjects of policies and matched by selectors.
func (e Endpoint) IsPod() bool { return e.Namespace != "" || e.PodLabels != nil }

// NamedPorts returns the named ports of a pod's containers, keyed by name,
// for Endpoint.NamedPorts.
func NamedPorts(spec *corev1.PodSpec) map[string]corev1.ContainerPort {
	named := map[string]corev1.ContainerPort{}
	if spec == nil {
		return named
	}
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name != "" {
				named[p.Name] = p
			}
		}
	}
	return named
}

// Connection is one attempted flow. An empty Protocol means TCP.
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

// Evaluate decides one connection against all policies (of any namespace;
// each applies only to pods of its own namespace).
func Evaluate(policies []networkingv1.NetworkPolicy, c Connection) (Verdict, error) {
	if c.Protocol == "" {
		c.Protocol = corev1.ProtocolTCP
	}
	var why []string
	for _, side := range []struct {
		subject Endpoint
		dir     networkingv1.PolicyType
		label   string
	}{
		{c.From, networkingv1.PolicyTypeEgress, "egress of "},
		{c.To, networkingv1.PolicyTypeIngress, "ingress of "},
	} {
		if !side.subject.IsPod() {
			continue
		}
		ok, reason, err := allowedBy(policies, side.subject, side.dir, c)
		if err != nil {
			return Verdict{}, fmt.Errorf("%s%s: %w", side.label, c, err)
		}
		if !ok {
			return Verdict{Allowed: false, Reason: side.label + side.subject.Name + ": " + reason}, nil
		}
		why = append(why, side.label+side.subject.Name+": "+reason)
	}
	if len(why) == 0 {
		return Verdict{Allowed: true, Reason: "no pod involved"}, nil
	}
	return Verdict{Allowed: true, Reason: strings.Join(why, "; ")}, nil
}

// allowedBy checks one direction for the pod subject of that direction. A
// pod is isolated for a direction when some policy of its namespace
// selects it and has that policy type; an isolated pod admits exactly the
// union of the matching rules of those policies.
func allowedBy(policies []networkingv1.NetworkPolicy, subject Endpoint, dir networkingv1.PolicyType, c Connection) (bool, string, error) {
	peer := c.To
	if dir == networkingv1.PolicyTypeIngress {
		peer = c.From
	}
	selected := false
	for i := range policies {
		p := &policies[i]
		if p.Namespace != subject.Namespace || !hasType(p, dir) {
			continue
		}
		ok, err := selects(&p.Spec.PodSelector, subject.PodLabels)
		if err != nil {
			return false, "", fmt.Errorf("policy %s/%s podSelector: %w", p.Namespace, p.Name, err)
		}
		if !ok {
			continue
		}
		selected = true
		if dir == networkingv1.PolicyTypeEgress {
			for _, r := range p.Spec.Egress {
				ok, err := ruleMatches(p.Namespace, r.To, r.Ports, peer, c)
				if err != nil {
					return false, "", fmt.Errorf("policy %s/%s egress: %w", p.Namespace, p.Name, err)
				}
				if ok {
					return true, "policy " + p.Name, nil
				}
			}
		} else {
			for _, r := range p.Spec.Ingress {
				ok, err := ruleMatches(p.Namespace, r.From, r.Ports, peer, c)
				if err != nil {
					return false, "", fmt.Errorf("policy %s/%s ingress: %w", p.Namespace, p.Name, err)
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

// selects reports whether a label selector matches a label set; an empty
// selector matches everything.
func selects(sel *metav1.LabelSelector, set map[string]string) (bool, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(set)), nil
}

// ruleMatches: a rule matches when one of its ports and one of its peers
// match; an empty list of either matches everything.
func ruleMatches(policyNS string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, peer Endpoint, c Connection) (bool, error) {
	ok, err := portMatches(ports, c)
	if err != nil || !ok {
		return false, err
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

// peerMatches: ipBlock matches by address (cidr minus except); podSelector
// alone means pods of the policy's namespace; namespaceSelector alone means
// every pod of the selected namespaces; both in one peer mean the selected
// pods in the selected namespaces. Selectors never match addresses outside
// the pod network.
func peerMatches(policyNS string, p networkingv1.NetworkPolicyPeer, e Endpoint) (bool, error) {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return false, fmt.Errorf("peer mixes ipBlock with selectors")
		}
		return inBlock(*p.IPBlock, e.IP)
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return false, fmt.Errorf("peer has neither ipBlock nor selectors")
	}
	if !e.IsPod() {
		return false, nil
	}
	if p.NamespaceSelector != nil {
		ok, err := selects(p.NamespaceSelector, e.NamespaceLabels)
		if err != nil {
			return false, fmt.Errorf("namespaceSelector: %w", err)
		}
		if !ok {
			return false, nil
		}
	} else if e.Namespace != policyNS {
		return false, nil
	}
	if p.PodSelector != nil {
		ok, err := selects(p.PodSelector, e.PodLabels)
		if err != nil {
			return false, fmt.Errorf("podSelector: %w", err)
		}
		return ok, nil
	}
	return true, nil
}

func inBlock(b networkingv1.IPBlock, ip netip.Addr) (bool, error) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false, fmt.Errorf("ipBlock cidr: %w", err)
	}
	excepts := make([]netip.Prefix, 0, len(b.Except))
	for _, ex := range b.Except {
		p, err := netip.ParsePrefix(ex)
		if err != nil {
			return false, fmt.Errorf("ipBlock except: %w", err)
		}
		excepts = append(excepts, p)
	}
	if !ip.IsValid() || !cidr.Contains(ip) {
		return false, nil
	}
	for _, p := range excepts {
		if p.Contains(ip) {
			return false, nil
		}
	}
	return true, nil
}

// portMatches: an empty list matches every port and protocol; an entry's
// protocol defaults to TCP; an entry without port matches every port of its
// protocol; endPort makes a range; a named port resolves against the
// destination pod's container port of that name (number and protocol).
func portMatches(ports []networkingv1.NetworkPolicyPort, c Connection) (bool, error) {
	if len(ports) == 0 {
		return true, nil
	}
	for _, p := range ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if p.Port == nil {
			if p.EndPort != nil {
				return false, fmt.Errorf("endPort %d without port", *p.EndPort)
			}
			if proto == c.Protocol {
				return true, nil
			}
			continue
		}
		if p.Port.Type == intstr.String {
			if p.EndPort != nil {
				return false, fmt.Errorf("endPort %d with named port %q", *p.EndPort, p.Port.StrVal)
			}
			if proto != c.Protocol {
				continue
			}
			if cp, ok := c.To.NamedPorts[p.Port.StrVal]; ok && cp.ContainerPort == c.Port && protocolOf(cp) == c.Protocol {
				return true, nil
			}
			continue
		}
		lo, hi := p.Port.IntVal, p.Port.IntVal
		if p.EndPort != nil {
			hi = *p.EndPort
			if hi < lo {
				return false, fmt.Errorf("endPort %d below port %d", hi, lo)
			}
		}
		if proto == c.Protocol && c.Port >= lo && c.Port <= hi {
			return true, nil
		}
	}
	return false, nil
}

func protocolOf(p corev1.ContainerPort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}
