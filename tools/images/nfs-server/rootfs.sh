#!/usr/bin/env bash
# Root filesystem of the nfs-server image, from Debian packages only:
# debootstrap --variant=minbase with the packages of this directory's
# Dockerfile, trimmed as its RUN step trims. Prints the directory. Cached
# under ~/.cache/cocalc-kubernetes/images (COCALC_IMAGES_CACHE; rebuilt when the suite, mirror or package list
# change); `make images` turns it into a layer with bin/imagebuild.
#
# The archive is the one this machine's apt uses (apt_mirror of
# ci/kind/lib.sh, or COCALC_KIND_MIRROR), as for the kind node's rootfs.
# Only the build machine's architecture: a foreign-architecture debootstrap
# runs the packages' maintainer scripts under qemu-user via binfmt_misc,
# which this build does not require.
set -euo pipefail
source "$(dirname "$0")/../../../ci/kind/lib.sh"
# Outside the work tree by default, like Go's build cache: CI runs in a fresh
# clone, and a cold debootstrap costs 5-25 min of its budget.
CACHE=${COCALC_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocalc-kubernetes/images}
mkdir -p "$CACHE"

PACKAGES=nfs-ganesha,nfs-ganesha-vfs
key=$(echo "$SUITE $MIRROR $PACKAGES" | sha256sum | cut -c1-12)
dir=$CACHE/nfs-server-rootfs-$SUITE-$key

# fixups run on every call (idempotent), so changing them needs no new
# debootstrap. /etc/mtab: ganesha's VFS backend finds the filesystem of
# each export in it (resolve_posix_filesystem); debootstrap's minbase has
# none, and without it no export loads.
fixups() {
  ln -sfn ../proc/self/mounts "$1/etc/mtab"
}

if [ -d "$dir" ]; then
  fixups "$dir"
  echo "$dir"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
[ -n "$MIRROR" ] || die "no Debian archive for $SUITE in this machine's apt sources: set COCALC_KIND_MIRROR"
tmp=$(mktemp -d "$CACHE/nfs-server-rootfs.XXXX")
log "debootstrap $SUITE ($MIRROR) + $PACKAGES into $tmp"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/nfs-server-debootstrap.log" 2>&1 \
  || { tail -30 "$CACHE/nfs-server-debootstrap.log" >&2; die "debootstrap failed (log $CACHE/nfs-server-debootstrap.log)"; }
chroot "$tmp" /usr/bin/ganesha.nfsd -v >&2
chroot "$tmp" apt-get clean
# As the Dockerfile: no apt lists, no sample configuration (the chart mounts
# ganesha.conf); plus what only a build leaves: logs, caches, man pages.
rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/* "$tmp"/etc/ganesha/* \
  "$tmp"/var/log/* "$tmp"/var/cache/debconf/*-old "$tmp"/usr/share/man "$tmp"/usr/share/info \
  "$tmp"/var/cache/ldconfig/aux-cache
# debootstrap leaves device nodes and the build's resolv.conf/hostname: the
# runtime provides /dev and these files.
rm -rf "$tmp"/dev/* "$tmp"/etc/resolv.conf "$tmp"/etc/hostname
fixups "$tmp"
mv "$tmp" "$dir"
echo "$dir"
