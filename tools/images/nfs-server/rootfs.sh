#!/usr/bin/env bash
# Root filesystem of the nfs-server image, from Debian packages only:
# debootstrap --variant=minbase with the packages of this directory's
# Dockerfile, trimmed as its RUN step trims. Prints the directory. Cached
# under ~/.cache/cocalc-kubernetes/images (COCALC_IMAGES_CACHE; rebuilt when the suite, mirror or package list
# change); `make images` turns it into a layer with bin/imagebuild.
#
# Sourced (tools/images/backup/rootfs.sh), it only defines debian_rootfs,
# the one debootstrap recipe of every Debian-package image.
#
# The archive is the one this machine's apt uses (apt_mirror of
# ci/kind/lib.sh, or COCALC_KIND_MIRROR), as for the kind node's rootfs.
# Only the build machine's architecture: a foreign-architecture debootstrap
# runs the packages' maintainer scripts under qemu-user via binfmt_misc,
# which this build does not require.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../../ci/kind/lib.sh"
# Outside the work tree by default, like Go's build cache: CI runs in a fresh
# clone, and a cold debootstrap costs 5-25 min of its budget.
CACHE=${COCALC_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cocalc-kubernetes/images}

# debian_rootfs NAME PACKAGES CHECK FIXUPS [TRIM...] prints the cached root
# filesystem of image NAME: debootstrap minbase + PACKAGES (comma-separated),
# CHECK (a sh command line) run in a chroot of it, then trimmed of apt's
# lists and caches, logs, man pages, device nodes, the build's resolv.conf
# and hostname, and the extra TRIM paths (relative to the root, globs
# allowed). FIXUPS (a function taking the root, or "") runs on every call:
# it must be idempotent, and changing it needs no new debootstrap.
debian_rootfs() {
  local name=$1 packages=$2 check=$3 fixups=$4
  shift 4
  mkdir -p "$CACHE"
  local key dir tmp p
  key=$(echo "$SUITE $MIRROR $packages" | sha256sum | cut -c1-12)
  dir=$CACHE/$name-rootfs-$SUITE-$key
  if [ -d "$dir" ]; then
    [ -z "$fixups" ] || "$fixups" "$dir"
    echo "$dir"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
  [ -n "$MIRROR" ] || die "no Debian archive for $SUITE in this machine's apt sources: set COCALC_KIND_MIRROR"
  tmp=$(mktemp -d "$CACHE/$name-rootfs.XXXX")
  log "debootstrap $SUITE ($MIRROR) + $packages into $tmp"
  debootstrap --variant=minbase --include="$packages" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/$name-debootstrap.log" 2>&1 \
    || { tail -30 "$CACHE/$name-debootstrap.log" >&2; die "debootstrap failed (log $CACHE/$name-debootstrap.log)"; }
  chroot "$tmp" /bin/sh -c "$check" >&2
  chroot "$tmp" apt-get clean
  # As the Dockerfiles: no apt lists; plus what only a build leaves: logs,
  # caches, man pages.
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/* \
    "$tmp"/var/log/* "$tmp"/var/cache/debconf/*-old "$tmp"/usr/share/man "$tmp"/usr/share/info \
    "$tmp"/var/cache/ldconfig/aux-cache
  # debootstrap leaves device nodes and the build's resolv.conf/hostname: the
  # runtime provides /dev and these files.
  rm -rf "$tmp"/dev/* "$tmp"/etc/resolv.conf "$tmp"/etc/hostname
  for p in "$@"; do
    # shellcheck disable=SC2086 # a glob relative to the root
    rm -rf "$tmp"/$p
  done
  [ -z "$fixups" ] || "$fixups" "$tmp"
  mv "$tmp" "$dir"
  echo "$dir"
}

# nfs_server_fixups: /etc/mtab: ganesha's VFS backend finds the filesystem
# of each export in it (resolve_posix_filesystem); debootstrap's minbase has
# none, and without it no export loads.
nfs_server_fixups() {
  ln -sfn ../proc/self/mounts "$1/etc/mtab"
}

# Run, not sourced: the nfs-server image. No sample configuration (the chart
# mounts ganesha.conf).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  debian_rootfs nfs-server nfs-ganesha,nfs-ganesha-vfs "/usr/bin/ganesha.nfsd -v" nfs_server_fixups 'etc/ganesha/*'
fi
