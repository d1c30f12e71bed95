package orchestrator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

var (
	pid  = project.MustParse("7b3a4b32-8f0e-4c1a-9d2e-0123456789ab")
	pid2 = project.MustParse("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
)

func TestStartCreatesPodAndReturnsRunning(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	st, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{Cores: 2, Network: true}})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != state.Running || st.IP != "10.244.0.7" || st.Pod != pid.PodName() || st.HubPort != 6000 || st.RawPort != 6001 {
		t.Fatalf("status = %+v", st)
	}
	// The created pod, from the API (the cache keeps no labels).
	pod, err := e.cs.CoreV1().Pods(fixture.Namespace).Get(ctxT(t), pid.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels[podtemplate.LabelNetwork] != "outside" || pod.Spec.Volumes[0].NFS.Server != "10.96.0.20" {
		t.Fatalf("pod labels %v, volume %+v", pod.Labels, pod.Spec.Volumes[0])
	}
	if !e.homeExists(pid.String()) {
		t.Fatal("home not created before the pod")
	}
	if e.creates.Load() != 1 || !e.ops.has("start:ok") {
		t.Fatalf("creates=%d ops=%v", e.creates.Load(), e.ops.ops)
	}
}

func TestStartIsIdempotentWhenRunning(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		st, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{Cores: 3}})
		if err != nil || st.State != state.Running {
			t.Fatalf("repeat start: %+v %v", st, err)
		}
	}
	if got := e.creates.Load(); got != 1 {
		t.Fatalf("creates = %d, want 1", got)
	}
}

func TestConcurrentStartsCreateExactlyOnePod(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := e.orch.Start(ctxT(t), pid, StartRequest{})
			if err == nil && st.State != state.Running {
				err = errors.New("not running: " + string(st.State))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := e.creates.Load(); got != 1 {
		t.Fatalf("%d concurrent starts sent %d creates, want 1", n, got)
	}
}

func TestConcurrentStartsOfDifferentProjects(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	var wg sync.WaitGroup
	for _, id := range []project.ID{pid, pid2} {
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.orch.Start(ctxT(t), id, StartRequest{}); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	if got := e.creates.Load(); got != 2 {
		t.Fatalf("creates = %d, want 2", got)
	}
	if l := e.orch.list(); len(l) != 2 || l[0].ProjectID != pid2 || l[1].ProjectID != pid {
		t.Fatalf("list = %+v", l)
	}
}

func TestStartWaitsForStoppingPodThenCreates(t *testing.T) {
	now := metav1.NewTime(epoch)
	old := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pid.PodName(), Namespace: fixture.Namespace, UID: "old",
		Labels: fixture.Template().SelectorLabels, DeletionTimestamp: &now, Finalizers: []string{"x"}}}
	e := newEnv(t, nil, old)
	e.autoRun()
	if st := e.orch.current(pid); st.State != state.Stopping {
		t.Fatalf("precondition: state %s", st.State)
	}
	done := make(chan error, 1)
	go func() { _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); done <- err }()
	e.waitFor("start in flight", func() bool { return e.orch.starting(pid) })
	if e.creates.Load() != 0 {
		t.Fatal("created while the old pod was terminating")
	}
	e.kubelet().finish(pid.PodName())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if pod := e.kube.Pod(pid.PodName()); pod == nil || pod.UID == "old" || e.creates.Load() != 1 {
		t.Fatalf("old pod not replaced: %+v creates=%d", pod, e.creates.Load())
	}
}

func TestStartReplacesEndedPod(t *testing.T) {
	failed := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pid.PodName(), Namespace: fixture.Namespace, UID: "evicted",
		Labels: fixture.Template().SelectorLabels}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}}
	e := newEnv(t, nil, failed)
	e.autoRun()
	if st := e.orch.current(pid); st.State != state.Opened || st.Reason != "Evicted" {
		t.Fatalf("precondition: %+v", st)
	}
	st, err := e.orch.Start(ctxT(t), pid, StartRequest{})
	if err != nil || st.State != state.Running {
		t.Fatalf("start over evicted pod: %+v %v", st, err)
	}
	if e.kube.Pod(pid.PodName()).UID == "evicted" {
		t.Fatal("evicted pod still there")
	}
}

