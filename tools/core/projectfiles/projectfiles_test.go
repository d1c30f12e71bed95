package projectfiles

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

const (
	projA = "11111111-1111-4111-8111-111111111111"
	projB = "22222222-2222-4222-8222-222222222222"
)

// newStore returns a store in a temp dir; as root it chowns to 2001 like
// production, so ownership is asserted too.
func newStore(t *testing.T) Store {
	t.Helper()
	uid := -1
	if os.Getuid() == 0 {
		uid = DefaultUID
	}
	return Store{Dir: filepath.Join(t.TempDir(), "home"), UID: uid, GID: uid}
}

func write(t testing.TB, s Store, project, rel, content string, mtime time.Time) {
	t.Helper()
	p := filepath.Join(s.ProjectPath(project), rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func read(t *testing.T, s Store, project, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.ProjectPath(project), rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(b)
}

func exists(s Store, project, rel string) bool {
	_, err := os.Lstat(filepath.Join(s.ProjectPath(project), rel))
	return err == nil
}

func TestCheckProjectID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{projA, true},
		{"11111111-1111-1111-8111-111111111111", true},  // version 1: project.Parse's rule, as every front-end
		{"00000000-0000-0000-0000-000000000000", false}, // the nil UUID is no project
		{"11111111-1111-4111-8111-11111111111", false},
		{"11111111111141118111111111111111xxxx", false},
		{"AAAAAAAA-1111-4111-8111-111111111111", false}, // upper case names another directory
		{"../11111-1111-4111-8111-111111111111", false},
		{"", false},
	} {
		err := CheckProjectID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("CheckProjectID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
		if err != nil && err.Error() != "invalid uuid (='"+tc.id+"')" {
			t.Errorf("message %q", err)
		}
		if err != nil && !errors.Is(err, project.ErrInvalidID) {
			t.Errorf("CheckProjectID(%q) = %v, does not wrap project.ErrInvalidID", tc.id, err)
		}
	}
}

func TestResolve(t *testing.T) {
	home := "/projects/home/" + projA
	for _, tc := range []struct {
		in, rel string
		ok      bool
	}{
		{"", ".", true},
		{".", ".", true},
		{"./a/b", "a/b", true},
		{"a/../b", "b", true},
		{home + "/x", "x", true},
		{"..", "", false},
		{"../" + projA + "x/y", "", false}, // the original's startswith bug
		{"/etc/passwd", "", false},
		{"a/../../" + projB, "", false},
	} {
		rel, ok := resolve(home, tc.in)
		if ok != tc.ok || rel != tc.rel {
			t.Errorf("resolve(%q) = %q,%v want %q,%v", tc.in, rel, ok, tc.rel, tc.ok)
		}
	}
}

func TestExcludeRules(t *testing.T) {
	ex, err := compileExcludes(append(append([]string{}, DefaultExcludes...), HistoryExclude, "/top", "build/", "a/**/z", "data[0-9].csv"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rel   string
		dir   bool
		match bool
	}{
		{".smc", true, true},
		{"sub/.smc", true, true},
		{".smc2", true, false},
		{".sage/cache", true, true},
		{"x/.sage/cache", true, true},
		{".sage", true, false},
		{".sage/other", true, false},
		{"f.sage-backup", false, true},
		{"d/f.sage-history", false, true},
		{"top", true, true},
		{"sub/top", true, false},
		{"build", true, true},
		{"build", false, false},
		{"a/b/c/z", false, true},
		{"data3.csv", false, true},
		{"dataX.csv", false, false},
		{"notes.txt", false, false},
	} {
		if got := ex.match(tc.rel, tc.dir); got != tc.match {
			t.Errorf("match(%q, dir=%v) = %v, want %v", tc.rel, tc.dir, got, tc.match)
		}
	}
}

func TestDirectoryListing(t *testing.T) {
	s := newStore(t)
	base := time.Unix(1_700_000_000, 0)
	write(t, s, projA, "b.txt", "bb", base.Add(2*time.Second))
	write(t, s, projA, "a.txt", "a", base.Add(2*time.Second))
	write(t, s, projA, ".hidden", "h", base.Add(5*time.Second))
	write(t, s, projA, "dir/x", "x", base)
	if err := os.Chtimes(filepath.Join(s.ProjectPath(projA), "dir"), base.Add(time.Second), base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(s.ProjectPath(projA), "escape")); err != nil {
		t.Fatal(err)
	}
	names := func(l Listing) string {
		var v []string
		for _, f := range l.Files {
			v = append(v, f.Name)
		}
		return strings.Join(v, ",")
	}
	for _, tc := range []struct {
		name string
		path string
		o    ListOptions
		want string
		more bool
	}{
		{"by name", "", ListOptions{}, "a.txt,b.txt,dir,escape", false},
		{"hidden", ".", ListOptions{Hidden: true}, ".hidden,a.txt,b.txt,dir,escape", false},
		{"by time", "./", ListOptions{Time: true, Hidden: true}, "escape,.hidden,a.txt,b.txt,dir", false},
		{"limit", "", ListOptions{Limit: 2}, "a.txt,b.txt", true},
		{"start", "", ListOptions{Start: 1, Limit: 2}, "b.txt,dir", true},
		{"start past end", "", ListOptions{Start: 10}, "", false},
		{"negative start", "", ListOptions{Start: -1}, "escape", false},
		{"subdir", "dir", ListOptions{}, "x", false},
		{"missing dir lists empty", "nope", ListOptions{}, "", false},
		{"symlink outside lists empty", "escape", ListOptions{}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := s.DirectoryListing(context.Background(), projA, tc.path, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(l); got != tc.want || l.More != tc.more {
				t.Errorf("got %q more=%v, want %q more=%v", got, l.More, tc.want, tc.more)
			}
		})
	}
	l, _ := s.DirectoryListing(context.Background(), projA, "", ListOptions{})
	for _, f := range l.Files {
		switch f.Name {
		case "dir":
			if !f.IsDir || f.Size != nil || f.Mtime != base.Unix()+1 {
				t.Errorf("dir entry %+v", f)
			}
		case "b.txt":
			if f.IsDir || f.Size == nil || *f.Size != 2 || f.Mtime != base.Unix()+2 {
				t.Errorf("file entry %+v", f)
			}
		case "escape":
			if f.IsDir || f.Size == nil {
				t.Errorf("a link leaving the project must not list as a directory: %+v", f)
			}
		}
	}
	if _, err := s.DirectoryListing(context.Background(), projA, "/etc", ListOptions{}); err == nil || !strings.Contains(err.Error(), "must be contained in project path") {
		t.Errorf("escape: %v", err)
	}
}

func TestReadFile(t *testing.T) {
	s := newStore(t)
	write(t, s, projA, "f.txt", "hello", time.Time{})
	write(t, s, projA, "d/one", "1", time.Time{})
	write(t, s, projA, "d/sub/two", "22", time.Time{})
	write(t, s, projB, "secret", "other project", time.Time{})
	home := s.ProjectPath(projA)
	if err := os.Symlink("../../"+projB+"/secret", filepath.Join(home, "d", "leak")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(home, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(home, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := s.ReadFile(context.Background(), projA, "f.txt", 100)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read f.txt = %q, %v", got, err)
	}

	zipped, err := s.ReadFile(context.Background(), projA, "d.zip", 1000)
	if err != nil {
		t.Fatalf("d.zip: %v", err)
	}
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	for _, f := range zr.File {
		entries = append(entries, f.Name)
		if f.Name == "d/sub/two" {
			rc, _ := f.Open()
			b, _ := io.ReadAll(rc)
			rc.Close()
			if string(b) != "22" {
				t.Errorf("d/sub/two = %q", b)
			}
		}
	}
	sort.Strings(entries)
	if strings.Join(entries, " ") != "d/ d/one d/sub/ d/sub/two" {
		t.Errorf("zip entries %v (the symlink must not be followed)", entries)
	}

	for _, tc := range []struct {
		name, path string
		max        int64
		want       string
	}{
		{"too big", "f.txt", 3, "path (=f.txt) must be at most 3 bytes, but it is 5 bytes"},
		{"zip too big", "d.zip", 2, "path (=d.zip) must be at most 2 bytes, but its zip archive is larger"},
		{"missing", "nope.txt", 100, "path (=nope.txt) does not exist"},
		{"missing zip", "nope.zip", 100, "path (=nope.zip) does not exist and neither does " + filepath.Join(home, "nope")},
		{"escape", "../" + projB + "/secret", 100, "path (=../" + projB + "/secret) must not contain a '..' segment"},
		{"absolute escape", "/etc/passwd", 100, "path (=/etc/passwd) must be contained in project path " + home},
		{"symlink to other project", "d/leak", 100, "path (=d/leak) cannot be read: path escapes from parent"},
		{"absolute symlink", "abs", 100, "path (=abs) cannot be read"},
		{"fifo", "fifo", 100, "path (=fifo) is not a regular file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ReadFile(context.Background(), projA, tc.path, tc.max)
			var pe *PathError
			if err == nil || !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMkdir(t *testing.T) {
	s := newStore(t)
	if err := s.Mkdir(projA, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(s.ProjectPath(projA), "a/b/c"))
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("a/b/c: %v %v", st, err)
	}
	assertOwner(t, s, projA, "a")
	assertOwner(t, s, projA, "a/b/c")
	assertOwner(t, s, projA, ".")
	write(t, s, projA, "file", "x", time.Time{})
	if err := s.Mkdir(projA, "file"); err != nil {
		t.Fatal(err)
	}
	if read(t, s, projA, "file.backup") != "x" {
		t.Error("a file in the way must be kept as .backup")
	}
	if err := s.Mkdir(projA, "../x"); err == nil {
		t.Error("mkdir outside the project must fail")
	}
	if err := os.Symlink("/tmp", filepath.Join(s.ProjectPath(projA), "tmp")); err != nil {
		t.Fatal(err)
	}
	if err := s.Mkdir(projA, "tmp/evil"); err == nil {
		t.Error("mkdir through a symlink leaving the project must fail")
	}
}

func assertOwner(t *testing.T, s Store, project, rel string) {
	t.Helper()
	if s.UID < 0 {
		return
	}
	st, err := os.Lstat(filepath.Join(s.ProjectPath(project), rel))
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != s.UID || int(sys.Gid) != s.GID {
		t.Errorf("%s owned by %d:%d, want %d:%d", rel, sys.Uid, sys.Gid, s.UID, s.GID)
	}
}

func TestCopy(t *testing.T) {
	old := time.Unix(1_600_000_000, 0)
	newer := old.Add(time.Hour)
	ctx := context.Background()

	t.Run("tree with excludes, links and modes", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "work/a.txt", "A", old)
		write(t, s, projA, "work/sub/b.txt", "B", old)
		write(t, s, projA, "work/.smc/secret_token", "tok", old)
		write(t, s, projA, "work/x.sage-backup", "bak", old)
		write(t, s, projA, "work/h.sage-history", "hist", old)
		write(t, s, projA, "work/.sage/cache/c", "c", old)
		write(t, s, projA, "work/.sage/keep", "k", old)
		if err := os.Chmod(filepath.Join(s.ProjectPath(projA), "work/a.txt"), 0o751); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/home/user/a.txt", filepath.Join(s.ProjectPath(projA), "work/link")); err != nil {
			t.Fatal(err)
		}
		dirTime := old.Add(-time.Hour)
		if err := os.Chtimes(filepath.Join(s.ProjectPath(projA), "work/sub"), dirTime, dirTime); err != nil {
			t.Fatal(err)
		}
		err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "work", TargetProject: projB, TargetPath: "deep/new/work", ExcludeHistory: true})
		if err != nil {
			t.Fatal(err)
		}
		if read(t, s, projB, "deep/new/work/a.txt") != "A" || read(t, s, projB, "deep/new/work/sub/b.txt") != "B" || read(t, s, projB, "deep/new/work/.sage/keep") != "k" {
			t.Error("content not copied")
		}
		for _, rel := range []string{".smc", "x.sage-backup", "h.sage-history", ".sage/cache"} {
			if exists(s, projB, "deep/new/work/"+rel) {
				t.Errorf("%s must be excluded", rel)
			}
		}
		st, _ := os.Lstat(filepath.Join(s.ProjectPath(projB), "deep/new/work/a.txt"))
		if st.Mode().Perm() != 0o751 || !st.ModTime().Equal(old) {
			t.Errorf("mode %v mtime %v not kept", st.Mode(), st.ModTime())
		}
		st, _ = os.Lstat(filepath.Join(s.ProjectPath(projB), "deep/new/work/sub"))
		if !st.ModTime().Equal(dirTime) {
			t.Errorf("directory mtime %v, want %v", st.ModTime(), dirTime)
		}
		if l, err := os.Readlink(filepath.Join(s.ProjectPath(projB), "deep/new/work/link")); err != nil || l != "/home/user/a.txt" {
			t.Errorf("symlink copied as %q, %v", l, err)
		}
		for _, rel := range []string{".", "deep", "deep/new", "deep/new/work", "deep/new/work/a.txt", "deep/new/work/link", "deep/new/work/sub/b.txt"} {
			assertOwner(t, s, projB, rel)
		}
	})

	t.Run("update keeps newer target unless overwrite_newer", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "f", "source", old)
		write(t, s, projB, "f", "target-newer", newer)
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: projB}); err != nil {
			t.Fatal(err)
		}
		if read(t, s, projB, "f") != "target-newer" {
			t.Error("--update must keep the newer target")
		}
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: projB, OverwriteNewer: true, Backup: true}); err != nil {
			t.Fatal(err)
		}
		if read(t, s, projB, "f") != "source" || read(t, s, projB, "f~") != "target-newer" {
			t.Error("overwrite_newer+backup must replace and keep f~")
		}
	})

	t.Run("delete_missing removes extraneous but keeps excluded", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "d/keep", "1", old)
		write(t, s, projB, "d/keep", "old", old.Add(-time.Hour))
		write(t, s, projB, "d/extra", "x", newer)
		write(t, s, projB, "d/gone/deep", "x", newer)
		write(t, s, projB, "d/.smc/secret_token", "target token", newer)
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetProject: projB, DeleteMissing: true}); err != nil {
			t.Fatal(err)
		}
		if exists(s, projB, "d/extra") || exists(s, projB, "d/gone") {
			t.Error("extraneous files must be deleted")
		}
		if read(t, s, projB, "d/keep") != "1" || read(t, s, projB, "d/.smc/secret_token") != "target token" {
			t.Error("copied file or excluded target file wrong")
		}
	})

	t.Run("delete_missing with backup keeps deleted files as ~", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "d/a", "1", old)
		write(t, s, projB, "d/extra", "x", newer)
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetProject: projB, DeleteMissing: true, Backup: true}); err != nil {
			t.Fatal(err)
		}
		if exists(s, projB, "d/extra") || read(t, s, projB, "d/extra~") != "x" {
			t.Error("backup of deleted file missing")
		}
	})

	t.Run("unchanged file is not rewritten", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "f", "same", old)
		write(t, s, projB, "f", "SAME", old) // same size and mtime: rsync's quick check skips it
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: projB}); err != nil {
			t.Fatal(err)
		}
		if read(t, s, projB, "f") != "SAME" {
			t.Error("quick check must skip identical size+mtime")
		}
	})

	t.Run("file into existing directory", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "f.txt", "x", old)
		if err := s.Mkdir(projB, "box"); err != nil {
			t.Fatal(err)
		}
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "f.txt", TargetProject: projB, TargetPath: "box"}); err != nil {
			t.Fatal(err)
		}
		if read(t, s, projB, "box/f.txt") != "x" {
			t.Error("file must land inside the directory")
		}
	})

	t.Run("directory into its own subdirectory terminates", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "d/f", "x", old)
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetPath: "d/copy"}); err != nil {
			t.Fatal(err)
		}
		if read(t, s, projA, "d/copy/f") != "x" || exists(s, projA, "d/copy/copy") {
			t.Error("self copy wrong")
		}
	})

	t.Run("refusals", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "f", "x", old)
		write(t, s, projB, "private", "p", old)
		if err := os.Symlink("../"+projB, filepath.Join(s.ProjectPath(projA), "other")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			req  CopyRequest
			want string
		}{
			{"source escape", CopyRequest{SourceProject: projA, SourcePath: "/projects/home/" + projB + "/private", TargetPath: "p"}, "source path (=/projects/home/" + projB + "/private) must be contained in project_path"},
			{"source dotdot", CopyRequest{SourceProject: projA, SourcePath: "../" + projB + "/private", TargetPath: "p"}, "source path (=../" + projB + "/private) must not contain a '..' segment"},
			{"target escape", CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: projB, TargetPath: "/etc/x"}, "target path (=/etc/x) must be contained in target project path"},
			{"target dotdot", CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: projB, TargetPath: "../../etc/x"}, "target path (=../../etc/x) must not contain a '..' segment"},
			{"bad target uuid", CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: "nope"}, "invalid uuid (='nope')"},
			{"missing source", CopyRequest{SourceProject: projA, SourcePath: "nope"}, "source path (=nope) does not exist"},
			{"through symlink", CopyRequest{SourceProject: projA, SourcePath: "other/private", TargetPath: "stolen"}, "source path (=other/private) cannot be read"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Copy(ctx, tc.req)
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("got %v, want prefix %q", err, tc.want)
				}
			})
		}
		// A symlink inside the tree is copied as a link, never followed.
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: ".", TargetProject: projB, TargetPath: "copyA"}); err != nil {
			t.Fatal(err)
		}
		if l, err := os.Readlink(filepath.Join(s.ProjectPath(projB), "copyA/other")); err != nil || l != "../"+projB {
			t.Errorf("link: %q %v", l, err)
		}
		if exists(s, projB, "copyA/other/private") && !isLink(s, projB, "copyA/other") {
			t.Error("link was followed")
		}
	})

	t.Run("links to directories inside the target are followed, never replaced", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "d/f", "x", old)
		write(t, s, projB, "real/keep", "k", old)
		if err := os.Symlink("real", filepath.Join(s.ProjectPath(projB), "alias")); err != nil {
			t.Fatal(err)
		}
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetProject: projB, TargetPath: "alias"}); err != nil {
			t.Fatal(err)
		}
		if !isLink(s, projB, "alias") || read(t, s, projB, "real/f") != "x" || read(t, s, projB, "real/keep") != "k" {
			t.Error("copy into a linked directory must write through the link inside the project")
		}
		if err := s.Copy(ctx, CopyRequest{SourceProject: projA, SourcePath: "d/f", TargetProject: projB, TargetPath: "alias/sub/f"}); err != nil {
			t.Fatal(err)
		}
		if read(t, s, projB, "real/sub/f") != "x" {
			t.Error("parent through a link inside the project")
		}
	})

	t.Run("cancelled context reports an error", func(t *testing.T) {
		s := newStore(t)
		write(t, s, projA, "d/f", "x", old)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Copy(cctx, CopyRequest{SourceProject: projA, SourcePath: "d", TargetProject: projB}); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v", err)
		}
	})
}

