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
	"sort"
	"strings"

	"golang.org/x/sys/unix"
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
	// SourceNoFollow resolves the source path without following any
	// symbolic link (public copies: what was published is exactly the
	// folder named, never what a link in its path points to).
	SourceNoFollow bool
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
//
// The source tree is read first (like rsync's file list, so copying a
// directory into one of its own subdirectories terminates), within the
// store's Limits: a tree over them fails the copy before anything is
// written. Both trees are then walked with one directory handle per level
// (dirHandle), and the context is checked at every entry and every read.
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
	srcRel, err := resolveHubPath(srcProjectPath, req.SourcePath, "source path", "project_path (="+srcProjectPath+")")
	if err != nil {
		return err
	}
	dstProjectPath := s.ProjectPath(req.TargetProject)
	dstRel, err := resolveHubPath(dstProjectPath, req.TargetPath, "target path", "target project path (="+dstProjectPath+")")
	if err != nil {
		return err
	}

	src, err := s.openProject(req.SourceProject, false)
	if err != nil {
		return pathErrorf("source path (=%s) does not exist", req.SourcePath)
	}
	defer src.Close()
	sp, srcName, err := openSourceParent(src, srcRel, req.SourceNoFollow)
	if err != nil {
		return sourceError(req.SourcePath, err)
	}
	defer sp.Close()
	srcInfo, err := sp.lstat(srcName)
	if err != nil {
		return sourceError(req.SourcePath, err)
	}

	patterns := append([]string{}, DefaultExcludes...)
	if req.ExcludeHistory {
		patterns = append(patterns, HistoryExclude)
	}
	patterns = append(patterns, req.Exclude...)
	ex, err := compileExcludes(patterns)
	if err != nil {
		return &PathError{Msg: err.Error()}
	}
	c := &copier{s: s, req: req, ex: ex, budget: newWalkBudget(ctx, s.Limits)}

	if srcInfo.isDir() {
		err = c.copyDir(sp, srcName, srcInfo, req.TargetProject, dstRel)
	} else {
		err = c.copyFile(sp, srcName, srcInfo, req.TargetProject, dstRel)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.errs = append(c.errs, err)
	}
	if len(c.errs) > 0 {
		return fmt.Errorf("copy %s to %s: some files could not be copied: %w", req.SourcePath, req.TargetPath, errors.Join(c.errs...))
	}
	return nil
}

// resolveHubPath is resolve with the refusals every path from the hub or
// its database gets, worded as the original's messages ("<what> (=<p>)
// must be contained in <within>").
func resolveHubPath(projectPath, p, what, within string) (string, error) {
	if hasDotDot(p) {
		return "", pathErrorf("%s (=%s) must not contain a '..' segment", what, p)
	}
	rel, ok := resolve(projectPath, p)
	if !ok {
		return "", pathErrorf("%s (=%s) must be contained in %s", what, p, within)
	}
	return rel, nil
}

type copier struct {
	s      Store
	req    CopyRequest
	ex     excludes
	budget *walkBudget
	errs   []error
}

// node is one entry of the source tree, read before anything is written.
type node struct {
	name string
	st   fileStat
	// children of a directory; walked says they are complete (false for a
	// mount point or an unreadable directory: nothing below it is deleted).
	children []*node
	walked   bool
}

func (c *copier) fail(format string, a ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, a...))
}

