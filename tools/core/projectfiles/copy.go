package projectfiles

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// CopyRequest is a copy_path call: the original's command-line options, and
// the copy_paths table columns of current CoCalc.
type CopyRequest struct {
	SourceProject string
	SourcePath    string
	// TargetProject defaults to SourceProject, TargetPath to SourcePath.
	TargetProject string
	TargetPath    string
	// OverwriteNewer also replaces target files that are newer than the
	// source; without it files newer on the target are kept (rsync --update).
	OverwriteNewer bool
	// DeleteMissing removes target files that are not in the source
	// (rsync --delete), including newer ones. Excluded paths are kept.
	DeleteMissing bool
	// Backup renames a replaced or deleted target file to "<name>~".
	Backup bool
	// ExcludeHistory also skips *.sage-history files.
	ExcludeHistory bool
	// Exclude adds rsync --exclude patterns.
	Exclude []string
}

// Copy copies a file or directory tree between (or within) projects with the
// semantics of the original's `rsync -axs --update --omit-link-times
// --chown=2001:2001 --ignore-errors` call:
//   - a directory copies its contents into the target directory, a file
//     copies to the target path (or into it, if that is a directory);
//   - permissions and modification times are kept, symlinks are copied as
//     links (never followed), owner becomes the store's user;
//   - unchanged files (same size and mtime) are not rewritten; a file is
//     replaced atomically (temporary file, then rename);
//   - the tree does not cross into other filesystems (mount points);
//   - the target's parent directories are created;
//   - one failing file does not stop the others: all errors are returned
//     together after the rest was copied (rsync's exit 23).
//
// FIFOs, sockets and devices are skipped (the project user cannot create
// devices; the others have no content to copy).
func (s Store) Copy(ctx context.Context, req CopyRequest) error {
	if req.TargetProject == "" {
		req.TargetProject = req.SourceProject
	}
	if req.TargetPath == "" {
		req.TargetPath = req.SourcePath
	}
	if err := CheckProjectID(req.SourceProject); err != nil {
		return err
	}
	if err := CheckProjectID(req.TargetProject); err != nil {
		return err
	}
	srcProjectPath := s.ProjectPath(req.SourceProject)
	srcRel, ok := resolve(srcProjectPath, req.SourcePath)
	if !ok {
		return pathErrorf("source path (=%s) must be contained in project_path (=%s)", req.SourcePath, srcProjectPath)
	}
	dstProjectPath := s.ProjectPath(req.TargetProject)
	dstRel, ok := resolve(dstProjectPath, req.TargetPath)
	if !ok {
		return pathErrorf("target path (=%s) must be contained in target project path (=%s)", req.TargetPath, dstProjectPath)
	}

	src, err := s.openProject(req.SourceProject, false)
	if err != nil {
		return pathErrorf("source path (=%s) does not exist", req.SourcePath)
	}
	defer src.Close()
	srcInfo, err := src.Lstat(srcRel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return pathErrorf("source path (=%s) does not exist", req.SourcePath)
		}
		return pathErrorf("source path (=%s) cannot be read: %v", req.SourcePath, unwrapPathError(err))
	}
	dst, err := s.openProject(req.TargetProject, true)
	if err != nil {
		return err
	}
	defer dst.Close()

	patterns := append([]string{}, DefaultExcludes...)
	if req.ExcludeHistory {
		patterns = append(patterns, HistoryExclude)
	}
	patterns = append(patterns, req.Exclude...)
	ex, err := compileExcludes(patterns)
	if err != nil {
		return &PathError{Msg: err.Error()}
	}
	c := &copier{ctx: ctx, s: s, src: src, dst: dst, req: req, ex: ex, rootSrc: srcRel}

	if srcInfo.IsDir() {
		if err := s.mkdirAll(dst, filepath.Dir(dstRel)); err != nil {
			return fmt.Errorf("create target parent: %w", err)
		}
		c.copyTree(srcRel, dstRel, srcInfo)
	} else {
		name := filepath.Base(srcRel)
		if c.ex.match(name, false) {
			return nil
		}
		if st, err := dst.Stat(dstRel); err == nil && st.IsDir() {
			dstRel = filepath.Join(dstRel, name)
		} else if err := s.mkdirAll(dst, filepath.Dir(dstRel)); err != nil {
			return fmt.Errorf("create target parent: %w", err)
		}
		c.syncEntry(srcRel, dstRel, srcInfo)
	}
	if err := ctx.Err(); err != nil {
		c.errs = append(c.errs, err)
	}
	if len(c.errs) > 0 {
		return fmt.Errorf("copy %s to %s: some files could not be copied: %w", req.SourcePath, req.TargetPath, errors.Join(c.errs...))
	}
	return nil
}

