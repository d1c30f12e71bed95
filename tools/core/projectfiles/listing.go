package projectfiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"unicode/utf8"
)

// ListOptions are the directory_listing flags.
type ListOptions struct {
	// Hidden includes names starting with ".".
	Hidden bool
	// Time sorts newest first (then by name) instead of by name.
	Time bool
	// Start skips this many entries (negative counts from the end, as the
	// original's Python slice did).
	Start int
	// Limit returns at most this many entries when > 0 and sets More.
	Limit int
}

// Entry is one file in a listing, with the original's JSON keys.
type Entry struct {
	Name  string `json:"name"`
	Mtime int64  `json:"mtime"`
	IsDir bool   `json:"isdir,omitempty"`
	// Size is set for everything that is not a directory (-1 when lstat
	// failed, like the original).
	Size *int64 `json:"size,omitempty"`
}

// Listing is the directory_listing result.
type Listing struct {
	More  bool    `json:"more,omitempty"`
	Files []Entry `json:"files"`
}

// DirectoryListing lists a directory of a project. A directory that does not
// exist (or cannot be read) lists as empty, as in the original.
//
// Names are read in batches and only a name (and, sorting by time, its
// mtime) is kept per entry; the full metadata is read for the returned
// window only. A directory with more than Limits.MaxListEntries entries is
// refused with an error instead of being read whole.
func (s Store) DirectoryListing(ctx context.Context, projectID, path string, o ListOptions) (Listing, error) {
	if err := CheckProjectID(projectID); err != nil {
		return Listing{}, err
	}
	projectPath := s.ProjectPath(projectID)
	rel, err := resolveHubPath(projectPath, path, "path", "project path "+projectPath)
	if err != nil {
		return Listing{}, err
	}
	out := Listing{Files: []Entry{}}
	r, err := s.openProject(projectID, false)
	if err != nil {
		return out, nil
	}
	defer r.Close()
	d, err := openDirHandle(r, rel)
	if err != nil {
		return out, nil
	}
	defer d.Close()

	entries, err := s.listNames(ctx, d, path, o)
	if err != nil {
		return Listing{}, err
	}
	if o.Time {
		sort.Slice(entries, func(i, j int) bool {
			if entries[i].Mtime != entries[j].Mtime {
				return entries[i].Mtime > entries[j].Mtime
			}
			return entries[i].Name < entries[j].Name
		})
	} else {
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	}

	start := o.Start
	if start < 0 {
		start = max(0, len(entries)+start)
	}
	start = min(start, len(entries))
	entries = entries[start:]
	if o.Limit > 0 && len(entries) > o.Limit {
		out.More = true
		entries = entries[:o.Limit]
	}

	for i := range entries {
		name := entries[i].Name
		st, err := d.lstat(name)
		if err != nil {
			size := int64(-1)
			entries[i].Size = &size
			continue
		}
		entries[i].Mtime = unixSeconds(st)
		// A link to a directory lists as one (as the original's isdir),
		// but only when it stays inside the project (os.Root).
		if st.isDir() || (st.mode&fs.ModeSymlink != 0 && isDirInRoot(r, filepath.Join(rel, name))) {
			entries[i].IsDir = true
			continue
		}
		size := st.size
		entries[i].Size = &size
	}
	out.Files = entries
	return out, nil
}

// listNames streams the names of d into entries (name, and mtime when
// sorting by time), skipping hidden names unless asked and names the hub's
// JSON cannot carry (not UTF-8; the original dropped them too).
func (s Store) listNames(ctx context.Context, d *dirHandle, path string, o ListOptions) ([]Entry, error) {
	limit := s.Limits.withDefaults().MaxListEntries
	var entries []Entry
	read := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch, err := d.names(readBatch)
		for _, name := range batch {
			read++
			if read > limit {
				return nil, pathErrorf("path (=%s) has more than %d entries: %v", path, limit, ErrLimit)
			}
			if !validName(name) || (!o.Hidden && name[0] == '.') || !utf8.ValidString(name) {
				continue
			}
			e := Entry{Name: name}
			if o.Time {
				if st, err := d.lstat(name); err == nil {
					e.Mtime = unixSeconds(st)
				}
			}
			entries = append(entries, e)
		}
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read directory %s: %w", path, unwrapPathError(err))
		}
	}
}

func unixSeconds(st fileStat) int64 {
	return int64(math.Round(float64(st.mtime.UnixNano()) / 1e9))
}

// isDirInRoot reports whether rel is a directory, following links only
// inside the project.
func isDirInRoot(r *os.Root, rel string) bool {
	st, err := r.Stat(rel)
	return err == nil && st.IsDir()
}
