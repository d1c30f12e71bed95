package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// netcheckImage is built from test/cluster/netcheck and loaded into the
// kind node by ci/kind/cluster-up.sh; it is never pulled.
const netcheckImage = "cocalc.local/netcheck:dev"

func netcheckPod(name string, labels map[string]string, restart corev1.RestartPolicy, args ...string) *corev1.Pod {
	p := restrictedPod(name, restart)
	p.Labels = labels
	p.Spec.Containers[0].Image = netcheckImage
	p.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	p.Spec.Containers[0].Command = append([]string{"/netcheck"}, args...)
	return p
}

// TestNetworkPolicyAllowsOneClientAndDeniesAnother runs a locally built
// image on the kind tier and proves enforcement both ways under one
// policy: the allowed client gets 200, the other is blocked.
func TestNetworkPolicyAllowsOneClientAndDeniesAnother(t *testing.T) {
	c := cluster.Get(t)
	c.RequireCapability(t, cluster.RealContainers)
	c.RequireCapability(t, cluster.NetworkPolicyEnforced)
	ns := namespace(t, c.Client, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	ctx := t.Context()

	server := netcheckPod("server", map[string]string{"app": "server"}, corev1.RestartPolicyAlways, "serve", ":8080")
	server.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	_, err := c.Client.CoreV1().Pods(ns).Create(ctx, server, metav1.CreateOptions{})
	require.NoError(t, err)
	waitPhase(t, c.Client, ns, "server", corev1.PodRunning)
	var serverIP string
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "server", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		serverIP = p.Status.PodIP
		return serverIP != "" && podReady(p), nil
	}))
	url := "http://" + serverIP + ":8080/"

	// Before any policy both clients reach the server: a later failure is
	// the policy's doing, not a broken network.
	runClient(t, c, ns, "before-policy", map[string]string{"role": "denied"}, url, corev1.PodSucceeded)

	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(8080)
	_, err = c.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "server-from-allowed"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "allowed"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	// The policy agent applies rules asynchronously; give it a moment
	// before expecting the denial.
	time.Sleep(3 * time.Second)

	// kube-router admits a new client's IP once it has seen the pod; a
	// client that connects before that is refused, so the allowed one gets
	// a few attempts. The denied one must fail even after the allowed one
	// got through.
	var phase corev1.PodPhase
	for attempt := 1; attempt <= 6; attempt++ {
		name := fmt.Sprintf("allowed-%d", attempt)
		phase = runClientPhase(t, c, ns, name, map[string]string{"role": "allowed"}, url)
		if phase == corev1.PodSucceeded {
			break
		}
		time.Sleep(2 * time.Second)
	}
	require.Equal(t, corev1.PodSucceeded, phase, "allowed client never reached the server")
	require.Equal(t, corev1.PodFailed, runClientPhase(t, c, ns, "denied", map[string]string{"role": "denied"}, url),
		"denied client reached the server through the policy")
}

// runClientPhase runs a netcheck client to completion and returns its phase.
func runClientPhase(t *testing.T, c *cluster.Cluster, ns, name string, labels map[string]string, url string) corev1.PodPhase {
	t.Helper()
	p := netcheckPod(name, labels, corev1.RestartPolicyNever, "get", url, "5s")
	_, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
	require.NoError(t, err)
	var phase corev1.PodPhase
	require.NoError(t, wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase = got.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	}))
	return phase
}

func runClient(t *testing.T, c *cluster.Cluster, ns, name string, labels map[string]string, url string, want corev1.PodPhase) {
	t.Helper()
	p := netcheckPod(name, labels, corev1.RestartPolicyNever, "get", url, "5s")
	_, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
	require.NoError(t, err)
	waitPhase(t, c.Client, ns, name, want)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
