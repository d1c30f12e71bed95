package pgcontroller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
)

// copyLoop executes copy_paths rows one at a time (copies are I/O heavy on
// the shared volume; KuCalc's manage-copy also rate-limits them).
func (c *controller) copyLoop(ctx context.Context) {
	every(ctx, c.cfg.ScanInterval, c.copyNow, func() {
		ids, err := c.pendingCopies(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("scan for copy requests failed", "err", err)
			}
			return
		}
		for _, id := range ids {
			if ctx.Err() != nil {
				return
			}
			c.safely("copy "+id, func() { c.handleCopy(ctx, id) })
		}
	})
}

func (c *controller) pendingCopies(ctx context.Context) ([]string, error) {
	rows, err := c.pool.Query(ctx, `SELECT id::text FROM copy_paths
		WHERE finished IS NULL AND (scheduled IS NULL OR scheduled <= now() AT TIME ZONE 'UTC')
			AND (expire IS NULL OR expire > now() AT TIME ZONE 'UTC')
		ORDER BY time NULLS FIRST LIMIT 100`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

type copyRow struct {
	source, sourcePath, target, targetPath string
	overwriteNewer, deleteMissing, backup  *bool
	exclude                                []string
	timeout                                *float64
	started                                *time.Time
	finished                               *time.Time
}

// handleCopy claims and runs one copy with the same exactly-once scheme as
// action requests: advisory lock, then re-read, started marker, finished.
func (c *controller) handleCopy(ctx context.Context, id string) {
	log := c.log.With("copy", id)
	_, err := c.withLock(ctx, "copy/"+id, func(conn *pgxpool.Conn) {
		var r copyRow
		err := conn.QueryRow(ctx, `SELECT COALESCE(source_project_id::text, ''), COALESCE(source_path, ''),
				COALESCE(target_project_id::text, ''), COALESCE(target_path, ''),
				overwrite_newer, delete_missing, backup, exclude, timeout::float8, started, finished
			FROM copy_paths WHERE id = $1`, id).
			Scan(&r.source, &r.sourcePath, &r.target, &r.targetPath, &r.overwriteNewer, &r.deleteMissing,
				&r.backup, &r.exclude, &r.timeout, &r.started, &r.finished)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.finished != nil) {
			return
		}
		if err != nil {
			log.Warn("cannot read copy request", "err", err)
			return
		}
		if r.started != nil {
			log.Info("resuming a copy another controller started but did not finish")
		}
		if _, err := conn.Exec(ctx, `UPDATE copy_paths SET started = COALESCE(started, now() AT TIME ZONE 'UTC') WHERE id = $1`, id); err != nil {
			log.Warn("cannot mark copy started", "err", err)
			return
		}
		timeout := c.cfg.CopyTimeout
		if r.timeout != nil && *r.timeout > 0 {
			timeout = time.Duration(*r.timeout * float64(time.Second))
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		copyErr := c.cfg.Files.Copy(cctx, projectfiles.CopyRequest{
			SourceProject: r.source, SourcePath: r.sourcePath,
			TargetProject: r.target, TargetPath: r.targetPath,
			OverwriteNewer: deref(r.overwriteNewer), DeleteMissing: deref(r.deleteMissing),
			Backup: deref(r.backup), Exclude: r.exclude,
		})
		cancel()
		if ctx.Err() != nil {
			return // shutting down: the next controller resumes it
		}
		if errors.Is(copyErr, context.DeadlineExceeded) {
			copyErr = fmt.Errorf("copy timed out after %s: %w", timeout, copyErr)
		}
		var errText *string
		if copyErr != nil {
			s := copyErr.Error()
			errText = &s
			log.Warn("copy failed", "err", copyErr)
		}
		const q = `UPDATE copy_paths SET finished = now() AT TIME ZONE 'UTC', error = $2 WHERE id = $1`
		_, err = conn.Exec(ctx, q, id, errText)
		delay := c.cfg.RetryInterval
		for err != nil && ctx.Err() == nil {
			log.Warn("cannot record finished copy; retrying", "err", err)
			if !sleep(ctx, delay) {
				return
			}
			delay = min(delay*2, 10*time.Second)
			_, err = c.pool.Exec(ctx, q, id, errText)
		}
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("cannot claim copy request", "err", err)
	}
}

func deref(b *bool) bool { return b != nil && *b }
