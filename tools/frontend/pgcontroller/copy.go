package pgcontroller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
)

// copyLoop runs pending copy_paths rows, at most Config.CopyWorkers at a
// time and never two that involve the same project (source or target), so
// one project's slow or stuck copies can neither hold every slot nor delay
// the copies of other projects. Each copy ends at its deadline (the row's
// timeout or CopyTimeout): the file walks check it at every entry and read
// and never block on what a project planted (projectfiles).
func (c *controller) copyLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	busy := map[string]bool{} // copy ids and project ids in flight
	running := 0
	every(ctx, c.cfg.ScanInterval, c.copyNow, func() {
		pending, err := c.pendingCopies(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("scan for copy requests failed", "err", err)
			}
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range pending {
			if ctx.Err() != nil || running >= c.cfg.CopyWorkers {
				return
			}
			keys := p.keys()
			if busy[keys[0]] || busy[keys[1]] || busy[keys[2]] {
				continue
			}
			for _, k := range keys {
				busy[k] = true
			}
			running++
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.safely("copy "+p.id, func() { c.handleCopy(ctx, p.id) })
				mu.Lock()
				for _, k := range keys {
					delete(busy, k)
				}
				running--
				mu.Unlock()
				kick(c.copyNow) // a slot is free: look for the next one
			}()
		}
	})
}

type pendingCopy struct{ id, source, target string }

// keys are what a running copy occupies: itself and both projects.
func (p pendingCopy) keys() [3]string {
	return [3]string{"copy/" + p.id, "project/" + p.source, "project/" + p.target}
}

func (c *controller) pendingCopies(ctx context.Context) ([]pendingCopy, error) {
	rows, err := c.pool.Query(ctx, `SELECT id::text, COALESCE(source_project_id::text, ''),
			COALESCE(target_project_id::text, source_project_id::text, '') FROM copy_paths
		WHERE finished IS NULL AND (scheduled IS NULL OR scheduled <= now() AT TIME ZONE 'UTC')
			AND (expire IS NULL OR expire > now() AT TIME ZONE 'UTC')
		ORDER BY time NULLS FIRST LIMIT 100`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (pendingCopy, error) {
		var p pendingCopy
		err := r.Scan(&p.id, &p.source, &p.target)
		return p, err
	})
}

type copyRow struct {
	source, sourcePath, target, targetPath string
	overwriteNewer, deleteMissing, backup  *bool
	public                                 *bool
	exclude                                []string
	timeout                                *float64
	started                                *time.Time
	finished                               *time.Time
	errText                                *string
}

// resumeMarker is written into a copy's error column (finished still NULL)
// while it is performed again after a controller stopped during it. A copy
// found started with the marker was interrupted twice (a crash or an
// out-of-memory kill it may well cause itself): it is failed, not retried
// again, so it cannot keep the controller down for everyone.
const resumeMarker = "cocalc-k8s: retrying once: the controller stopped while performing this copy"

