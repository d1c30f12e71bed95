package cluster

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

type kubernetesClient = kubernetes.Interface

// kwokNodeAnnotation marks nodes kwok simulates (its --manage-nodes-with-
// annotation-selector); nodes without it are left alone.
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

// Labels of the simulated nodes, so tests can exercise node selection and
// topology spreading.
const (
	LabelNodeIndex = "cocalc.test/node-index"
	LabelZone      = "topology.kubernetes.io/zone"
	LabelRegion    = "topology.kubernetes.io/region"
)

// Zones the simulated nodes are spread over, round robin.
var Zones = []string{"zone-a", "zone-b", "zone-c"}

// FakeNodeName is the name of simulated node i.
func FakeNodeName(i int) string { return fmt.Sprintf("kwok-node-%d", i) }

// fakeNode describes simulated node i: schedulable, no taints, distinct
// zone and index labels, and capacity for a few hundred project pods.
func fakeNode(i int) *corev1.Node {
	name := FakeNodeName(i)
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("500"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
				LabelNodeIndex:           fmt.Sprint(i),
				LabelZone:                Zones[i%len(Zones)],
				LabelRegion:              "test-region",
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			// A documentation-range address nobody answers on: the API
			// server never reaches a kwok "kubelet".
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("192.0.2.%d", 10+i)},
				{Type: corev1.NodeHostName, Address: name},
			},
		},
	}
}

// createFakeNodes registers n simulated nodes (idempotent).
func createFakeNodes(ctx context.Context, client kubernetes.Interface, n int) error {
	for i := range n {
		if _, err := client.CoreV1().Nodes().Create(ctx, fakeNode(i), metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("create node %s: %w", FakeNodeName(i), err)
		}
	}
	return nil
}

// StorageClassName is the default StorageClass of the api tier, served by
// the in-process provisioner.
const StorageClassName = "standard"

// provisionerName is the provisioner the api tier's StorageClass names.
const provisionerName = "cocalc.test/hostpath"

func createStorageClass(ctx context.Context, client kubernetes.Interface) error {
	immediate := storagev1.VolumeBindingImmediate
	del := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       provisionerName,
		ReclaimPolicy:     &del,
		VolumeBindingMode: &immediate,
	}
	if _, err := client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return fmt.Errorf("create StorageClass %s: %w", StorageClassName, err)
	}
	return nil
}
