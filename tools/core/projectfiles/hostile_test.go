package projectfiles

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// What a hostile project can put into its own home, and what every
// operation must still do: stay bounded, never block, never read outside
// what the hub named.

// mkChain creates depth nested directories named name below dir, through
// directory handles (the chain may be longer than PATH_MAX), with a file
// "bottom" in the deepest one.
func mkChain(t testing.TB, dir, name string, depth int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < depth; i++ {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	f, err := unix.Openat(fd, "bottom", unix.O_WRONLY|unix.O_CREAT, 0o644)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(f)
}

func TestDotDotSegmentsAreRefusedEverywhere(t *testing.T) {
	s := newStore(t)
	write(t, s, projA, "pub/index.html", "public", time.Time{})
	write(t, s, projA, ".ssh/id_rsa", "private key", time.Time{})
	ctx := context.Background()
	// "pub/.." stays inside the home textually but names all of it: a
	// caller that checked "starts with pub" would hand out .ssh.
	for _, p := range []string{"pub/..", "pub/../.ssh", "../" + projA + "/.ssh", "a/../b", ".."} {
		t.Run(p, func(t *testing.T) {
			want := "must not contain a '..' segment"
			_, err := s.DirectoryListing(ctx, projA, p, ListOptions{})
			assertPathError(t, "directory_listing", err, want)
			_, err = s.ReadFile(ctx, projA, p, 1000)
			assertPathError(t, "read_file", err, want)
			assertPathError(t, "mkdir", s.Mkdir(projA, p), want)
			assertPathError(t, "write", s.WriteFile(projA, p+"/x", []byte("x"), 0o600), want)
			assertPathError(t, "copy source", s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: p, TargetProject: projB, TargetPath: "stolen"}), want)
			assertPathError(t, "copy target", s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "pub", TargetProject: projB, TargetPath: p}), want)
		})
	}
	if exists(s, projB, "stolen") {
		t.Error("a refused copy wrote into the target")
	}
	// Names that merely contain dots are files like any other.
	write(t, s, projA, "..hidden/...", "ok", time.Time{})
	if got, err := s.ReadFile(ctx, projA, "..hidden/...", 100); err != nil || string(got) != "ok" {
		t.Errorf("read ..hidden/... = %q, %v", got, err)
	}
}

func assertPathError(t *testing.T, what string, err error, want string) {
	t.Helper()
	var pe *PathError
	if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: got %v, want a PathError containing %q", what, err, want)
	}
}

func TestDeepTreesAreRefusedWithinTheLimits(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	// 300 levels of 255-byte names: a 77 KB path, far beyond PATH_MAX.
	write(t, s, projA, "deep/top", "t", time.Time{})
	mkChain(t, filepath.Join(s.ProjectPath(projA), "deep"), strings.Repeat("d", 255), 300)

	err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "deep", TargetProject: projB, TargetPath: "copy"})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("copy of a 300-level tree: got %v, want ErrLimit", err)
	}
	if exists(s, projB, "copy") {
		t.Error("a copy over the limits must fail before writing anything")
	}
	_, err = s.ReadFile(ctx, projA, "deep.zip", MaxReadSize)
	if err == nil || !strings.Contains(err.Error(), "limit exceeded") {
		t.Errorf("zip of a 300-level tree: got %v, want a limit error", err)
	}

	// Within raised limits the same tree copies completely: every level is
	// reached from its parent's handle, never by a path (which would exceed
	// PATH_MAX).
	s.Limits = Limits{MaxDepth: 400, MaxPathBytes: 1 << 20}
	if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "deep", TargetProject: projB, TargetPath: "copy"}); err != nil {
		t.Fatalf("copy within raised limits: %v", err)
	}
	fd, err := unix.Open(filepath.Join(s.ProjectPath(projB), "copy"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	levels := 0
	for {
		next, err := unix.Openat(fd, strings.Repeat("d", 255), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			break
		}
		unix.Close(fd)
		fd, levels = next, levels+1
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "bottom", &st, 0); err != nil || levels != 300 {
		t.Errorf("copied %d levels (want 300), bottom file: %v", levels, err)
	}
	unix.Close(fd)

	// delete_missing removes a deep target tree within the limits too.
	s.Limits = Limits{MaxDepth: 400, MaxPathBytes: 1 << 20}
	write(t, s, projA, "empty/keep", "k", time.Time{})
	if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "empty", TargetProject: projB, TargetPath: "copy", DeleteMissing: true}); err != nil {
		t.Fatalf("delete_missing of a deep target: %v", err)
	}
	if exists(s, projB, "copy/"+strings.Repeat("d", 255)) || read(t, s, projB, "copy/keep") != "k" {
		t.Error("delete_missing did not replace the deep target tree")
	}
}

