// Package kube is the orchestrator's access to Kubernetes: one label-filtered
// shared pod informer on one namespace (all reads come from its cache: zero
// API calls for status and list), change notifications for waiters, bounded
// and retried writes, NFS Service address resolution and Events on pods.
package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
)

// DefaultWriteTimeout is Config.WriteTimeout's default.
const DefaultWriteTimeout = 70 * time.Second

// EventComponent is the source of Events the orchestrator records.
const EventComponent = "cocalc-k8s"

// ErrorObserver is told about every failed API call (for metrics).
type ErrorObserver interface {
	APIError(verb string, err error)
}

// Config configures a Client.
type Config struct {
	// Namespace holds the project pods.
	Namespace string
	// Selector is the label set every project pod carries (the template's
	// selectorLabels); the informer sees nothing else.
	Selector map[string]string
	// CallTimeout bounds each read request (default 10s).
	CallTimeout time.Duration
	// WriteTimeout bounds each attempt of a pod create or delete, including
	// its wait for the client's own rate limiter (default 70s: the API
	// server's default --request-timeout of 60s and a margin). The server
	// answers by then, so the client only gives up on a lost connection.
	// Giving up sooner does not make a saturated server faster: the write
	// it is applying is sent again, adding load, and the repeated create
	// is answered 409 AlreadyExists (1.39–3.11 create requests per start in
	// the bench's bursts at load 55 with 10s, most of those 10s spent
	// waiting for a rate-limiter token). The operation's own deadline
	// bounds it too.
	WriteTimeout time.Duration
	// Limiter, when set, is the client-side rate limit the clientset was
	// built with (rest.Config.RateLimiter): calls take their token from it
	// before their attempt's timeout starts (see Limiter). Without it
	// (tests with fake clientsets), client-go waits inside the attempt.
	Limiter *Limiter
	// ThrottleRetryDelay is how long a request refused by the client's own
	// rate limiter (QPS/Burst) waits before queueing again (default 1s).
	ThrottleRetryDelay time.Duration
	// Backoff between retries of transient failures (default: 5 tries,
	// 200ms doubling, 10% jitter).
	Backoff wait.Backoff
	// ReconnectBackoff paces the pod cache's list/watch retries while the
	// API server is unreachable (default 250ms doubling to 2s; see
	// reconnectingListerWatcher).
	ReconnectBackoff wait.Backoff
	// NFSCacheTTL is how long a resolved Service address is reused
	// (default 5m). A ClusterIP is immutable, but a Service can be
	// re-created by a chart change.
	NFSCacheTTL time.Duration
	// Events is the client Events are written with. Give it its own rate
	// limiter (a clientset of its own): Events written through the pod
	// client's limiter take tokens pod creates need, so with one Event per
	// start a burst of starts ran at half the client QPS. Default: the pod
	// client (tests with fake clientsets).
	Events typedcorev1.EventsGetter
	Clock  clock.Clock
	Logger *slog.Logger
	Errors ErrorObserver
}

// Client implements the orchestrator's view of the cluster.
type Client struct {
	cs       kubernetes.Interface
	cfg      Config
	informer cache.SharedIndexInformer
	events   record.EventBroadcaster
	recorder record.EventRecorder
	notify   *notifier
	// goneMu guards gone: the UID of the last pod of each name whose
	// deletion the informer delivered in the last goneTTL, while no pod of
	// that name is cached; goneAfterPrune is its size after the last prune.
	goneMu         sync.Mutex
	gone           map[string]goneEntry
	goneAfterPrune int
	nfsMu          sync.Mutex
	nfsCache       map[string]cachedIP
	startOnce      sync.Once
}

type cachedIP struct {
	ip      string
	expires time.Time
}

