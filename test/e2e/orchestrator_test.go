package e2e

import (
	"context"
	cryptorand "crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// restrictedLabels make Pod Security admission enforce "restricted": every
// project pod the orchestrator creates must meet it.
var restrictedLabels = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
}

// orchestratedRelease is an installed release whose projects namespace
// enforces Pod Security "restricted", with the orchestrator running as a
// process under the chart's ServiceAccount.
type orchestratedRelease struct {
	ns         string
	kubeconfig string
	template   string
	homes      string
	orch       *orchProcess
}

// installForOrchestrator installs values/kind.yaml (pvc mode: project pods
// mount a claim, as in mode nfs, so they can be "restricted"; the inline nfs
// volumes of mode nfsServer are not allowed there) into a restricted
// namespace and starts the orchestrator
// with the ServiceAccount's token.
func installForOrchestrator(t *testing.T, c *cluster.Cluster, prefix string) *orchestratedRelease {
	t.Helper()
	ns := newNamespace(t, c, prefix, nil)
	// The api tier's simulated nodes advertise no ephemeral-storage, so a
	// project pod with an ephemeral-storage limit (values/kind.yaml: 1Gi)
	// is Unschedulable there; "" renders none. Short start timeouts make a
	// failure show in seconds rather than minutes.
	set := mergeValues(standinValues, map[string]string{
		"projects.resources.ephemeralStorageLimit": "",
		"projects.timeouts.startSeconds":           "45",
	})
	install(t, c, ns, helmOptions(t, c, ns, set, valuesFile("kind.yaml")))
	// The hub container needs root capabilities (CHOWN, SETUID, ...), so
	// the server pod is not "restricted"; with storage in pvc mode projects
	// share its namespace. Enforcement only applies to pods created from
	// now on, i.e. to project pods, which is what this proves.
	nsObj, err := c.Client.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
	require.NoError(t, err)
	for k, v := range restrictedLabels {
		nsObj.Labels[k] = v
	}
	_, err = c.Client.CoreV1().Namespaces().Update(t.Context(), nsObj, metav1.UpdateOptions{})
	require.NoError(t, err, "label %s restricted", ns)
	r := &orchestratedRelease{ns: ns, kubeconfig: serviceAccountKubeconfig(t, serviceAccountConfig(t, c, ns))}
	r.template, r.homes = orchestratorTemplate(t, c, ns)
	r.orch = startOrchestrator(t, r.kubeconfig, r.template)
	return r
}

// newProjectID returns a random version 4 UUID.
func newProjectID() project.ID {
	var b [16]byte
	_, _ = cryptorand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return project.MustParse(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

// projectPods lists the pods of one project (label project_id).
func projectPods(t *testing.T, c *cluster.Cluster, ns string, id project.ID) []corev1.Pod {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: podtemplate.LabelProjectID + "=" + string(id)})
	require.NoError(t, err)
	return pods.Items
}

func TestOrchestratorStartStopRestartListAsServiceAccount(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	r := installForOrchestrator(t, c, "orch")
	ctx := t.Context()
	a, b := newProjectID(), newProjectID()

	st, err := r.orch.api.Start(ctx, a, orchestrator.StartRequest{})
	require.NoError(t, err, "start A")
	require.Equal(t, state.Running, st.State, "%+v", st)
	require.NotEmpty(t, st.IP)
	require.Equal(t, podtemplate.HubPort, st.HubPort)
	require.Equal(t, podtemplate.RawPort, st.RawPort)
	st, err = r.orch.api.Start(ctx, b, orchestrator.StartRequest{Quota: podtemplate.Quota{Network: true}})
	require.NoError(t, err, "start B")
	require.Equal(t, state.Running, st.State)

	// Admitted under "restricted": the namespace enforces it and the pod exists.
	nsObj, err := c.Client.CoreV1().Namespaces().Get(ctx, r.ns, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, "restricted", nsObj.Labels["pod-security.kubernetes.io/enforce"])
	podsA := projectPods(t, c, r.ns, a)
	require.Len(t, podsA, 1)
	require.Equal(t, a.PodName(), podsA[0].Name)
	require.Equal(t, podtemplate.NetworkNone, podsA[0].Labels[podtemplate.LabelNetwork])
	require.Equal(t, podtemplate.NetworkOutside, projectPods(t, c, r.ns, b)[0].Labels[podtemplate.LabelNetwork])

	// The home was made on the (server-side) shared volume, owned by the project user.
	info, err := os.Stat(filepath.Join(r.homes, string(a)))
	require.NoError(t, err, "project home")
	require.True(t, info.IsDir())
	require.Equal(t, uint32(2001), info.Sys().(*syscall.Stat_t).Uid)

	list, err := r.orch.api.List(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []project.ID{a, b}, idsOf(list))

	// Restart replaces the pod.
	oldUID := podsA[0].UID
	st, err = r.orch.api.Restart(ctx, a, orchestrator.StartRequest{})
	require.NoError(t, err, "restart A")
	require.Equal(t, state.Running, st.State)
	podsA = projectPods(t, c, r.ns, a)
	require.Len(t, podsA, 1)
	require.NotEqual(t, oldUID, podsA[0].UID, "restart must replace the pod")

	// Stop deletes it.
	st, err = r.orch.api.Stop(ctx, a)
	require.NoError(t, err, "stop A")
	require.Equal(t, state.Opened, st.State, "%+v", st)
	require.Empty(t, projectPods(t, c, r.ns, a))
	st, err = r.orch.api.Status(ctx, a)
	require.NoError(t, err)
	require.Equal(t, state.Opened, st.State)
	list, err = r.orch.api.List(ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []project.ID{b}, idsOf(list))
}

