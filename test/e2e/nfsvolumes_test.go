package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// nfsVolumeName is the chart's name for the PersistentVolume pre-bound to a
// mode-nfs claim (cocalc.nfsVolumeName).
func nfsVolumeName(namespace, claim string) string { return namespace + "." + claim }

// deleteNFSVolumesOnSuccess removes the chart's mode-nfs PersistentVolumes of
// these claim namespaces when the test passes: they are cluster-scoped and
// kept by helm (resource-policy), so deleting the namespaces leaves them.
// Retain: nothing is done to the export (and none is mounted on this tier).
func deleteNFSVolumesOnSuccess(t *testing.T, c *cluster.Cluster, namespaces ...string) {
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		ctx := contextWithTimeout(30 * time.Second)
		for _, ns := range namespaces {
			err := c.Client.CoreV1().PersistentVolumes().Delete(ctx, nfsVolumeName(ns, projectsClaimName), metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Logf("delete volume of %s: %v", ns, err)
			}
		}
	})
}

// requireNFSVolumesBound waits until the cluster's PersistentVolume
// controller has bound each namespace's projects claim to the chart's
// pre-bound volume, and checks the binding is exactly that pair.
func requireNFSVolumesBound(t *testing.T, c *cluster.Cluster, namespaces ...string) {
	t.Helper()
	for _, ns := range namespaces {
		var pvc *corev1.PersistentVolumeClaim
		err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, projectsClaimName, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			pvc = got
			return got.Status.Phase == corev1.ClaimBound, nil
		})
		require.NoError(t, err, "claim %s/%s not Bound: %+v", ns, projectsClaimName, pvc)
		name := nfsVolumeName(ns, projectsClaimName)
		require.Equal(t, name, pvc.Spec.VolumeName)
		require.Equal(t, corev1.ReadWriteMany, pvc.Status.AccessModes[0])
		pv, err := c.Client.CoreV1().PersistentVolumes().Get(t.Context(), name, metav1.GetOptions{})
		require.NoError(t, err, "volume %s", name)
		require.Equal(t, corev1.VolumeBound, pv.Status.Phase, "volume %s", name)
		require.NotNil(t, pv.Spec.ClaimRef)
		require.Equal(t, pvc.UID, pv.Spec.ClaimRef.UID, "volume %s is bound to this very claim", name)
		require.Equal(t, corev1.PersistentVolumeReclaimRetain, pv.Spec.PersistentVolumeReclaimPolicy)
		require.NotNil(t, pv.Spec.NFS)
	}
}

// TestArgoCDSyncExternalNFSHasNoDiff syncs mode nfs (a separate projects
// namespace, so two volume + claim pairs) the way ArgoCD does, lets the
// PersistentVolume controller bind the pairs (it writes claimRef's uid and
// binding annotations), and requires ArgoCD's server-side diff to stay
// clean: claimRef merges field by field, so the chart's namespace + name
// and the controller's uid coexist.
func TestArgoCDSyncExternalNFSHasNoDiff(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	ns := newNamespace(t, c, "argocd-nfs", nil)
	projects := newNamespace(t, c, "argocd-nfs-projects", nil)
	deleteNFSVolumesOnSuccess(t, c, ns, projects)
	set := mergeValues(standinValues, map[string]string{
		"storage.mode": "nfs",
		// A documentation address: nothing mounts on simulated nodes, so nothing is contacted.
		"storage.nfs.server": "192.0.2.5",
		"storage.nfs.path":   "/export/cocalc",
		"projects.namespace": projects,
	})
	opts := helmOptions(t, c, ns, set)
	app := newApplier(t, c, ns)

	rendered := map[string]bool{}
	volumes := 0
	for _, u := range renderChart(t, opts) {
		track(u)
		_, err := app.apply(t, u, false)
		require.NoError(t, err, "sync %s", objectKey(u))
		rendered[objectKey(u)] = true
		if u.GetKind() == "PersistentVolume" {
			volumes++
		}
	}
	require.Equal(t, 2, volumes, "one volume for the server's namespace, one for the projects'")
	requireNFSVolumesBound(t, c, ns, projects)
	require.Empty(t, argoDiff(t, app, renderChart(t, opts), rendered), "OutOfSync after the volumes were bound")
}
