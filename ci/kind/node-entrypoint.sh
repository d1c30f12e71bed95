#!/bin/bash
# Entry point of the offline kind node image. On hosts where docker cannot
# grant --privileged (a VM whose capability bounding set lacks
# CAP_SYS_RESOURCE; see shim/docker) the node runs with explicit
# capabilities instead, and /sys and the cgroup mounts arrive read-only:
# remount them read-write, as --privileged would have, then hand over to
# kind's own entrypoint. On a normal host nothing is mounted read-only and
# this does nothing.
set -e
while read -r _ target fstype opts _; do
  case "$target" in
    /sys|/sys/fs/cgroup|/sys/fs/cgroup/*)
      case ",$opts," in
        *,ro,*) mount -o remount,bind,rw "$target" 2>/dev/null || mount -o remount,rw "$target" 2>/dev/null || echo "node-entrypoint: cannot remount $target ($fstype) read-write" >&2 ;;
      esac ;;
  esac
done < /proc/mounts

# Egress guard: pods of a test cluster reach nothing beyond the node. Pod
# traffic may be forwarded only to other pods (the pod subnet of
# test/cluster/kindtier.go and ci/kind/cni.conflist) and to the test hosts
# test/cluster/outside.go makes in network namespaces of this node
# (192.0.2.0/30 link, TEST-NET-3, the metadata address); everything else is
# rejected here, before it could leave through the docker network. It also
# covers the first seconds of a cluster, when kube-proxy has not yet
# programmed Service addresses and a connection to one would otherwise be
# routed out as is. A table of its own: kube-proxy and kube-router rewrite
# theirs, never this one.
if command -v nft >/dev/null; then
  nft -f - <<'NFT' || echo "node-entrypoint: egress guard not installed" >&2
table inet cocalc_guard {
  chain forward {
    type filter hook forward priority -10; policy accept;
    ip saddr 10.244.0.0/16 ip daddr != { 10.244.0.0/16, 192.0.2.0/30, 203.0.113.0/24, 169.254.169.254 } counter reject with icmpx type admin-prohibited
  }
  # The node's own processes (host-network pods) reach Service addresses
  # only once kube-proxy has translated them (nat output runs at -100).
  chain output {
    type filter hook output priority -10; policy accept;
    ip daddr 10.96.0.0/16 counter reject with icmpx type admin-prohibited
  }
}
NFT
fi
exec /usr/local/bin/entrypoint "$@"
