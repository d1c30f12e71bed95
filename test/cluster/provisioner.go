package cluster

import (
	"context"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// annProvisionedBy is the annotation the PV controller reads to hand the
// deletion of a released volume to its external provisioner.
const annProvisionedBy = "pv.kubernetes.io/provisioned-by"

// runProvisioner is a minimal dynamic provisioner for the api tier: for
// each Pending claim of StorageClassName it creates a hostPath volume
// pre-bound to the claim (the controller-manager's PV controller completes
// the binding), and deletes released volumes it made. No container ever
// mounts them on this tier; they exist so charts with PVCs install with
// --wait. It runs until ctx ends.
func runProvisioner(ctx context.Context, client kubernetes.Interface, root string, logf func(string, ...any)) {
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	volumes := factory.Core().V1().PersistentVolumes().Informer()

	onClaim := func(obj any) {
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
			if err := provisionFor(ctx, client, root, pvc); err != nil && ctx.Err() == nil {
				logf("provisioner: claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
			}
		}
	}
	onVolume := func(obj any) {
		if pv, ok := obj.(*corev1.PersistentVolume); ok {
			if err := reclaim(ctx, client, root, pv); err != nil && ctx.Err() == nil {
				logf("provisioner: volume %s: %v", pv.Name, err)
			}
		}
	}
	_, _ = claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onClaim,
		UpdateFunc: func(_, obj any) { onClaim(obj) },
	})
	_, _ = volumes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onVolume,
		UpdateFunc: func(_, obj any) { onVolume(obj) },
	})
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

// volumeName is the PV name for a claim, stable so retries are idempotent.
func volumeName(pvc *corev1.PersistentVolumeClaim) string { return "pvc-" + string(pvc.UID) }

// wantsVolume reports whether pvc is ours to provision now.
func wantsVolume(pvc *corev1.PersistentVolumeClaim) bool {
	return pvc.DeletionTimestamp == nil &&
		pvc.Spec.VolumeName == "" &&
		pvc.Status.Phase == corev1.ClaimPending &&
		pvc.Spec.StorageClassName != nil && *pvc.Spec.StorageClassName == StorageClassName
}

// volumeFor builds the PersistentVolume that satisfies pvc.
func volumeFor(root string, pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolume {
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	hostPathType := corev1.HostPathDirectoryOrCreate
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        volumeName(pvc),
			Annotations: map[string]string{annProvisionedBy: provisionerName},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              StorageClassName,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				Kind:       "PersistentVolumeClaim",
				APIVersion: "v1",
				Namespace:  pvc.Namespace,
				Name:       pvc.Name,
				UID:        pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(root, volumeName(pvc)), Type: &hostPathType},
			},
		},
	}
}

func provisionFor(ctx context.Context, client kubernetes.Interface, root string, pvc *corev1.PersistentVolumeClaim) error {
	if !wantsVolume(pvc) {
		return nil
	}
	pv := volumeFor(root, pvc)
	if err := os.MkdirAll(pv.Spec.HostPath.Path, 0o777); err != nil {
		return err
	}
	_, err := client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	return ignoreExists(err)
}

// reclaim deletes a released volume this provisioner created.
func reclaim(ctx context.Context, client kubernetes.Interface, root string, pv *corev1.PersistentVolume) error {
	if pv.Annotations[annProvisionedBy] != provisionerName ||
		pv.Status.Phase != corev1.VolumeReleased ||
		pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		pv.DeletionTimestamp != nil {
		return nil
	}
	if pv.Spec.HostPath != nil && filepath.Dir(pv.Spec.HostPath.Path) == root {
		if err := os.RemoveAll(pv.Spec.HostPath.Path); err != nil {
			return err
		}
	}
	err := client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
