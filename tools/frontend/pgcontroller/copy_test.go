package pgcontroller

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/testwait"
)

func (e *env) writeHome(project, rel, content string) {
	e.t.Helper()
	p := filepath.Join(e.files.ProjectPath(project), rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// publish adds a public_paths row as the hub's share dialog does.
func (e *env) publish(project, path string, disabled bool) {
	sum := sha1.Sum([]byte(project + path))
	e.exec(`INSERT INTO public_paths (id, project_id, path, disabled, created) VALUES ($1, $2, $3, $4, now())`,
		hex.EncodeToString(sum[:]), project, path, disabled)
}

func (e *env) insertCopy(id, src, srcPath, dst, dstPath string, public bool, timeout float64) {
	e.exec(`INSERT INTO copy_paths (id, time, source_project_id, source_path, target_project_id, target_path, public, timeout)
		VALUES ($1, now() AT TIME ZONE 'UTC', $2, $3, $4, $5, $6, NULLIF($7::float8, 0))`, id, src, srcPath, dst, dstPath, public, timeout)
}

// copyResult waits for the row to finish and returns its error column.
func (e *env) copyResult(id string) *string {
	e.t.Helper()
	var finished *time.Time
	var errText *string
	testwait.Eventually(e.t, "copy "+id+" finished", func() bool {
		if err := e.pool.QueryRow(context.Background(), `SELECT finished, error FROM copy_paths WHERE id = $1`, id).Scan(&finished, &errText); err != nil {
			e.t.Fatal(err)
		}
		return finished != nil
	})
	return errText
}

func TestPublicCopiesReadOnlyPublishedPaths(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.writeHome(p1, "pub/index.html", "public")
	e.writeHome(p1, "pubx/secret", "not published")
	e.writeHome(p1, "old/notes", "unpublished")
	e.writeHome(p1, ".ssh/id_rsa", "private key")
	e.writeHome(p1, "single.txt", "one file")
	if err := os.Symlink("../.ssh", filepath.Join(e.files.ProjectPath(p1), "pub", "keys")); err != nil {
		t.Fatal(err)
	}
	e.publish(p1, "pub", false)
	e.publish(p1, "single.txt", false)
	e.publish(p1, "old", true)
	e.publish(p2, ".ssh", false) // another project's public path publishes nothing of p1
	e.start(e.config(), e.fake)

	for i, tc := range []struct {
		path    string
		public  bool
		wantErr string // "" = copied
	}{
		{"pub", true, ""},
		{"pub/index.html", true, ""},
		{"./pub/", true, ""},
		{"single.txt", true, ""},
		{"pub/..", true, "must not contain a '..' segment"},
		{"pub/../.ssh", true, "must not contain a '..' segment"},
		{".ssh", true, "not a published path"},
		{".ssh/id_rsa", true, "not a published path"},
		{"pubx/secret", true, "not a published path"},
		{"old/notes", true, "not a published path"},
		{"", true, "not a published path"},
		{"pub/keys/id_rsa", true, "passes through a symbolic link"},
		// A collaborator's own copy (public false) is not limited.
		{"old/notes", false, ""},
	} {
		id := fmt.Sprintf("ffffffff-0000-4000-8000-%012d", i)
		target := fmt.Sprintf("got%d", i)
		e.insertCopy(id, p1, tc.path, p3, target, tc.public, 0)
		errText := e.copyResult(id)
		switch {
		case tc.wantErr == "" && errText != nil:
			t.Errorf("copy of %q (public %v): %s", tc.path, tc.public, *errText)
		case tc.wantErr != "" && (errText == nil || !strings.Contains(*errText, tc.wantErr)):
			t.Errorf("copy of %q (public %v): error %v, want %q", tc.path, tc.public, errText, tc.wantErr)
		case tc.wantErr != "":
			if _, err := os.Lstat(filepath.Join(e.files.ProjectPath(p3), target)); err == nil {
				t.Errorf("refused copy of %q wrote %s", tc.path, target)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.files.ProjectPath(p3), "got0", "index.html")); err != nil || string(b) != "public" {
		t.Errorf("published folder: %q %v", b, err)
	}
	if _, err := os.ReadFile(filepath.Join(e.files.ProjectPath(p3), "got0", "keys", "id_rsa")); err == nil {
		t.Error("the published folder's link was followed to the private key")
	}
}

func TestCopyInterruptedTwiceIsFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.writeHome(p1, "big", "x")
	const id = "eeeeeeee-0000-4000-8000-000000000002"
	// Started, then resumed once (the marker), then the controller died
	// again: the copy itself is the likely cause.
	e.exec(`INSERT INTO copy_paths (id, time, source_project_id, source_path, target_project_id, target_path, started, error)
		VALUES ($1, now() AT TIME ZONE 'UTC', $2, 'big', $3, 'big', now() AT TIME ZONE 'UTC', $4)`, id, p1, p2, resumeMarker)
	e.start(e.config(), e.fake)
	errText := e.copyResult(id)
	if errText == nil || !strings.Contains(*errText, "stopped twice") {
		t.Errorf("error %v, want the copy failed as interrupted twice", errText)
	}
	if _, err := os.Lstat(filepath.Join(e.files.ProjectPath(p2), "big")); err == nil {
		t.Error("a copy interrupted twice ran a third time")
	}
}

func TestCopyResumedOnceClearsItsMarker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.writeHome(p1, "f", "x")
	const id = "eeeeeeee-0000-4000-8000-000000000003"
	e.exec(`INSERT INTO copy_paths (id, time, source_project_id, source_path, target_project_id, target_path, started)
		VALUES ($1, now() AT TIME ZONE 'UTC', $2, 'f', $3, 'f', now() AT TIME ZONE 'UTC')`, id, p1, p2)
	e.start(e.config(), e.fake)
	if errText := e.copyResult(id); errText != nil {
		t.Errorf("resumed copy: error %s (the resume marker must be cleared)", *errText)
	}
}

func TestAStuckCopyBlocksNoOtherProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sharedServer(t))
	e.writeHome(p1, "stuck", "x")
	e.writeHome(p2, "quick", "y")
	cfg := e.config()
	// p1's copies hang until their deadline, as one over a stalled volume
	// would; the others are real.
	cfg.copyFiles = func(ctx context.Context, req projectfiles.CopyRequest) error {
		if req.SourceProject == p1 {
			<-ctx.Done()
			return ctx.Err()
		}
		return e.files.Copy(ctx, req)
	}
	cfg.CopyWorkers = 2
	e.start(cfg, e.fake)
	const stuck1, stuck2, quick = "cccccccc-0000-4000-8000-000000000001", "cccccccc-0000-4000-8000-000000000002", "cccccccc-0000-4000-8000-000000000003"
	e.insertCopy(stuck1, p1, "stuck", p1, "s1", false, 3)
	e.insertCopy(stuck2, p1, "stuck", p1, "s2", false, 3)
	e.insertCopy(quick, p2, "quick", p3, "quick", false, 0)
	if errText := e.copyResult(quick); errText != nil {
		t.Fatalf("quick copy: %s", *errText)
	}
	// Both of p1's copies are still pending or running: they run one after
	// the other (same project), each ended by its own deadline.
	var finished int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(finished) FROM copy_paths WHERE id IN ($1, $2)`, stuck1, stuck2).Scan(&finished); err != nil {
		t.Fatal(err)
	}
	if finished != 0 {
		t.Errorf("%d stuck copies finished before the quick one", finished)
	}
	for _, id := range []string{stuck1, stuck2} {
		if errText := e.copyResult(id); errText == nil || !strings.Contains(*errText, "timed out after 3s") {
			t.Errorf("stuck copy %s: error %v, want its deadline", id, errText)
		}
	}
}
