#!/usr/bin/env bash
# Builds the images of the offline kind tier from .cache/kind/bin (build.sh)
# and the Debian rootfs image (rootfs.sh):
#   - the control-plane and addon images kubeadm expects, tagged exactly as
#     `kubeadm config images list` prints them;
#   - the kube-router image (NetworkPolicy enforcement);
#   - the node image: kind's base files from the kind module + our binaries,
#     with the images above imported into its containerd.
source "$(dirname "$0")/lib.sh"
ensure_dockerd
B=$KIND_BIN
# The kind module pinned in the root go.mod (the test tooling creates clusters with its library).
KIND_MOD=$(cd "$REPO" && go mod download sigs.k8s.io/kind && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)
[ -d "$KIND_MOD/images/base/files" ] || die "kind module has no images/base/files ($KIND_MOD)"
ROOTFS_IMAGE=cocalc.local/debian-rootfs:latest
docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1 || die "no $ROOTFS_IMAGE: run ci/kind/rootfs.sh"
for f in kubeadm kubelet kubectl kube-proxy containerd ctr containerd-shim-runc-v2 runc crictl coredns kube-router pause; do
  [ -x "$B/$f" ] || die "missing $B/$f: run ci/kind/build.sh"
done
KUBE_CLUSTER=$REPO/bin/kube-cluster
[ -x "$KUBE_CLUSTER" ] || die "missing $KUBE_CLUSTER: run make kube-bin"

work=$(mktemp -d "$CACHE/images.XXXX")
trap 'rm -rf "$work"' EXIT

# build NAME CONTEXT: docker build of a prepared context directory.
build() {
  docker build -q -t "$1" "$2" >/dev/null || die "docker build $1"
  log "image $1"
}