// New returns a Client; call Start before use.
func New(cs kubernetes.Interface, cfg Config) (*Client, error) {
	if cfg.Namespace == "" || len(cfg.Selector) == 0 {
		return nil, errors.New("kube: namespace and selector are required")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.ThrottleRetryDelay <= 0 {
		cfg.ThrottleRetryDelay = time.Second
	}
	if cfg.Backoff.Steps == 0 {
		cfg.Backoff = wait.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 5, Cap: 5 * time.Second}
	}
	if cfg.ReconnectBackoff.Steps == 0 {
		cfg.ReconnectBackoff = defaultReconnectBackoff
	}
	if cfg.NFSCacheTTL <= 0 {
		cfg.NFSCacheTTL = 5 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Events == nil {
		cfg.Events = cs.CoreV1()
	}
	// One namespace, one label selector: the informer is built here rather
	// than by an informer factory so that its list/watch can be the
	// reconnecting one.
	selector := labels.SelectorFromSet(cfg.Selector).String()
	pods := cs.CoreV1().Pods(cfg.Namespace)
	lw := newPodListerWatcher(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return pods.Watch(ctx, o)
		},
	}, cs, cfg.ReconnectBackoff, cfg.Clock, cfg.Logger)
	// No indexers: the informer watches one namespace, and reads are by
	// key or of everything.
	informer := cache.NewSharedIndexInformerWithOptions(lw, &corev1.Pod{}, cache.SharedIndexInformerOptions{
		ObjectDescription: "project pods",
	})
	c := &Client{
		cs:             cs,
		cfg:            cfg,
		informer:       informer,
		notify:         newNotifier(),
		gone:           map[string]goneEntry{},
		goneAfterPrune: 512,
		nfsCache:       map[string]cachedIP{},
	}
	if err := c.informer.SetWatchErrorHandlerWithContext(c.listWatchFailed); err != nil {
		return nil, fmt.Errorf("kube: pod cache error handler: %w", err)
	}
	// The cache holds every project pod: it keeps only the fields read here,
	// compactly (cachedPod).
	if err := c.informer.SetTransform(compactPod); err != nil {
		return nil, fmt.Errorf("kube: pod cache transform: %w", err)
	}
	_, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.forget(obj); c.changed(obj) },
		UpdateFunc: func(_, obj any) { c.changed(obj) },
		DeleteFunc: func(obj any) { c.remember(obj); c.changed(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("kube: add pod event handler: %w", err)
	}
	// Events go through client-go's recorder: Event only queues (and drops
	// when 1,000 are queued), one goroutine writes them, and its correlator
	// aggregates repeats and filters spam per object. With cfg.Events on a
	// limiter of its own, no Event ever waits in front of a pod write.
	c.events = record.NewBroadcaster()
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: EventComponent})
	return c, nil
}

// listWatchFailed reports a failed list or watch of the pod cache (after
// which client-go's reflector backs off and lists again) in the
// orchestrator's log and metrics rather than klog's. An unreachable server
// never gets here: the list/watch retries it (reconnectingListerWatcher).
// Like client-go's default handler, it stays quiet about a watch that
// ended normally or whose resource version expired (a relist follows).
func (c *Client) listWatchFailed(_ context.Context, _ *cache.Reflector, err error) {
	switch {
	case errors.Is(err, io.EOF):
		return
	case apierrors.IsResourceExpired(err), apierrors.IsGone(err):
		c.cfg.Logger.Debug("pod cache: watch expired, relisting", "err", err)
		return
	}
	if c.cfg.Errors != nil {
		c.cfg.Errors.APIError("watch", err)
	}
	c.cfg.Logger.Warn("pod cache: list/watch failed, client-go retries with backoff", "err", err)
}

// podOf returns the cached pod of an informer notification (also of a
// deletion whose final state is unknown), or nil.
func podOf(obj any) *cachedPod {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, _ := obj.(*cachedPod)
	return pod
}

// goneTTL is how long a deletion is remembered for Gone. A start asks
// right after the cache's notification of that deletion wakes it, so
// minutes are ample; without a limit every project ever stopped would keep
// an entry for the life of the process.
const goneTTL = 10 * time.Minute

type goneEntry struct {
	uid types.UID
	at  time.Time
}

