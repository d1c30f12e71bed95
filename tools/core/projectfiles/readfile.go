package projectfiles

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// DefaultMaxReadSize is read_file's default --maxsize in bytes.
const DefaultMaxReadSize = 3000000

// MaxReadSize is the largest --maxsize read_file honours: larger values
// (up to math.MaxInt64, which overflowed before) are clamped to it, since
// the content is held in memory and sent to the hub as base64 JSON.
const MaxReadSize = 256 << 20

// ReadFile returns the content of a file of a project, at most maxSize
// bytes (clamped to MaxReadSize). Asking for "<dir>.zip" when only "<dir>"
// exists returns a zip archive of that directory tree (regular files only),
// as in the original; the archive's own size counts against maxSize, and
// its walk is bounded by the store's Limits and ctx.
func (s Store) ReadFile(ctx context.Context, projectID, path string, maxSize int64) ([]byte, error) {
	if err := CheckProjectID(projectID); err != nil {
		return nil, err
	}
	if maxSize < 0 {
		return nil, pathErrorf("maxsize (=%d) must not be negative", maxSize)
	}
	maxSize = min(maxSize, MaxReadSize)
	projectPath := s.ProjectPath(projectID)
	rel, err := resolveHubPath(projectPath, path, "path", "project path "+projectPath)
	if err != nil {
		return nil, err
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
		rel = base
		st = bst
	}
	if st.IsDir() {
		return s.zipDir(ctx, r, rel, path, maxSize)
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
	return readLimited(f, st.Size(), path, maxSize)
}

// readLimited reads an open regular file of the given size, refusing more
// than maxSize bytes (maxSize ≤ MaxReadSize, so maxSize+1 cannot overflow).
func readLimited(f io.Reader, size int64, path string, maxSize int64) ([]byte, error) {
	if size > maxSize {
		return nil, pathErrorf("path (=%s) must be at most %d bytes, but it is %d bytes", path, maxSize, size)
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
// ("dir/", "dir/file"), walking it with one handle per directory. Symlinks
// are not followed (the original followed links to files, which let a
// project read any file the server could). Every byte of the archive,
// headers and names included, counts against maxSize.
func (s Store) zipDir(ctx context.Context, r *os.Root, rel, path string, maxSize int64) ([]byte, error) {
	root, err := openDirHandle(r, rel)
	if err != nil {
		return nil, pathErrorf("path (=%s) cannot be read: %v", path, unwrapPathError(err))
	}
	defer root.Close()
	out := &cappedBuffer{max: maxSize}
	zw := zip.NewWriter(out)
	budget := newWalkBudget(ctx, s.Limits)
	tooBig := func(err error) error {
		if errors.Is(err, errArchiveTooBig) {
			return pathErrorf("path (=%s) must be at most %d bytes, but its zip archive is larger", path, maxSize)
		}
		if errors.Is(err, ErrLimit) {
			return pathErrorf("path (=%s) cannot be archived: %v", path, err)
		}
		return err
	}
	var walk func(d *dirHandle, arc string, depth int) error
	walk = func(d *dirHandle, arc string, depth int) error {
		// No SetMode: the creator stays "MS-DOS", so unzip does not apply
		// Unix permissions of 0000 (the original forced create_system=0).
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: arc + "/", Method: zip.Store}); err != nil {
			return err
		}
		names, err := budget.readAllNames(d, arc)
		if err != nil {
			return err
		}
		sort.Strings(names)
		var dirs []string
		for _, name := range names {
			if err := budget.check(); err != nil {
				return err
			}
			st, err := d.lstat(name)
			if err != nil {
				continue // vanished meanwhile
			}
			switch {
			case st.isDir():
				dirs = append(dirs, name)
			case st.mode.IsRegular():
				if err := zipFile(zw, d, name, arc+"/"+name, path, maxSize); err != nil {
					return err
				}
			}
		}
		for _, name := range dirs {
			child := arc + "/" + name
			if err := budget.enter(depth+1, child); err != nil {
				return err
			}
			cd, err := d.openDir(name)
			if err != nil {
				continue // replaced by a non-directory meanwhile
			}
			err = walk(cd, child, depth+1)
			cd.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, filepath.ToSlash(filepath.Base(rel)), 0); err != nil {
		return nil, tooBig(err)
	}
	if err := zw.Close(); err != nil {
		return nil, tooBig(fmt.Errorf("zip %s: %w", path, err))
	}
	return out.Bytes(), nil
}

// zipFile adds the regular file name of d to the archive as arc.
func zipFile(zw *zip.Writer, d *dirHandle, name, arc, path string, maxSize int64) error {
	f, st, err := d.openFile(name)
	if err != nil {
		return nil // replaced by something else since the listing
	}
	defer f.Close()
	data, err := readLimited(f, st.size, path, maxSize)
	if err != nil {
		return err
	}
	w, err := zw.CreateHeader(&zip.FileHeader{Name: arc, Method: zip.Deflate, Modified: st.mtime})
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

var errArchiveTooBig = errors.New("archive larger than maxsize")

// cappedBuffer is a bytes.Buffer that refuses to grow past max.
type cappedBuffer struct {
	bytes.Buffer
	max int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if int64(b.Len())+int64(len(p)) > b.max {
		return 0, errArchiveTooBig
	}
	return b.Buffer.Write(p)
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
