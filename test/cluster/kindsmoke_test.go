package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/probe"
)

// standinImage is the project stand-in (test/standins/project), built
// from this repository and loaded into the kind node by `test-cluster up
// -tier=kind`; it is never pulled.
const standinImage = "cocalc-kubernetes/project-standin:dev"

// standinPod runs the project stand-in on :8080 as a restricted pod.
func standinPod(name string, labels map[string]string) *corev1.Pod {
	p := restrictedPod(name, corev1.RestartPolicyAlways)
	p.Labels = labels
	c := &p.Spec.Containers[0]
	c.Image = standinImage
	c.ImagePullPolicy = corev1.PullNever
	c.Args = []string{"-listen=:8080", "-home=/home/user"}
	c.Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	c.ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1,
	}
	c.VolumeMounts = []corev1.VolumeMount{{Name: "home", MountPath: "/home/user"}}
	p.Spec.Volumes = []corev1.Volume{{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	return p
}

// runStandins starts the pods and returns their IPs once all are Ready.
func runStandins(t *testing.T, c *cluster.Cluster, ns string, pods ...*corev1.Pod) map[string]string {
	t.Helper()
	for _, p := range pods {
		_, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	ips := map[string]string{}
	for _, p := range pods {
		require.NoError(t, wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := c.Client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			ips[p.Name] = got.Status.PodIP
			return got.Status.PodIP != "" && podReady(got), nil
		}), "pod %s/%s not Ready", ns, p.Name)
	}
	return ips
}

// dial asks client (a stand-in pod) to connect to addr.
func dial(t *testing.T, c *cluster.Cluster, ns, client, addr string) bool {
	t.Helper()
	res, err := probe.Dial(t.Context(), c.Client, ns, client, 8080, addr, 2*time.Second)
	require.NoError(t, err)
	return res.Connected
}

// TestNetworkPolicyAllowsOneClientAndDeniesAnother runs locally built
// images on the kind tier and proves enforcement both ways under one
// policy: the allowed client connects, the other is blocked, and the
// block goes when the policy does.
func TestNetworkPolicyAllowsOneClientAndDeniesAnother(t *testing.T) {
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	c.RequireCapability(t, cluster.NetworkPolicyEnforced)
	ns := namespace(t, c.Client, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	ctx := t.Context()

	ips := runStandins(t, c, ns,
		standinPod("server", map[string]string{"app": "server"}),
		standinPod("allowed", map[string]string{"role": "allowed"}),
		standinPod("denied", map[string]string{"role": "denied"}))
	target := ips["server"] + ":8080"

	// Before any policy both clients connect: a later failure is the
	// policy's doing, not a broken network.
	require.True(t, dial(t, c, ns, "allowed", target), "allowed client, no policy")
	require.True(t, dial(t, c, ns, "denied", target), "denied client, no policy")

	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(8080)
	policy := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "server-from-allowed"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "allowed"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}
	_, err := c.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, policy, metav1.CreateOptions{})
	require.NoError(t, err)

	// The agent applies policies asynchronously: wait until the denied
	// client is blocked, then the allowed one must still connect.
	require.Eventually(t, func() bool { return !dial(t, c, ns, "denied", target) }, time.Minute, time.Second,
		"the policy never blocked the denied client")
	for range 3 {
		require.True(t, dial(t, c, ns, "allowed", target), "allowed client blocked by the policy")
		require.False(t, dial(t, c, ns, "denied", target), "denied client got through the policy")
	}

	require.NoError(t, c.Client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, policy.Name, metav1.DeleteOptions{}))
	require.Eventually(t, func() bool { return dial(t, c, ns, "denied", target) }, time.Minute, time.Second,
		"the denied client stayed blocked after the policy was deleted")
}

// TestKindNodeRejectsPodEgressBeyondTheNode checks the node image's egress
// guard (ci/kind/node-entrypoint.sh) is in place: pod traffic is forwarded
// only to pods and to the test's own outside hosts, so no test can reach a
// real address, even before kube-proxy has programmed Service addresses.
// The guard is inspected, not probed: probing it would mean sending to an
// outside address.
func TestKindNodeRejectsPodEgressBeyondTheNode(t *testing.T) {
	c := cluster.Get(t)
	if c.Tier != cluster.TierKind {
		t.Skipf("the egress guard is part of the offline kind node image; this is the %s tier", c.Tier)
	}
	out, err := c.NodeCommand(t.Context(), "nft", "list", "table", "inet", "cocalc_guard")
	require.NoError(t, err, "egress guard table missing")
	require.Contains(t, out, "hook forward")
	require.Contains(t, out, "ip saddr 10.244.0.0/16 ip daddr != { 10.244.0.0/16, 169.254.169.254, 192.0.2.0/30, 203.0.113.0/24 }")
	require.Contains(t, out, "hook output")
	require.Contains(t, out, "ip daddr 10.96.0.0/16")
	require.Contains(t, out, "reject")
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
