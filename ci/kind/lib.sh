# Shared settings of the kind tier scripts (sourced).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${COCALC_KIND_CACHE:-$REPO/.cache/kind}
KIND_BIN=$CACHE/bin
SUITE=${COCALC_KIND_SUITE:-bookworm}
MIRROR=${COCALC_KIND_MIRROR:-http://deb.debian.org/debian}
CLUSTER_NAME=${COCALC_KIND_CLUSTER:-cocalc}
# The Kubernetes version comes from the pinned module (ci/tools/kube/go.mod).
KUBE_VERSION=$(cd "$REPO/ci/tools/kube" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
NODE_IMAGE=cocalc.local/kind-node:$KUBE_VERSION
mkdir -p "$CACHE" "$KIND_BIN"

log() { printf '%s kind: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ensure_dockerd starts the docker daemon if none answers, and waits for it.
ensure_dockerd() {
  if docker info >/dev/null 2>&1; then return; fi
  command -v dockerd >/dev/null || die "dockerd missing: run ci/install-deps.sh (docker.io)"
  log "starting dockerd (log: $CACHE/dockerd.log)"
  nohup dockerd >"$CACHE/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  tail -20 "$CACHE/dockerd.log" >&2
  die "dockerd did not come up within 60s"
}
