#!/usr/bin/env bash
# Builds every binary of the offline kind node image into .cache/kind/bin,
# each from its pinned module (ci/tools/kind/<tool>/go.mod, ci/tools/kube).
# Go's build cache makes reruns cheap; cold ≈ 35 min of CPU on 2 cores.
source "$(dirname "$0")/lib.sh"
TOOLS=$REPO/ci/tools/kind
STATIC_TAGS="urfave_cli_no_docs osusergo netgo static_build no_aufs no_zfs no_btrfs no_devmapper"

step() { local name=$1; shift; local t0=$SECONDS; log "build $name"; "$@"; log "built $name in $((SECONDS - t0))s"; }
gob() { local dir=$1; shift; (cd "$TOOLS/$dir" && CGO_ENABLED=0 go build -trimpath "$@"); }

step "kubelet kubeadm kube-proxy kubectl" "$REPO/ci/tools/kube/build.sh" "$KIND_BIN/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
step "containerd ctr" gob containerd -tags "$STATIC_TAGS" \
  -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v2.3.4" -o "$KIND_BIN/" \
  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr
step containerd-shim-runc-v2 gob containerd -tags "$STATIC_TAGS no_grpc" -ldflags "-s -w" -o "$KIND_BIN/" \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
# runc needs cgo for seccomp (libseccomp-dev), linked statically.
step runc bash -c "cd '$TOOLS/runc' && CGO_ENABLED=1 go build -trimpath -tags 'seccomp urfave_cli_no_docs netgo osusergo' \
  -ldflags '-s -w -X main.version=1.4.3 -extldflags -static' -o '$KIND_BIN/runc' github.com/opencontainers/runc"
step crictl gob crictl -ldflags "-s -w" -o "$KIND_BIN/crictl" sigs.k8s.io/cri-tools/cmd/crictl
mkdir -p "$KIND_BIN/cni"
step "CNI plugins" gob cni -ldflags "-s -w" -o "$KIND_BIN/cni/" \
  github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/main/ptp github.com/containernetworking/plugins/plugins/meta/portmap \
  github.com/containernetworking/plugins/plugins/main/bridge
step coredns gob coredns -ldflags "-s -w" -o "$KIND_BIN/coredns" github.com/coredns/coredns
step kube-router gob kube-router -ldflags "-s -w" -o "$KIND_BIN/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
step pause gcc -Os -static -o "$KIND_BIN/pause" "$REPO/ci/kind/pause.c"