// handleCopy claims and runs one copy with the same exactly-once scheme as
// action requests: advisory lock, then re-read, started marker, finished.
func (c *controller) handleCopy(ctx context.Context, id string) {
	log := c.log.With("copy", id)
	_, err := c.withLock(ctx, "copy/"+id, func() {
		var r copyRow
		err := c.pool.QueryRow(ctx, `SELECT COALESCE(source_project_id::text, ''), COALESCE(source_path, ''),
				COALESCE(target_project_id::text, ''), COALESCE(target_path, ''),
				overwrite_newer, delete_missing, backup, public, exclude, timeout::float8, started, finished, error
			FROM copy_paths WHERE id = $1`, id).
			Scan(&r.source, &r.sourcePath, &r.target, &r.targetPath, &r.overwriteNewer, &r.deleteMissing,
				&r.backup, &r.public, &r.exclude, &r.timeout, &r.started, &r.finished, &r.errText)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.finished != nil) {
			return
		}
		if err != nil {
			log.Warn("cannot read copy request", "err", err)
			return
		}
		if r.started != nil {
			if r.errText != nil && *r.errText == resumeMarker {
				log.Error("a copy was interrupted twice; failing it instead of retrying")
				c.finishCopy(ctx, id, errors.New("copy failed: the controller stopped twice while performing it "+
					"(a crash or running out of memory); it is not retried"), log)
				return
			}
			log.Info("resuming a copy another controller started but did not finish")
			if _, err := c.pool.Exec(ctx, `UPDATE copy_paths SET error = $2 WHERE id = $1`, id, resumeMarker); err != nil {
				log.Warn("cannot mark copy resumed", "err", err)
				return
			}
		}
		if _, err := c.pool.Exec(ctx, `UPDATE copy_paths SET started = COALESCE(started, now() AT TIME ZONE 'UTC') WHERE id = $1`, id); err != nil {
			log.Warn("cannot mark copy started", "err", err)
			return
		}
		timeout := c.cfg.CopyTimeout
		if r.timeout != nil && *r.timeout > 0 {
			timeout = time.Duration(*r.timeout * float64(time.Second))
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		copyErr := c.checkPublic(cctx, r)
		if copyErr == nil {
			copyErr = c.cfg.copyFiles(cctx, projectfiles.CopyRequest{
				SourceProject: r.source, SourcePath: r.sourcePath,
				TargetProject: r.target, TargetPath: r.targetPath,
				OverwriteNewer: deref(r.overwriteNewer), DeleteMissing: deref(r.deleteMissing),
				Backup: deref(r.backup), Exclude: r.exclude,
				SourceNoFollow: deref(r.public),
			})
		}
		cancel()
		if ctx.Err() != nil {
			// Shutting down, not crashing: hand the copy back unstarted so
			// the next controller performs it as new.
			uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer ucancel()
			_, _ = c.pool.Exec(uctx, `UPDATE copy_paths SET started = NULL WHERE id = $1 AND finished IS NULL`, id)
			return
		}
		if errors.Is(copyErr, context.DeadlineExceeded) {
			copyErr = fmt.Errorf("copy timed out after %s: %w", timeout, copyErr)
		}
		if copyErr != nil {
			log.Warn("copy failed", "err", copyErr)
		}
		c.finishCopy(ctx, id, copyErr, log)
	})
	if err != nil && ctx.Err() == nil {
		log.Warn("cannot claim copy request", "err", err)
	}
}

// finishCopy writes finished and the error (nil clears a resume marker),
// retrying database errors until ctx ends.
func (c *controller) finishCopy(ctx context.Context, id string, copyErr error, log *slog.Logger) {
	var errText *string
	if copyErr != nil {
		s := copyErr.Error()
		errText = &s
	}
	const q = `UPDATE copy_paths SET finished = now() AT TIME ZONE 'UTC', error = $2 WHERE id = $1`
	_ = c.retry(ctx, func(ctx context.Context) (bool, error) {
		_, err := c.pool.Exec(ctx, q, id, errText)
		if err != nil && ctx.Err() == nil {
			log.Warn("cannot record finished copy; retrying", "err", err)
		}
		return err == nil, nil
	})
}

// ErrNotPublic fails a copy_paths row with public = true whose source is
// not inside a published path of its project.
var ErrNotPublic = errors.New("not a published path")

// checkPublic enforces public = true rows: current CoCalc hubs check a
// public copy's path only with substring or prefix tests, so the controller
// decides. The source path (cleaned, with ".." refused) must be a
// public_paths row of the same project that is not disabled, or lie below
// one ("<path>/…"); the copy then follows no link (SourceNoFollow).
func (c *controller) checkPublic(ctx context.Context, r copyRow) error {
	if !deref(r.public) {
		return nil
	}
	src, err := c.cfg.Files.CleanPath(r.source, r.sourcePath)
	if err != nil {
		return err
	}
	rows, err := c.pool.Query(ctx, `SELECT COALESCE(path, '') FROM public_paths
		WHERE project_id = $1 AND disabled IS NOT TRUE`, r.source)
	if err != nil {
		return fmt.Errorf("cannot check that the source of a public copy is published: %w", err)
	}
	published, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("cannot check that the source of a public copy is published: %w", err)
	}
	for _, p := range published {
		pub, err := c.cfg.Files.CleanPath(r.source, p)
		if err != nil {
			continue // a public_paths row no path can match
		}
		if pub == "." || src == pub || strings.HasPrefix(src, pub+"/") {
			return nil
		}
	}
	return fmt.Errorf("source path (=%s) of a public copy is %w of project %s", r.sourcePath, ErrNotPublic, r.source)
}

func deref(b *bool) bool { return b != nil && *b }
