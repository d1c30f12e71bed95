// Package orchestrator runs one pod per CoCalc project: start, stop,
// restart, status, list and touch, plus the background loops (idle stop,
// clean-up of stuck pods, stale-spec detection).
//
// All reads come from the informer cache behind Cluster, and all waits are
// on cache change notifications (never polling). Every operation is bounded
// by the template's timeouts. This is the API the front-ends (HTTP API, CLI,
// hub integrations) call:
//
//	Start(ctx, id, req)   idempotent; returns when the project is running
//	Stop(ctx, id)         returns when the pod is gone; no-op when stopped
//	Restart(ctx, id, req) Stop then Start
//	Status(ctx, id)       from the cache, zero API calls
//	List(ctx)             from the cache, zero API calls
//	Touch(ctx, id)        records activity (defers the idle stop)
//	Watch(ctx)            status changes from the informer's notifications
//
// These are the Projects interface, which the HTTP API's client also
// satisfies.
package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/homedir"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
)

// Cluster is the orchestrator's view of Kubernetes (implemented by
// tools/kube.Client over a real or fake clientset).
type Cluster interface {
	// Pod returns the cached pod or nil; Pods every cached project pod.
	// Results are shared with the cache and must not be modified.
	Pod(name string) *corev1.Pod
	Pods() []*corev1.Pod
	// Changed returns a channel closed at the pod's next cache change.
	Changed(name string) <-chan struct{}
	// Gone reports whether the cache saw pod name with uid deleted (and
	// no pod of that name since).
	Gone(name string, uid types.UID) bool
	// Subscribe calls fn with the pod's name after every cache change (from
	// the informer's event handler: fn must not block) until unsubscribed.
	Subscribe(fn func(podName string)) (unsubscribe func())
	HasSynced() bool
	CreatePod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error)
	DeletePod(ctx context.Context, name string, uid types.UID, graceSeconds int64) error
	ServiceClusterIP(ctx context.Context, name string) (string, error)
	Event(obj runtime.Object, eventType, reason, message string)
}

// Homes creates project home directories.
type Homes interface {
	Ensure(id project.ID) (string, error)
}

// Observer is told about every operation (for metrics). Results are
// ResultOK, ResultError, ResultTimeout and ResultInvalid.
type Observer interface {
	Operation(op, result string, took time.Duration)
}

// Operation results reported to the Observer.
const (
	ResultOK      = "ok"
	ResultError   = "error"
	ResultTimeout = "timeout"
	ResultInvalid = "invalid"
)

// Errors callers can test with errors.Is. Bad input also wraps
// project.ErrInvalidID, podspec.ErrInvalidQuota or podspec.ErrInvalidRequest
// (see IsInvalidInput).
var (
	ErrTimeout              = errors.New("timed out")
	ErrStoppedWhileStarting = errors.New("project was stopped while starting")
	ErrShutdown             = errors.New("orchestrator shutting down")
)

// IsInvalidInput reports whether err is the caller's fault (4xx).
func IsInvalidInput(err error) bool {
	return errors.Is(err, project.ErrInvalidID) || errors.Is(err, podspec.ErrInvalidQuota) || errors.Is(err, podspec.ErrInvalidRequest)
}

// StartRequest is the quota and extra environment of a start.
type StartRequest = podspec.Request

// ProjectStatus is a project's state as reported to callers.
type ProjectStatus struct {
	ProjectID project.ID `json:"project_id"`
	state.Status
	Pod string `json:"pod,omitempty"`
	// StaleSpec is true when the running pod differs from what the current
	// template would produce; it is replaced on the project's next start
	// (or a restart), never killed while running.
	StaleSpec    bool       `json:"stale_spec,omitempty"`
	HubPort      int        `json:"hub_port"`
	RawPort      int        `json:"raw_port"`
	LastActivity *time.Time `json:"last_activity,omitempty"`
}

// Config configures an Orchestrator.
type Config struct {
	Template *podtemplate.Template
	Cluster  Cluster
	// Homes defaults to a homedir.Maker on template storage.serverPath.
	Homes    Homes
	Clock    clock.WithTicker
	Logger   *slog.Logger
	Observer Observer
	// IdleCheckInterval is the period of the background loops (default 1m).
	IdleCheckInterval time.Duration
	// NoIdleStop turns the idle sweep off (clean-up still runs). Set it when
	// nothing reports activity (Touch): otherwise a project in use would be
	// stopped its idle timeout after it started, however busy its user.
	NoIdleStop bool
}

