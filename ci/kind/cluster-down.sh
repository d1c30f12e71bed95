#!/usr/bin/env bash
# Deletes the kind tier's cluster (if any) and forgets its state.
source "$(dirname "$0")/lib.sh"
docker info >/dev/null 2>&1 || exit 0
exec "$REPO/bin/test-cluster" down -tier=kind
