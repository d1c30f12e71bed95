#!/usr/bin/env bash
# Root filesystem of the kind tier's PostgreSQL stand-in (an "external"
# PostgreSQL for the chart's database backup test, test/e2e): Debian's
# postgresql by debian_rootfs of tools/images/nfs-server/rootfs.sh
# (debootstrap --variant=minbase, cached, needs root). Prints the
# directory; test/e2e turns it into an image with `imagebuild rootfs
# -config backup` (uid 2001, PATH) and loads it into the kind nodes. Not a
# shipped image: the chart never runs a database of its own.
set -euo pipefail
source "$(dirname "$0")/../../../tools/images/nfs-server/rootfs.sh"

# postgres looks its uid up: the test runs it as 2001, like everything else.
postgres_fixups() {
  grep -q '^cocalc:' "$1/etc/passwd" || echo 'cocalc:x:2001:2001:cocalc test user:/tmp:/bin/sh' >>"$1/etc/passwd"
  grep -q '^cocalc:' "$1/etc/group" || echo 'cocalc:x:2001:' >>"$1/etc/group"
  # The version's own binaries first on PATH, whatever the major version:
  # the server's, and the clients' instead of Debian's perl wrapper (which
  # takes seconds to start on a busy node, longer than a probe waits).
  local bin
  bin=$(ls -d "$1"/usr/lib/postgresql/*/bin | head -1)
  for p in initdb postgres pg_ctl pg_isready psql createdb; do ln -sfn "${bin#"$1"}/$p" "$1/usr/local/bin/$p"; done
}
# The package's own cluster (pg_createcluster in its postinst) is not used.
debian_rootfs postgres-standin postgresql "ls /usr/lib/postgresql/*/bin/postgres" postgres_fixups \
  'var/lib/postgresql/*' 'etc/postgresql/*'
