#!/usr/bin/env bash
# Root filesystem of the backup image, from Debian packages only: the
# packages of this directory's Dockerfile by debian_rootfs of
# tools/images/nfs-server/rootfs.sh (debootstrap --variant=minbase, cached
# under ~/.cache/cocalc-kubernetes/images, needs root). Prints the
# directory; `make image-backup` turns it into a layer with bin/imagebuild.
set -euo pipefail
source "$(dirname "$0")/../nfs-server/rootfs.sh"
# The RUN step of the Dockerfile: the same packages, the same check.
PACKAGES=restic,postgresql-client,ca-certificates,openssh-client
debian_rootfs backup "$PACKAGES" "restic version && pg_dump --version" ""
