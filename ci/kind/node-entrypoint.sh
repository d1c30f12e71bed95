#!/bin/bash
# Entry point of the offline kind node image. On hosts where docker cannot
# grant --privileged (a VM whose capability bounding set lacks
# CAP_SYS_RESOURCE; see docker-shim) the node runs with explicit
# capabilities instead, and /sys and the cgroup mounts arrive read-only:
# remount them read-write, as --privileged would have, then hand over to
# kind's own entrypoint. On a normal host they are already writable and
# this does nothing.
set -e
if ! touch /sys/fs/cgroup/.rw-probe 2>/dev/null; then
  mount -o remount,rw /sys 2>/dev/null || true
  while read -r _ target fstype _; do
    case "$fstype" in
      cgroup|cgroup2|tmpfs)
        case "$target" in /sys/fs/cgroup*) mount -o remount,rw "$target" 2>/dev/null || true ;; esac ;;
    esac
  done < /proc/mounts
fi
rm -f /sys/fs/cgroup/.rw-probe 2>/dev/null || true
exec /usr/local/bin/entrypoint "$@"
