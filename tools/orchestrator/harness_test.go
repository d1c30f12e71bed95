package orchestrator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/homedir"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/kube"
)

// env is one orchestrator over a fake API server with real informers.
type env struct {
	t       *testing.T
	cs      *fake.Clientset
	clock   *clocktesting.FakeClock
	kube    *kube.Client
	orch    *Orchestrator
	tpl     *podtemplate.Template
	homes   string
	creates atomic.Int32 // pod create requests
	deletes atomic.Int32 // pod delete requests
	// graceful makes deletes behave like a real API server with kubelets:
	// the pod gets a deletionTimestamp and is removed by kubelet.finish.
	graceful atomic.Bool
	uids     atomic.Int64
	ops      *recordingObserver
}

type recordingObserver struct {
	mu  sync.Mutex
	ops []string
}

func (r *recordingObserver) Operation(op, result string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op+":"+result)
}

func (r *recordingObserver) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.ops {
		if o == s {
			return true
		}
	}
	return false
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T, edit func(*podtemplate.Template), objs ...runtime.Object) *env {
	t.Helper()
	tpl := fixture.Template()
	tpl.Storage.ServerPath = t.TempDir()
	if edit != nil {
		edit(tpl)
	}
	nfs := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fixture.NFSServiceName, Namespace: fixture.Namespace},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20"}}
	e := &env{t: t, cs: fake.NewClientset(append(objs, nfs)...), clock: clocktesting.NewFakeClock(epoch), tpl: tpl,
		homes: tpl.Storage.ServerPath, ops: &recordingObserver{}}
	// Behave like the API server: assign UIDs and creation timestamps.
	e.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		e.creates.Add(1)
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		pod.UID = types.UID(fmt.Sprintf("uid-%d", e.uids.Add(1)))
		pod.CreationTimestamp = metav1.NewTime(e.clock.Now())
		return false, nil, nil
	})
	e.cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		e.deletes.Add(1)
		grace := a.(k8stesting.DeleteActionImpl).DeleteOptions.GracePeriodSeconds
		if !e.graceful.Load() || (grace != nil && *grace == 0) {
			return false, nil, nil // immediate, as the API server does for grace 0
		}
		name := a.(k8stesting.DeleteAction).GetName()
		obj, err := e.cs.Tracker().Get(podsGVR, fixture.Namespace, name)
		if err != nil {
			return true, nil, err
		}
		pod := obj.(*corev1.Pod).DeepCopy()
		if pod.DeletionTimestamp == nil {
			now := metav1.NewTime(e.clock.Now())
			pod.DeletionTimestamp = &now
			pod.DeletionGracePeriodSeconds = a.(k8stesting.DeleteActionImpl).DeleteOptions.GracePeriodSeconds
			if err := e.cs.Tracker().Update(podsGVR, pod, fixture.Namespace); err != nil {
				return true, nil, err
			}
		}
		return true, nil, nil
	})
	kc, err := kube.New(e.cs, kube.Config{Namespace: tpl.Namespace, Selector: tpl.SelectorLabels, Clock: e.clock,
		Logger: quietLogger(), Backoff: wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 3}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kc.Start(ctx)
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := kc.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	e.kube = kc
	e.orch = e.newOrchestrator(tpl)
	return e
}

func (e *env) newOrchestrator(tpl *podtemplate.Template, edits ...func(*Config)) *Orchestrator {
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = int(tpl.Security.RunAsUser), int(tpl.Security.RunAsGroup)
	}
	cfg := Config{Template: tpl, Cluster: e.kube, Clock: e.clock, Logger: quietLogger(), Observer: e.ops,
		Homes: homedir.Maker{Root: tpl.Storage.ServerPath, UID: uid, GID: gid}, IdleCheckInterval: time.Minute}
	for _, edit := range edits {
		edit(&cfg)
	}
	o, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(o.Close)
	return o
}

var podsGVR = corev1.SchemeGroupVersion.WithResource("pods")

// kubelet simulates the node side: the fake clientset never changes pod
// status by itself.
type kubelet struct{ e *env }

func (e *env) kubelet() kubelet { return kubelet{e} }

// It only uses the typed client (kubernetes.Interface), so the same helper
// drives a real API server without kubelets (the cluster test tier).
func (k kubelet) update(name string, mutate func(*corev1.Pod)) {
	k.e.t.Helper()
	pods := k.e.cs.CoreV1().Pods(fixture.Namespace)
	pod, err := pods.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		k.e.t.Fatalf("kubelet: get %s: %v", name, err)
	}
	pod = pod.DeepCopy()
	mutate(pod)
	if _, err := pods.UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		k.e.t.Fatalf("kubelet: update status of %s: %v", name, err)
	}
}

func markRunning(pod *corev1.Pod) {
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = "10.244.0.7"
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue},
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "project", Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
}

func (k kubelet) run(name string) { k.update(name, markRunning) }

func (k kubelet) unschedulable(name string) {
	k.update(name, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: Insufficient memory"}}
	})
}

// finish removes a pod whose deletion was requested (graceful mode).
func (k kubelet) finish(name string) {
	k.e.t.Helper()
	// What a kubelet does once the containers are gone: delete with grace 0.
	if err := k.e.cs.CoreV1().Pods(fixture.Namespace).Delete(context.Background(), name,
		metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		k.e.t.Fatalf("kubelet: remove %s: %v", name, err)
	}
}

// autoRun makes every new pod Running and Ready, like a healthy node.
func (e *env) autoRun() {
	w, err := e.cs.CoreV1().Pods(fixture.Namespace).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(w.Stop)
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type != watch.Added || pod.Status.Phase != "" {
				continue
			}
			p := pod.DeepCopy()
			markRunning(p)
			_, _ = e.cs.CoreV1().Pods(fixture.Namespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
		}
	}()
}

// waitFor waits until cond holds on the cache (test-side polling only).
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 2*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		e.t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (e *env) podInCache(name string) func() bool {
	return func() bool { return e.kube.Pod(name) != nil }
}

func (e *env) homeExists(id string) bool {
	_, err := os.Stat(filepath.Join(e.homes, id))
	return err == nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// apiPod returns a pod as the API server has it (the orchestrator's cache
// keeps only the fields it reads, see kube.cachedPod).
func (e *env) apiPod(name string) *corev1.Pod {
	e.t.Helper()
	pod, err := e.cs.CoreV1().Pods(e.tpl.Namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get pod %s: %v", name, err)
	}
	return pod
}
