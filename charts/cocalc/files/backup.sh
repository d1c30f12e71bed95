#!/bin/bash
# The chart's scheduled backup (templates/backup/), run by the backup image
# (tools/images/backup: restic and Debian's postgresql-client) as
#   backup.sh database   pg_dump --format=custom of the hub database, streamed into restic
#   backup.sh homes      restic backup of the project homes under $HOMES_PATH
# then `restic forget --prune` of that kind's snapshots by the retention below.
# Restore: docs/backup.md; test/backup runs this file and those commands.
#
# Environment (the CronJobs set every variable):
#   RESTIC_REPOSITORY, RESTIC_PASSWORD   the repository (a path on the backup claim or a restic URL) and its key
#   RESTIC_CACHE_DIR                     restic's cache (an emptyDir)
#   BACKUP_HOST                          the host name recorded in snapshots (the release): retention groups by it,
#                                        and a Job's pod name changes every run
#   KEEP_LAST KEEP_DAILY KEEP_WEEKLY KEEP_MONTHLY   retention (0 = that rule is off; all 0 keeps everything)
#   database: PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD (libpq) for an external
#             PostgreSQL; for the embedded one DUMP_URL and COCALC_DUMP_TOKEN
#             instead (cocalc-dbdump serve in the server pod runs pg_dump
#             there), and PGDATABASE names the snapshot's file
#   homes:    HOMES_PATH
set -euo pipefail

log() { printf '%s backup[%s]: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${what:-?}" "$*" >&2; }
die() { log "$*"; exit 1; }

what=${1:-}
case "$what" in
  database | homes) ;;
  *) what=usage; die "usage: backup.sh database|homes" ;;
esac
: "${RESTIC_REPOSITORY:?}" "${BACKUP_HOST:?}"
[ -n "${RESTIC_PASSWORD:-}${RESTIC_PASSWORD_FILE:-}" ] || die "RESTIC_PASSWORD is empty"

# A repository that does not exist yet is created; any other failure to read
# its config (wrong password, unreachable store) is fatal, and init then
# fails too without touching an existing repository.
if ! restic cat config >/dev/null 2>&1; then
  # A repository on a mounted claim: the volume's root must be writable by
  # this uid. fsGroup makes it so on volumes whose driver manages ownership;
  # hostPath and NFS volumes ignore fsGroup (docs/backup.md "Repository
  # ownership").
  case "$RESTIC_REPOSITORY" in
    /* | local:/*)
      dir=${RESTIC_REPOSITORY#local:}
      parent=$(dirname "$dir")
      [ -e "$dir" ] || [ -w "$parent" ] ||
        die "cannot create the repository: $parent is not writable by uid $(id -u) gid $(id -g) (groups $(id -G)); its volume ignores fsGroup (hostPath, NFS): make it owned by $(id -u):$(id -g), see docs/backup.md \"Repository ownership\""
      ;;
  esac
  log "no readable repository at ${RESTIC_REPOSITORY%%\?*}: initialising"
  restic init
fi
# Removes only stale locks (a killed run's), never a live backup's.
restic unlock

start=$(date +%s)
case "$what" in
  database)
    : "${PGDATABASE:?}"
    # Streamed: no scratch space. A pg_dump that fails still hands restic an
    # ended (truncated or empty) stream, which restic stores as a snapshot, so
    # such a snapshot is forgotten again before retention could count it.
    # The embedded database is reached only through the server pod's dump
    # server, which runs the same pg_dump there; fetch exits non-zero unless
    # the server reports the dump complete.
    # A Job's new pod can be refused for seconds until the NetworkPolicy
    # controller has admitted its address: the fetch retries connecting by
    # itself (90 s); for pg_dump, wait up to as long for the server to answer.
    dump() {
      if [ -n "${DUMP_URL:-}" ]; then
        cocalc-dbdump fetch -url "$DUMP_URL"
      else
        local i
        for i in $(seq 1 30); do
          pg_isready -q -t 3 && break
          sleep 3
        done
        pg_dump --format=custom --no-password
      fi
    }
    set +e
    out=$(dump |
      restic backup --json --host "$BACKUP_HOST" --tag database \
        --stdin --stdin-filename "$PGDATABASE.dump"
      echo "status ${PIPESTATUS[*]}")
    set -e
    read -r _ dump_rc restic_rc <<<"$(grep '^status ' <<<"$out")"
    id=$(sed -n 's/.*"message_type":"summary".*"snapshot_id":"\([0-9a-f]*\)".*/\1/p' <<<"$out")
    if [ "$dump_rc" != 0 ]; then
      [ -z "$id" ] || restic forget "$id" >/dev/null
      die "pg_dump failed (exit $dump_rc); its incomplete snapshot ${id:-(none)} was removed"
    fi
    [ "$restic_rc" = 0 ] || die "restic backup failed (exit $restic_rc)"
    log "database $PGDATABASE saved as snapshot $id"
    ;;
  homes)
    : "${HOMES_PATH:?}"
    [ -d "$HOMES_PATH" ] || die "HOMES_PATH $HOMES_PATH is not a directory"
    # From inside the homes root: the snapshot holds the project directories
    # at its top (no parent directories), so `restic restore --target
    # <homes root>` puts them back wherever the claim is mounted.
    # --one-file-system: never descend into another mount below the homes.
    # Exit 3 (some files unreadable) still saved a snapshot; the run fails so
    # the Job shows it, and the log names the files.
    cd "$HOMES_PATH"
    restic backup --host "$BACKUP_HOST" --tag homes --one-file-system .
    ;;
esac
log "backup took $(($(date +%s) - start))s"

keep=()
for rule in last daily weekly monthly; do
  var=KEEP_${rule^^}
  n=${!var:-0}
  [[ "$n" =~ ^[0-9]+$ ]] || die "$var must be a number, not $n"
  [ "$n" = 0 ] || keep+=("--keep-$rule" "$n")
done
if [ ${#keep[@]} -eq 0 ]; then
  log "no retention rule: every snapshot is kept"
else
  restic forget --host "$BACKUP_HOST" --tag "$what" --group-by host,tags "${keep[@]}" --prune
fi
log "done"
