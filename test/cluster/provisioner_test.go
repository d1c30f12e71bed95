package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func claim(class *string, phase corev1.PersistentVolumeClaimPhase, volume string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "ns", UID: "1234"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: class,
			VolumeName:       volume,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("5Gi"),
			}},
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: phase},
	}
}

func TestWantsVolume(t *testing.T) {
	ours, other := StorageClassName, "fast-ssd"
	tests := []struct {
		name string
		pvc  *corev1.PersistentVolumeClaim
		want bool
	}{
		{"pending claim of our class", claim(&ours, corev1.ClaimPending, ""), true},
		{"other class", claim(&other, corev1.ClaimPending, ""), false},
		{"no class (static binding)", claim(nil, corev1.ClaimPending, ""), false},
		{"already bound", claim(&ours, corev1.ClaimBound, "pv-1"), false},
		{"pre-bound to a volume", claim(&ours, corev1.ClaimPending, "pv-1"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, wantsVolume(tc.pvc))
		})
	}
}

func TestVolumeFor(t *testing.T) {
	ours := StorageClassName
	pv := volumeFor("/vols", claim(&ours, corev1.ClaimPending, ""))
	require.Equal(t, "pvc-1234", pv.Name)
	require.Equal(t, "/vols/pvc-1234", pv.Spec.HostPath.Path)
	require.Equal(t, resource.MustParse("5Gi"), pv.Spec.Capacity[corev1.ResourceStorage])
	require.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, pv.Spec.AccessModes)
	require.Equal(t, StorageClassName, pv.Spec.StorageClassName)
	require.Equal(t, corev1.PersistentVolumeReclaimDelete, pv.Spec.PersistentVolumeReclaimPolicy)
	require.Equal(t, provisionerName, pv.Annotations[annProvisionedBy])
	require.Equal(t, "ns", pv.Spec.ClaimRef.Namespace)
	require.Equal(t, "data", pv.Spec.ClaimRef.Name)
	require.EqualValues(t, "1234", pv.Spec.ClaimRef.UID)
}

func TestFakeNodesSpreadOverZones(t *testing.T) {
	zones := map[string]int{}
	for i := range 6 {
		n := fakeNode(i)
		require.Equal(t, FakeNodeName(i), n.Name)
		require.Equal(t, "fake", n.Annotations[kwokNodeAnnotation])
		zones[n.Labels[LabelZone]]++
	}
	require.Equal(t, map[string]int{"zone-a": 2, "zone-b": 2, "zone-c": 2}, zones)
}
