#!/usr/bin/env bash
# Debian root filesystem for the kind node and for images that need a
# userland (kube-proxy, kube-router): debootstrap, then `docker import`.
# Cached: rebuilt only when the package list changes.
source "$(dirname "$0")/lib.sh"

# kind's base image package list (images/base/Dockerfile in the kind
# module) minus NFS/iSCSI clients (no NFS on the hosts we target) plus
# ipset for kube-router's firewall.
PACKAGES=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps,ipset
key=$(echo "$SUITE $MIRROR $PACKAGES" | sha256sum | cut -c1-12)
tar=$CACHE/rootfs-$SUITE-$key.tar
image=cocalc.local/debian-rootfs:$SUITE-$key

ensure_dockerd
if ! docker image inspect "$image" >/dev/null 2>&1; then
  if [ ! -s "$tar" ]; then
    command -v debootstrap >/dev/null || die "debootstrap missing: run make deps-kind (ci/install-deps.sh kind)"
    dir=$(mktemp -d "$CACHE/rootfs.XXXX")
    [ -n "$MIRROR" ] || die "no Debian archive for $SUITE in this machine's apt sources: set COCALC_KIND_MIRROR"
    log "debootstrap $SUITE ($MIRROR) into $dir (≈5 min)"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log $CACHE/debootstrap.log)"; }
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*
    tar -C "$dir" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$dir"
  fi
  log "docker import $tar as $image"
  docker import "$tar" "$image" >/dev/null
fi
docker tag "$image" cocalc.local/debian-rootfs:latest
echo "$image"
