// Package projectfiles performs the file operations a CoCalc hub asks of the
// server on the shared project volume: copy_path, directory_listing,
// read_file and mkdir, with the semantics of the original smc_compute.py
// (which shelled out to rsync) implemented in pure Go.
//
// Every operation runs through an os.Root opened on the project's home, so a
// path or symlink planted by a project (whose files are writable by the
// project user) can never make the server, which runs with more privileges,
// read or write outside that home. The original only checked the textual
// path and followed symlinks; see the package README for each deliberate
// difference.
package projectfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// DefaultUID is the uid/gid of the user in CoCalc project images; every file
// the server writes into a project is owned by it (the original's
// KUBERNETES_UID).
const DefaultUID = 2001

// Store is the directory that holds one home directory per project
// ("<Dir>/<project_id>"), as mounted in the server pod.
type Store struct {
	// Dir is the homes root, e.g. /projects/home.
	Dir string
	// UID and GID own every file and directory the store creates or
	// updates. Negative values leave ownership alone (tests as non-root).
	UID, GID int
	// Limits bound every walk (zero fields: the defaults).
	Limits Limits
}

// ProjectPath returns the home directory of a project on the server.
func (s Store) ProjectPath(projectID string) string {
	return filepath.Join(s.Dir, projectID)
}

// CheckProjectID reports an error unless id is a project ID by the one rule
// every front-end applies (project.Parse: a canonical lowercase UUID, any
// version, not the nil UUID). The message is the original's; the error wraps
// project.ErrInvalidID.
func CheckProjectID(id string) error {
	if _, err := project.Parse(id); err != nil {
		return invalidIDError{id: id}
	}
	return nil
}

// invalidIDError keeps the original's message ("invalid uuid (='...')")
// while matching errors.Is(err, project.ErrInvalidID).
type invalidIDError struct{ id string }

func (e invalidIDError) Error() string { return fmt.Sprintf("invalid uuid (='%s')", e.id) }
func (e invalidIDError) Unwrap() error { return project.ErrInvalidID }

// PathError is an operation refused because of the path it names (outside
// the project, missing, too large). Its message is the one the original
// printed, so hubs that show it to users keep showing the same text.
type PathError struct{ Msg string }

func (e *PathError) Error() string { return e.Msg }

func pathErrorf(format string, a ...any) error { return &PathError{Msg: fmt.Sprintf(format, a...)} }

// hasDotDot reports whether p has a ".." segment. Paths from the hub or its
// database never need one, and one that stays inside the home textually
// ("pub/..") can still name more than the caller checked (a public path's
// parent), so they are refused before any cleaning.
func hasDotDot(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

// resolve turns a path given by the hub (relative to the home, or absolute
// inside it, like the original's os.path.join semantics) into a clean path
// relative to the home. ok is false when the path leaves the home.
func resolve(projectPath, p string) (rel string, ok bool) {
	var abs string
	if filepath.IsAbs(p) {
		abs = filepath.Clean(p)
	} else {
		abs = filepath.Join(projectPath, p)
	}
	if abs == projectPath {
		return ".", true
	}
	// The original compared with startswith and no separator, so
	// "../<id>x" passed; requiring the separator fixes that.
	if !strings.HasPrefix(abs, projectPath+string(filepath.Separator)) {
		return "", false
	}
	return strings.TrimPrefix(abs, projectPath+string(filepath.Separator)), true
}

// openProject opens the home of a project. With create, the homes root and
// the home are created (owned by the store's user) when missing, as the
// original's create_project_path did.
func (s Store) openProject(projectID string, create bool) (*os.Root, error) {
	if err := CheckProjectID(projectID); err != nil {
		return nil, err
	}
	p := s.ProjectPath(projectID)
	if create {
		if err := os.MkdirAll(s.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("create homes root: %w", err)
		}
		if err := os.Mkdir(p, 0o700); err == nil {
			if err := s.chown(p); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create project home: %w", err)
		}
	}
	r, err := os.OpenRoot(p)
	if err != nil {
		return nil, fmt.Errorf("open project home %s: %w", p, err)
	}
	return r, nil
}

func (s Store) chown(p string) error {
	if s.UID < 0 {
		return nil
	}
	if err := os.Lchown(p, s.UID, s.GID); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	return nil
}

func (s Store) rootChown(r *os.Root, name string) error {
	if s.UID < 0 {
		return nil
	}
	if err := r.Lchown(name, s.UID, s.GID); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	return nil
}

// mkdirAll creates rel and its missing parents inside r with mode 0700, each
// new segment owned by the store's user (the original's makedirs). An
// existing non-directory in the way is renamed to "<name>.backup".
func (s Store) mkdirAll(r *os.Root, rel string) error {
	if rel == "." || rel == "" {
		return nil
	}
	// Stat follows symlinks, but os.Root only inside the home: a link to
	// one of the project's directories counts as that directory (as the
	// original's os.path.isdir), a link leaving the home is an error.
	if st, err := r.Stat(rel); err == nil && st.IsDir() {
		return nil
	}
	st, err := r.Lstat(rel)
	if err == nil {
		if st.IsDir() {
			return nil
		}
		if err := r.Rename(rel, rel+".backup"); err != nil {
			if err := r.Remove(rel); err != nil {
				return fmt.Errorf("move %s out of the way: %w", rel, err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	if err := s.mkdirAll(r, filepath.Dir(rel)); err != nil {
		return err
	}
	if err := r.Mkdir(rel, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return fmt.Errorf("mkdir %s: %w", rel, err)
	}
	return s.rootChown(r, rel)
}

// Mkdir ensures that path exists as a directory in the project (creating
// the home too), like the original's mkdir action.
func (s Store) Mkdir(projectID, path string) error {
	r, err := s.openProject(projectID, true)
	if err != nil {
		return err
	}
	defer r.Close()
	rel, err := resolveHubPath(s.ProjectPath(projectID), path, "path", "project path "+s.ProjectPath(projectID))
	if err != nil {
		return err
	}
	return s.mkdirAll(r, rel)
}

// CleanPath returns the path p of a project (relative to its home, or
// absolute inside it) as the clean home-relative path every operation of
// the store uses ("." for the home), with the same refusals (a ".."
// segment, a path leaving the home). Callers that authorise paths (e.g.
// public copies) compare this form, so what they check is what is read.
func (s Store) CleanPath(projectID, p string) (string, error) {
	if err := CheckProjectID(projectID); err != nil {
		return "", err
	}
	return resolveHubPath(s.ProjectPath(projectID), p, "path", "project path "+s.ProjectPath(projectID))
}
