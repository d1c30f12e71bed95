#!/usr/bin/env bash
# Installs the Debian packages the build and the test suites need.
# Idempotent: does nothing when every package is already installed.
#
#   ci/install-deps.sh        what every developer needs: the render, unit and
#                             api-tier suites and `make images` (make deps)
#   ci/install-deps.sh kind   only what the kind tier adds: a docker daemon and
#                             the node image's build (make deps-kind, run by
#                             make cluster-kind)
set -euo pipefail

dev=(
  git make
  postgresql  # test/pg: throwaway servers for the hub database front-end tests
  restic  # test/backup: the chart's backup script (files/backup.sh) and the restore steps of docs/backup.md
  # test/nfsserver: the chart's NFS server (NFS-Ganesha, the packages of
  # tools/images/nfs-server) run as a process on loopback, and Debian's
  # userspace NFS client (nfs-ls, nfs-cp, nfs-cat) that talks to it.
  nfs-ganesha nfs-ganesha-vfs libnfs-utils
  # make image-nfs-server and test/images: the nfs-server image's Debian root
  # filesystem (tools/images/nfs-server/rootfs.sh).
  debootstrap
  # test/argocd: ArgoCD's cache (its controller and repo server need a Redis;
  # the test starts its own on loopback).
  redis-server
)
kind=(
  # kind tier (ci/kind): a docker daemon for the node containers, a Debian
  # root filesystem for the node and kube-proxy/kube-router images, runc's
  # seccomp support, gcc for the static pause binary and runc (cgo), jq to
  # derive containerd's base OCI spec, iptables/ipset for the host side.
  docker.io debootstrap libseccomp-dev gcc libc6-dev jq iptables ipset
)

case "${1:-dev}" in
  dev) packages=("${dev[@]}") ;;
  kind) packages=("${kind[@]}") ;;
  *) echo "usage: $0 [dev|kind]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The nfs-ganesha package enables its system service (an NFS server on every
# interface) on systemd hosts; the tests start their own on loopback. Stop
# the service only when this script installed the package.
if [[ " ${missing[*]} " == *" nfs-ganesha "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now nfs-ganesha.service >/dev/null 2>&1 || true
fi
# Likewise Debian's redis-server starts a system Redis; test/argocd runs its own.
if [[ " ${missing[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now redis-server.service >/dev/null 2>&1 || true
fi