// Orchestrator implements the project operations.
type Orchestrator struct {
	// tpl is the current template (SetTemplate replaces it).
	tpl      atomic.Pointer[podtemplate.Template]
	cluster  Cluster
	homes    Homes
	clock    clock.WithTicker
	log      *slog.Logger
	observer Observer
	interval time.Duration
	born     time.Time
	// noIdleStop: Config.NoIdleStop.
	noIdleStop bool

	base       context.Context
	cancelBase context.CancelFunc

	mu       sync.Mutex
	starts   map[project.ID]*flight
	activity map[project.ID]time.Time
	stale    map[types.UID]bool
	nfsIP    string
}

// flight is one in-flight start shared by every concurrent caller.
type flight struct {
	done    chan struct{}
	cancel  context.CancelCauseFunc
	created atomic.Bool // a create request was sent
	res     ProjectStatus
	err     error
}

// New returns an Orchestrator. Call Close when done.
func New(cfg Config) (*Orchestrator, error) {
	if cfg.Template == nil || cfg.Cluster == nil {
		return nil, errors.New("orchestrator: template and cluster are required")
	}
	if cfg.Homes == nil {
		cfg.Homes = homedir.Maker{Root: cfg.Template.Storage.ServerPath,
			UID: int(cfg.Template.Security.RunAsUser), GID: int(cfg.Template.Security.RunAsGroup)}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IdleCheckInterval <= 0 {
		cfg.IdleCheckInterval = time.Minute
	}
	base, cancel := context.WithCancel(context.Background())
	o := &Orchestrator{
		cluster: cfg.Cluster, homes: cfg.Homes, clock: cfg.Clock,
		log: cfg.Logger, observer: cfg.Observer, interval: cfg.IdleCheckInterval, noIdleStop: cfg.NoIdleStop,
		born: cfg.Clock.Now(), base: base, cancelBase: cancel,
		starts: map[project.ID]*flight{}, activity: map[project.ID]time.Time{}, stale: map[types.UID]bool{},
	}
	o.tpl.Store(cfg.Template)
	return o, nil
}

// Template returns the template new pods are built from.
func (o *Orchestrator) Template() *podtemplate.Template { return o.tpl.Load() }

// SetTemplate replaces the template for pods created from now on (running
// pods are kept; they count as stale when they differ and are replaced at
// their next start). It refuses a template that changes a field a running
// orchestrator cannot take over (podtemplate.RestartFields): that change
// takes a restart of the server pod, which the chart does by itself.
func (o *Orchestrator) SetTemplate(t *podtemplate.Template) error {
	if t == nil {
		return errors.New("set template: nil template")
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("set template: %w", err)
	}
	if changed := podtemplate.NeedsRestart(o.tpl.Load(), t); len(changed) > 0 {
		return fmt.Errorf("set template: %s changed; restart the orchestrator to apply", strings.Join(changed, ", "))
	}
	o.mu.Lock()
	o.tpl.Store(t)
	clear(o.stale) // staleness is relative to the template
	o.mu.Unlock()
	return nil
}

// Close cancels in-flight starts (they return ErrShutdown).
func (o *Orchestrator) Close() { o.cancelBase() }

// Ready reports whether the cache is synced (status answers are complete).
func (o *Orchestrator) Ready() bool { return o.cluster.HasSynced() }

func (o *Orchestrator) observe(op string, begin time.Time, err error) {
	if o.observer == nil {
		return
	}
	result := ResultOK
	switch {
	case err == nil:
	case IsInvalidInput(err):
		result = ResultInvalid
	case errors.Is(err, ErrTimeout):
		result = ResultTimeout
	default:
		result = ResultError
	}
	o.observer.Operation(op, result, o.clock.Since(begin))
}

func seconds(s int64) time.Duration { return time.Duration(s) * time.Second }

// Start makes the project run and returns its status once it is running
// (Ready, with an IP). Concurrent starts of one project share one attempt:
// exactly one pod is created. The attempt is bounded by the template's
// start timeout and is not aborted when one caller gives up (others may be
// waiting); it is aborted by Stop.
func (o *Orchestrator) Start(ctx context.Context, id project.ID, req StartRequest) (st ProjectStatus, err error) {
	begin := o.clock.Now()
	defer func() { o.observe("start", begin, err) }()
	if err := id.Validate(); err != nil {
		return ProjectStatus{}, err
	}
	o.touch(id)
	o.mu.Lock()
	f, ok := o.starts[id]
	if !ok {
		fctx, cancel := context.WithCancelCause(o.base)
		f = &flight{done: make(chan struct{}), cancel: cancel}
		o.starts[id] = f
		go func() {
			tctx, cancelT := context.WithTimeout(fctx, seconds(o.Template().Timeouts.StartSeconds))
			f.res, f.err = o.start(tctx, id, req, f)
			cancelT()
			cancel(nil)
			o.mu.Lock()
			delete(o.starts, id)
			o.mu.Unlock()
			close(f.done)
		}()
	}
	o.mu.Unlock()
	select {
	case <-f.done:
		return f.res, f.err
	case <-ctx.Done():
		return o.current(id), fmt.Errorf("start %s: caller gave up: %w", id, context.Cause(ctx))
	}
}

func (o *Orchestrator) start(ctx context.Context, id project.ID, req StartRequest, f *flight) (ProjectStatus, error) {
	name := id.PodName()
	// created: our create succeeded; seen: the cache showed our pod. Our pod
	// absent after it was seen, or gone by its UID before the cache ever
	// showed it (a create and a delete can arrive in one wake-up), was
	// deleted under us (a stop); the deletion of an older pod of the same
	// name, notified late, is not.
	created, seen := false, false
	var ours types.UID // the UID of the pod this start created
	for {
		changed := o.cluster.Changed(name)
		pod := o.cluster.Pod(name)
		st := state.FromPod(pod)
		if pod != nil && created {
			seen = true
		}
		switch {
		case pod == nil && created && (seen || o.cluster.Gone(name, ours)):
			return o.current(id), fmt.Errorf("start %s: %w", id, ErrStoppedWhileStarting)
		case pod == nil && !created:
			pod, err := o.create(ctx, id, req, f)
			if err == nil {
				ours = pod.UID
			}
			switch {
			case apierrors.IsAlreadyExists(err):
				// Created by someone else (another replica, an admin):
				// the cache will show it; wait for that.
			case err != nil:
				return o.current(id), o.startError(ctx, id, err)
			default:
				created = true
			}
		case pod == nil:
			// Created, not yet in the cache.
		case st.NodeLost:
			// The pod's node stopped reporting (lost, not drained): waiting
			// for its deletion would take the taint eviction's 300 s plus a
			// grace period no kubelet will ever end. Delete it at once
			// (grace 0; the UID precondition spares a newer pod) and create
			// one the scheduler places on a live node. The risk, accepted
			// for availability: a node cut off from the API server but not
			// down keeps running the old container until it reconnects,
			// so for that while two containers may use the home.
			if err := o.forceDelete(ctx, pod, "ReplacingLostPod", "creating a new one"); err != nil && !apierrors.IsConflict(err) {
				return o.current(id), o.startError(ctx, id, err)
			}
			created, seen = false, false // its disappearance is ours, not a stop
		case st.State == state.Stopping:
			// A stop is finishing: wait until the pod is gone, then create.
		case st.Terminal:
			o.cluster.Event(pod, corev1.EventTypeWarning, "ReplacingFailedPod", fmt.Sprintf("pod ended (%s), creating a new one", st.Reason))
			if err := o.cluster.DeletePod(ctx, name, pod.UID, 0); err != nil && !apierrors.IsConflict(err) {
				return o.current(id), o.startError(ctx, id, err)
			}
			created, seen = false, false // its disappearance is ours, not a stop
		case st.State == state.Running:
			return o.statusOf(id, pod), nil
		}
		select {
		case <-changed:
			// Only our pod appearing in the cache counts as seen (above): a
			// late notification of the old pod's removal may still arrive
			// after our create, and taking it for ours failed the start of a
			// project that was just stopped. A stop of this start cancels
			// its context (ErrStoppedWhileStarting).
		case <-ctx.Done():
			return o.current(id), o.startError(ctx, id, ctx.Err())
		}
	}
}

func (o *Orchestrator) startError(ctx context.Context, id project.ID, err error) error {
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
		switch {
		case errors.Is(cause, ErrStoppedWhileStarting):
			return fmt.Errorf("start %s: %w", id, ErrStoppedWhileStarting)
		case errors.Is(cause, context.DeadlineExceeded):
			st := o.current(id)
			detail := string(st.State)
			if st.Reason != "" {
				detail += ": " + st.Reason
				if st.Message != "" {
					detail += " (" + st.Message + ")"
				}
			}
			if pod := o.cluster.Pod(id.PodName()); pod != nil {
				o.cluster.Event(pod, corev1.EventTypeWarning, "StartTimeout", "not running after "+seconds(o.Template().Timeouts.StartSeconds).String()+": "+detail)
			}
			return fmt.Errorf("start %s: %w after %s, project is %s", id, ErrTimeout, seconds(o.Template().Timeouts.StartSeconds), detail)
		case o.base.Err() != nil:
			return fmt.Errorf("start %s: %w", id, ErrShutdown)
		}
	}
	return fmt.Errorf("start %s: %w", id, err)
}