// copyDir copies the directory name of the open source directory sp (its
// metadata st) to dstRel of the target project.
func (c *copier) copyDir(sp *dirHandle, name string, st fileStat, target, dstRel string) error {
	sd, err := sp.openDir(name)
	if err != nil {
		return sourceError(c.req.SourcePath, err)
	}
	defer sd.Close()
	root := &node{name: name, st: st}
	if err := c.scan(sd, root, "", 0, st.dev); err != nil {
		return err
	}

	dst, err := c.s.openProject(target, true)
	if err != nil {
		return err
	}
	defer dst.Close()
	if dstRel == "." || c.isLinkToDir(dst, dstRel) {
		// The home itself, or a link to a directory of the target project
		// (rsync resolves "dst/"; os.Root keeps it inside the project).
		dd, err := openDirHandle(dst, dstRel)
		if err != nil {
			return fmt.Errorf("open target %s: %w", c.req.TargetPath, unwrapPathError(err))
		}
		defer dd.Close()
		c.syncContents(sd, dd, root, "", 0)
		if err := dd.chmodSelf(root.st.mode.Perm() | (root.st.mode & fs.ModeSticky)); err != nil {
			c.fail("chmod %s: %v", c.req.TargetPath, err)
		}
		if c.s.UID >= 0 {
			if err := dd.f.Chown(c.s.UID, c.s.GID); err != nil {
				c.fail("chown %s: %v", c.req.TargetPath, err)
			}
		}
		return nil
	}
	if err := c.s.mkdirAll(dst, filepath.Dir(dstRel)); err != nil {
		return fmt.Errorf("create target parent: %w", err)
	}
	dp, err := openDirHandle(dst, filepath.Dir(dstRel))
	if err != nil {
		return fmt.Errorf("open target parent of %s: %w", c.req.TargetPath, unwrapPathError(err))
	}
	defer dp.Close()
	c.syncDir(sd, dp, root, filepath.Base(dstRel), "", 0)
	return nil
}

// copyFile copies the non-directory name of the open source directory sp
// (its metadata st) to dstRel (or into it, if that is a directory).
func (c *copier) copyFile(sp *dirHandle, name string, st fileStat, target, dstRel string) error {
	if c.ex.match(name, false) {
		return nil
	}
	dst, err := c.s.openProject(target, true)
	if err != nil {
		return err
	}
	defer dst.Close()
	parentRel, dstName := filepath.Dir(dstRel), filepath.Base(dstRel)
	if info, err := dst.Stat(dstRel); err == nil && info.IsDir() {
		parentRel, dstName = dstRel, name
	} else if err := c.s.mkdirAll(dst, parentRel); err != nil {
		return fmt.Errorf("create target parent: %w", err)
	}
	dp, err := openDirHandle(dst, parentRel)
	if err != nil {
		return fmt.Errorf("open target parent of %s: %w", c.req.TargetPath, unwrapPathError(err))
	}
	defer dp.Close()
	c.syncLeaf(sp, dp, &node{name: name, st: st}, dstName, "")
	return nil
}

// openSourceParent opens the directory that holds the source srcRel and
// returns it with the source's own name in it ("." for the home itself,
// whose "parent" handle is the home). Links on the way are followed inside
// the project (os.Root), as the original followed them; with noFollow
// every component is opened from its parent's handle without following a
// link, so a published folder cannot lead anywhere else through one.
func openSourceParent(src *os.Root, srcRel string, noFollow bool) (*dirHandle, string, error) {
	if srcRel == "." {
		d, err := openDirHandle(src, ".")
		return d, ".", err
	}
	parent, name := filepath.Dir(srcRel), filepath.Base(srcRel)
	if !noFollow {
		d, err := openDirHandle(src, parent)
		return d, name, err
	}
	d, err := openDirHandle(src, ".")
	if err != nil {
		return nil, "", err
	}
	if parent == "." {
		return d, name, nil
	}
	for _, seg := range strings.Split(parent, "/") {
		next, err := d.openDir(seg)
		d.Close()
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, "", fmt.Errorf("%w: %s is a symbolic link or not a directory", errThroughLink, seg)
		}
		if err != nil {
			return nil, "", err
		}
		d = next
	}
	return d, name, nil
}

var errThroughLink = errors.New("the path passes through a symbolic link")

// sourceError words a failure to reach the copy's source as the original.
func sourceError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return pathErrorf("source path (=%s) does not exist", path)
	}
	return pathErrorf("source path (=%s) cannot be read: %v", path, unwrapPathError(err))
}

