package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

const ns = "cocalc"

var selector = map[string]string{"cocalc-kubernetes/release": "r1"}

func newClient(t *testing.T, objs ...runtime.Object) (*Client, *fake.Clientset, *clocktesting.FakeClock) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c, err := New(cs, Config{Namespace: ns, Selector: selector, Clock: clk,
		Backoff: wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 4}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c.Start(ctx)
	syncCtx, cancelSync := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSync()
	if err := c.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}
	return c, cs, clk
}

func testPod(name string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls}}
}

func waitChan(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no change notification")
	}
}

func TestCacheIsLabelFiltered(t *testing.T) {
	c, _, _ := newClient(t,
		testPod("project-a", selector),
		testPod("unrelated", map[string]string{"app": "other"}),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "project-b", Namespace: "elsewhere", Labels: selector}})
	if c.Pod("project-a") == nil {
		t.Fatal("labelled pod not cached")
	}
	if c.Pod("unrelated") != nil || len(c.Pods()) != 1 {
		t.Fatalf("cache holds pods outside the selector or namespace: %d pods", len(c.Pods()))
	}
	if !c.HasSynced() {
		t.Fatal("HasSynced false after WaitForSync")
	}
}

func TestChangedFiresOnCreateUpdateDelete(t *testing.T) {
	c, cs, _ := newClient(t)
	ctx := context.Background()
	ch := c.Changed("project-a")
	if _, err := c.CreatePod(ctx, testPod("project-a", selector)); err != nil {
		t.Fatal(err)
	}
	waitChan(t, ch)
	if c.Pod("project-a") == nil {
		t.Fatal("created pod not in cache after notification")
	}
	ch = c.Changed("project-a")
	p := testPod("project-a", selector)
	p.Status.Phase = corev1.PodRunning
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitChan(t, ch)
	ch = c.Changed("project-a")
	if err := c.DeletePod(ctx, "project-a", "", 5); err != nil {
		t.Fatal(err)
	}
	waitChan(t, ch)
	if c.Pod("project-a") != nil {
		t.Fatal("deleted pod still cached")
	}
	select {
	case <-c.Changed("project-a"):
		t.Fatal("fresh channel closed without a change")
	default:
	}
}

func failTimes(cs *fake.Clientset, verb, resource string, n int32, err error) *atomic.Int32 {
	var calls atomic.Int32
	cs.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) <= n {
			return true, nil, err
		}
		return false, nil, nil
	})
	return &calls
}

var podsGR = schema.GroupResource{Resource: "pods"}

func TestCreateRetriesTransientErrors(t *testing.T) {
	for name, err := range map[string]error{
		"server timeout":      apierrors.NewServerTimeout(podsGR, "create", 1),
		"too many requests":   apierrors.NewTooManyRequests("slow down", 1),
		"service unavailable": apierrors.NewServiceUnavailable("etcd"),
		"internal":            apierrors.NewInternalError(errors.New("boom")),
		"eof":                 io.ErrUnexpectedEOF,
		"call timeout":        context.DeadlineExceeded,
	} {
		t.Run(name, func(t *testing.T) {
			c, cs, _ := newClient(t)
			calls := failTimes(cs, "create", "pods", 2, err)
			if _, err := c.CreatePod(context.Background(), testPod("project-a", selector)); err != nil {
				t.Fatalf("create after 2 transient failures: %v", err)
			}
			if got := calls.Load(); got != 3 {
				t.Fatalf("attempts = %d, want 3", got)
			}
		})
	}
}

func TestCreateDoesNotRetryPermanentErrors(t *testing.T) {
	for name, perm := range map[string]error{
		"forbidden":      apierrors.NewForbidden(podsGR, "project-a", errors.New("rbac")),
		"invalid":        apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "project-a", nil),
		"bad request":    apierrors.NewBadRequest("nope"),
		"already exists": apierrors.NewAlreadyExists(podsGR, "project-a"),
		"unauthorized":   apierrors.NewUnauthorized("who"),
	} {
		t.Run(name, func(t *testing.T) {
			c, cs, _ := newClient(t)
			calls := failTimes(cs, "create", "pods", 100, perm)
			_, err := c.CreatePod(context.Background(), testPod("project-a", selector))
			if err == nil || !errors.Is(err, perm) {
				t.Fatalf("err = %v, want wrapped %v", err, perm)
			}
			if got := calls.Load(); got != 1 {
				t.Fatalf("attempts = %d, want 1 (no retry on permanent errors)", got)
			}
		})
	}
}

