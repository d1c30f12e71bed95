package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodClock watches pods independently of every method under test and
// records when each pod was first seen Ready and when it was seen gone.
// The pod's Ready condition carries only a one-second timestamp, so the
// moment this watch sees it is the best available "pod became Ready"
// time; a method's detection delay is its report time minus this.
type PodClock struct {
	mu    sync.Mutex
	ready map[string]time.Time
	gone  map[string]time.Time
	wake  chan struct{}
}

// NewPodClock starts watching every pod carrying the label key (all
// namespaces) and returns once the watch is synced.
func NewPodClock(ctx context.Context, cs kubernetes.Interface, labelKey string) (*PodClock, error) {
	c := &PodClock{ready: map[string]time.Time{}, gone: map[string]time.Time{}, wake: make(chan struct{})}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = labelKey
	}))
	inf := f.Core().V1().Pods().Informer()
	// Only the Ready condition and deletion are read: with tens of
	// thousands of pods whole pods would make this harness the largest
	// process on the machine.
	if err := inf.SetTransform(clockPod); err != nil {
		return nil, fmt.Errorf("pod clock transform: %w", err)
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.seen(obj) },
		UpdateFunc: func(_, obj any) { c.seen(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				c.mark(c.gone, key(p))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("pod clock handler: %w", err)
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("pod clock: cache did not sync: %w", ctx.Err())
	}
	return c, nil
}

// clockPod keeps what the clock reads of a pod.
func clockPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID,
		ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp}}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}

func key(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

func (c *PodClock) seen(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || !podReady(p) {
		return
	}
	c.mark(c.ready, key(p))
}

func (c *PodClock) mark(m map[string]time.Time, k string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := m[k]; !ok {
		m[k] = now
		close(c.wake)
		c.wake = make(chan struct{})
	}
}

// Forget drops what is known about a pod (before its name is reused).
func (c *PodClock) Forget(namespace, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.ready, namespace+"/"+name)
	delete(c.gone, namespace+"/"+name)
}

// Ready waits (up to a grace period, since this watch may see the change
// a little after the method under test) for the time the pod was first
// seen Ready.
func (c *PodClock) Ready(ctx context.Context, namespace, name string) (time.Time, bool) {
	return c.wait(ctx, c.ready, namespace+"/"+name)
}

// Gone is Ready for the pod's deletion.
func (c *PodClock) Gone(ctx context.Context, namespace, name string) (time.Time, bool) {
	return c.wait(ctx, c.gone, namespace+"/"+name)
}

func (c *PodClock) wait(ctx context.Context, m map[string]time.Time, k string) (time.Time, bool) {
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		c.mu.Lock()
		t, ok := m[k]
		wake := c.wake
		c.mu.Unlock()
		if ok {
			return t, true
		}
		select {
		case <-wake:
		case <-timer.C:
			return time.Time{}, false
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}

// podReady reports whether the pod's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
