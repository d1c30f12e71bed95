package e2e

// Multi-node kind tier (issue 15): isolation across nodes, scheduling,
// a lost node, a drained node. These tests need a kind cluster with a
// control plane and two workers:
//
//	make cluster-kind NODES=3
//	make test-kind-multi   (COCALC_TEST_TIER=kind COCALC_KIND_STATE=.cache/cluster/kind-cocalc-multi)
//
// On the one-node kind tier (and the api tier) they skip and say so.

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/probe"
	"gitlab.com/resurgo/cocalc-kubernetes/test/standins/standin"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

const labelControlPlane = "node-role.kubernetes.io/control-plane"

// nodeSet is the multi-node cluster: its control plane (tainted, as kind
// leaves it when there are workers), its workers and every node's address.
type nodeSet struct {
	controlPlane string
	workers      []string
	ip           map[string]string
}

// others are the nodes other than n, workers first.
func (s nodeSet) other(n string) string {
	for _, w := range append(append([]string{}, s.workers...), s.controlPlane) {
		if w != n {
			return w
		}
	}
	return ""
}

// multiNode skips unless the cluster runs real containers with enforced
// NetworkPolicies on a control plane and at least two workers.
func multiNode(t *testing.T, c *cluster.Cluster) nodeSet {
	t.Helper()
	c.RequireCapability(t, cluster.RealContainers)
	c.RequireCapability(t, cluster.NetworkPolicyEnforced)
	list, err := c.Client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	s := nodeSet{ip: map[string]string{}}
	for _, n := range list.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address).To4() != nil {
				s.ip[n.Name] = a.Address
			}
		}
		if _, ok := n.Labels[labelControlPlane]; ok {
			s.controlPlane = n.Name
		} else {
			s.workers = append(s.workers, n.Name)
		}
	}
	sort.Strings(s.workers)
	if s.controlPlane == "" || len(s.workers) < 2 {
		t.Skipf("needs a kind cluster of a control plane and two workers; this one has %d node(s): "+
			"make cluster-kind NODES=3, then COCALC_KIND_STATE=.cache/cluster/kind-%s (make test-kind-multi)", len(list.Items), cluster.KindMultiName)
	}
	require.NoError(t, c.WaitNodesReady(t.Context(), 3*time.Minute))
	return s
}

// onNode runs fn with every worker but node cordoned, so the pods fn makes
// the scheduler places on node (the control plane is tainted; nothing of
// the chart tolerates that but a server pinned there). The template's
// nodeSelector is the same for every project of a release, so this is how
// one test puts two projects of one release on chosen nodes.
func onNode(t *testing.T, c *cluster.Cluster, s nodeSet, node string, fn func()) {
	t.Helper()
	var cordoned []string
	for _, w := range s.workers {
		if w != node {
			setUnschedulable(t, c, w, true)
			cordoned = append(cordoned, w)
		}
	}
	defer func() {
		for _, w := range cordoned {
			setUnschedulable(t, c, w, false)
		}
	}()
	fn()
}

