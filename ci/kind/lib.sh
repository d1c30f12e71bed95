# Shared settings of the kind tier scripts (sourced).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${COCALC_KIND_CACHE:-$REPO/.cache/kind}
KIND_BIN=$CACHE/bin
SUITE=${COCALC_KIND_SUITE:-bookworm}
# apt_mirror prints the Debian archive this machine's apt uses for $SUITE
# (deb822 .sources stanzas first, then one-line sources.list entries), so no
# mirror host is written into the repository.
apt_mirror() {
  local f
  local etc=${APT_ETC:-/etc/apt}
  for f in "$etc"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # Stanzas are separated by blank lines; take the first URI of one whose
    # Suites list $SUITE.
    awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; ok = 0; enabled = 1
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
          if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
          if ($i ~ /^Enabled:[ \t]*no/) enabled = 0
        }
        if (ok && enabled && uris != "") { print uris; exit }
      }' "$f"
  done | head -n 1 | grep . && return
  grep -hsE "^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[a-z]+://[^[:space:]]+[[:space:]]+$SUITE[[:space:]]" \
    "$etc"/sources.list "$etc"/sources.list.d/*.list 2>/dev/null |
    sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{ print $1; exit }' | grep .
}
# MIRROR is the Debian archive debootstrap uses: COCALC_KIND_MIRROR, else the
# one apt is configured with here.
MIRROR=${COCALC_KIND_MIRROR:-$(apt_mirror || true)}
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
  command -v dockerd >/dev/null || die "dockerd missing: run make deps-kind (ci/install-deps.sh kind: docker.io)"
  log "starting dockerd (log: $CACHE/dockerd.log)"
  nohup dockerd >"$CACHE/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return
    sleep 1
  done
  tail -20 "$CACHE/dockerd.log" >&2
  die "dockerd did not come up within 60s"
}