func (c *Client) remember(obj any) {
	if pod := podOf(obj); pod != nil {
		now := c.cfg.Clock.Now()
		c.goneMu.Lock()
		defer c.goneMu.Unlock()
		c.gone[pod.Name] = goneEntry{uid: pod.UID, at: now}
		// Prune when the map has doubled since the last prune: amortized
		// constant work per deletion, and at most twice the deletions of
		// the last goneTTL held.
		if len(c.gone) >= 2*c.goneAfterPrune {
			for name, e := range c.gone {
				if now.Sub(e.at) > goneTTL {
					delete(c.gone, name)
				}
			}
			c.goneAfterPrune = max(len(c.gone), 512)
		}
	}
}

func (c *Client) forget(obj any) {
	if pod := podOf(obj); pod != nil {
		c.goneMu.Lock()
		delete(c.gone, pod.Name)
		c.goneMu.Unlock()
	}
}

// Gone reports whether the cache saw the pod name with uid deleted and has
// no pod of that name since: a pod created and deleted before the cache
// ever showed it (both in one informer wake-up) is recognised as gone,
// without mistaking an older pod's deletion for it.
func (c *Client) Gone(name string, uid types.UID) bool {
	c.goneMu.Lock()
	defer c.goneMu.Unlock()
	got, ok := c.gone[name]
	return ok && got.uid == uid && c.cfg.Clock.Since(got.at) <= goneTTL
}

func (c *Client) changed(obj any) {
	if pod := podOf(obj); pod != nil {
		c.notify.fire(pod.Name)
	}
}

// Start runs the informer and the event sink until ctx ends.
func (c *Client) Start(ctx context.Context) {
	c.startOnce.Do(func() {
		c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cfg.Events.Events(c.cfg.Namespace)})
		go c.informer.RunWithContext(ctx)
		go func() {
			<-ctx.Done()
			c.events.Shutdown()
		}()
	})
}

// WaitForSync blocks until the pod cache is filled or ctx ends.
func (c *Client) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return fmt.Errorf("kube: pod cache of namespace %s not synced: %w", c.cfg.Namespace, context.Cause(ctx))
	}
	return nil
}

// HasSynced reports whether the pod cache is filled (readiness).
func (c *Client) HasSynced() bool { return c.informer.HasSynced() }

// Pod returns the cached pod with this name, or nil: a new *corev1.Pod
// with the fields the cache keeps (cachedPod). Its pointer fields are
// shared with the cache: do not modify it.
func (c *Client) Pod(name string) *corev1.Pod {
	obj, ok, _ := c.informer.GetStore().GetByKey(c.cfg.Namespace + "/" + name)
	if !ok {
		return nil
	}
	if p, ok := obj.(*cachedPod); ok {
		return p.pod()
	}
	return nil
}

// Pods returns every cached project pod, as Pod does.
func (c *Client) Pods() []*corev1.Pod {
	objs := c.informer.GetStore().List()
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, obj := range objs {
		if p, ok := obj.(*cachedPod); ok {
			pods = append(pods, p.pod())
		}
	}
	return pods
}

// Changed returns a channel closed at the next cache change of the named
// pod. Take it before reading the cache, then wait on it: no change between
// the read and the wait can be missed.
func (c *Client) Changed(name string) <-chan struct{} { return c.notify.wait(name) }

// Subscribe calls fn with the pod's name after every cache change, from
// the informer's event handler (fn must not block), until unsubscribed.
func (c *Client) Subscribe(fn func(podName string)) (unsubscribe func()) {
	return c.notify.subscribe(fn)
}

// CreatePod creates a pod, retrying transient failures. AlreadyExists is
// returned unchanged (apierrors.IsAlreadyExists) for the caller to handle.
func (c *Client) CreatePod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	var created *corev1.Pod
	err := c.call(ctx, "create", c.cfg.WriteTimeout, func(ctx context.Context) error {
		var err error
		created, err = c.cs.CoreV1().Pods(c.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{FieldManager: EventComponent})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", c.cfg.Namespace, pod.Name, err)
	}
	return created, nil
}

