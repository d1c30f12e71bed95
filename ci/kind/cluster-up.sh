#!/usr/bin/env bash
# Builds whatever the kind tier is missing (binaries, rootfs, images; all
# cached under .cache/kind), then creates the cluster with
# `bin/test-cluster up -tier=kind` (test/cluster: the kind Go library,
# kube-router for NetworkPolicy, the stand-in and orchestrator images built
# and loaded, state in .cache/cluster/kind for COCALC_TEST_TIER=kind).
#
# The fixes for restricted VMs (docker shim, oom_score_adj, cgroup v1
# kubelet) are applied by test/cluster only when a probe shows they are needed.
source "$(dirname "$0")/lib.sh"

# COCALC_KIND_NODE_IMAGE=kindest/node:<version> uses an upstream node image
# where a registry is reachable; kube-router's image and the probe image
# are still built here (the test tooling loads kube-router into the node).
ensure_dockerd
NODE=${COCALC_KIND_NODE_IMAGE:-$NODE_IMAGE}
need_build=0
[ "${COCALC_KIND_REBUILD:-0}" = 1 ] && need_build=1
[ "$NODE" = "$NODE_IMAGE" ] && ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 && need_build=1
docker image inspect cocalc.local/kube-router:v2.1.0 >/dev/null 2>&1 || need_build=1

if [ "$need_build" = 1 ]; then
  "$REPO/ci/kind/rootfs.sh" >/dev/null
  "$REPO/ci/kind/build.sh"
  [ -x "$REPO/bin/kube-cluster" ] || make -C "$REPO" kube-bin
  "$REPO/ci/kind/images.sh" >/dev/null
fi
# NODES=n > 1 (make cluster-kind NODES=3): a control plane and n-1 workers,
# the kind cluster cocalc-multi (state .cache/cluster/kind-cocalc-multi)
# beside the one-node "cocalc"; see test/cluster/kindmulti.go.
multi=()
if [ "${NODES:-1}" -gt 1 ]; then multi=(-nodes="$NODES" -name=cocalc-multi); fi
exec "$REPO/bin/test-cluster" up -tier=kind -node-image="$NODE" "${multi[@]}"
