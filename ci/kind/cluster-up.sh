#!/usr/bin/env bash
# Creates the kind tier's cluster from the offline node image, building
# whatever is missing first (binaries, rootfs, images; all cached), installs
# kube-router for NetworkPolicy enforcement, and records the cluster in
# .cache/cluster/kind/state.json for `make test-kind` / COCALC_TEST_TIER=kind.
#
# The fixes for restricted VMs (docker shim, oom_score_adj, cgroup v1
# kubelet) are applied only when a probe shows they are needed.
source "$(dirname "$0")/lib.sh"
STATE=$REPO/.cache/cluster/kind
KUBECONFIG_OUT=$STATE/kubeconfig
mkdir -p "$STATE"
t0=$SECONDS

ensure_dockerd
export PATH=$KIND_BIN:$PATH
if [ "${COCALC_KIND_REBUILD:-0}" = 1 ] || ! docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  "$REPO/ci/kind/rootfs.sh" >/dev/null
  "$REPO/ci/kind/build.sh"
  [ -x "$REPO/bin/kube-cluster" ] || make -C "$REPO" kube-bin
  "$REPO/ci/kind/images.sh" >/dev/null
fi
[ -x "$KIND_BIN/kind" ] || "$REPO/ci/kind/build.sh"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  die "kind cluster $CLUSTER_NAME already exists: make down first"
fi

# 1. Can docker run privileged containers here?
if ! out=$(docker run --rm --privileged --entrypoint /bin/true cocalc.local/debian-rootfs:latest 2>&1); then
  if grep -q "apply caps" <<<"$out"; then
    log "docker cannot grant --privileged on this host (capability bounding set); using ci/kind/shim/docker"
    export COCALC_REAL_DOCKER=$(command -v docker)
    export PATH=$REPO/ci/kind/shim:$PATH
  else
    die "docker run --privileged failed: $out"
  fi
fi

# 2. Without CAP_SYS_RESOURCE, runc cannot lower oom_score_adj in sandboxes.
capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
patches=""
if (( (16#$capbnd >> 24 & 1) == 0 )); then
  log "no CAP_SYS_RESOURCE in the bounding set: containerd restrict_oom_score_adj = true"
  patches='containerdConfigPatches:
- |-
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true'
fi

# 3. kubelet >= 1.35 refuses cgroup v1 hosts unless told otherwise.
kubeadm_patches=""
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  log "cgroup v1 host: kubelet failCgroupV1: false"
  kubeadm_patches='kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false'
fi

cat > "$STATE/kind-config.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # A static CNI config is baked into the node image (single node);
  # kube-router enforces NetworkPolicies.
  disableDefaultCNI: true
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
nodes:
- role: control-plane
$patches
$kubeadm_patches
YAML

log "kind create cluster $CLUSTER_NAME ($NODE_IMAGE)"
kind create cluster --name "$CLUSTER_NAME" --image "$NODE_IMAGE" --config "$STATE/kind-config.yaml" \
  --kubeconfig "$KUBECONFIG_OUT" --wait 3m
kubectl --kubeconfig "$KUBECONFIG_OUT" apply -f "$REPO/ci/kind/kube-router.yaml" >/dev/null
kubectl --kubeconfig "$KUBECONFIG_OUT" -n kube-system rollout status daemonset/kube-router --timeout=3m
kubectl --kubeconfig "$KUBECONFIG_OUT" -n kube-system rollout status deployment/coredns --timeout=3m

# The smoke tests' image (test/cluster/netcheck), built here and loaded
# into the node: nothing is pulled.
nc=$(mktemp -d "$CACHE/netcheck.XXXX")
(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -o "$nc/netcheck" ./test/cluster/netcheck)
printf 'FROM scratch\nCOPY netcheck /netcheck\nUSER 2001:2001\nENTRYPOINT ["/netcheck"]\n' > "$nc/Dockerfile"
docker build -q -t cocalc.local/netcheck:dev "$nc" >/dev/null
rm -rf "$nc"
kind load docker-image --name "$CLUSTER_NAME" cocalc.local/netcheck:dev

cat > "$STATE/state.json" <<JSON
{
  "tier": "kind",
  "name": "kind-$CLUSTER_NAME",
  "kubeconfig": "$KUBECONFIG_OUT",
  "pid": 0,
  "capabilities": ["real-containers", "network-policy"],
  "startedAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
JSON
log "kind cluster ready in $((SECONDS - t0))s"
echo "export KUBECONFIG=$KUBECONFIG_OUT"