// DeletePod deletes the pod with this name and UID (a pod of the same name
// created since is left alone) with the given grace period. A pod that is
// already gone is not an error.
func (c *Client) DeletePod(ctx context.Context, name string, uid types.UID, graceSeconds int64) error {
	opts := metav1.DeleteOptions{GracePeriodSeconds: &graceSeconds}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := c.call(ctx, "delete", c.cfg.WriteTimeout, func(ctx context.Context) error {
		return c.cs.CoreV1().Pods(c.cfg.Namespace).Delete(ctx, name, opts)
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return nil
}

// ServiceClusterIP returns the ClusterIP of a Service in the namespace,
// cached. Kubelets mount NFS from the node, where cluster DNS usually does
// not resolve, so project pods get the IP rather than the name.
func (c *Client) ServiceClusterIP(ctx context.Context, name string) (string, error) {
	now := c.cfg.Clock.Now()
	c.nfsMu.Lock()
	if e, ok := c.nfsCache[name]; ok && now.Before(e.expires) {
		c.nfsMu.Unlock()
		return e.ip, nil
	}
	c.nfsMu.Unlock()

	var svc *corev1.Service
	err := c.call(ctx, "get", c.cfg.CallTimeout, func(ctx context.Context) error {
		var err error
		svc, err = c.cs.CoreV1().Services(c.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("get service %s/%s: %w", c.cfg.Namespace, name, err)
	}
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s has no ClusterIP (%q): NFS needs a ClusterIP Service", c.cfg.Namespace, name, ip)
	}
	c.nfsMu.Lock()
	c.nfsCache[name] = cachedIP{ip: ip, expires: now.Add(c.cfg.NFSCacheTTL)}
	c.nfsMu.Unlock()
	return ip, nil
}

// Event records a Kubernetes Event on a project pod. It never blocks and
// makes no API request itself: the Event is queued for the recorder's
// writer (see New), off the caller's path.
func (c *Client) Event(obj runtime.Object, eventType, reason, message string) {
	c.recorder.Event(obj, eventType, reason, message)
}

// call runs one API request, each attempt bounded by timeout, retrying
// transient failures with backoff until the parent context ends.
//
// A request the client's own rate limiter refuses (it would wait past the
// attempt's timeout: a burst of starts deeper than QPS×WriteTimeout) is not a
// failure of the API: it queues again after ThrottleRetryDelay without
// using up a retry, bounded only by the parent context (the operation's
// own timeout).
func (c *Client) call(ctx context.Context, verb string, timeout time.Duration, fn func(context.Context) error) error {
	for {
		err, throttled := c.callOnce(ctx, verb, timeout, fn)
		if !throttled {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still queued behind the client rate limit: raise --kube-qps/--kube-burst)", err)
		case <-c.cfg.Clock.After(c.cfg.ThrottleRetryDelay):
		}
	}
}

func (c *Client) callOnce(ctx context.Context, verb string, timeout time.Duration, fn func(context.Context) error) (error, bool) {
	var last error
	throttled := false
	err := wait.ExponentialBackoffWithContext(ctx, c.cfg.Backoff, func(ctx context.Context) (bool, error) {
		attemptCtx := ctx
		if c.cfg.Limiter != nil {
			// The token first, bounded by the operation; then the whole
			// timeout is the server's to answer.
			var err error
			if attemptCtx, err = c.cfg.Limiter.prepaid(ctx); err != nil {
				last = fmt.Errorf("%s: %s: %w", verb, clientThrottled, err)
				throttled = ctx.Err() == nil
				return false, last
			}
		}
		callCtx, cancel := context.WithTimeout(attemptCtx, timeout)
		defer cancel()
		last = fn(callCtx)
		if last == nil {
			return true, nil
		}
		if isClientThrottled(last) && ctx.Err() == nil {
			throttled = true
			return false, last
		}
		if c.cfg.Errors != nil {
			c.cfg.Errors.APIError(verb, last)
		}
		if ctx.Err() == nil && IsTransient(last) {
			c.cfg.Logger.Debug("transient API error, retrying", "verb", verb, "err", last)
			return false, nil
		}
		return false, last
	})
	if throttled {
		return last, true
	}
	if err != nil && last != nil && !errors.Is(err, last) {
		// Retries exhausted or context ended: report the API's own error.
		return fmt.Errorf("%w (after retries: %v)", last, err), false
	}
	return err, false
}