// create prepares the home and creates the pod.
func (o *Orchestrator) create(ctx context.Context, id project.ID, req StartRequest, f *flight) (*corev1.Pod, error) {
	in := podspec.Input{Project: id, Request: req}
	if nfs := o.Template().Storage.NFS; o.Template().Storage.Mode == podtemplate.ModeNFS && nfs != nil && nfs.ServiceName != "" {
		ip, err := o.cluster.ServiceClusterIP(ctx, nfs.ServiceName)
		if err != nil {
			return nil, fmt.Errorf("resolve NFS server: %w", err)
		}
		o.mu.Lock()
		o.nfsIP = ip
		o.mu.Unlock()
		in.NFSServer = ip
	}
	pod, err := podspec.Build(o.Template(), in)
	if err != nil {
		return nil, err
	}
	if _, err := o.homes.Ensure(id); err != nil {
		return nil, fmt.Errorf("prepare home: %w", err)
	}
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	f.created.Store(true)
	created, err := o.cluster.CreatePod(ctx, pod)
	if err != nil {
		return nil, err
	}
	o.log.Info("project pod created", "project", id, "pod", created.Name)
	o.cluster.Event(created, corev1.EventTypeNormal, "Starting", "project pod created by "+podtemplate.ManagedBy)
	return created, nil
}

