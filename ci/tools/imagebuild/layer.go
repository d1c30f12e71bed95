package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarOptions make a layer reproducible: every entry's times are set to
// mtime, owner names are dropped (numeric ids only), entries are written in
// lexical order.
type tarOptions struct {
	mtime time.Time
	// skipContents lists directories (relative, e.g. "proc") that are kept
	// as empty directories: the runtime mounts over them.
	skipContents map[string]bool
}

// fileEntry is one file of a layer built from memory.
type fileEntry struct {
	path string // without a leading slash
	mode int64
	data []byte
}

// layerFromFiles builds a gzip layer holding files (owned by 0:0).
func layerFromFiles(files []fileEntry, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     f.path,
			Mode:     f.mode,
			Size:     int64(len(f.data)),
			ModTime:  mtime,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", f.path, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return newLayer(buf.Bytes())
}

// layerFromDir builds a gzip layer from a root filesystem directory,
// keeping numeric owners, modes, symlinks, hard links and device nodes.
func layerFromDir(root string, opts tarOptions) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := writeDirTar(&buf, root, opts); err != nil {
		return nil, err
	}
	return newLayer(buf.Bytes())
}

func newLayer(tarball_ []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarball_)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(6))
}

func writeDirTar(w io.Writer, root string, opts tarOptions) error {
	tw := tar.NewWriter(w)
	links := map[uint64]string{} // inode -> first path, for hard links
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		var target string
		if info.Mode()&os.ModeSymlink != 0 {
			if target, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = opts.mtime, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat", rel)
		}
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		if hdr.Typeflag == tar.TypeReg && st.Nlink > 1 {
			if first, seen := links[st.Ino]; seen {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[st.Ino] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar header %s: %w", rel, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("tar %s: %w", rel, err)
			}
		}
		if info.IsDir() && opts.skipContents[rel] {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("layer from %s: %w", root, err)
	}
	return tw.Close()
}