func TestWideTreesAreRefusedWithinTheLimits(t *testing.T) {
	s := newStore(t)
	s.Limits = Limits{MaxEntries: 100}
	for i := range 150 {
		write(t, s, projA, fmt.Sprintf("wide/f%03d", i), "x", time.Time{})
	}
	ctx := context.Background()
	err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "wide", TargetProject: projB})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "more than 100 files and directories") {
		t.Errorf("copy of 150 entries with MaxEntries 100: %v", err)
	}
	if _, err := s.ReadFile(ctx, projA, "wide.zip", MaxReadSize); err == nil || !strings.Contains(err.Error(), "more than 100 files") {
		t.Errorf("zip of 150 entries with MaxEntries 100: %v", err)
	}
	s.Limits = Limits{MaxNameBytes: 200}
	err = s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "wide", TargetProject: projB})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "names longer than 200 bytes") {
		t.Errorf("copy of 150 names with MaxNameBytes 200: %v", err)
	}
	s.Limits = Limits{MaxListEntries: 100}
	_, err = s.DirectoryListing(ctx, projA, "wide", ListOptions{Limit: 10})
	if err == nil || !strings.Contains(err.Error(), "has more than 100 entries") {
		t.Errorf("listing of 150 entries with MaxListEntries 100: %v", err)
	}
	s.Limits = Limits{}
	l, err := s.DirectoryListing(ctx, projA, "wide", ListOptions{Start: 140, Limit: 5})
	if err != nil || len(l.Files) != 5 || l.Files[0].Name != "f140" || !l.More || l.Files[0].Size == nil {
		t.Errorf("window of a listing: %+v, %v", l, err)
	}
}

func TestAFifoNeverBlocks(t *testing.T) {
	s := newStore(t)
	write(t, s, projA, "d/f", "x", time.Time{})
	home := s.ProjectPath(projA)
	if err := syscall.Mkfifo(filepath.Join(home, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(home, "d", "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A FIFO named as a directory: the open must fail at once (a
		// plain open for reading blocks until a writer appears).
		l, err := s.DirectoryListing(ctx, projA, "fifo", ListOptions{})
		if err != nil || len(l.Files) != 0 {
			t.Errorf("listing a FIFO: %+v, %v", l, err)
		}
		if _, err := s.ReadFile(ctx, projA, "fifo", 100); err == nil {
			t.Error("reading a FIFO must fail")
		}
		// FIFOs inside walked trees are skipped.
		if _, err := s.ReadFile(ctx, projA, "d.zip", 10000); err != nil {
			t.Errorf("zip with a FIFO inside: %v", err)
		}
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetProject: projB}); err != nil {
			t.Errorf("copy with a FIFO inside: %v", err)
		}
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "fifo", TargetProject: projB}); err != nil {
			t.Errorf("copy of a FIFO: %v", err)
		}
		// A directory swapped for a FIFO between the listing and the open
		// (the race a project can win) fails the directory open at once.
		root, err := os.OpenRoot(home)
		if err != nil {
			t.Error(err)
			return
		}
		defer root.Close()
		d, err := openDirHandle(root, ".")
		if err != nil {
			t.Error(err)
			return
		}
		defer d.Close()
		if _, err := d.openDir("fifo"); !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("openDir on a FIFO: %v, want ENOTDIR", err)
		}
		if _, _, err := d.openFile("fifo"); !errors.Is(err, errNotRegular) {
			t.Errorf("openFile on a FIFO: %v, want not a regular file", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("an operation blocked on a FIFO")
	}
	if read(t, s, projB, "d/f") != "x" || exists(s, projB, "d/pipe") {
		t.Error("copy with a FIFO inside: regular file missing or FIFO copied")
	}
}

