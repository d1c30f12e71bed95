package pgcontroller

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// kubelet is a fake orchestrator.Cluster whose pods become Ready with an IP
// as soon as they are created, and vanish when deleted.
type kubelet struct {
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	waiters map[string]chan struct{}
	subs    map[int]func(string)
	nextSub int
	next    int
}

func newKubelet() *kubelet {
	return &kubelet{pods: map[string]*corev1.Pod{}, waiters: map[string]chan struct{}{}, subs: map[int]func(string){}}
}

func (k *kubelet) fire(name string) {
	if ch, ok := k.waiters[name]; ok {
		close(ch)
		delete(k.waiters, name)
	}
	for _, fn := range k.subs {
		fn(name)
	}
}

func (k *kubelet) Subscribe(fn func(string)) func() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nextSub++
	id := k.nextSub
	k.subs[id] = fn
	return func() {
		k.mu.Lock()
		delete(k.subs, id)
		k.mu.Unlock()
	}
}

func (k *kubelet) Pod(name string) *corev1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.pods[name]
}

func (k *kubelet) Pods() []*corev1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*corev1.Pod
	for _, p := range k.pods {
		out = append(out, p)
	}
	return out
}

// Gone: this fake never loses a pod between cache looks.
func (k *kubelet) Gone(string, types.UID) bool { return false }

func (k *kubelet) Changed(name string) <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch, ok := k.waiters[name]
	if !ok {
		ch = make(chan struct{})
		k.waiters[name] = ch
	}
	return ch
}

func (k *kubelet) HasSynced() bool { return true }

func (k *kubelet) CreatePod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.pods[pod.Name]; ok {
		return nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "pods"}, pod.Name)
	}
	k.next++
	p := pod.DeepCopy()
	p.UID = types.UID(pod.Name)
	p.CreationTimestamp = metav1.Now()
	p.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      fmt.Sprintf("10.244.0.%d", k.next),
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: p.Spec.Containers[0].Name, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}},
	}
	k.pods[p.Name] = p
	k.fire(p.Name)
	return p, nil
}

func (k *kubelet) DeletePod(ctx context.Context, name string, uid types.UID, grace int64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.pods[name]; !ok {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
	}
	delete(k.pods, name)
	k.fire(name)
	return nil
}

func (k *kubelet) ServiceClusterIP(ctx context.Context, name string) (string, error) {
	return "10.96.0.20", nil
}

func (k *kubelet) Event(obj runtime.Object, eventType, reason, message string) {}

type homes struct{ root string }

func (h homes) Ensure(id project.ID) (string, error) { return filepath.Join(h.root, id.String()), nil }

// TestWithTheOrchestratorCore drives the real orchestrator (pod spec
// building, quota clamping, start/stop waiting) from database requests.
func TestWithTheOrchestratorCore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.addProject(p1)
	e.exec(`UPDATE projects SET settings = '{"cores": 64, "memory": 3000, "network": 1}' WHERE project_id = $1`, p1)

	tpl := fixture.Template()
	kube := newKubelet()
	o, err := orchestrator.New(orchestrator.Config{Template: tpl, Cluster: kube, Homes: homes{e.files.Dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := e.config()
	cfg.Files = e.files // a temp dir, not the template's /projects/home
	go func() { done <- RunWithOrchestrator(ctx, cfg, o, tpl) }()
	defer func() { cancel(); <-done }()

	e.request(p1, "start")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("start: %v", req["err"])
	}
	testwait.Eventually(t, "running with the pod's IP", func() bool {
		_, st := e.row(p1)
		return st["state"] == "running" && st["ip"] != nil
	})
	pod := kube.Pod(project.MustParse(p1).PodName())
	if pod == nil {
		t.Fatal("no pod created")
	}
	// status.start_ts is the project container's real start time (ms), as
	// the hub reads it (kucalc.ts: status.start_ts).
	wantTS := pod.Status.ContainerStatuses[0].State.Running.StartedAt.UnixMilli()
	testwait.Eventually(t, "status.start_ts from the container's start", func() bool {
		var ts *int64
		err := e.pool.QueryRow(context.Background(), `SELECT (status->>'start_ts')::bigint FROM projects WHERE project_id = $1`, p1).Scan(&ts)
		return err == nil && ts != nil && *ts == wantTS
	})
	c := pod.Spec.Containers[0]
	// 64 cores are clamped to the template's max of 4; 3000 MB is kept.
	if got := c.Resources.Limits.Cpu().String(); got != "4" {
		t.Errorf("cpu limit %s", got)
	}
	// run_quota, written back for the hub, says what the pod got.
	var cpu, mem float64
	if err := e.pool.QueryRow(context.Background(), `SELECT (run_quota->>'cpu_limit')::float8, (run_quota->>'memory_limit')::float8
		FROM projects WHERE project_id = $1`, p1).Scan(&cpu, &mem); err != nil || cpu != 4 || mem != 3000 {
		t.Errorf("run_quota cpu_limit %v memory_limit %v (%v), want 4 and 3000", cpu, mem, err)
	}
	if got := c.Resources.Limits.Memory().Value(); got != 3000*1024*1024 {
		t.Errorf("memory limit %d", got)
	}
	if pod.Labels["network"] != "outside" {
		t.Errorf("network label %q", pod.Labels["network"])
	}
	env := map[string]string{}
	for _, v := range c.Env {
		env[v.Name] = v.Value
	}
	if env["COCALC_SECRET_TOKEN"] != "/home/user/.cocalc-k8s/secret-token" {
		t.Errorf("project env %v", env)
	}

	e.request(p1, "stop")
	if req := e.waitFinished(p1); req["err"] != nil {
		t.Fatalf("stop: %v", req["err"])
	}
	testwait.Eventually(t, "opened", func() bool { _, st := e.row(p1); return st["state"] == "opened" })
	if kube.Pod(project.MustParse(p1).PodName()) != nil {
		t.Error("pod still exists after stop")
	}
}

// TestTimeoutsAndDefaultIdleFromTheTemplate: the chart's
// projects.timeouts and resources.default.idleTimeoutSeconds govern
// database-driven starts, not the controller's own defaults (5m/2m/30m);
// explicit configuration still wins.
func TestTimeoutsAndDefaultIdleFromTheTemplate(t *testing.T) {
	tpl := fixture.Template()
	tpl.Timeouts.StartSeconds, tpl.Timeouts.StopSeconds = 900, 300
	tpl.Resources.Default.IdleTimeoutSeconds = 7200
	cfg := withTemplate(Config{}, tpl)
	cfg.setDefaults()
	if cfg.StartTimeout < 900*time.Second || cfg.StopTimeout < 300*time.Second || cfg.DefaultIdleTimeout != 2*time.Hour {
		t.Errorf("from template: start %s, stop %s, idle %s", cfg.StartTimeout, cfg.StopTimeout, cfg.DefaultIdleTimeout)
	}
	// A project without run_quota gets the template's idle timeout.
	if q := quotaFor(nil, nil, nil, cfg.DefaultIdleTimeout); q.Quota.IdleTimeoutSeconds != 7200 {
		t.Errorf("idle timeout handed to the orchestrator %d, want 7200", q.Quota.IdleTimeoutSeconds)
	}
	cfg = withTemplate(Config{StartTimeout: time.Minute}, tpl)
	if cfg.StartTimeout != time.Minute {
		t.Errorf("explicit StartTimeout overridden: %s", cfg.StartTimeout)
	}
}
