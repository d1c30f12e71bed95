package orchestrator

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
)

// Run runs the background loops every IdleCheckInterval (on the injected
// clock) until ctx ends.
func (o *Orchestrator) Run(ctx context.Context) {
	t := o.clock.NewTicker(o.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			o.Sweep(ctx)
		}
	}
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	IdleStopped int
	CleanedUp   int
	Stale       int
}

// Sweep stops idle projects (unless Config.NoIdleStop), deletes pods stuck Pending or ended (Failed,
// Succeeded) beyond the pending timeout, and counts stale pods. It issues
// deletes without waiting for them to finish, so one slow pod cannot delay
// the rest.
func (o *Orchestrator) Sweep(ctx context.Context) SweepResult {
	var res SweepResult
	now := o.clock.Now()
	pending := seconds(o.Template().Timeouts.PendingSeconds)
	live := map[types.UID]bool{}
	for _, pod := range o.cluster.Pods() {
		live[pod.UID] = true
		id, err := project.FromPodName(pod.Name)
		if err != nil || pod.DeletionTimestamp != nil {
			continue
		}
		if o.isStale(id, pod) {
			res.Stale++
		}
		st := state.FromPod(pod)
		switch {
		case st.Terminal:
			if since := endedAt(pod); now.Sub(since) >= pending {
				if o.sweepDelete(ctx, pod, "CleanUpEnded", fmt.Sprintf("pod ended (%s) %s ago", st.Reason, now.Sub(since).Round(time.Second))) {
					res.CleanedUp++
				}
			}
		case (pod.Status.Phase == corev1.PodPending || pod.Status.Phase == "") && now.Sub(pod.CreationTimestamp.Time) >= pending && !o.starting(id):
			if o.sweepDelete(ctx, pod, "CleanUpPending", fmt.Sprintf("pending for %s (%s)", now.Sub(pod.CreationTimestamp.Time).Round(time.Second), st.Reason)) {
				res.CleanedUp++
			}
		case o.noIdleStop:
			continue
		default:
			idle := o.idleTimeout(pod)
			if idle <= 0 {
				continue
			}
			last := o.lastActivity(id, pod)
			if now.Sub(last) >= idle {
				if o.sweepDelete(ctx, pod, "IdleTimeout", fmt.Sprintf("no activity for %s (idle timeout %s)", now.Sub(last).Round(time.Second), idle)) {
					res.IdleStopped++
					o.mu.Lock()
					delete(o.activity, id)
					o.mu.Unlock()
				}
			}
		}
	}
	o.mu.Lock()
	for uid := range o.stale {
		if !live[uid] {
			delete(o.stale, uid)
		}
	}
	// Touches of projects that have no pod must not accumulate forever.
	for id, t := range o.activity {
		if _, starting := o.starts[id]; !starting && now.Sub(t) >= pending && o.cluster.Pod(id.PodName()) == nil {
			delete(o.activity, id)
		}
	}
	o.mu.Unlock()
	return res
}

// SweepObserver, when the Config's Observer implements it, is told about
// every pod the sweep deleted, by reason: "idle", "pending" or "ended".
type SweepObserver interface {
	SweepDeletion(reason string)
}

// sweepReasons maps sweepDelete's Event reasons to SweepObserver's.
var sweepReasons = map[string]string{"IdleTimeout": "idle", "CleanUpPending": "pending", "CleanUpEnded": "ended"}

func (o *Orchestrator) sweepDelete(ctx context.Context, pod *corev1.Pod, reason, message string) bool {
	err := o.deletePod(ctx, pod, reason, message)
	if err != nil && !apierrors.IsConflict(err) {
		o.log.Error("background delete failed", "pod", pod.Name, "reason", reason, "err", err)
		return false
	}
	if so, ok := o.observer.(SweepObserver); ok && err == nil {
		so.SweepDeletion(sweepReasons[reason])
	}
	return err == nil
}

func (o *Orchestrator) starting(id project.ID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, ok := o.starts[id]
	return ok
}

// idleTimeout is the effective quota's idle timeout recorded on the pod, or
// the template default for pods without a readable record.
func (o *Orchestrator) idleTimeout(pod *corev1.Pod) time.Duration {
	if req, err := podspec.RecordedRequest(pod); err == nil {
		return seconds(req.Quota.IdleTimeoutSeconds)
	}
	return seconds(o.Template().Resources.Default.IdleTimeoutSeconds)
}

// lastActivity is the latest of: the last Touch or Start, the pod's
// creation, and this orchestrator's start (activity is kept in memory, so
// after a restart every project gets a full idle period).
func (o *Orchestrator) lastActivity(id project.ID, pod *corev1.Pod) time.Time {
	last := o.born
	if c := pod.CreationTimestamp.Time; c.After(last) {
		last = c
	}
	o.mu.Lock()
	if t, ok := o.activity[id]; ok && t.After(last) {
		last = t
	}
	o.mu.Unlock()
	return last
}

// endedAt estimates when a terminal pod ended from its latest condition
// transition (or its creation).
func endedAt(pod *corev1.Pod) time.Time {
	t := pod.CreationTimestamp.Time
	for _, c := range pod.Status.Conditions {
		if c.LastTransitionTime.After(t) {
			t = c.LastTransitionTime.Time
		}
	}
	return t
}

// StateCounts returns the number of projects per state and the number of
// stale pods, from the cache (for metrics).
func (o *Orchestrator) StateCounts() (map[state.State]int, int) {
	counts := map[state.State]int{state.Starting: 0, state.Running: 0, state.Stopping: 0, state.Opened: 0}
	stale := 0
	for _, ps := range o.list() {
		counts[ps.State]++
		if ps.StaleSpec {
			stale++
		}
	}
	return counts, stale
}