// Stop deletes the project's pod with the template's grace period and
// waits (bounded by the stop timeout) until it is gone. An in-flight start
// is aborted first. Stopping a stopped project is a no-op.
func (o *Orchestrator) Stop(ctx context.Context, id project.ID) (st ProjectStatus, err error) {
	begin := o.clock.Now()
	defer func() { o.observe("stop", begin, err) }()
	if err := id.Validate(); err != nil {
		return ProjectStatus{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, seconds(o.Template().Timeouts.StopSeconds))
	defer cancel()
	createSent, err := o.abortStart(ctx, id)
	if err != nil {
		return o.current(id), o.stopError(ctx, id, err)
	}
	o.mu.Lock()
	delete(o.activity, id)
	o.mu.Unlock()
	name := id.PodName()
	for {
		changed := o.cluster.Changed(name)
		pod := o.cluster.Pod(name)
		if pod == nil {
			if createSent {
				// The aborted start may have created a pod the cache has
				// not seen yet: delete by name (a no-op if there is none).
				createSent = false
				if err := o.cluster.DeletePod(ctx, name, "", o.Template().TerminationGracePeriodSeconds); err != nil {
					return o.current(id), o.stopError(ctx, id, err)
				}
				continue
			}
			return o.current(id), nil
		}
		if state.FromPod(pod).NodeLost {
			// No kubelet will end a graceful deletion (see start).
			if err := o.forceDelete(ctx, pod, "Stopping", "stop requested"); err != nil && !apierrors.IsConflict(err) {
				return o.current(id), o.stopError(ctx, id, err)
			}
		} else if pod.DeletionTimestamp == nil {
			if err := o.deletePod(ctx, pod, "Stopping", "stop requested"); err != nil {
				if !apierrors.IsConflict(err) { // replaced meanwhile: look again
					return o.current(id), o.stopError(ctx, id, err)
				}
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return o.current(id), o.stopError(ctx, id, ctx.Err())
		}
	}
}

func (o *Orchestrator) stopError(ctx context.Context, id project.ID, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("stop %s: %w: pod still present after %s", id, ErrTimeout, seconds(o.Template().Timeouts.StopSeconds))
	}
	return fmt.Errorf("stop %s: %w", id, err)
}

// abortStart cancels an in-flight start and waits for it to end; it
// reports whether that start sent a create request.
func (o *Orchestrator) abortStart(ctx context.Context, id project.ID) (bool, error) {
	o.mu.Lock()
	f := o.starts[id]
	o.mu.Unlock()
	if f == nil {
		return false, nil
	}
	f.cancel(ErrStoppedWhileStarting)
	select {
	case <-f.done:
		return f.created.Load(), nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (o *Orchestrator) deletePod(ctx context.Context, pod *corev1.Pod, reason, message string) error {
	o.cluster.Event(pod, corev1.EventTypeNormal, reason, message)
	o.log.Info("deleting project pod", "pod", pod.Name, "reason", reason, "detail", message)
	return o.cluster.DeletePod(ctx, pod.Name, pod.UID, o.Template().TerminationGracePeriodSeconds)
}

// forceDelete deletes a pod whose node stopped reporting with grace 0:
// the API server removes it at once instead of waiting for a kubelet.
func (o *Orchestrator) forceDelete(ctx context.Context, pod *corev1.Pod, reason, message string) error {
	detail := fmt.Sprintf("node %s is not responding: pod deleted without waiting for it (grace 0), %s", pod.Spec.NodeName, message)
	o.cluster.Event(pod, corev1.EventTypeWarning, reason, detail)
	o.log.Warn("deleting project pod on a lost node", "pod", pod.Name, "node", pod.Spec.NodeName, "reason", reason)
	return o.cluster.DeletePod(ctx, pod.Name, pod.UID, 0)
}

// Restart stops the project (if running) and starts it with req, so the new
// pod gets the current template and quota.
func (o *Orchestrator) Restart(ctx context.Context, id project.ID, req StartRequest) (ProjectStatus, error) {
	if _, err := o.Stop(ctx, id); err != nil {
		return o.current(id), fmt.Errorf("restart: %w", err)
	}
	st, err := o.Start(ctx, id, req)
	if err != nil {
		return st, fmt.Errorf("restart: %w", err)
	}
	return st, nil
}

func (o *Orchestrator) touch(id project.ID) {
	o.mu.Lock()
	o.activity[id] = o.clock.Now()
	o.mu.Unlock()
}

// current answers from the cache (zero API calls).
func (o *Orchestrator) current(id project.ID) ProjectStatus {
	return o.statusOf(id, o.cluster.Pod(id.PodName()))
}

func (o *Orchestrator) statusOf(id project.ID, pod *corev1.Pod) ProjectStatus {
	ps := ProjectStatus{ProjectID: id, Status: state.FromPod(pod), HubPort: podtemplate.HubPort, RawPort: podtemplate.RawPort}
	if pod != nil {
		ps.Pod = pod.Name
		ps.StaleSpec = o.isStale(id, pod)
	}
	o.mu.Lock()
	if t, ok := o.activity[id]; ok {
		ps.LastActivity = &t
	}
	o.mu.Unlock()
	return ps
}

// list returns the status of every project that has a pod, sorted by ID.
func (o *Orchestrator) list() []ProjectStatus {
	pods := o.cluster.Pods()
	out := make([]ProjectStatus, 0, len(pods))
	for _, pod := range pods {
		id, err := project.FromPodName(pod.Name)
		if err != nil {
			continue
		}
		out = append(out, o.statusOf(id, pod))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ProjectID < out[j].ProjectID })
	return out
}

// isStale compares the pod's spec hash with what the current template
// would build from the pod's recorded start request. Cached per pod UID
// (pod specs are immutable); SetTemplate empties the cache.
func (o *Orchestrator) isStale(id project.ID, pod *corev1.Pod) bool {
	o.mu.Lock()
	stale, ok := o.stale[pod.UID]
	nfsIP := o.nfsIP
	tpl := o.tpl.Load()
	o.mu.Unlock()
	if ok && pod.UID != "" {
		return stale
	}
	stale = true
	if req, err := podspec.RecordedRequest(pod); err == nil {
		if nfsIP == "" && len(pod.Spec.Volumes) > 0 && pod.Spec.Volumes[0].NFS != nil {
			nfsIP = pod.Spec.Volumes[0].NFS.Server // not resolved yet: assume unchanged
		}
		if want, err := podspec.Build(tpl, podspec.Input{Project: id, Request: req, NFSServer: nfsIP}); err == nil {
			stale = want.Annotations[podspec.AnnotationSpecHash] != pod.Annotations[podspec.AnnotationSpecHash]
		}
	}
	if pod.UID != "" {
		o.mu.Lock()
		if o.tpl.Load() == tpl { // not replaced meanwhile
			o.stale[pod.UID] = stale
		}
		o.mu.Unlock()
	}
	return stale
}