func TestStartHandlesAlreadyExists(t *testing.T) {
	e := newEnv(t, nil)
	// Another actor creates the pod between our cache read and our create.
	e.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		pod.UID = "theirs"
		markRunning(pod)
		if err := e.cs.Tracker().Add(pod); err != nil {
			return true, nil, err
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "pods"}, pod.Name)
	})
	st, err := e.orch.Start(ctxT(t), pid, StartRequest{})
	if err != nil || st.State != state.Running {
		t.Fatalf("start after AlreadyExists: %+v %v", st, err)
	}
	if e.kube.Pod(pid.PodName()).UID != "theirs" {
		t.Fatal("pod not adopted")
	}
}

func TestStartTimeoutReportsReason(t *testing.T) {
	e := newEnv(t, func(tpl *podtemplate.Template) { tpl.Timeouts.StartSeconds = 1 })
	done := make(chan error, 1)
	go func() { _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); done <- err }()
	e.waitFor("pod created", e.podInCache(pid.PodName()))
	e.kubelet().unschedulable(pid.PodName())
	err := <-done
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "Unschedulable") {
		t.Fatalf("err = %v, want timeout mentioning Unschedulable", err)
	}
	if !e.ops.has("start:timeout") {
		t.Fatalf("ops = %v", e.ops.ops)
	}
	// The pod is left for the clean-up loop, not deleted by the timeout.
	if e.kube.Pod(pid.PodName()) == nil {
		t.Fatal("timed-out pod deleted")
	}
}

func TestCallerCancelDoesNotAbortSharedStart(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := e.orch.Start(ctx, pid, StartRequest{}); first <- err }()
	e.waitFor("pod created", e.podInCache(pid.PodName()))
	second := make(chan error, 1)
	go func() { _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); second <- err }()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v", err)
	}
	e.kubelet().run(pid.PodName())
	if err := <-second; err != nil {
		t.Fatalf("second caller: %v", err)
	}
	if e.creates.Load() != 1 {
		t.Fatalf("creates = %d", e.creates.Load())
	}
}

func TestStopWhileStarting(t *testing.T) {
	e := newEnv(t, nil)
	done := make(chan error, 1)
	go func() { _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); done <- err }()
	e.waitFor("pod created", e.podInCache(pid.PodName()))
	st, err := e.orch.Stop(ctxT(t), pid)
	if err != nil || st.State != state.Opened {
		t.Fatalf("stop: %+v %v", st, err)
	}
	if err := <-done; !errors.Is(err, ErrStoppedWhileStarting) {
		t.Fatalf("start: %v, want ErrStoppedWhileStarting", err)
	}
	if e.kube.Pod(pid.PodName()) != nil {
		t.Fatal("pod survived the stop")
	}
}

func TestStopOfStoppedProjectIsNoop(t *testing.T) {
	e := newEnv(t, nil)
	before := len(e.cs.Actions())
	st, err := e.orch.Stop(ctxT(t), pid)
	if err != nil || st.State != state.Opened {
		t.Fatalf("stop: %+v %v", st, err)
	}
	if e.deletes.Load() != 0 || len(e.cs.Actions()) != before {
		t.Fatalf("stop of a stopped project made API calls: %v", e.cs.Actions()[before:])
	}
}

func TestStopWaitsForGracefulDeletion(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.graceful.Store(true)
	done := make(chan ProjectStatus, 1)
	go func() { st, _ := e.orch.Stop(ctxT(t), pid); done <- st }()
	e.waitFor("terminating", func() bool { return e.orch.current(pid).State == state.Stopping })
	pod := e.kube.Pod(pid.PodName())
	if *pod.DeletionGracePeriodSeconds != e.tpl.TerminationGracePeriodSeconds {
		t.Fatalf("grace = %d, want the template's %d", *pod.DeletionGracePeriodSeconds, e.tpl.TerminationGracePeriodSeconds)
	}
	select {
	case st := <-done:
		t.Fatalf("stop returned while the pod was terminating: %+v", st)
	default:
	}
	e.kubelet().finish(pid.PodName())
	if st := <-done; st.State != state.Opened {
		t.Fatalf("after stop: %+v", st)
	}
}

