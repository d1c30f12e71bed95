package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// ColdStart is a fresh orchestrator process (cocalc-k8s serve) started
// while Pods project pods exist: how long until it is ready, and its
// memory while it fills its cache and afterwards.
type ColdStart struct {
	// Orchestrator is the binary's file name.
	Orchestrator string
	Pods         int
	// Filled is how many pods the harness created for this row (beyond
	// the ones the bursts started) and Fill how long creating them, making
	// them Running and Ready (FillPods) and seeing that on a watch took.
	Filled int
	Fill   time.Duration
	// ReadyAfter is exec to /readyz OK (pod cache synced); SyncPeakRSS
	// the highest RSS until then (sampled every 10 ms).
	ReadyAfter  time.Duration
	SyncPeakRSS int64
	// RSS and PeakRSS over an idle window after ready; Anon the
	// anonymous part of RSS (ProcSample).
	RSS, PeakRSS, Anon int64
	// CPU is the process's CPU time from exec to the end of the window.
	CPU time.Duration
	// Lists and WatchLists are the API server's count of pod LISTs and
	// of completed pod watch-list syncs from exec to ready: client-go's
	// reflector streams the initial state over a watch (WatchList) when
	// the API server offers it, and lists otherwise.
	Lists, WatchLists float64
	// Heap is the pod cache's live heap (ProfilePodCache) at this count.
	Heap PodCacheHeap
}

// FillPods creates n more project pods in tpl's namespace, built like the
// orchestrator builds them (podspec.Build from the same template), bound
// round robin to the held nodes (no scheduler, no kubelet, no kwok: these
// pods only have to exist and be Running for a cache to hold), writes each
// one's status Running and Ready as a kubelet would, and waits until the
// clock saw every one Ready. It is how the bench reaches pod counts a
// burst of starts at the orchestrator's client QPS, or kwok's pace, would
// take many minutes to reach.
func FillPods(ctx context.Context, cs kubernetes.Interface, clock *PodClock, tpl *podtemplate.Template, nfsIP string, held *HeldNodes, n int) error {
	if n <= 0 {
		return nil
	}
	if held == nil || len(held.Names) == 0 {
		return fmt.Errorf("fill pods: no held nodes")
	}
	names := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	pods := cs.CoreV1().Pods(tpl.Namespace)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				pod, err := podspec.Build(tpl, podspec.Input{Project: NewID(), NFSServer: nfsIP})
				if err == nil {
					pod.Spec.NodeName = held.Names[i%len(held.Names)]
					pod, err = pods.Create(ctx, pod, metav1.CreateOptions{})
				}
				if err == nil {
					pod.Status = runningStatus(pod, heldPodIP(i), "198.51.100.1", metav1.Now())
					_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("fill pods: %w", err)
					}
					mu.Unlock()
					return
				}
				names[i] = pod.Name
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	// The clock's watch sees the status writes just made; allow for a
	// loaded API server.
	limit := max(2*time.Minute, time.Duration(n)*10*time.Millisecond)
	deadline := time.Now().Add(limit)
	ready := 0
	for _, name := range names {
		for {
			if _, ok := clock.Ready(ctx, tpl.Namespace, name); ok {
				ready++
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("fill pods: %w", ctx.Err())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("fill pods: the clock saw %d of %d created pods Ready after %s", ready, n, limit)
			}
		}
	}
	return nil
}

// CountPods counts the pods of namespace ns (paged, so a large count is
// cheap for the API server).
func CountPods(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	n := 0
	opts := metav1.ListOptions{Limit: 500}
	for {
		l, err := cs.CoreV1().Pods(ns).List(ctx, opts)
		if err != nil {
			return 0, fmt.Errorf("count pods: %w", err)
		}
		for i := range l.Items {
			if l.Items[i].DeletionTimestamp == nil && l.Items[i].Status.Phase == corev1.PodRunning {
				n++
			}
		}
		if l.Continue == "" {
			return n, nil
		}
		opts.Continue = l.Continue
	}
}