func TestRetriesAreBounded(t *testing.T) {
	c, cs, _ := newClient(t)
	calls := failTimes(cs, "create", "pods", 1000, apierrors.NewServiceUnavailable("down"))
	_, err := c.CreatePod(context.Background(), testPod("project-a", selector))
	if !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("err = %v, want the API's ServiceUnavailable", err)
	}
	if got := calls.Load(); got != 4 {
		t.Fatalf("attempts = %d, want backoff steps (4)", got)
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	cs := fake.NewClientset()
	c, err := New(cs, Config{Namespace: ns, Selector: selector,
		Backoff: wait.Backoff{Duration: time.Hour, Steps: 10}})
	if err != nil {
		t.Fatal(err)
	}
	failTimes(cs, "create", "pods", 1000, apierrors.NewServiceUnavailable("down"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := c.CreatePod(ctx, testPod("p", selector)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("create succeeded against a failing API")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("retry loop ignored context cancellation")
	}
}

func TestDeleteAlreadyGoneIsNoError(t *testing.T) {
	c, _, _ := newClient(t)
	if err := c.DeletePod(context.Background(), "project-missing", "", 5); err != nil {
		t.Fatalf("delete of a missing pod: %v", err)
	}
}

func TestDeleteSendsGraceAndUID(t *testing.T) {
	c, cs, _ := newClient(t, testPod("project-a", selector))
	var opts metav1.DeleteOptions
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		opts = a.(k8stesting.DeleteActionImpl).DeleteOptions
		return false, nil, nil
	})
	if err := c.DeletePod(context.Background(), "project-a", "uid-1", 7); err != nil {
		t.Fatal(err)
	}
	if *opts.GracePeriodSeconds != 7 || *opts.Preconditions.UID != "uid-1" {
		t.Fatalf("delete options = %+v", opts)
	}
}

func TestServiceClusterIPCachedWithTTL(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "nfs", Namespace: ns}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20"}}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless", Namespace: ns}, Spec: corev1.ServiceSpec{ClusterIP: "None"}}
	c, cs, clk := newClient(t, svc, headless)
	var gets atomic.Int32
	cs.PrependReactor("get", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		gets.Add(1)
		return false, nil, nil
	})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		ip, err := c.ServiceClusterIP(ctx, "nfs")
		if err != nil || ip != "10.96.0.20" {
			t.Fatalf("ip = %q, %v", ip, err)
		}
	}
	if gets.Load() != 1 {
		t.Fatalf("gets = %d, want 1 (cached)", gets.Load())
	}
	clk.Step(6 * time.Minute)
	if _, err := c.ServiceClusterIP(ctx, "nfs"); err != nil || gets.Load() != 2 {
		t.Fatalf("after TTL: gets = %d, err %v", gets.Load(), err)
	}
	if _, err := c.ServiceClusterIP(ctx, "headless"); err == nil {
		t.Fatal("headless service accepted as NFS server")
	}
	if _, err := c.ServiceClusterIP(ctx, "missing"); !apierrors.IsNotFound(err) {
		t.Fatalf("missing service: %v", err)
	}
}