func TestReadFileMaxSize(t *testing.T) {
	s := newStore(t)
	write(t, s, projA, "f", "content", time.Time{})
	ctx := context.Background()
	// math.MaxInt64 overflowed maxSize+1 and returned nothing, silently.
	got, err := s.ReadFile(ctx, projA, "f", math.MaxInt64)
	if err != nil || string(got) != "content" {
		t.Errorf("maxsize MaxInt64: %q, %v", got, err)
	}
	if _, err := s.ReadFile(ctx, projA, "f", -1); err == nil {
		t.Error("a negative maxsize must be refused")
	}
	// The archive's own bytes count: names and directory entries of an
	// empty tree make a zip although no file has content.
	for i := range 50 {
		if err := os.MkdirAll(filepath.Join(s.ProjectPath(projA), "names", fmt.Sprintf("%0200d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.ReadFile(ctx, projA, "names.zip", 4000)
	assertPathError(t, "zip of names", err, "must be at most 4000 bytes, but its zip archive is larger")
	zipped, err := s.ReadFile(ctx, projA, "names.zip", 100000)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil || len(zr.File) != 51 {
		t.Errorf("zip of names: %v, %v", len(zipped), err)
	}
}

func TestWalksEndWithTheirContext(t *testing.T) {
	s := newStore(t)
	for i := range 20 {
		write(t, s, projA, fmt.Sprintf("d/sub%d/f", i), "x", time.Time{})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetProject: projB}); !errors.Is(err, context.Canceled) {
		t.Errorf("copy: %v", err)
	}
	if exists(s, projB, "d") {
		t.Error("a cancelled copy wrote")
	}
	if _, err := s.ReadFile(ctx, projA, "d.zip", 100000); !errors.Is(err, context.Canceled) {
		t.Errorf("zip: %v", err)
	}
	if _, err := s.DirectoryListing(ctx, projA, "d", ListOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("listing: %v", err)
	}
}

// BenchmarkCopyChain copies a chain of directories: with one handle per
// level the cost per level is constant (os.Root by path was O(depth) per
// level).
func BenchmarkCopyChain(b *testing.B) {
	for _, depth := range []int{50, 200} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			s := Store{Dir: filepath.Join(b.TempDir(), "home"), UID: -1, GID: -1, Limits: Limits{MaxDepth: 1000, MaxPathBytes: 1 << 20}}
			write(b, s, projA, "c/x", "x", time.Time{})
			mkChain(b, filepath.Join(s.ProjectPath(projA), "c"), strings.Repeat("n", 200), depth)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := s.Copy(context.Background(), CopyRequest{SourceProject: projA, SourcePath: "c", TargetProject: projB, TargetPath: fmt.Sprintf("c%d", i)}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*depth), "ns/level")
		})
	}
}

func TestSourceNoFollowNeverLeavesTheNamedFolder(t *testing.T) {
	s := newStore(t)
	write(t, s, projA, "pub/index.html", "public", time.Time{})
	write(t, s, projA, ".ssh/id_rsa", "private key", time.Time{})
	home := s.ProjectPath(projA)
	// A link inside the published folder that points at the private one.
	if err := os.Symlink("../.ssh", filepath.Join(home, "pub", "keys")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, p := range []string{"pub/keys/id_rsa", "pub/keys/"} {
		err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: p, TargetProject: projB, TargetPath: "got", SourceNoFollow: true})
		if p == "pub/keys/" {
			// The link itself is the source: it is copied as a link.
			if err != nil || !isLink(s, projB, "got") {
				t.Errorf("copy of the link %s: %v", p, err)
			}
			continue
		}
		assertPathError(t, "copy through a link", err, "passes through a symbolic link")
	}
	if exists(s, projB, "got/id_rsa") {
		t.Error("a public copy followed a link out of the published folder")
	}
	// The whole published folder copies, with its link as a link.
	if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "pub", TargetProject: projB, TargetPath: "pubcopy", SourceNoFollow: true}); err != nil {
		t.Fatal(err)
	}
	if read(t, s, projB, "pubcopy/index.html") != "public" || !isLink(s, projB, "pubcopy/keys") {
		t.Error("published folder not copied as is")
	}
	// Without SourceNoFollow (a collaborator's own copy) links inside the
	// project are followed as the original did.
	if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "pub/keys/id_rsa", TargetProject: projB, TargetPath: "mine"}); err != nil || read(t, s, projB, "mine") != "private key" {
		t.Errorf("collaborator copy through an inside link: %v", err)
	}
}

func TestCleanPath(t *testing.T) {
	s := Store{Dir: "/projects/home"}
	for _, tc := range []struct{ in, want, err string }{
		{"pub/", "pub", ""},
		{"./pub//x", "pub/x", ""},
		{"/projects/home/" + projA + "/pub", "pub", ""},
		{"", ".", ""},
		{"pub/..", "", "'..'"},
		{"/etc", "", "must be contained"},
	} {
		got, err := s.CleanPath(projA, tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CleanPath(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}
