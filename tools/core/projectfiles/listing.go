package projectfiles

import (
	"math"
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
func (s Store) DirectoryListing(projectID, path string, o ListOptions) (Listing, error) {
	if err := CheckProjectID(projectID); err != nil {
		return Listing{}, err
	}
	projectPath := s.ProjectPath(projectID)
	rel, ok := resolve(projectPath, path)
	if !ok {
		return Listing{}, pathErrorf("path (=%s) must be contained in project path %s", path, projectPath)
	}
	out := Listing{Files: []Entry{}}
	r, err := s.openProject(projectID, false)
	if err != nil {
		return out, nil
	}
	defer r.Close()
	dir, err := r.Open(rel)
	if err != nil {
		return out, nil
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return out, nil
	}

	entries := make([]Entry, 0, len(names))
	for _, name := range names {
		if !o.Hidden && name != "" && name[0] == '.' {
			continue
		}
		// Names that are not valid UTF-8 cannot be represented in the JSON
		// the hub parses; the original dropped them too.
		if !utf8.ValidString(name) {
			continue
		}
		e := Entry{Name: name}
		p := filepath.Join(rel, name)
		if st, err := r.Lstat(p); err == nil {
			e.Mtime = int64(math.Round(float64(st.ModTime().UnixNano()) / 1e9))
		}
		entries = append(entries, e)
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
		p := filepath.Join(rel, entries[i].Name)
		// Stat follows symlinks (a link to a directory lists as one) but
		// only inside the project: a link that leaves it is a plain entry.
		if st, err := r.Stat(p); err == nil && st.IsDir() {
			entries[i].IsDir = true
			continue
		}
		size := int64(-1)
		if st, err := r.Lstat(p); err == nil {
			size = st.Size()
		}
		entries[i].Size = &size
	}
	out.Files = entries
	return out, nil
}
