package projectfiles

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// dirHandle is an open directory of a project. Walks hold one handle per
// directory level and reach every child with one *at system call on its
// parent's handle, so each step costs O(1) whatever the depth (os.Root
// resolves every path component by component: O(depth) per call, O(depth²)
// per walk), and nothing below the handle is ever followed through a
// symlink:
//   - directories are opened O_DIRECTORY|O_NOFOLLOW|O_NONBLOCK, so a FIFO,
//     device or symlink put where a directory was fails at once instead of
//     blocking the open or leaving the project;
//   - files are opened O_NOFOLLOW|O_NONBLOCK and their type is checked on the
//     open descriptor;
//   - metadata is read with AT_SYMLINK_NOFOLLOW.
//
// Names passed to its methods are single path components (never "/", "."
// or "..": they come from reading the directory itself).
type dirHandle struct {
	f *os.File
}

const (
	dirOpenFlags  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fileOpenFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
)

// openDirHandle opens the directory rel of r (resolved by os.Root, so links
// inside the home are followed there and never out of it) as a handle,
// without blocking on a FIFO or device at that path.
func openDirHandle(r *os.Root, rel string) (*dirHandle, error) {
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return &dirHandle{f: f}, nil
}

func (d *dirHandle) fd() int { return int(d.f.Fd()) }

// Close releases the handle.
func (d *dirHandle) Close() error { return d.f.Close() }

// openDir opens the child directory name.
func (d *dirHandle) openDir(name string) (*dirHandle, error) {
	fd, err := openat(d.fd(), name, dirOpenFlags, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &dirHandle{f: os.NewFile(uintptr(fd), name)}, nil
}

// openFile opens the child name for reading; it fails for anything but a
// regular file (a FIFO opens without blocking and is refused).
func (d *dirHandle) openFile(name string) (*os.File, fileStat, error) {
	fd, err := openat(d.fd(), name, fileOpenFlags, 0)
	if err != nil {
		return nil, fileStat{}, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fileStat{}, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	s := statOf(&st)
	if !s.mode.IsRegular() {
		unix.Close(fd)
		return nil, s, &fs.PathError{Op: "open", Path: name, Err: errNotRegular}
	}
	return os.NewFile(uintptr(fd), name), s, nil
}

var errNotRegular = errors.New("not a regular file")

// lstat returns the metadata of the child name, not following a link.
func (d *dirHandle) lstat(name string) (fileStat, error) {
	var st unix.Stat_t
	if err := ignoringEINTR(func() error { return unix.Fstatat(d.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return fileStat{}, &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	return statOf(&st), nil
}

// stat returns the metadata of the handle's own directory.
func (d *dirHandle) stat() (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd(), &st); err != nil {
		return fileStat{}, err
	}
	return statOf(&st), nil
}

// names reads the next at most n entry names (n > 0); io.EOF at the end.
func (d *dirHandle) names(n int) ([]string, error) {
	return d.f.Readdirnames(n)
}

func (d *dirHandle) readlink(name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(d.fd(), name, buf)
		if err != nil {
			return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= unix.PathMax {
			return "", &fs.PathError{Op: "readlink", Path: name, Err: unix.ENAMETOOLONG}
		}
		buf = make([]byte, 2*len(buf))
	}
}

func (d *dirHandle) mkdir(name string, mode uint32) error {
	if err := unix.Mkdirat(d.fd(), name, mode); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

// create makes a new file (never through a link: O_EXCL|O_NOFOLLOW).
func (d *dirHandle) create(name string, mode uint32) (*os.File, error) {
	fd, err := openat(d.fd(), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (d *dirHandle) symlink(target, name string) error {
	if err := unix.Symlinkat(target, d.fd(), name); err != nil {
		return &fs.PathError{Op: "symlink", Path: name, Err: err}
	}
	return nil
}

func (d *dirHandle) rename(from, to string) error {
	if err := unix.Renameat(d.fd(), from, d.fd(), to); err != nil {
		return &fs.PathError{Op: "rename", Path: to, Err: err}
	}
	return nil
}

// unlink removes the child name: a file or link, or an empty directory.
func (d *dirHandle) unlink(name string, isDir bool) error {
	flags := 0
	if isDir {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(d.fd(), name, flags); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

// lchown sets the owner of the child name (a link itself, never its target).
func (d *dirHandle) lchown(name string, uid, gid int) error {
	if err := unix.Fchownat(d.fd(), name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "chown", Path: name, Err: err}
	}
	return nil
}

// setTimes sets the modification time of the child name, never through a
// link.
func (d *dirHandle) setTimes(name string, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(d.fd(), name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "chtimes", Path: name, Err: err}
	}
	return nil
}

// chmodSelf sets the permission bits of the handle's own directory
// (fchmodat would follow a link swapped in under the name).
func (d *dirHandle) chmodSelf(mode fs.FileMode) error {
	return d.f.Chmod(mode)
}

// fileStat is the part of lstat the walks use.
type fileStat struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	dev   uint64
}

func (s fileStat) isDir() bool { return s.mode.IsDir() }

func statOf(st *unix.Stat_t) fileStat {
	mode := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	if st.Mode&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if st.Mode&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if st.Mode&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return fileStat{
		mode:  mode,
		size:  st.Size,
		mtime: time.Unix(st.Mtim.Unix()),
		dev:   uint64(st.Dev),
	}
}

func openat(dirfd int, name string, flags int, mode uint32) (fd int, err error) {
	err = ignoringEINTR(func() error {
		fd, err = unix.Openat(dirfd, name, flags, mode)
		return err
	})
	return fd, err
}

func ignoringEINTR(f func() error) error {
	for {
		err := f()
		if err != unix.EINTR {
			return err
		}
	}
}

// validName reports whether a directory entry name can be used with the
// handle methods (defence in depth: names come from getdents).
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsRune(name, '/')
}

// readAllNames reads every name of d, failing once more than limit names
// were read (the walk's entry budget) or the context ends.
func (w *walkBudget) readAllNames(d *dirHandle, what string) ([]string, error) {
	var out []string
	for {
		if err := w.check(); err != nil {
			return out, err
		}
		batch, err := d.names(readBatch)
		for _, n := range batch {
			if !validName(n) {
				continue
			}
			if err := w.addEntry(n); err != nil {
				return out, err
			}
			out = append(out, n)
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read directory %s: %w", what, unwrapPathError(err))
		}
	}
}

// readBatch is how many names one getdents round reads.
const readBatch = 1024
