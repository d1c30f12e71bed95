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
exec /usr/local/bin/entrypoint "$@"
