package projectfiles

import (
	"context"
	"errors"
	"fmt"
)

// Limits bound every walk over a project's tree (copy_path, the zip of
// read_file, directory_listing, delete_missing). A project controls its
// whole home, so without them one deep or wide tree could exhaust the
// orchestrator's memory or time for every user. Zero fields take the
// defaults below.
type Limits struct {
	// MaxDepth is how many directory levels below the walk's root are
	// entered.
	MaxDepth int
	// MaxEntries is how many directory entries one walk may read.
	MaxEntries int
	// MaxNameBytes is the total size of the entry names one walk may hold.
	MaxNameBytes int64
	// MaxPathBytes bounds a path relative to the walk's root (rsync, which
	// the original ran, refuses paths over MAXPATHLEN too).
	MaxPathBytes int
	// MaxListEntries is how many entries directory_listing reads from one
	// directory.
	MaxListEntries int
}

// Defaults of Limits.
const (
	DefaultMaxDepth       = 256
	DefaultMaxEntries     = 250_000
	DefaultMaxNameBytes   = 32 << 20
	DefaultMaxPathBytes   = 4096
	DefaultMaxListEntries = 100_000
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxDepth, DefaultMaxDepth)
	def(&l.MaxEntries, DefaultMaxEntries)
	def(&l.MaxPathBytes, DefaultMaxPathBytes)
	def(&l.MaxListEntries, DefaultMaxListEntries)
	if l.MaxNameBytes <= 0 {
		l.MaxNameBytes = DefaultMaxNameBytes
	}
	return l
}

// ErrLimit is wrapped by every error about a walk that exceeded Limits.
var ErrLimit = errors.New("limit exceeded")

// walkBudget counts what one walk has used of its Limits and checks its
// context, so every step of every walk is bounded in depth, entries, name
// bytes and time.
type walkBudget struct {
	ctx       context.Context
	lim       Limits
	entries   int
	nameBytes int64
}

func newWalkBudget(ctx context.Context, lim Limits) *walkBudget {
	return &walkBudget{ctx: ctx, lim: lim.withDefaults()}
}

// check reports the context's error once it has ended.
func (w *walkBudget) check() error { return w.ctx.Err() }

func (w *walkBudget) addEntry(name string) error {
	w.entries++
	w.nameBytes += int64(len(name))
	if w.entries > w.lim.MaxEntries {
		return fmt.Errorf("%w: more than %d files and directories", ErrLimit, w.lim.MaxEntries)
	}
	if w.nameBytes > w.lim.MaxNameBytes {
		return fmt.Errorf("%w: file names longer than %d bytes in total", ErrLimit, w.lim.MaxNameBytes)
	}
	return nil
}

// enter checks that a directory at depth (its root is 0) with the path rel
// may be entered.
func (w *walkBudget) enter(depth int, rel string) error {
	if depth > w.lim.MaxDepth {
		return fmt.Errorf("%w: directories nested deeper than %d levels (at %s)", ErrLimit, w.lim.MaxDepth, shorten(rel))
	}
	return w.checkPath(rel)
}

// checkPath refuses a walk-relative path longer than MaxPathBytes.
func (w *walkBudget) checkPath(rel string) error {
	if len(rel) > w.lim.MaxPathBytes {
		return fmt.Errorf("%w: a path longer than %d bytes (%s)", ErrLimit, w.lim.MaxPathBytes, shorten(rel))
	}
	return nil
}

// shorten keeps error messages small whatever path a project built.
func shorten(p string) string {
	const keep = 120
	if len(p) <= keep {
		return p
	}
	return p[:keep/2] + "…" + p[len(p)-keep/2:]
}