# kubeadm's image list for this version, from the kubeadm we built.
mapfile -t KUBEADM_IMAGES < <("$B/kubeadm" config images list --kubernetes-version "$KUBE_VERSION" 2>/dev/null)
[ ${#KUBEADM_IMAGES[@]} -ge 6 ] || die "kubeadm config images list failed"
img_of() { printf '%s\n' "${KUBEADM_IMAGES[@]}" | grep -E "/$1:" | head -1; }

# scratch_image NAME BINARY_PATH_IN_IMAGE SOURCE: a static binary alone.
scratch_image() {
  local name=$1 path=$2 src=$3 d
  d=$(mktemp -d "$work/ctx.XXXX")
  cp "$src" "$d/bin"
  cat > "$d/Dockerfile" <<DOCKERFILE
FROM scratch
ENV PATH=/usr/local/bin:/usr/bin:/bin
COPY bin $path
ENTRYPOINT ["$path"]
DOCKERFILE
  build "$name" "$d"
}

# The control plane and etcd are the multi-call bin/kube-cluster, which
# picks the component from the name it runs as (kubeadm's manifests run
# `kube-apiserver ...`, `etcd ...`).
for c in kube-apiserver kube-controller-manager kube-scheduler etcd; do
  scratch_image "$(img_of "$c")" "/usr/local/bin/$c" "$KUBE_CLUSTER"
done
scratch_image "$(img_of coredns)" /coredns "$B/coredns"
scratch_image "$(img_of pause)" /pause "$B/pause"
PAUSE_IMAGE=$(img_of pause)

# Images that need a userland (iptables, ipset, conntrack).
userland_image() {
  local name=$1 bin=$2 d
  d=$(mktemp -d "$work/ctx.XXXX")
  cp "$B/$bin" "$d/$bin"
  cat > "$d/Dockerfile" <<DOCKERFILE
FROM $ROOTFS_IMAGE
COPY $bin /usr/local/bin/$bin
RUN chmod 0755 /usr/local/bin/$bin
ENTRYPOINT ["/usr/local/bin/$bin"]
DOCKERFILE
  build "$name" "$d"
}
userland_image "$(img_of kube-proxy)" kube-proxy
KUBE_ROUTER_IMAGE=cocalc.local/kube-router:v2.1.0
userland_image "$KUBE_ROUTER_IMAGE" kube-router

# Base image: kind's images/base/Dockerfile steps on our rootfs (docker
# 20.10 has no BuildKit by default: no COPY --chmod, modes fixed by RUN).
d=$work/base
mkdir -p "$d/bin" "$d/cni"
cp -r "$KIND_MOD/images/base/files" "$d/files"
chmod -R u+w "$d/files"
sed -i "s|sandbox_image = .*|sandbox_image = \"$PAUSE_IMAGE\"|" "$d/files/etc/containerd/config.toml"
for f in containerd ctr containerd-shim-runc-v2 crictl runc; do cp "$B/$f" "$d/bin/"; done
cp "$B"/cni/* "$d/cni/"
cp "$REPO/ci/kind/node-entrypoint.sh" "$d/node-entrypoint"
cp "$REPO/ci/kind/cni.conflist" "$d/10-cocalc.conflist"
cat > "$d/Dockerfile" <<DOCKERFILE
FROM $ROOTFS_IMAGE
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
COPY bin/containerd bin/ctr bin/containerd-shim-runc-v2 bin/crictl /usr/local/bin/
COPY bin/runc /usr/local/sbin/runc
COPY cni/ /opt/cni/bin/
COPY node-entrypoint /usr/local/bin/node-entrypoint
COPY 10-cocalc.conflist /etc/cni/net.d/10-cocalc.conflist
RUN chmod 0755 /usr/local/bin/* /usr/local/sbin/runc /opt/cni/bin/* /kind /kind/bin /kind/bin/* \
 && find /etc/systemd /etc/containerd /etc/default /etc/sysctl.d /etc/crictl.yaml /etc/cni -type f -exec chmod 0644 {} + \
 && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
      /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
      /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
 && ln -sf /usr/lib/systemd/systemd /sbin/init \
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
 && systemctl mask systemd-binfmt.service \
 && mkdir -p /etc/kubernetes/manifests \
 && ctr oci spec \
    | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
    | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/node-entrypoint", "/sbin/init"]
DOCKERFILE
BASE_IMAGE=cocalc.local/kind-base:$KUBE_VERSION
build "$BASE_IMAGE" "$d"

# Node image: the base plus the kubelet/kubeadm/kubectl and every image
# above imported into the node's containerd, as kind's node-image builder
# does (kind build node-image itself would fetch images from registries).
log "assembling $NODE_IMAGE"
tars=$work/tars
mkdir -p "$tars"
IMAGES=("${KUBEADM_IMAGES[@]}" "$KUBE_ROUTER_IMAGE")
for i in "${!IMAGES[@]}"; do docker save -o "$tars/$i.tar" "${IMAGES[$i]}"; done
cid=$(docker run -d --entrypoint=sleep "$BASE_IMAGE" infinity)
trap 'docker rm -f "$cid" >/dev/null 2>&1; rm -rf "$work"' EXIT
for f in kubeadm kubelet kubectl; do docker cp "$B/$f" "$cid:/usr/bin/$f"; done
docker exec "$cid" chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
docker exec "$cid" sh -c "echo $KUBE_VERSION > /kind/version"
docker exec -d "$cid" containerd
for _ in $(seq 1 50); do docker exec "$cid" ctr version >/dev/null 2>&1 && break; sleep 0.2; done
for t in "$tars"/*.tar; do
  docker exec -i "$cid" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned \
    --all-platforms --no-unpack --digests - < "$t" >/dev/null || die "import $t into the node's containerd"
done
docker exec "$cid" pkill containerd || true
sleep 1
docker commit --change 'ENTRYPOINT ["/usr/local/bin/node-entrypoint", "/sbin/init"]' --change 'CMD []' "$cid" "$NODE_IMAGE" >/dev/null
log "node image $NODE_IMAGE ready"
echo "$NODE_IMAGE"
