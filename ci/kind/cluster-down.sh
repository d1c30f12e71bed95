#!/usr/bin/env bash
# Deletes the kind tier's cluster (if any) and forgets its state.
# COCALC_KIND_START_DOCKER=1 starts dockerd first (a cluster left from an
# earlier run while the daemon was down); otherwise no daemon, no cluster.
source "$(dirname "$0")/lib.sh"
if [ "${COCALC_KIND_START_DOCKER:-0}" = 1 ] && command -v dockerd >/dev/null; then
  ensure_dockerd
fi
docker info >/dev/null 2>&1 || exit 0
exec "$REPO/bin/test-cluster" down -tier=kind