func TestEventsAreRecorded(t *testing.T) {
	pod := testPod("project-a", selector)
	c, cs, _ := newClient(t, pod)
	c.Event(pod, corev1.EventTypeNormal, "ProjectStarting", "starting")
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == "ProjectStarting" && e.InvolvedObject.Name == "project-a" && e.Source.Component == EventComponent {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("event not recorded: %v", err)
	}
}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{apierrors.NewServerTimeout(podsGR, "get", 1), true},
		{apierrors.NewTimeoutError("slow", 1), true},
		{apierrors.NewTooManyRequests("x", 1), true},
		{apierrors.NewServiceUnavailable("x"), true},
		{apierrors.NewInternalError(errors.New("x")), true},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), true},
		{io.ErrUnexpectedEOF, true},
		{apierrors.NewForbidden(podsGR, "p", errors.New("x")), false},
		{apierrors.NewNotFound(podsGR, "p"), false},
		{apierrors.NewAlreadyExists(podsGR, "p"), false},
		{apierrors.NewConflict(podsGR, "p", errors.New("x")), false},
		{apierrors.NewBadRequest("x"), false},
		{context.Canceled, false},
		{errors.New("something else"), false},
	}
	for _, tt := range tests {
		if got := IsTransient(tt.err); got != tt.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// throttledErr is what client-go returns when its own QPS/Burst limiter
// would have to wait past the request's deadline.
var throttledErr = fmt.Errorf("client rate limiter Wait returned an error: %w", errors.New("rate: Wait(n=1) would exceed context deadline"))

// A burst deeper than QPS×CallTimeout is queueing, not an API failure: the
// request waits and queues again without using up its retries (found by
// test/bench: 312 of 1,000 concurrent starts failed with HTTP 500).
func TestClientThrottlingQueuesWithoutUsingRetries(t *testing.T) {
	c, cs, clk := newClient(t)
	calls := failTimes(cs, "create", "pods", 10, throttledErr) // more than the 4 backoff steps
	done := make(chan error, 1)
	go func() { _, err := c.CreatePod(context.Background(), testPod("project-a", selector)); done <- err }()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("create after 10 throttled attempts: %v", err)
			}
			if got := calls.Load(); got != 11 {
				t.Fatalf("attempts = %d, want 11", got)
			}
			return
		case <-time.After(time.Millisecond):
			if clk.HasWaiters() {
				clk.Step(c.cfg.ThrottleRetryDelay)
			}
		}
	}
}

func TestClientThrottlingEndsWithTheOperation(t *testing.T) {
	c, cs, _ := newClient(t)
	failTimes(cs, "create", "pods", 1000, throttledErr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.CreatePod(ctx, testPod("project-a", selector))
	if err == nil || !strings.Contains(err.Error(), "--kube-qps") {
		t.Fatalf("err = %v, want a hint to raise --kube-qps", err)
	}
}

func TestCacheStripsManagedFields(t *testing.T) {
	pod := testPod("project-a", selector)
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "cocalc-k8s", Operation: metav1.ManagedFieldsOperationUpdate}}
	c, _, _ := newClient(t, pod)
	got := c.Pod("project-a")
	if got == nil {
		t.Fatal("pod not cached")
	}
	if len(got.ManagedFields) != 0 {
		t.Fatalf("cached pod keeps managedFields: %v", got.ManagedFields)
	}
}

// Events go through Config.Events (a client with its own rate limiter in
// serve), never through the pod client.
func TestEventsUseTheirOwnClient(t *testing.T) {
	pod := testPod("project-a", selector)
	cs := fake.NewClientset(pod)
	events := fake.NewClientset()
	c, err := New(cs, Config{Namespace: ns, Selector: selector, Events: events.CoreV1()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Start(ctx)
	c.Event(pod, corev1.EventTypeNormal, "Starting", "project pod created")
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := events.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(evs.Items) == 1 && evs.Items[0].Reason == "Starting", err
	})
	if err != nil {
		t.Fatalf("event not written through Config.Events: %v", err)
	}
	for _, a := range cs.Actions() {
		if a.GetResource().Resource == "events" {
			t.Errorf("the pod client wrote an Event: %v", a)
		}
	}
}

