#!/usr/bin/env bash
# Builds Kubernetes binaries from the pinned k8s.io/kubernetes module with
# the version stamped in (else servers report v0.0.0-master and Helm's
# kubeVersion checks fail). Static, -trimpath, identical flags on every
# call so Go's build cache is shared by the api tier (bin/kube-cluster)
# and the kind tier (kubelet, kubeadm, kube-proxy, kubectl).
#
#   build.sh OUTPUT PACKAGE      one binary (OUTPUT is a file)
#   build.sh OUTDIR PACKAGE...   several (OUTDIR is a directory)
set -euo pipefail
cd "$(dirname "$0")"
out=$1; shift
v=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
major=$(echo "$v" | sed -E 's/^v([0-9]+)\..*/\1/')
minor=$(echo "$v" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
done
CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out" "$@"
