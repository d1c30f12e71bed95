package projectfiles

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces a file in a project (creating its parent
// directories) with data, mode perm, owned by the store's user. It is how
// the server hands a project secrets such as its secret token: the home is
// writable by the project, so the write goes through os.Root and a link
// planted at the path or a parent cannot redirect it outside the home.
func (s Store) WriteFile(projectID, path string, data []byte, perm fs.FileMode) error {
	r, err := s.openProject(projectID, true)
	if err != nil {
		return err
	}
	defer r.Close()
	rel, err := resolveHubPath(s.ProjectPath(projectID), path, "path", "project path "+s.ProjectPath(projectID))
	if err != nil {
		return err
	}
	if rel == "." {
		return pathErrorf("path (=%s) must be a file contained in project path %s", path, s.ProjectPath(projectID))
	}
	if err := s.mkdirAll(r, filepath.Dir(rel)); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(rel), tempName(filepath.Base(rel)))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Chmod(tmp, perm)
	}
	if err == nil {
		err = s.rootChown(r, tmp)
	}
	if err == nil {
		err = r.Rename(tmp, rel)
	}
	if err != nil {
		_ = r.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
