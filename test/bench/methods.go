package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Method is one way of starting, stopping and querying a project, each
// call returning when the method itself reports the outcome (running,
// stopped, the state).
type Method interface {
	Name() string
	// Namespace is where the method's project pods live.
	Namespace() string
	Start(ctx context.Context, id project.ID) error
	Stop(ctx context.Context, id project.ID) error
	Status(ctx context.Context, id project.ID) (running bool, err error)
	// CPU is the CPU time the method's own process(es) used so far.
	CPU() time.Duration
}

// Floor creates the same pod the orchestrator would and waits for Ready
// through a watch: no cache, no template logic, nothing but what the
// cluster needs. Status is one GET.
type Floor struct {
	Client kubernetes.Interface
	NS     string
	// Pod builds the pod of a project (the orchestrator's podspec).
	Pod   func(id project.ID) (*corev1.Pod, error)
	Grace int64
	// Creates, when set, is the client pod creates go through (e.g. one
	// limited to the orchestrator's QPS); watches always use Client.
	Creates kubernetes.Interface
	// Label replaces Name's default.
	Label string
}

func (f *Floor) Name() string {
	if f.Label != "" {
		return f.Label
	}
	return "floor (client-go create + watch)"
}
func (f *Floor) Namespace() string  { return f.NS }
func (f *Floor) CPU() time.Duration { return SelfCPU() }
func (f *Floor) watch(ctx context.Context, name, rv string) (watch.Interface, error) {
	return f.Client.CoreV1().Pods(f.NS).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: rv,
	})
}

func (f *Floor) Start(ctx context.Context, id project.ID) error {
	pod, err := f.Pod(id)
	if err != nil {
		return err
	}
	creates := f.Client
	if f.Creates != nil {
		creates = f.Creates
	}
	created, err := creates.CoreV1().Pods(f.NS).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("floor: create %s: %w", pod.Name, err)
	}
	if podReady(created) {
		return nil
	}
	// Watching from the create's resourceVersion misses no change.
	w, err := f.watch(ctx, pod.Name, created.ResourceVersion)
	if err != nil {
		return fmt.Errorf("floor: watch %s: %w", pod.Name, err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && podReady(p) {
			return nil
		}
	}
	return fmt.Errorf("floor: watch of %s ended before Ready: %w", pod.Name, ctx.Err())
}

func (f *Floor) Stop(ctx context.Context, id project.ID) error {
	name := id.PodName()
	p, err := f.Client.CoreV1().Pods(f.NS).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("floor: get %s: %w", name, err)
	}
	w, err := f.watch(ctx, name, p.ResourceVersion)
	if err != nil {
		return fmt.Errorf("floor: watch %s: %w", name, err)
	}
	defer w.Stop()
	grace := f.Grace
	if err := f.Client.CoreV1().Pods(f.NS).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("floor: delete %s: %w", name, err)
	}
	for ev := range w.ResultChan() {
		if ev.Type == watch.Deleted {
			return nil
		}
	}
	return fmt.Errorf("floor: watch of %s ended before deletion: %w", name, ctx.Err())
}

func (f *Floor) Status(ctx context.Context, id project.ID) (bool, error) {
	p, err := f.Client.CoreV1().Pods(f.NS).Get(ctx, id.PodName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("floor: status: %w", err)
	}
	return podReady(p), nil
}

// InProcess drives the orchestrator core through its Go API.
type InProcess struct {
	Orch *orchestrator.Orchestrator
	NS   string
}

func (m *InProcess) Name() string       { return "ours, in-process Go API" }
func (m *InProcess) Namespace() string  { return m.NS }
func (m *InProcess) CPU() time.Duration { return SelfCPU() }
func (m *InProcess) Start(ctx context.Context, id project.ID) error {
	st, err := m.Orch.Start(ctx, id, orchestrator.StartRequest{})
	return reported(st, err, state.Running)
}
func (m *InProcess) Stop(ctx context.Context, id project.ID) error {
	_, err := m.Orch.Stop(ctx, id)
	return err
}
func (m *InProcess) Status(ctx context.Context, id project.ID) (bool, error) {
	st, err := m.Orch.Status(ctx, id)
	return st.State == state.Running, err
}

// HTTP drives the orchestrator process (cocalc-k8s serve) through its
// HTTP API: the path a hub's requests take.
type HTTP struct {
	Client *httpapi.Client
	NS     string
	PID    int
	// ReadyAfter is the time from exec to /readyz OK (cache synced);
	// SyncPeakRSS the highest RSS sampled (every 10 ms) until then.
	ReadyAfter  time.Duration
	SyncPeakRSS int64
}

// GoHeap is the serve process's Go heap, from its /metrics.
func (m *HTTP) GoHeap(ctx context.Context) (GoHeap, error) {
	return ScrapeGoHeap(ctx, m.Client.HTTP, m.Client.BaseURL+"/metrics")
}

func (m *HTTP) Name() string      { return "ours, HTTP API (cocalc-k8s serve)" }
func (m *HTTP) Namespace() string { return m.NS }
func (m *HTTP) CPU() time.Duration {
	s, err := ReadProc(m.PID)
	if err != nil {
		return 0
	}
	return s.CPU
}

// CloseIdleConnections closes the client's idle keep-alive connections
// to the orchestrator process.
func (m *HTTP) CloseIdleConnections() {
	if m.Client.HTTP != nil {
		m.Client.HTTP.CloseIdleConnections()
	}
}

func (m *HTTP) Start(ctx context.Context, id project.ID) error {
	st, err := m.Client.Start(ctx, id, orchestrator.StartRequest{})
	return reported(st, err, state.Running)
}
func (m *HTTP) Stop(ctx context.Context, id project.ID) error {
	_, err := m.Client.Stop(ctx, id)
	return err
}
func (m *HTTP) Status(ctx context.Context, id project.ID) (bool, error) {
	st, err := m.Client.Status(ctx, id)
	return st.State == state.Running, err
}

func reported(st orchestrator.ProjectStatus, err error, want state.State) error {
	if err != nil {
		return err
	}
	if st.State != want {
		return errors.New("reported state " + string(st.State) + ", want " + string(want))
	}
	return nil
}
