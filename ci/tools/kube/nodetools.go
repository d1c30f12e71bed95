//go:build nodetools

// The kind tier builds kubelet, kubeadm, kube-proxy and kubectl from this
// module too (ci/kind/build.sh → build.sh). Their main packages cannot be
// imported; importing what they are made of keeps their dependencies in
// go.sum, so those builds work offline from this go.mod. Never compiled
// into kube-cluster (build tag).
package main

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kubeadm/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