type copier struct {
	ctx  context.Context
	s    Store
	src  *os.Root
	dst  *os.Root
	req  CopyRequest
	ex   excludes
	errs []error
	// rootSrc is the source path of the transfer root.
	rootSrc string
	// dirTimes are applied after the contents are written (writing into a
	// directory changes its mtime).
	dirTimes []dirTime
}

type dirTime struct {
	rel   string
	mtime time.Time
}

type srcEntry struct {
	rel  string // relative to the transfer root
	info fs.FileInfo
}

func (c *copier) fail(format string, a ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, a...))
}

// copyTree builds the whole file list first (like rsync), so copying a
// directory into one of its own subdirectories terminates.
func (c *copier) copyTree(srcRoot, dstRoot string, rootInfo fs.FileInfo) {
	rootDev := deviceOf(rootInfo)
	var list []srcEntry
	var walk func(rel string)
	walk = func(rel string) {
		d, err := c.src.Open(filepath.Join(srcRoot, rel))
		if err != nil {
			c.fail("read directory %s: %v", rel, unwrapPathError(err))
			return
		}
		ents, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			c.fail("read directory %s: %v", rel, unwrapPathError(err))
		}
		for _, e := range ents {
			child := filepath.Join(rel, e.Name())
			if c.ex.match(filepath.ToSlash(child), e.IsDir()) {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // vanished meanwhile
			}
			list = append(list, srcEntry{rel: child, info: info})
			if e.IsDir() && deviceOf(info) == rootDev {
				walk(child)
			}
		}
	}
	list = append(list, srcEntry{rel: ".", info: rootInfo})
	walk(".")

	inSource := make(map[string]bool, len(list))
	for _, e := range list {
		inSource[e.rel] = true
	}
	for _, e := range list {
		if c.ctx.Err() != nil {
			return
		}
		dstRel := filepath.Join(dstRoot, e.rel)
		if !c.syncEntry(filepath.Join(srcRoot, e.rel), dstRel, e.info) {
			continue
		}
		if e.info.IsDir() && c.req.DeleteMissing {
			c.deleteExtraneous(e.rel, dstRel, inSource)
		}
	}
	for i := len(c.dirTimes) - 1; i >= 0; i-- {
		t := c.dirTimes[i]
		if err := c.dst.Chtimes(t.rel, t.mtime, t.mtime); err != nil {
			c.fail("set times of %s: %v", t.rel, unwrapPathError(err))
		}
	}
}

// deleteExtraneous removes what the target directory holds and the source
// does not (rsync --delete); excluded names are protected.
func (c *copier) deleteExtraneous(rel, dstRel string, inSource map[string]bool) {
	d, err := c.dst.Open(dstRel)
	if err != nil {
		return
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		c.fail("read target directory %s: %v", dstRel, unwrapPathError(err))
		return
	}
	for _, e := range ents {
		child := filepath.Join(rel, e.Name())
		if inSource[child] || c.ex.match(filepath.ToSlash(child), e.IsDir()) {
			continue
		}
		c.removeOrBackup(filepath.Join(dstRel, e.Name()), e.IsDir())
	}
}

func (c *copier) removeOrBackup(dstRel string, isDir bool) {
	var err error
	if c.req.Backup && !isDir {
		err = c.dst.Rename(dstRel, dstRel+"~")
	} else {
		err = c.dst.RemoveAll(dstRel)
	}
	if err != nil {
		c.fail("remove %s: %v", dstRel, unwrapPathError(err))
	}
}

