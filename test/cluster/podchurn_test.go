package cluster_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// TestGracefulDeleteNeverReachesTheNextPodOfTheName: a pod deleted with a
// grace period and gone frees its name, and a new pod of that name lives.
// A real kubelet ends a graceful deletion with a UID precondition, so it
// never deletes a newer pod of the same name. kwok deletes by name only,
// and the pod-delete stage used to play twice per graceful deletion (for
// the update that set deletionTimestamp, and again for the update kwok's
// own grace-0 delete makes): when kwok was busy, the second delete came
// after the pod was gone and removed the next pod of the name. That was
// the orchestrator's churn errors in test/bench ("project was stopped
// while starting" right after a stop had returned; 66 and 114 in the
// bench's churn rows).
//
// Several names churn at once, each stopped as soon as it is Ready and
// re-created as soon as it is gone, as the bench's churn does: kwok's
// late delete needs a busy kwok to lose its race with the pod's removal.
func TestGracefulDeleteNeverReachesTheNextPodOfTheName(t *testing.T) {
	c := cluster.Get(t)
	if c.Tier != cluster.TierAPI {
		t.Skipf("checks the api tier's simulated kubelet (kwok stages); the %s tier runs real kubelets", c.Tier)
	}
	ns := namespace(t, c.Client, nil)
	// The shared client's default rate limit (5/s) would pace the churn
	// below what makes kwok busy.
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 1000, 2000
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	const names, rounds = 10, 30
	var lost atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := churnOneName(t, client, ns, fmt.Sprintf("churn-%d", i), rounds, &lost); err != nil {
				first.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	wg.Wait()
	if s, ok := first.Load().(string); ok {
		t.Fatal(s)
	}
	require.Zero(t, lost.Load(), "of %d new pods, %d were deleted by nobody here (a late delete of the previous pod of the name)", names*rounds, lost.Load())
}

// churnOneName creates, waits for Ready, deletes (grace 10, as the
// chart's default) and waits until gone, rounds times; a new pod deleted
// by someone else is counted in lost and replaced.
func churnOneName(t *testing.T, client kubernetes.Interface, ns, name string, rounds int, lost *atomic.Int64) error {
	pods := client.CoreV1().Pods(ns)
	w, err := pods.Watch(t.Context(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
	})
	if err != nil {
		return err
	}
	defer w.Stop()
	// next returns the next event of the pod with uid.
	next := func(uid types.UID) (watch.EventType, *corev1.Pod, error) {
		timeout := time.After(time.Minute)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					return "", nil, fmt.Errorf("%s: watch ended", name)
				}
				if p, isPod := ev.Object.(*corev1.Pod); isPod && p.UID == uid {
					return ev.Type, p, nil
				}
			case <-timeout:
				return "", nil, fmt.Errorf("%s: no event of pod uid %s in a minute", name, uid)
			}
		}
	}
	grace := int64(10)
	for range rounds {
		pod := restrictedPod(name, corev1.RestartPolicyAlways)
		pod.Labels = map[string]string{"app.kubernetes.io/component": "project"}
		created, err := pods.Create(t.Context(), pod, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		deleted := false
		for {
			typ, p, err := next(created.UID)
			if err != nil {
				return err
			}
			if typ == watch.Deleted || p.DeletionTimestamp != nil {
				deleted = true
				break
			}
			if podReady(p) {
				break
			}
		}
		if !deleted {
			err := pods.Delete(t.Context(), name, metav1.DeleteOptions{
				GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &created.UID},
			})
			switch {
			case apierrors.IsNotFound(err): // gone between Ready and here
				lost.Add(1)
			case err != nil:
				return fmt.Errorf("%s: delete: %w", name, err)
			}
		} else {
			lost.Add(1)
		}
		for {
			typ, _, err := next(created.UID)
			if err != nil {
				return err
			}
			if typ == watch.Deleted {
				break
			}
		}
	}
	return nil
}