func TestStopTimeout(t *testing.T) {
	e := newEnv(t, func(tpl *podtemplate.Template) { tpl.Timeouts.StopSeconds = 1 })
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	e.graceful.Store(true) // and the kubelet never finishes
	_, err := e.orch.Stop(ctxT(t), pid)
	if !errors.Is(err, ErrTimeout) || !e.ops.has("stop:timeout") {
		t.Fatalf("err = %v ops %v", err, e.ops.ops)
	}
}

func TestStartPermanentAPIErrorFailsFast(t *testing.T) {
	e := newEnv(t, nil)
	var attempts atomic.Int32
	e.cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		attempts.Add(1)
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("rbac says no"))
	})
	begin := time.Now()
	_, err := e.orch.Start(ctxT(t), pid, StartRequest{})
	if !apierrors.IsForbidden(err) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want Forbidden", err)
	}
	if attempts.Load() != 1 || time.Since(begin) > 5*time.Second {
		t.Fatalf("create attempts = %d: permanent errors must not be retried", attempts.Load())
	}
	if !e.ops.has("start:error") {
		t.Fatalf("ops = %v", e.ops.ops)
	}
}

func TestStartRetriesTransientAPIErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	fails := 2
	var mu sync.Mutex
	var attempts atomic.Int32
	e.cs.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts.Add(1)
		if fails > 0 {
			fails--
			return true, nil, apierrors.NewServiceUnavailable("apiserver restarting")
		}
		return false, nil, nil
	})
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	if attempts.Load() != 3 || e.creates.Load() != 1 {
		t.Fatalf("create attempts = %d (reached the store %d), want 3 (1)", attempts.Load(), e.creates.Load())
	}
}

func TestInvalidInputMakesNoAPICalls(t *testing.T) {
	e := newEnv(t, nil)
	before := len(e.cs.Actions())
	for _, bad := range []project.ID{"", "../../etc", "7B3A4B32-8F0E-4C1A-9D2E-0123456789AB"} {
		if _, err := e.orch.Start(ctxT(t), bad, StartRequest{}); !IsInvalidInput(err) {
			t.Errorf("start %q: %v", bad, err)
		}
		if _, err := e.orch.Stop(ctxT(t), bad); !IsInvalidInput(err) {
			t.Errorf("stop %q: %v", bad, err)
		}
		if _, err := e.orch.Touch(ctxT(t), bad); !IsInvalidInput(err) {
			t.Errorf("touch %q: %v", bad, err)
		}
		if _, err := e.orch.Status(ctxT(t), bad); !IsInvalidInput(err) {
			t.Errorf("status %q: %v", bad, err)
		}
	}
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{Cores: -1}}); !IsInvalidInput(err) {
		t.Errorf("negative cores: %v", err)
	}
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Env: map[string]string{"BAD=NAME": "x"}}); !IsInvalidInput(err) {
		t.Errorf("bad env: %v", err)
	}
	for _, a := range e.cs.Actions()[before:] {
		if a.GetResource().Resource == "pods" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			t.Fatalf("bad input reached the API: %v", a)
		}
	}
	if !e.ops.has("start:invalid") {
		t.Fatalf("ops = %v", e.ops.ops)
	}
}

func TestStatusAndListMakeNoAPICalls(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	// Events are written asynchronously by the recorder: not counted.
	apiCalls := func() (n int) {
		for _, a := range e.cs.Actions() {
			if a.GetResource().Resource != "events" {
				n++
			}
		}
		return n
	}
	before := apiCalls()
	for i := 0; i < 50; i++ {
		if st := e.orch.current(pid); st.State != state.Running {
			t.Fatal(st)
		}
		if st := e.orch.current(pid2); st.State != state.Opened {
			t.Fatal(st)
		}
		if l := e.orch.list(); len(l) != 1 {
			t.Fatal(l)
		}
	}
	if after := apiCalls(); after != before {
		t.Fatalf("status/list made %d API calls", after-before)
	}
}