// syncEntry makes dstRel match the source entry. It reports whether the
// target now is a directory that can receive children.
func (c *copier) syncEntry(srcRel, dstRel string, info fs.FileInfo) bool {
	cur, curErr := c.dst.Lstat(dstRel)
	exists := curErr == nil
	if curErr != nil && !errors.Is(curErr, fs.ErrNotExist) {
		c.fail("stat %s: %v", dstRel, unwrapPathError(curErr))
		return false
	}
	mode := info.Mode()
	if exists && mode.IsDir() && cur.Mode()&fs.ModeSymlink != 0 && srcRel == c.rootSrc {
		// The target directory itself may be a link to a directory of the
		// target project (rsync resolves "dst/"); os.Root keeps it inside.
		if st, err := c.dst.Stat(dstRel); err == nil && st.IsDir() {
			cur = st
		}
	}
	switch {
	case mode.IsDir():
		if exists && !cur.IsDir() {
			c.removeOrBackup(dstRel, false)
		}
		if !exists || !cur.IsDir() {
			if err := c.dst.Mkdir(dstRel, 0o700); err != nil {
				c.fail("mkdir %s: %v", dstRel, unwrapPathError(err))
				return false
			}
		}
		c.setAttrs(dstRel, mode)
		c.dirTimes = append(c.dirTimes, dirTime{rel: dstRel, mtime: info.ModTime()})
		return true
	case mode&fs.ModeSymlink != 0, mode.IsRegular():
		if exists && cur.IsDir() {
			if !c.req.DeleteMissing {
				c.fail("cannot replace directory %s with a non-directory (use delete_missing)", dstRel)
				return false
			}
			if err := c.dst.RemoveAll(dstRel); err != nil {
				c.fail("remove %s: %v", dstRel, unwrapPathError(err))
				return false
			}
			exists = false
		}
		if exists && !c.req.OverwriteNewer && cur.ModTime().After(info.ModTime()) {
			return false // rsync --update: the target is newer
		}
		if mode&fs.ModeSymlink != 0 {
			c.syncSymlink(srcRel, dstRel, cur, exists)
		} else {
			c.syncFile(srcRel, dstRel, info, cur, exists)
		}
		return false
	default:
		return false
	}
}

func (c *copier) syncSymlink(srcRel, dstRel string, cur fs.FileInfo, exists bool) {
	target, err := c.src.Readlink(srcRel)
	if err != nil {
		c.fail("read link %s: %v", srcRel, unwrapPathError(err))
		return
	}
	if exists && cur.Mode()&fs.ModeSymlink != 0 {
		if old, err := c.dst.Readlink(dstRel); err == nil && old == target {
			c.chown(dstRel)
			return
		}
	}
	tmp := tempName(dstRel)
	if err := c.dst.Symlink(target, tmp); err != nil {
		c.fail("create link %s: %v", dstRel, unwrapPathError(err))
		return
	}
	c.chown(tmp)
	c.replace(tmp, dstRel, exists)
}

func (c *copier) syncFile(srcRel, dstRel string, info, cur fs.FileInfo, exists bool) {
	if exists && cur.Mode().IsRegular() && cur.Size() == info.Size() && cur.ModTime().Equal(info.ModTime()) {
		c.setAttrs(dstRel, info.Mode())
		return
	}
	in, err := c.src.OpenFile(srcRel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		c.fail("open %s: %v", srcRel, unwrapPathError(err))
		return
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil || !st.Mode().IsRegular() {
		return // replaced by something else since the listing
	}
	tmp := tempName(dstRel)
	out, err := c.dst.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		c.fail("create %s: %v", dstRel, unwrapPathError(err))
		return
	}
	_, err = io.Copy(out, ctxReader{c.ctx, in})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = c.dst.Remove(tmp)
		c.fail("copy %s: %v", srcRel, unwrapPathError(err))
		return
	}
	c.setAttrs(tmp, info.Mode())
	if err := c.dst.Chtimes(tmp, info.ModTime(), info.ModTime()); err != nil {
		c.fail("set times of %s: %v", dstRel, unwrapPathError(err))
	}
	c.replace(tmp, dstRel, exists)
}

// replace moves a fully written temporary entry over dstRel, keeping the
// old one as "<name>~" with Backup.
func (c *copier) replace(tmp, dstRel string, exists bool) {
	if exists && c.req.Backup {
		if err := c.dst.Rename(dstRel, dstRel+"~"); err != nil {
			c.fail("back up %s: %v", dstRel, unwrapPathError(err))
		}
	}
	if err := c.dst.Rename(tmp, dstRel); err != nil {
		_ = c.dst.Remove(tmp)
		c.fail("rename into %s: %v", dstRel, unwrapPathError(err))
	}
}

// setAttrs copies the permission bits (without setuid/setgid: the server
// writes as root) and sets the owner.
func (c *copier) setAttrs(rel string, mode fs.FileMode) {
	if err := c.dst.Chmod(rel, mode&(fs.ModePerm|fs.ModeSticky)); err != nil {
		c.fail("chmod %s: %v", rel, unwrapPathError(err))
	}
	c.chown(rel)
}

func (c *copier) chown(rel string) {
	if err := c.s.rootChown(c.dst, rel); err != nil {
		c.errs = append(c.errs, err)
	}
}

func tempName(rel string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+"."+hex.EncodeToString(b[:]))
}

func deviceOf(info fs.FileInfo) uint64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev)
	}
	return 0
}

// ctxReader stops a long file copy when the context ends (copy_paths rows
// carry a timeout).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