func setUnschedulable(t *testing.T, c *cluster.Cluster, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%v}}`, on)
	_, err := c.Client.CoreV1().Nodes().Patch(contextWithTimeout(30*time.Second), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err, "cordon=%v %s", on, node)
}

// installMulti installs values/kind.yaml with the server pinned to
// serverNode (allowed onto the control plane) and the projects' storage a
// ReadWriteMany claim on the shared host directory every node mounts.
// serverNode "" leaves the server to the scheduler.
func installMulti(t *testing.T, c *cluster.Cluster, ns, serverNode string, set map[string]string) hub {
	t.Helper()
	values := multiValues(serverNode, set)
	return installInCluster(t, c, ns, values)
}

func multiValues(serverNode string, set map[string]string) map[string]string {
	values := map[string]string{
		"hub.embeddedDatabase.activityInSmcCompute": "false",
		"storage.pvc.accessModes[0]":                "ReadWriteMany",
	}
	if serverNode != "" {
		values[`server.nodeSelector.kubernetes\.io/hostname`] = serverNode
		values["server.tolerations[0].key"] = labelControlPlane
		values["server.tolerations[0].operator"] = "Exists"
		values["server.tolerations[0].effect"] = "NoSchedule"
	}
	for k, v := range set {
		values[k] = v
	}
	return values
}

func podNode(t *testing.T, c *cluster.Cluster, ns, pod string) string {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), pod, metav1.GetOptions{})
	require.NoError(t, err)
	return p.Spec.NodeName
}

// otherNamespacePods runs two project stand-ins in a namespace of their own
// (no policies there): "client" on clientNode dials on request, "backend"
// answers behind a NodePort Service. It returns the dialer and the
// NodePort.
func otherNamespacePods(t *testing.T, c *cluster.Cluster, clientNode string) (func(addr string) standin.DialResult, int32) {
	t.Helper()
	ns := newNamespace(t, c, "multinode-other", nil)
	ctx := t.Context()
	mk := func(name, node string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{
				NodeName:                      node,
				AutomountServiceAccountToken:  ptr.To(false),
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](2001),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Volumes: []corev1.Volume{{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				Containers: []corev1.Container{{
					Name: "standin", Image: standinValues["projects.image.repository"] + ":dev", ImagePullPolicy: corev1.PullNever,
					Args:         []string{"-listen=:8080", "-home=/home/user"},
					VolumeMounts: []corev1.VolumeMount{{Name: "home", MountPath: "/home/user"}},
					Ports:        []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				}},
			},
		}
	}
	for _, p := range []*corev1.Pod{mk("client", clientNode), mk("backend", "")} {
		_, err := c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	svc, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "backend"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "backend"},
			Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	for _, name := range []string{"client", "backend"} {
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			p, err := c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		}), "pod %s/%s not Ready", ns, name)
	}
	dial := func(addr string) standin.DialResult {
		res, err := probe.Dial(t.Context(), c.Client, ns, "client", 8080, addr, 3*time.Second)
		require.NoError(t, err, "dial %s from %s/client", addr, ns)
		return res
	}
	return dial, svc.Spec.Ports[0].NodePort
}

// TestMultiNodeIsolation runs the kind truth table (isolationTable) with
// the server, project A and project B on three different nodes, and with
// all three on one worker, plus the rows only several nodes have: each
// project → its own and another node's kubelet, → a NodePort on another
// node, and a pod of another namespace → project A (all blocked), with
// that pod's connections to the same kubelet and NodePort as controls
// (they connect: the routes are there, the policies block).
func TestMultiNodeIsolation(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	s := multiNode(t, c)
	layouts := []struct{ name, server, a, b string }{
		{"spread", s.controlPlane, s.workers[0], s.workers[1]},
		{"one node", s.workers[0], s.workers[0], s.workers[0]},
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			timed(t)
			ns := newNamespace(t, c, "multinode", nil)
			h := installMulti(t, c, ns, l.server, nil)
			h.t = t
			require.Equal(t, l.server, podNode(t, c, ns, h.pod), "server pod's node")
			a := project.MustParse("0a0a0a0a-0000-4000-8000-00000000000a")
			b := project.MustParse("0b0b0b0b-0000-4000-8000-00000000000b")
			var stA, stB orchestrator.ProjectStatus
			onNode(t, c, s, l.a, func() { stA = h.start(a, "") })
			onNode(t, c, s, l.b, func() { stB = h.start(b, `{"network":true}`) })
			require.Equal(t, l.a, podNode(t, c, ns, stA.Pod), "project A's node")
			require.Equal(t, l.b, podNode(t, c, ns, stB.Pod), "project B's node")
			t.Logf("layout %s: server on %s, project A on %s, project B on %s", l.name, l.server, l.a, l.b)

			// The other namespace's client sits on a node other than A's,
			// so its connections to A cross nodes.
			clientNode := s.other(l.a)
			dialOther, nodePort := otherNamespacePods(t, c, clientNode)
			at := func(node string, port int32) string { return net.JoinHostPort(s.ip[node], fmt.Sprint(port)) }
			extra := func(stB2 orchestrator.ProjectStatus) ([]isolationRow, func(string) standin.DialResult) {
				require.Equal(t, stB.Pod, stB2.Pod, "project B kept its pod")
				var rows []isolationRow
				for _, p := range []struct {
					id   project.ID
					name string
					node string
				}{{a, "project A", l.a}, {b, "project B (network=outside)", l.b}} {
					other := s.other(p.node)
					rows = append(rows,
						isolationRow{p.id, p.name + " → own node's kubelet", at(p.node, 10250), false},
						isolationRow{p.id, p.name + " → other node's kubelet", at(other, 10250), false},
						isolationRow{p.id, p.name + " → NodePort on other node", at(other, nodePort), false},
					)
				}
				rows = append(rows,
					isolationRow{otherPod, "pod in another namespace → project A raw port", net.JoinHostPort(stA.IP, fmt.Sprint(podtemplate.RawPort)), false},
					isolationRow{otherPod, "pod in another namespace → project A hub port", net.JoinHostPort(stA.IP, fmt.Sprint(podtemplate.HubPort)), false},
					isolationRow{otherPod, "pod in another namespace → kubelet of project A's node (control)", at(l.a, 10250), true},
					isolationRow{otherPod, "pod in another namespace → NodePort on project A's node (control)", at(l.a, nodePort), true},
				)
				return rows, dialOther
			}
			isolationTable(t, c, h, a, b, stA, extra)
		})
	}
}

// countProjectPods counts the pods of project id in ns (any phase,
// terminating included).
func countProjectPods(t *testing.T, c *cluster.Cluster, ns string, id project.ID) (n int, desc []string) {
	t.Helper()
	for _, p := range projectPods(t, c, ns, id) {
		n++
		desc = append(desc, fmt.Sprintf("%s@%s(%s,deleting=%v)", p.Name, p.Spec.NodeName, p.Status.Phase, p.DeletionTimestamp != nil))
	}
	return n, desc
}

// TestMultiNodeLostNode stops a worker's container with a project on it
// (the node is lost, not drained) and measures how the orchestrator copes:
// how long until that project is reported not running, that a start puts
// it on the surviving worker at once (the orchestrator deletes the lost
// pod with grace 0 instead of waiting out the taint eviction and a grace
// period no kubelet will end), that its home is intact and that it never
// has two pods; then the worker comes back: no duplicate, no orphan
// container on it.
func TestMultiNodeLostNode(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	s := multiNode(t, c)
	lost, survivor := s.workers[0], s.workers[1]
	ns := newNamespace(t, c, "lostnode", nil)
	// The server on the control plane: losing a worker must not take it.
	h := installMulti(t, c, ns, s.controlPlane, nil)
	h.t = t
	onLost := project.MustParse("1a1a1a1a-0000-4000-8000-00000000001a")
	onSurvivor := project.MustParse("1b1b1b1b-0000-4000-8000-00000000001b")
	var st orchestrator.ProjectStatus
	onNode(t, c, s, lost, func() { st = h.start(onLost, "") })
	require.Equal(t, lost, podNode(t, c, ns, st.Pod))
	onNode(t, c, s, survivor, func() { st = h.start(onSurvivor, "") })
	require.Equal(t, survivor, podNode(t, c, ns, st.Pod))

	content := "written before the node was lost, " + time.Now().UTC().Format(time.RFC3339Nano)
	code, raw := h.do("POST", "/projects/"+string(onLost)+"/file", map[string]string{"name": "before-loss.txt"}, content)
	require.Equal(t, 204, code, "write: %s", raw)

	ctx := t.Context()
	stopped := time.Now()
	require.NoError(t, c.StopNode(ctx, lost))
	restarted := false
	t.Cleanup(func() {
		if !restarted { // never leave the cluster a worker short
			if err := c.StartNode(contextWithTimeout(5*time.Minute), lost); err != nil {
				t.Logf("start node %s again: %v", lost, err)
			}
		}
	})

	// Detection: the node controller marks the node's pods not Ready
	// once the kubelet has missed the node-monitor grace period.
	var detected orchestrator.ProjectStatus
	require.Eventually(t, func() bool {
		detected = h.status(onLost)
		return detected.State != "running"
	}, 5*time.Minute, time.Second, "project on the lost node still reported running")
	detection := time.Since(stopped)
	t.Logf("MEASURED lost node %s: project reported %s (%s: %s) %v after docker stop", lost, detected.State, detected.Reason, detected.Message, detection.Round(time.Second))
	require.Equal(t, "NodeLost", detected.Reason, "reason of a project whose node is lost")
	require.Equal(t, "running", string(h.status(onSurvivor).State), "the project on the surviving worker keeps running")

	// Recovery: a start creates the pod on the surviving worker now.
	begin := time.Now()
	st = h.start(onLost, "")
	recovery := time.Since(begin)
	t.Logf("MEASURED start of the lost project: running on %s %v after the start request (%v after docker stop)",
		podNode(t, c, ns, st.Pod), recovery.Round(time.Second), time.Since(stopped).Round(time.Second))
	require.Equal(t, survivor, podNode(t, c, ns, st.Pod), "the lost project's new pod")
	code, raw = h.do("GET", "/projects/"+string(onLost)+"/raw/file", map[string]string{"name": "before-loss.txt"}, "")
	require.Equal(t, 200, code, "read the home after the move: %s", raw)
	require.Equal(t, content, string(raw), "home intact")
	n, desc := countProjectPods(t, c, ns, onLost)
	require.Equal(t, 1, n, "pods of the lost project: %v", desc)

	// The worker comes back.
	back := time.Now()
	require.NoError(t, c.StartNode(ctx, lost))
	restarted = true
	t.Logf("MEASURED node %s Ready again (pod network reprogrammed) %v after docker start", lost, time.Since(back).Round(time.Second))
	podName := st.Pod
	// No orphan: the returning kubelet removes the old pod's sandbox
	// (its pod is gone from the API); no pod of either project is on it.
	require.Eventually(t, func() bool {
		out, err := c.NodeCommandOn(ctx, lost, "crictl", "pods", "-q", "--state", "ready", "--name", podName, "--namespace", ns)
		return err == nil && strings.TrimSpace(out) == ""
	}, 3*time.Minute, 2*time.Second, "the old pod's sandbox is still on %s", lost)
	for _, id := range []project.ID{onLost, onSurvivor} {
		n, desc := countProjectPods(t, c, ns, id)
		require.Equal(t, 1, n, "pods of %s after the node returned: %v", id, desc)
		require.Equal(t, "running", string(h.status(id).State), "%s after the node returned", id)
		require.Equal(t, survivor, podNode(t, c, ns, projectPods(t, c, ns, id)[0].Name), "%s stays where it runs", id)
	}
}

// TestMultiNodeScheduling: projects of a release whose template prefers
// one project per node spread over the workers; a release whose template
// selects one node puts every project there.
func TestMultiNodeScheduling(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	s := multiNode(t, c)

	t.Run("anti-affinity spreads projects over the workers", func(t *testing.T) {
		ns := newNamespace(t, c, "spread", nil)
		set := map[string]string{
			"projects.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight":                                                                  "100",
			"projects.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.topologyKey":                                             "kubernetes.io/hostname",
			`projects.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.labelSelector.matchLabels.app\.kubernetes\.io/component`: "project",
		}
		h := installMulti(t, c, ns, s.controlPlane, set)
		h.t = t
		perNode := map[string]int{}
		for i := range 4 {
			id := project.MustParse(fmt.Sprintf("2a2a2a2a-0000-4000-8000-%012d", i))
			st := h.start(id, "")
			perNode[podNode(t, c, ns, st.Pod)]++
		}
		t.Logf("4 projects with a preferred anti-affinity per hostname: %v", perNode)
		for _, w := range s.workers[:2] {
			require.GreaterOrEqual(t, perNode[w], 1, "no project on %s: %v", w, perNode)
		}
		require.Zero(t, perNode[s.controlPlane], "a project on the (tainted) control plane")
	})

	t.Run("nodeSelector pins every project", func(t *testing.T) {
		ns := newNamespace(t, c, "pinned", nil)
		target := s.workers[1]
		h := installMulti(t, c, ns, s.controlPlane, map[string]string{`projects.nodeSelector.kubernetes\.io/hostname`: target})
		h.t = t
		for i := range 3 {
			id := project.MustParse(fmt.Sprintf("2b2b2b2b-0000-4000-8000-%012d", i))
			st := h.start(id, "")
			require.Equal(t, target, podNode(t, c, ns, st.Pod), "project %s", id)
		}
	})
}

// TestMultiNodePrePuller: the chart's image pre-puller DaemonSet runs on
// every node projects may use (the workers: the control plane is tainted
// and the projects' tolerations do not cover it).
func TestMultiNodePrePuller(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	s := multiNode(t, c)
	ns := newNamespace(t, c, "prepull", nil)
	installMulti(t, c, ns, s.controlPlane, map[string]string{
		"projects.prePull.enabled":               "true",
		"projects.prePull.pauseImage.repository": "registry.k8s.io/pause", // in every node (kind's sandbox image)
		"projects.prePull.pauseImage.tag":        "3.10.2",
		"projects.prePull.pauseImage.pullPolicy": "Never",
	})
	var nodes []string
	require.Eventually(t, func() bool {
		ds, err := c.Client.AppsV1().DaemonSets(ns).Get(t.Context(), releaseName+"-prepull", metav1.GetOptions{})
		if err != nil || ds.Status.NumberReady != int32(len(s.workers)) || ds.Status.DesiredNumberScheduled != int32(len(s.workers)) {
			return false
		}
		pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=prepull"})
		if err != nil {
			return false
		}
		nodes = nodes[:0]
		for _, p := range pods.Items {
			nodes = append(nodes, p.Spec.NodeName)
		}
		sort.Strings(nodes)
		return len(nodes) == len(s.workers)
	}, 3*time.Minute, time.Second, "the pre-puller is not Ready on every worker")
	require.Equal(t, s.workers, nodes, "pre-puller pods' nodes")
}

// evict asks the eviction API to evict a pod, as kubectl drain does.
func evict(t *testing.T, c *cluster.Cluster, ns, pod string) error {
	t.Helper()
	return c.Client.CoreV1().Pods(ns).EvictV1(t.Context(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns}})
}

// TestMultiNodeDrain drains the server's node the way kubectl drain does
// (cordon, then an eviction per pod): with the server's
// PodDisruptionBudget on, the server's eviction is refused (429) and it
// stays; the project pod on that node is evicted and reported stopped.
// With the budget off (helm upgrade), the server is evicted, comes back on
// the other worker and reaches the same project storage: the project,
// started again, finds the file written before the drain.
func TestMultiNodeDrain(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	s := multiNode(t, c)
	drained, other := s.workers[0], s.workers[1]
	ns := newNamespace(t, c, "drain", nil)
	values := multiValues("", map[string]string{"server.podDisruptionBudget.enabled": "true"})
	var h hub
	onNode(t, c, s, drained, func() { h = installInCluster(t, c, ns, values) })
	h.t = t
	require.Equal(t, drained, podNode(t, c, ns, h.pod), "server starts on the node to drain")
	id := project.MustParse("3a3a3a3a-0000-4000-8000-00000000003a")
	var st orchestrator.ProjectStatus
	onNode(t, c, s, drained, func() { st = h.start(id, "") })
	content := "written before the drain"
	code, raw := h.do("POST", "/projects/"+string(id)+"/file", map[string]string{"name": "before-drain.txt"}, content)
	require.Equal(t, 204, code, "write: %s", raw)

	setUnschedulable(t, c, drained, true)
	t.Cleanup(func() { setUnschedulable(t, c, drained, false) })

	// PDB on: the server's eviction is refused; the project's is not.
	err := evict(t, c, ns, h.pod)
	require.Error(t, err, "eviction of the server with its PodDisruptionBudget on")
	require.True(t, apierrors.IsTooManyRequests(err), "refused as a disruption budget refuses (429): %v", err)
	require.NoError(t, evict(t, c, ns, st.Pod), "evict the project pod")
	require.Eventually(t, func() bool { return h.status(id).State == "opened" }, 2*time.Minute, time.Second,
		"the evicted project is not reported stopped: %+v", h.status(id))
	p, err := c.Client.CoreV1().Pods(ns).Get(t.Context(), h.pod, metav1.GetOptions{})
	require.NoError(t, err, "the server pod stays while its budget refuses")
	require.Nil(t, p.DeletionTimestamp)

	// PDB off: the drain moves the server.
	opts := helmOptions(t, c, ns, values, valuesFile("kind.yaml"))
	opts.SetValues = multiValues("", map[string]string{"server.podDisruptionBudget.enabled": "false"})
	require.NoError(t, helm.UpgradeE(t, opts, chartDir(), releaseName))
	old := h.pod
	begin := time.Now()
	require.NoError(t, evict(t, c, ns, old), "evict the server without a budget")
	var moved corev1.Pod
	require.Eventually(t, func() bool {
		pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Name == old {
			return false
		}
		moved = pods.Items[0]
		for _, cond := range moved.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	}, 3*time.Minute, time.Second, "the server did not come back")
	t.Logf("MEASURED server moved from %s to %s, Ready %v after the eviction", drained, moved.Spec.NodeName, time.Since(begin).Round(time.Second))
	require.Equal(t, other, moved.Spec.NodeName)
	h.pod = moved.Name
	st = h.start(id, "")
	require.Equal(t, other, podNode(t, c, ns, st.Pod))
	code, raw = h.do("GET", "/projects/"+string(id)+"/raw/file", map[string]string{"name": "before-drain.txt"}, "")
	require.Equal(t, 200, code, "read after the move: %s", raw)
	require.Equal(t, content, string(raw))
}