func isLink(s Store, project, rel string) bool {
	st, err := os.Lstat(filepath.Join(s.ProjectPath(project), rel))
	return err == nil && st.Mode()&os.ModeSymlink != 0
}

// FuzzResolve checks the textual confinement: whatever the hub sends, an
// accepted path stays inside the home.
func FuzzResolve(f *testing.F) {
	for _, seed := range []string{"", ".", "a/b", "../x", "/projects/home/" + projA + "/y", "a/../../b", "./-rf", "..a", "a/..", "//x", "/projects/home/" + projA + "x"} {
		f.Add(seed)
	}
	home := "/projects/home/" + projA
	f.Fuzz(func(t *testing.T, p string) {
		rel, ok := resolve(home, p)
		if !ok {
			return
		}
		if rel != "." && (filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../")) {
			t.Fatalf("resolve(%q) = %q escapes", p, rel)
		}
		if j := filepath.Join(home, rel); j != home && !strings.HasPrefix(j, home+"/") {
			t.Fatalf("resolve(%q) = %q joins to %q", p, rel, j)
		}
	})
}

func TestWriteFile(t *testing.T) {
	s := newStore(t)
	if err := s.WriteFile(projA, ".smc/secret-token", []byte("tok1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile(projA, ".smc/secret-token", []byte("tok2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if read(t, s, projA, ".smc/secret-token") != "tok2" {
		t.Error("not replaced")
	}
	st, _ := os.Stat(filepath.Join(s.ProjectPath(projA), ".smc/secret-token"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	assertOwner(t, s, projA, ".smc")
	assertOwner(t, s, projA, ".smc/secret-token")

	// A project that replaces .smc with a link to another home cannot make
	// the server write there.
	if err := os.RemoveAll(filepath.Join(s.ProjectPath(projB), ".smc")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.ProjectPath(projB), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../"+projA+"/.smc", filepath.Join(s.ProjectPath(projB), ".smc")); err != nil {
		t.Fatal(err)
	}
	// The link is moved aside (as the original's makedirs did with files
	// in the way) and a real directory takes its place.
	if err := s.WriteFile(projB, ".smc/secret-token", []byte("own"), 0o600); err != nil {
		t.Fatal(err)
	}
	if read(t, s, projA, ".smc/secret-token") != "tok2" {
		t.Error("other project's file was overwritten through the link")
	}
	if read(t, s, projB, ".smc/secret-token") != "own" || !isLink(s, projB, ".smc.backup") {
		t.Error("write did not land in the project's own .smc")
	}
	// A link inside the file's own name is replaced, never followed.
	if err := os.Symlink("../../"+projA+"/.smc/secret-token", filepath.Join(s.ProjectPath(projB), ".smc/other")); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFile(projB, ".smc/other", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if read(t, s, projA, ".smc/secret-token") != "tok2" || isLink(s, projB, ".smc/other") {
		t.Error("write followed a link")
	}
	for _, bad := range []string{"", ".", "../" + projB + "/x"} {
		if err := s.WriteFile(projA, bad, []byte("x"), 0o600); err == nil {
			t.Errorf("WriteFile(%q) accepted", bad)
		}
	}
}

// FuzzExclude: any pattern (they come from copy_paths rows) either compiles
// or is an error; matching never panics.
func FuzzExclude(f *testing.F) {
	for _, seed := range []string{"*.tmp", "[z-a]", "[", "a/**/b", "\\", "[!x]", "/", "//", "[]]", "a\\"} {
		f.Add(seed, "dir/file.tmp")
	}
	f.Fuzz(func(t *testing.T, pattern, rel string) {
		ex, err := compileExcludes([]string{pattern})
		if err != nil {
			return
		}
		ex.match(rel, true)
		ex.match(rel, false)
	})
}

func TestBadExcludeFailsTheCopyOnly(t *testing.T) {
	s := newStore(t)
	write(t, s, projA, "f", "x", time.Time{})
	err := s.Copy(context.Background(), CopyRequest{SourceProject: projA, SourcePath: "f", TargetProject: projB, Exclude: []string{"[z-a]"}})
	if err == nil || !strings.Contains(err.Error(), "invalid exclude pattern") {
		t.Errorf("got %v", err)
	}
}