func TestSymlinkedHomeRefusedBeforeCreate(t *testing.T) {
	e := newEnv(t, nil)
	if err := os.Symlink(t.TempDir(), filepath.Join(e.homes, pid.String())); err != nil {
		t.Fatal(err)
	}
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err == nil || !strings.Contains(err.Error(), "home") {
		t.Fatalf("err = %v", err)
	}
	if e.creates.Load() != 0 {
		t.Fatal("pod created although its home is unsafe")
	}
}

func TestRestartReplacesPodWithNewQuota(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{Cores: 1}}); err != nil {
		t.Fatal(err)
	}
	oldUID := e.kube.Pod(pid.PodName()).UID
	st, err := e.orch.Restart(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{Cores: 2}})
	if err != nil || st.State != state.Running {
		t.Fatalf("restart: %+v %v", st, err)
	}
	pod := e.apiPod(pid.PodName())
	if pod.UID == oldUID {
		t.Fatal("restart kept the old pod")
	}
	if lim := pod.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU]; lim.String() != "2" {
		t.Fatalf("new cpu limit %s", lim.String())
	}
}

func TestStaleSpecReportedNotKilled(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	if e.orch.current(pid).StaleSpec {
		t.Fatal("fresh pod reported stale")
	}
	// The chart is upgraded: a new orchestrator with a new image tag.
	tpl := fixture.Template()
	tpl.Storage.ServerPath = e.homes
	tpl.Image.Tag = "1.2.4"
	o2 := e.newOrchestrator(tpl)
	if !o2.current(pid).StaleSpec {
		t.Fatal("pod of the old template not reported stale")
	}
	if res := o2.Sweep(ctxT(t)); res.Stale != 1 || res.CleanedUp+res.IdleStopped != 0 {
		t.Fatalf("sweep = %+v", res)
	}
	if st, err := o2.Start(ctxT(t), pid, StartRequest{}); err != nil || !st.StaleSpec || e.creates.Load() != 1 {
		t.Fatalf("start of a running stale project must return at once: %+v %v creates=%d", st, err, e.creates.Load())
	}
	if _, err := o2.Restart(ctxT(t), pid, StartRequest{}); err != nil {
		t.Fatal(err)
	}
	if o2.current(pid).StaleSpec || e.apiPod(pid.PodName()).Spec.Containers[0].Image != "registry.example/cocalc-project:1.2.4" {
		t.Fatal("restart did not apply the new template")
	}
	if _, stale := o2.StateCounts(); stale != 0 {
		t.Fatalf("stale count %d", stale)
	}
}

func TestRecordedRequestSurvivesForIdleTimeout(t *testing.T) {
	e := newEnv(t, nil)
	e.autoRun()
	if _, err := e.orch.Start(ctxT(t), pid, StartRequest{Quota: podtemplate.Quota{IdleTimeoutSeconds: 600}}); err != nil {
		t.Fatal(err)
	}
	req, err := podspec.RecordedRequest(e.kube.Pod(pid.PodName()))
	if err != nil || req.Quota.IdleTimeoutSeconds != 600 {
		t.Fatalf("%+v %v", req, err)
	}
}

// A pod deleted so soon after our create that the cache never shows it
// (create and delete processed in one wake-up) is a stop, reported at once,
// not a start that waits out its whole timeout (seen in test/bench churn,
// where the deleter was the api tier's kwok: a late delete of the previous
// pod of the name, fixed in test/cluster/stages.yaml).
func TestPodDeletedBeforeCacheShowsItIsAStop(t *testing.T) {
	e := newEnv(t, nil)
	e.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).DeepCopy()
		if err := e.cs.Tracker().Create(podsGVR, pod, fixture.Namespace); err != nil {
			return true, nil, err
		}
		if err := e.cs.Tracker().Delete(podsGVR, fixture.Namespace, pod.Name); err != nil {
			return true, nil, err
		}
		return true, pod, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // well below the start timeout
	defer cancel()
	_, err := e.orch.Start(ctx, pid, StartRequest{})
	if !errors.Is(err, ErrStoppedWhileStarting) {
		t.Fatalf("start: %v, want ErrStoppedWhileStarting", err)
	}
}