func (c *copier) isLinkToDir(r *os.Root, rel string) bool {
	st, err := r.Lstat(rel)
	if err != nil || st.Mode()&fs.ModeSymlink == 0 {
		return false
	}
	st, err = r.Stat(rel)
	return err == nil && st.IsDir()
}

// scan reads the tree below the open directory d into n, within the
// budget. Errors that end the copy (limits, context) are returned; an
// unreadable entry is recorded and skipped.
func (c *copier) scan(d *dirHandle, n *node, rel string, depth int, rootDev uint64) error {
	names, err := c.budget.readAllNames(d, displayRel(rel))
	if err != nil {
		if errors.Is(err, ErrLimit) || c.budget.check() != nil {
			return err
		}
		c.fail("%v", err)
		return nil
	}
	sort.Strings(names)
	n.walked = true
	for _, name := range names {
		if err := c.budget.check(); err != nil {
			return err
		}
		st, err := d.lstat(name)
		if err != nil {
			continue // vanished meanwhile
		}
		childRel := joinRel(rel, name)
		if err := c.budget.checkPath(childRel); err != nil {
			return err
		}
		if c.ex.match(childRel, st.isDir()) {
			continue
		}
		child := &node{name: name, st: st}
		n.children = append(n.children, child)
		if !st.isDir() || st.dev != rootDev {
			continue // rsync -x: a mount point is created, not entered
		}
		if err := c.budget.enter(depth+1, childRel); err != nil {
			return err
		}
		cd, err := d.openDir(name)
		if err != nil {
			c.fail("read directory %s: %v", childRel, unwrapPathError(err))
			continue
		}
		err = c.scan(cd, child, childRel, depth+1, rootDev)
		cd.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// syncContents makes the open target directory dd hold n's children, and
// nothing else with delete_missing.
func (c *copier) syncContents(sd, dd *dirHandle, n *node, rel string, depth int) {
	for _, child := range n.children {
		if c.budget.check() != nil {
			return
		}
		childRel := joinRel(rel, child.name)
		if child.st.isDir() {
			var cd *dirHandle
			if child.walked {
				var err error
				if cd, err = sd.openDir(child.name); err != nil {
					c.fail("read directory %s: %v", displayRel(childRel), unwrapPathError(err))
					continue
				}
			}
			c.syncDir(cd, dd, child, child.name, childRel, depth+1)
			if cd != nil {
				cd.Close()
			}
		} else {
			c.syncLeaf(sd, dd, child, child.name, childRel)
		}
	}
	if c.req.DeleteMissing && n.walked && c.budget.check() == nil {
		c.deleteExtraneous(dd, n, rel, depth)
	}
}

// syncDir makes dstName in dp the directory n, then fills it from the open
// source directory sd (nil when n was not walked); the times are set after
// the contents, which change them.
func (c *copier) syncDir(sd, dp *dirHandle, n *node, dstName, rel string, depth int) {
	what := c.targetDisplay(rel)
	cur, exists, ok := c.targetEntry(dp, dstName, what)
	if !ok {
		return
	}
	if exists && !cur.isDir() {
		c.removeOrBackup(dp, dstName, false, what, depth)
	}
	if !exists || !cur.isDir() {
		if err := dp.mkdir(dstName, 0o700); err != nil {
			c.fail("mkdir %s: %v", what, unwrapPathError(err))
			return
		}
	}
	dd, err := dp.openDir(dstName)
	if err != nil {
		c.fail("open %s: %v", what, unwrapPathError(err))
		return
	}
	defer dd.Close()
	if sd != nil {
		c.syncContents(sd, dd, n, rel, depth)
	}
	if err := dd.chmodSelf(n.st.mode.Perm() | (n.st.mode & fs.ModeSticky)); err != nil {
		c.fail("chmod %s: %v", what, unwrapPathError(err))
	}
	c.chown(dp, dstName, what)
	if err := dp.setTimes(dstName, n.st.mtime); err != nil {
		c.fail("set times of %s: %v", what, unwrapPathError(err))
	}
}

// targetEntry reads what the target holds at name: ok is false (and the
// failure recorded) when that cannot be known.
func (c *copier) targetEntry(dp *dirHandle, name, what string) (cur fileStat, exists, ok bool) {
	cur, err := dp.lstat(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.fail("stat %s: %v", what, unwrapPathError(err))
		return cur, false, false
	}
	return cur, err == nil, true
}

// syncLeaf makes dstName in dp match the file or link n (n.name in sp).
// FIFOs, sockets and devices are skipped.
func (c *copier) syncLeaf(sp, dp *dirHandle, n *node, dstName, rel string) {
	mode := n.st.mode
	if !mode.IsRegular() && mode&fs.ModeSymlink == 0 {
		return
	}
	what := c.targetDisplay(rel)
	cur, exists, ok := c.targetEntry(dp, dstName, what)
	if !ok {
		return
	}
	if exists && cur.isDir() {
		if !c.req.DeleteMissing {
			c.fail("cannot replace directory %s with a non-directory (use delete_missing)", what)
			return
		}
		if err := c.removeAll(dp, dstName, 0); err != nil {
			c.fail("remove %s: %v", what, err)
			return
		}
		exists = false
	}
	if exists && !c.req.OverwriteNewer && cur.mtime.After(n.st.mtime) {
		return // rsync --update: the target is newer
	}
	if mode&fs.ModeSymlink != 0 {
		c.syncSymlink(sp, dp, n, dstName, cur, exists, what)
	} else {
		c.syncFile(sp, dp, n, dstName, cur, exists, what)
	}
}

func (c *copier) syncSymlink(sp, dp *dirHandle, n *node, dstName string, cur fileStat, exists bool, what string) {
	target, err := sp.readlink(n.name)
	if err != nil {
		c.fail("read link %s: %v", what, unwrapPathError(err))
		return
	}
	if exists && cur.mode&fs.ModeSymlink != 0 {
		if old, err := dp.readlink(dstName); err == nil && old == target {
			c.chown(dp, dstName, what)
			return
		}
	}
	tmp := tempName(dstName)
	if err := dp.symlink(target, tmp); err != nil {
		c.fail("create link %s: %v", what, unwrapPathError(err))
		return
	}
	c.chown(dp, tmp, what)
	c.replace(dp, tmp, dstName, exists, what)
}

func (c *copier) syncFile(sp, dp *dirHandle, n *node, dstName string, cur fileStat, exists bool, what string) {
	if exists && cur.mode.IsRegular() && cur.size == n.st.size && cur.mtime.Equal(n.st.mtime) {
		if f, _, err := dp.openFile(dstName); err == nil {
			c.setFileAttrs(f, n.st.mode, what)
			f.Close()
		}
		return
	}
	in, _, err := sp.openFile(n.name)
	if err != nil {
		if errors.Is(err, errNotRegular) {
			return // replaced by something else since the listing
		}
		c.fail("open %s: %v", displayRel(n.name), unwrapPathError(err))
		return
	}
	defer in.Close()
	tmp := tempName(dstName)
	out, err := dp.create(tmp, 0o600)
	if err != nil {
		c.fail("create %s: %v", what, unwrapPathError(err))
		return
	}
	_, err = io.Copy(out, ctxReader{c.budget.ctx, in})
	if err == nil {
		c.setFileAttrs(out, n.st.mode, what)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = dp.unlink(tmp, false)
		c.fail("copy %s: %v", what, unwrapPathError(err))
		return
	}
	if err := dp.setTimes(tmp, n.st.mtime); err != nil {
		c.fail("set times of %s: %v", what, unwrapPathError(err))
	}
	c.replace(dp, tmp, dstName, exists, what)
}

// setFileAttrs copies the permission bits (without setuid/setgid: the
// server writes as root) and sets the owner, on the open file.
func (c *copier) setFileAttrs(f *os.File, mode fs.FileMode, what string) {
	if err := f.Chmod(mode & (fs.ModePerm | fs.ModeSticky)); err != nil {
		c.fail("chmod %s: %v", what, unwrapPathError(err))
	}
	if c.s.UID >= 0 {
		if err := f.Chown(c.s.UID, c.s.GID); err != nil {
			c.fail("chown %s: %v", what, unwrapPathError(err))
		}
	}
}

// replace moves a fully written temporary entry over dstName, keeping the
// old one as "<name>~" with Backup.
func (c *copier) replace(dp *dirHandle, tmp, dstName string, exists bool, what string) {
	if exists && c.req.Backup {
		if err := dp.rename(dstName, dstName+"~"); err != nil {
			c.fail("back up %s: %v", what, unwrapPathError(err))
		}
	}
	if err := dp.rename(tmp, dstName); err != nil {
		_ = dp.unlink(tmp, false)
		c.fail("rename into %s: %v", what, unwrapPathError(err))
	}
}

// deleteExtraneous removes what the target directory dd holds and the
// source node n does not (rsync --delete); excluded names are protected.
func (c *copier) deleteExtraneous(dd *dirHandle, n *node, rel string, depth int) {
	names, err := c.budget.readAllNames(dd, c.targetDisplay(rel))
	if err != nil {
		c.fail("%v", err)
		return
	}
	inSource := make(map[string]bool, len(n.children))
	for _, ch := range n.children {
		inSource[ch.name] = true
	}
	for _, name := range names {
		if c.budget.check() != nil {
			return
		}
		if inSource[name] {
			continue
		}
		st, err := dd.lstat(name)
		if err != nil {
			continue
		}
		if c.ex.match(joinRel(rel, name), st.isDir()) {
			continue
		}
		c.removeOrBackup(dd, name, st.isDir(), c.targetDisplay(joinRel(rel, name)), depth)
	}
}

func (c *copier) removeOrBackup(dp *dirHandle, name string, isDir bool, what string, depth int) {
	var err error
	if c.req.Backup && !isDir {
		err = dp.rename(name, name+"~")
	} else {
		err = c.removeAll(dp, name, depth)
	}
	if err != nil {
		c.fail("remove %s: %v", what, unwrapPathError(err))
	}
}

// removeAll removes name in dp and everything below it, one handle per
// level, within the walk's budget (a target tree is project-controlled
// too).
func (c *copier) removeAll(dp *dirHandle, name string, depth int) error {
	st, err := dp.lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.isDir() {
		return dp.unlink(name, false)
	}
	if err := c.budget.enter(depth+1, name); err != nil {
		return err
	}
	d, err := dp.openDir(name)
	if err != nil {
		return err
	}
	names, err := c.budget.readAllNames(d, name)
	if err == nil {
		for _, child := range names {
			if err = c.removeAll(d, child, depth+1); err != nil {
				break
			}
		}
	}
	d.Close()
	if err != nil {
		return err
	}
	return dp.unlink(name, true)
}

func (c *copier) chown(dp *dirHandle, name, what string) {
	if c.s.UID < 0 {
		return
	}
	if err := dp.lchown(name, c.s.UID, c.s.GID); err != nil {
		c.fail("chown %s: %v", what, unwrapPathError(err))
	}
}

// joinRel joins a walk-relative path ("" is the walk's root) and a name.
func joinRel(rel, name string) string {
	if rel == "" || rel == "." {
		return name
	}
	return rel + "/" + name
}

// targetDisplay names the target of the walk-relative path rel in
// messages.
func (c *copier) targetDisplay(rel string) string {
	if rel == "" {
		return c.req.TargetPath
	}
	return shorten(joinRel(c.req.TargetPath, rel))
}

// displayRel names a walk-relative path in messages, shortened.
func displayRel(rel string) string {
	if rel == "" {
		return "."
	}
	return shorten(rel)
}

func tempName(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "." + name + "." + hex.EncodeToString(b[:])
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
