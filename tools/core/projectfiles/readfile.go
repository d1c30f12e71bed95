package projectfiles

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// DefaultMaxReadSize is read_file's default --maxsize in bytes.
const DefaultMaxReadSize = 3000000

// ReadFile returns the content of a file of a project, at most maxSize
// bytes. Asking for "<dir>.zip" when only "<dir>" exists returns a zip
// archive of that directory tree (regular files only), as in the original.
func (s Store) ReadFile(projectID, path string, maxSize int64) ([]byte, error) {
	if err := CheckProjectID(projectID); err != nil {
		return nil, err
	}
	projectPath := s.ProjectPath(projectID)
	rel, ok := resolve(projectPath, path)
	if !ok {
		return nil, pathErrorf("path (=%s) must be contained in project path %s", path, projectPath)
	}
	r, err := s.openProject(projectID, false)
	if err != nil {
		return nil, pathErrorf("path (=%s) does not exist", path)
	}
	defer r.Close()

	st, err := r.Stat(rel)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, pathErrorf("path (=%s) cannot be read: %v", path, unwrapPathError(err))
		}
		base, ext := strings.TrimSuffix(rel, filepath.Ext(rel)), filepath.Ext(rel)
		if ext != ".zip" {
			return nil, pathErrorf("path (=%s) does not exist", path)
		}
		bst, berr := r.Stat(base)
		if berr != nil || !bst.IsDir() {
			return nil, pathErrorf("path (=%s) does not exist and neither does %s", path, filepath.Join(projectPath, base))
		}
		rel, st = base, bst
	}
	if st.IsDir() {
		return s.zipDir(r, rel, path, maxSize)
	}
	return readRegular(r, rel, path, maxSize)
}

// readRegular opens without blocking and checks the type on the open file,
// so a FIFO swapped in after the Stat can neither block nor be read.
func readRegular(r *os.Root, rel, path string, maxSize int64) ([]byte, error) {
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, pathErrorf("path (=%s) cannot be read: %v", path, unwrapPathError(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, pathErrorf("path (=%s) is not a regular file or directory", path)
	}
	if st.Size() > maxSize {
		return nil, pathErrorf("path (=%s) must be at most %d bytes, but it is %d bytes", path, maxSize, st.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, pathErrorf("path (=%s) cannot be read: %v", path, unwrapPathError(err))
	}
	if int64(len(data)) > maxSize {
		return nil, pathErrorf("path (=%s) must be at most %d bytes, but it is at least %d bytes", path, maxSize, len(data))
	}
	return data, nil
}

// zipDir archives the tree at rel with names relative to its parent
// ("dir/", "dir/file"). Symlinks are not followed (the original followed
// links to files, which let a project read any file the server could).
func (s Store) zipDir(r *os.Root, rel, path string, maxSize int64) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	parent := filepath.Dir(rel)
	var total int64
	var walk func(dir string) error
	walk = func(dir string) error {
		name, err := filepath.Rel(parent, dir)
		if err != nil {
			return err
		}
		// No SetMode: the creator stays "MS-DOS", so unzip does not apply
		// Unix permissions of 0000 (the original forced create_system=0).
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: filepath.ToSlash(name) + "/", Method: zip.Store}); err != nil {
			return err
		}
		d, err := r.Open(dir)
		if err != nil {
			return pathErrorf("path (=%s) cannot be read: %v", path, unwrapPathError(err))
		}
		ents, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return pathErrorf("path (=%s) cannot be read: %v", path, unwrapPathError(err))
		}
		var dirs []string
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			switch {
			case e.IsDir():
				dirs = append(dirs, p)
			case e.Type().IsRegular():
				info, err := e.Info()
				if err != nil {
					continue
				}
				total += info.Size()
				if total > maxSize {
					return pathErrorf("path (=%s) must be at most %d bytes, but it is at least %d bytes", path, maxSize, total)
				}
				data, err := readRegular(r, p, path, maxSize)
				if err != nil {
					return err
				}
				arc, _ := filepath.Rel(parent, p)
				w, err := zw.CreateHeader(&zip.FileHeader{Name: filepath.ToSlash(arc), Method: zip.Deflate, Modified: info.ModTime()})
				if err != nil {
					return err
				}
				if _, err := w.Write(data); err != nil {
					return err
				}
			}
		}
		for _, d := range dirs {
			if err := walk(d); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(rel); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("zip %s: %w", path, err)
	}
	return buf.Bytes(), nil
}

// unwrapPathError drops the *PathError prefix of os errors, which names the
// server-side path, keeping only the reason ("permission denied").
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