func idsOf(list []orchestrator.ProjectStatus) []project.ID {
	out := make([]project.ID, 0, len(list))
	for _, s := range list {
		out = append(out, s.ProjectID)
	}
	return out
}

// podCreations counts ADDED watch events per project in ns from now on:
// a pod created twice (even if one was deleted again) shows up here.
type podCreations struct {
	mu     sync.Mutex
	byProj map[string]int
}

func watchPodCreations(t *testing.T, c *cluster.Cluster, ns string) *podCreations {
	t.Helper()
	pods, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	w, err := c.Client.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{
		ResourceVersion: pods.ResourceVersion, LabelSelector: podtemplate.LabelProjectID})
	require.NoError(t, err)
	t.Cleanup(w.Stop)
	pc := &podCreations{byProj: map[string]int{}}
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				pc.mu.Lock()
				pc.byProj[pod.Labels[podtemplate.LabelProjectID]]++
				pc.mu.Unlock()
			}
		}
	}()
	return pc
}

func (pc *podCreations) count(id project.ID) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.byProj[string(id)]
}

func (pc *podCreations) total() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	n := 0
	for _, v := range pc.byProj {
		n += v
	}
	return n
}

func TestOrchestratorHundredConcurrentStartsMakeOnePod(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	r := installForOrchestrator(t, c, "orch-burst")
	created := watchPodCreations(t, c, r.ns)
	id := newProjectID()

	const n = 100
	var wg sync.WaitGroup
	var ok atomic.Int32
	errs := make(chan error, n)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := r.orch.api.Start(t.Context(), id, orchestrator.StartRequest{})
			if err != nil {
				errs <- err
				return
			}
			if st.State != state.Running {
				errs <- fmt.Errorf("start answered %s", st.State)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent start: %v", err)
	}
	t.Logf("%d concurrent starts of one project answered running in %v", ok.Load(), time.Since(start).Round(time.Millisecond))
	require.EqualValues(t, n, ok.Load())
	require.Len(t, projectPods(t, c, r.ns, id), 1)
	// Let late watch events arrive before counting creations.
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, 1, created.count(id), "pods created for one project")
}

func TestOrchestratorSIGKILLMidStartLosesAndDuplicatesNothing(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	r := installForOrchestrator(t, c, "orch-kill")
	created := watchPodCreations(t, c, r.ns)

	const n = 12
	ids := make([]project.ID, n)
	for i := range ids {
		ids[i] = newProjectID()
	}
	// Fire the starts, and SIGKILL the orchestrator as soon as the first
	// pod exists: some starts are then mid-way (pod created, not yet
	// running; or not yet created).
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = r.orch.api.Start(context.WithoutCancel(t.Context()), id, orchestrator.StartRequest{})
		}()
	}
	err := wait.PollUntilContextTimeout(t.Context(), 5*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return created.total() > 0, nil
	})
	require.NoError(t, err, "no project pod was created")
	r.orch.kill()
	wg.Wait()
	before := created.total()
	t.Logf("SIGKILL after %d of %d project pods were created", before, n)

	// A new orchestrator (same identity and template) finishes the job.
	r.orch = startOrchestrator(t, r.kubeconfig, r.template)
	for _, id := range ids {
		st, err := r.orch.api.Start(t.Context(), id, orchestrator.StartRequest{})
		require.NoError(t, err, "start %s after restart", id)
		require.Equal(t, state.Running, st.State, "%s: %+v", id, st)
	}
	list, err := r.orch.api.List(t.Context())
	require.NoError(t, err)
	require.ElementsMatch(t, ids, idsOf(list), "every project listed once")
	time.Sleep(500 * time.Millisecond)
	for _, id := range ids {
		require.Len(t, projectPods(t, c, r.ns, id), 1, "project %s", id)
		require.Equal(t, 1, created.count(id), "pods ever created for %s (a pod created before the kill must be adopted, not replaced)", id)
	}
}
