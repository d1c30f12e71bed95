#!/usr/bin/env bash
# Deletes the kind tier's cluster, if any.
source "$(dirname "$0")/lib.sh"
STATE=$REPO/.cache/cluster/kind
[ -x "$KIND_BIN/kind" ] || exit 0
docker info >/dev/null 2>&1 || exit 0
if "$KIND_BIN/kind" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  "$KIND_BIN/kind" delete cluster --name "$CLUSTER_NAME"
fi
rm -f "$STATE/state.json"