// A create the API server is slow to answer is waited for, not sent again:
// a second create cannot succeed (the first is being applied) and only
// loads a server already too slow to answer, which then answers 409
// AlreadyExists (the bench's bursts at load 55: 1.39–3.11 create requests
// per start with a 10 s timeout per attempt, the client's own rate-limit
// wait included). CallTimeout is far shorter than the answer here; writes
// are bounded by WriteTimeout (the API server's own request timeout and a
// margin) and the operation's context.
func TestSlowCreateIsWaitedForNotSentAgain(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/"+ns+"/pods" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		var pod corev1.Pod
		if err := json.NewDecoder(r.Body).Decode(&pod); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if posts.Add(1) > 1 {
			w.WriteHeader(http.StatusConflict)
			st := apierrors.NewAlreadyExists(podsGR, pod.Name).Status()
			st.Kind, st.APIVersion = "Status", "v1"
			_ = json.NewEncoder(w).Encode(st)
			return
		}
		time.Sleep(300 * time.Millisecond) // three call timeouts
		pod.UID, pod.ResourceVersion = "uid-1", "1"
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(&pod)
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, QPS: -1, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cs, Config{Namespace: ns, Selector: selector, CallTimeout: 100 * time.Millisecond,
		Backoff: wait.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 4}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := c.CreatePod(ctx, testPod("project-a", selector))
	if err != nil {
		t.Fatalf("create: %v (%d requests)", err, posts.Load())
	}
	if got.UID != "uid-1" || posts.Load() != 1 {
		t.Fatalf("created %q with %d create requests, want uid-1 with 1", got.UID, posts.Load())
	}
}

func TestGoneIsRememberedForALimitedTime(t *testing.T) {
	c, _, clk := newClient(t)
	deleted := func(name string, uid types.UID) {
		obj, _ := compactPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: uid}})
		c.remember(obj)
	}
	deleted("project-a", "uid-a")
	if !c.Gone("project-a", "uid-a") {
		t.Fatal("a pod just deleted is not gone")
	}
	if c.Gone("project-a", "uid-older") {
		t.Error("another pod of the same name reported gone")
	}
	// A new pod of the name cancels it.
	obj, _ := compactPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "project-a", Namespace: ns, UID: "uid-a2"}})
	c.forget(obj)
	if c.Gone("project-a", "uid-a") {
		t.Error("gone after a pod of the name came back")
	}

	// Old deletions are not reported, and are dropped as more come: a
	// process that has stopped many projects does not keep one entry per
	// project forever.
	deleted("project-b", "uid-b")
	clk.Step(goneTTL + time.Second)
	if c.Gone("project-b", "uid-b") {
		t.Error("a deletion older than goneTTL is still reported")
	}
	for i := range 5000 {
		if i%1000 == 0 {
			clk.Step(goneTTL + time.Second)
		}
		deleted(fmt.Sprintf("project-%d", i), types.UID(fmt.Sprint(i)))
	}
	c.goneMu.Lock()
	_, kept := c.gone["project-b"]
	size := len(c.gone)
	c.goneMu.Unlock()
	if kept {
		t.Error("an expired deletion is still held")
	}
	// At most twice the deletions of the last goneTTL (1,000) plus the
	// floor of 512 before a prune.
	if size > 2*1000+512 {
		t.Errorf("%d deletions held, want at most %d", size, 2*1000+512)
	}
	if !c.Gone("project-4999", "4999") {
		t.Error("the latest deletion is not gone")
	}
}

// TestAttemptTimeoutStartsAfterTheToken: a call takes its client-side rate
// limit token before its attempt's timeout starts, so however deep the
// queue, the whole timeout is left for the server's answer (a request sent
// with a second of it left was answered too late and sent again).
func TestAttemptTimeoutStartsAfterTheToken(t *testing.T) {
	limiter := NewLimiter(10, 1) // a token every 100 ms
	const timeout = 300 * time.Millisecond
	c, err := New(fake.NewClientset(), Config{Namespace: ns, Selector: selector, WriteTimeout: timeout, Limiter: limiter})
	if err != nil {
		t.Fatal(err)
	}
	// Eight calls at once: the last token comes 700 ms after the first,
	// more than twice the attempt timeout.
	const n = 8
	var mu sync.Mutex
	var left []time.Duration
	attempts := 0
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- c.call(t.Context(), "create", timeout, func(ctx context.Context) error {
				// What client-go does with the clientset's limiter.
				if err := limiter.Wait(ctx); err != nil {
					return fmt.Errorf("%s: %w", clientThrottled, err)
				}
				deadline, _ := ctx.Deadline()
				mu.Lock()
				attempts++
				left = append(left, time.Until(deadline))
				mu.Unlock()
				return nil
			})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if attempts != n {
		t.Errorf("%d attempts for %d calls", attempts, n)
	}
	for _, l := range left {
		if l < timeout/2 {
			t.Errorf("an attempt was sent with %s of its %s timeout left", l, timeout)
		}
	}
}
