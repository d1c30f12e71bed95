package smccompute

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator/orchestratortest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const (
	running = "11111111-1111-4111-8111-111111111111"
	stopped = "22222222-2222-4222-8222-222222222222"
	missing = "33333333-3333-4333-8333-333333333333" // no home directory
)

var fixedTime = time.Unix(1_596_240_000, 0) // 2020-08-01, the original's era

// fixture is a homes root with two projects (one running in the fake
// orchestrator) and deterministic files.
func fixture(t *testing.T) (Config, *orchestratortest.Fake, string) {
	t.Helper()
	homes := filepath.Join(t.TempDir(), "home")
	uid := -1
	if os.Getuid() == 0 {
		uid = projectfiles.DefaultUID
	}
	files := map[string]string{
		running + "/.smc/secret_token": "c2VjcmV0LXRva2VuLW9mLXRoZS1wcm9qZWN0",
		running + "/notes.txt":         "hello world\n",
		running + "/.bashrc":           "# bash\n",
		running + "/work/a.py":         "print(1)\n",
		running + "/work/b.py":         "print(22)\n",
		stopped + "/data.csv":          "x,y\n1,2\n",
	}
	for rel, content := range files {
		p := filepath.Join(homes, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(homes, running, ".links"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Symlink mtimes cannot be fixed portably, so the link lives in a
	// hidden directory that no golden listing shows.
	if err := os.Symlink("/etc/hostname", filepath.Join(homes, running, ".links", "escape")); err != nil {
		t.Fatal(err)
	}
	// Fixed mtimes everywhere (directories last) so listings are stable.
	var paths []string
	_ = filepath.Walk(homes, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode()&os.ModeSymlink == 0 {
			paths = append(paths, p)
		}
		return nil
	})
	for i := len(paths) - 1; i >= 0; i-- {
		mt := fixedTime
		if strings.HasSuffix(paths[i], "b.py") {
			mt = fixedTime.Add(time.Minute)
		}
		if err := os.Chtimes(paths[i], mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	fake := orchestratortest.New()
	if _, err := fake.Start(context.Background(), project.MustParse(running), orchestrator.StartRequest{}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Files:   projectfiles.Store{Dir: homes, UID: uid, GID: uid},
		Connect: func(context.Context) (orchestrator.Projects, error) { return fake, nil },
	}
	return cfg, fake, homes
}

func run(t *testing.T, cfg Config, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code = Run(ctx, args, &out, &errb, cfg)
	return out.String(), errb.String(), code
}

// hubEnv is a projects.env value as the 2020 UI stores it.
var hubEnv = base64.StdEncoding.EncodeToString([]byte(`{"JULIA_NUM_THREADS":4,"RATIO":0.5,"DEBUG":true,"GREETING":"hi there","OLD":"","GONE":null}`))

func extraEnv(m map[string]string) string {
	b, _ := json.Marshal(m)
	return base64.StdEncoding.EncodeToString(b)
}

// TestGolden runs the command lines the 2020 compute server and client
// produce and compares stdout with testdata/<name>.json.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		stderr   string // substring of stderr
		noGolden bool   // stdout is checked by the test itself
	}{
		{name: "state_running", args: []string{"--kubernetes", "state", running}},
		{name: "state_opened", args: []string{"--kubernetes", "state", "--timeout", "60", stopped}},
		{name: "status_running", args: []string{"--kubernetes", "status", running}},
		{name: "status_opened", args: []string{"--kubernetes", "status", stopped}},
		{name: "state_many", args: []string{"--kubernetes", "state", running, stopped}},
		{name: "state_many_one_bad", args: []string{"--kubernetes", "state", running, "nope", stopped}, code: 1, stderr: "invalid uuid (='nope')"},
		{name: "start", args: []string{"--kubernetes", "start", "--base_url", "/cocalc", "--extra_env", extraEnv(map[string]string{"A": "1"}), "--cores", "2", "--memory", "2000", "--cpu_shares", "256", "--network", "1", stopped}},
		// projects.env as the 2020 settings UI saves it (jsonic-parsed, so
		// numbers and booleans stay JSON; "" is its "delete"), base64 of
		// JSON.stringify as the compute client passes it.
		{name: "start_hub_env", args: []string{"--kubernetes", "start", "--base_url", "", "--extra_env", hubEnv, stopped}},
		{name: "start_bad_extra_env", args: []string{"--kubernetes", "start", "--extra_env", "%%%", stopped}},
		// The original's flags reach the project as smc_compute.py exported them.
		{name: "start_ephemeral", args: []string{"--kubernetes", "start", "--ephemeral_disk", "--extra_env", extraEnv(map[string]string{"A": "1"}), stopped}, noGolden: true},
		{name: "stop", args: []string{"--kubernetes", "stop", running}},
		{name: "restart", args: []string{"--kubernetes", "restart", "--memory", "1500", running}},
		{name: "save", args: []string{"--kubernetes", "save", running}},
		{name: "compute_quota", args: []string{"--kubernetes", "compute_quota", "--cores", "1", "--memory", "1000", "--cpu_shares", "256", running}},
		{name: "bad_uuid", args: []string{"--kubernetes", "state", "not-a-uuid"}, code: 1, stderr: "invalid uuid (='not-a-uuid')"},
		// One rule for project IDs in every front-end (project.Parse): any
		// UUID version, as the HTTP API and the PostgreSQL controller.
		{name: "uuid_version_1", args: []string{"--kubernetes", "status", "11111111-1111-1111-8111-111111111111"}, noGolden: true},
		{name: "directory_listing", args: []string{"--kubernetes", "directory_listing", "--path", "./", "--start", "0", "--limit", "-1", running}},
		{name: "directory_listing_hidden_time", args: []string{"--kubernetes", "directory_listing", "--hidden", "--time", "--path", "./work", "--start", "0", "--limit", "-1", running}},
		{name: "directory_listing_limit", args: []string{"--kubernetes", "directory_listing", "--hidden", "--path=./", "--start", "1", "--limit", "2", running}},
		{name: "directory_listing_missing_project", args: []string{"--kubernetes", "directory_listing", "--path", "./", missing}},
		{name: "directory_listing_escape", args: []string{"--kubernetes", "directory_listing", "--path", "../" + stopped, running}, code: 1, stderr: "must not contain a '..' segment"},
		{name: "directory_listing_absolute_escape", args: []string{"--kubernetes", "directory_listing", "--path", "/etc", running}, code: 1, stderr: "must be contained in project path"},
		{name: "read_file", args: []string{"--kubernetes", "read_file", "notes.txt", "--maxsize", "3000000", running}},
		{name: "read_file_too_big", args: []string{"--kubernetes", "read_file", "notes.txt", "--maxsize", "5", running}, code: 1, stderr: "must be at most 5 bytes, but it is 12 bytes"},
		{name: "read_file_missing_project", args: []string{"--kubernetes", "read_file", "notes.txt", missing}, code: 1, stderr: "path (=notes.txt) does not exist"},
		{name: "read_file_escape", args: []string{"--kubernetes", "read_file", "../" + stopped + "/data.csv", running}, code: 1, stderr: "must not contain a '..' segment"},
		{name: "read_file_huge_maxsize", args: []string{"--kubernetes", "read_file", "notes.txt", "--maxsize", "9223372036854775807", running}, noGolden: true},
		{name: "read_file_unreadable", args: []string{"--kubernetes", "read_file", ".links/escape", running}, code: 1, stderr: "path (=.links/escape) cannot be read"},
		{name: "read_file_zip", args: []string{"--kubernetes", "read_file", "work.zip", running}, noGolden: true},
		{name: "mkdir", args: []string{"--kubernetes", "mkdir", "new/dir", stopped}},
		{name: "mkdir_escape", args: []string{"--kubernetes", "mkdir", "/etc/evil", stopped}, code: 1, stderr: "must be contained in project path"},
		{name: "copy_path", args: []string{"--kubernetes", "copy_path", "--path", "work", "--target_project_id", stopped, "--target_path", "from-running/work", "--bwlimit", "5000", running}},
		{name: "copy_path_escape", args: []string{"--kubernetes", "copy_path", "--path", "work", "--target_project_id", stopped, "--target_path", "../../x", running}, code: 1, stderr: "target path (=../../x) must not contain a '..' segment"},
		{name: "copy_path_public_dotdot", args: []string{"--kubernetes", "copy_path", "--path", "public/..", "--target_project_id", stopped, "--target_path", "x", running}, code: 1, stderr: "source path (=public/..) must not contain a '..' segment", noGolden: true},
		{name: "copy_path_bad_target", args: []string{"--kubernetes", "copy_path", "--path", "work", "--target_project_id", "x", running}, code: 1, stderr: "invalid uuid (='x')"},
		{name: "usage_unknown_action", args: []string{"--kubernetes", "frobnicate", running}, code: 2, stderr: "invalid choice: 'frobnicate'", noGolden: true},
		{name: "usage_no_project", args: []string{"--kubernetes", "state"}, code: 2, stderr: "project_id is required", noGolden: true},
		{name: "usage_unknown_option", args: []string{"--kubernetes", "stop", "--cores", "2", running}, code: 2, stderr: "unrecognized arguments: --cores", noGolden: true},
		{name: "usage_bad_int", args: []string{"--kubernetes", "start", "--memory", "lots", running}, code: 2, stderr: "invalid int value: 'lots'", noGolden: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, fake, homes := fixture(t)
			stdout, stderr, code := run(t, cfg, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout=%s stderr=%s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) || (tc.stderr == "" && stderr != "") {
				t.Errorf("stderr %q, want it to contain %q", stderr, tc.stderr)
			}
			if tc.code == 2 && stdout != "" {
				t.Errorf("usage errors print nothing on stdout, got %q", stdout)
			}
			if tc.code != 2 && !json.Valid([]byte(stdout)) {
				t.Fatalf("stdout is not one JSON document: %q", stdout)
			}
			checkEffects(t, tc.name, stdout, fake, homes)
			if tc.noGolden {
				return
			}
			// The temp dir differs per run; error messages name it.
			got := strings.ReplaceAll(stdout, homes, "$HOMES")
			compareGolden(t, filepath.Join("testdata", tc.name+".json"), got)
		})
	}
}

// lastStart is the last start call of id, or nil.
func lastStart(fake *orchestratortest.Fake, id string) *orchestratortest.Call {
	calls := fake.Calls("start")
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].ProjectID == project.ID(id) {
			return &calls[i]
		}
	}
	return nil
}

// checkEffects asserts what a command must have done besides its output.
func checkEffects(t *testing.T, name, stdout string, fake *orchestratortest.Fake, homes string) {
	t.Helper()
	switch name {
	case "start":
		calls := fake.Calls("start")
		last := calls[len(calls)-1]
		want := podtemplate.Quota{Cores: 2, MemoryMiB: 2000, CPUShares: 256, Network: true}
		if last.ProjectID != stopped || last.Request.Quota != want || !maps.Equal(last.Request.Env, map[string]string{"A": "1"}) {
			t.Errorf("start call %+v", last)
		}
		if st, _ := fake.Status(context.Background(), project.MustParse(stopped)); st.State != state.Running {
			t.Errorf("project not running after start: %v", st.State)
		}
	case "start_ephemeral":
		want := map[string]string{"A": "1", "COCALC_EPHEMERAL_DISK": "yes"}
		if last := lastStart(fake, stopped); last == nil || !maps.Equal(last.Request.Env, want) {
			t.Errorf("start calls %+v, want one with Env %v", fake.Calls("start"), want)
		}
		if strings.TrimSpace(stdout) != "{}" {
			t.Errorf("start output %q", stdout)
		}
	case "start_bad_extra_env":
		// The original's project ignored an undecodable COCALC_EXTRA_ENV.
		if last := lastStart(fake, stopped); last == nil || len(last.Request.Env) != 0 {
			t.Errorf("an undecodable --extra_env must start the project without extra env: %+v", fake.Calls("start"))
		}
	case "start_hub_env":
		want := map[string]string{"JULIA_NUM_THREADS": "4", "RATIO": "0.5", "DEBUG": "true", "GREETING": "hi there"}
		if last := lastStart(fake, stopped); last == nil || !maps.Equal(last.Request.Env, want) {
			t.Errorf("start calls %+v, want one with ExtraEnv %v", fake.Calls("start"), want)
		}
		if st, _ := fake.Status(context.Background(), project.MustParse(stopped)); st.State != state.Running {
			t.Errorf("project not running after start: %v", st.State)
		}
	case "stop":
		if st, _ := fake.Status(context.Background(), project.MustParse(running)); st.State != state.Opened {
			t.Errorf("project %v after stop", st.State)
		}
	case "restart":
		if fake.CountCalls("stop", project.MustParse(running)) != 1 || fake.CountCalls("start", project.MustParse(running)) != 2 || fake.CountCalls("restart", project.MustParse(running)) != 1 {
			t.Errorf("restart calls %+v", fake.Calls(""))
		}
	case "uuid_version_1":
		if strings.TrimSpace(stdout) != `{"state":"opened"}` {
			t.Errorf("status of a version-1 UUID project: %s", stdout)
		}
	case "mkdir":
		if st, err := os.Stat(filepath.Join(homes, stopped, "new/dir")); err != nil || !st.IsDir() {
			t.Errorf("mkdir: %v", err)
		}
	case "copy_path":
		b, err := os.ReadFile(filepath.Join(homes, stopped, "from-running/work/b.py"))
		if err != nil || string(b) != "print(22)\n" {
			t.Errorf("copied file: %q %v", b, err)
		}
	case "read_file_huge_maxsize":
		// math.MaxInt64 overflowed once and returned empty content.
		var res struct{ Base64 string }
		if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Base64 == "" {
			t.Errorf("read_file --maxsize MaxInt64: %s %v", stdout, err)
		}
	case "read_file_zip":
		var res struct{ Base64 string }
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatal(err)
		}
		data, err := base64.StdEncoding.DecodeString(res.Base64)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range zr.File {
			names = append(names, f.Name)
		}
		if strings.Join(names, " ") != "work/ work/a.py work/b.py" {
			t.Errorf("zip entries %v", names)
		}
	}
}

func compareGolden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./tools/frontend/smccompute -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("stdout differs from %s\n got: %s\nwant: %s", file, got, want)
	}
}

func TestConnectFailureIsAnError(t *testing.T) {
	cfg, _, _ := fixture(t)
	cfg.Connect = func(context.Context) (orchestrator.Projects, error) { return nil, errors.New("no route to API") }
	stdout, stderr, code := run(t, cfg, "--kubernetes", "state", running)
	if code != 1 || !strings.Contains(stderr, "no route to API") || !strings.Contains(stdout, `"error"`) {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	// File actions never need the orchestrator.
	if _, _, code := run(t, cfg, "--kubernetes", "mkdir", "x", running); code != 0 {
		t.Errorf("mkdir needed the orchestrator")
	}
}

func TestStatusErrorIsNotReportedAsStopped(t *testing.T) {
	cfg, fake, _ := fixture(t)
	fake.StatusErr = errors.New("apiserver timeout")
	stdout, _, code := run(t, cfg, "--kubernetes", "state", running)
	if code != 1 || strings.Contains(stdout, "opened") {
		t.Errorf("an API failure must not look like a stopped project: exit %d %s", code, stdout)
	}
}

func TestStartTimesOutWhenNeverRunning(t *testing.T) {
	cfg, fake, _ := fixture(t)
	fake.StartDelay = time.Hour
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if code := Run(ctx, []string{"--kubernetes", "start", stopped}, &out, &errb, cfg); code != 1 {
		t.Errorf("exit %d, want 1 (stderr %s)", code, errb.String())
	}
}

func TestHelp(t *testing.T) {
	stdout, _, code := run(t, Config{}, "--help")
	if code != 0 || !strings.Contains(stdout, "copy_path") {
		t.Errorf("help: %d %q", code, stdout)
	}
}

func TestIsInvocation(t *testing.T) {
	for argv0, want := range map[string]bool{
		"/usr/local/bin/smc-compute": true,
		"smc-compute":                true,
		"/usr/local/bin/cocalc-k8s":  false,
		"smc-compute-old":            false,
	} {
		if got := IsInvocation(argv0); got != want {
			t.Errorf("IsInvocation(%q) = %v", argv0, got)
		}
	}
}

// TestMainOverTheHTTPAPI runs the installed entry point against the real
// HTTP API of an orchestrator (in memory), as the 2020 compute server would.
func TestMainOverTheHTTPAPI(t *testing.T) {
	core := orchestratortest.New()
	srv := httptest.NewServer(httpapi.NewAPI(core, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), httpapi.Options{}))
	defer srv.Close()
	homes := t.TempDir()
	env := map[string]string{EnvAPI: srv.URL, EnvHomes: homes}
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), args, &out, &errb, func(k string) string { return env[k] })
		return out.String() + errb.String(), code
	}
	if out, code := run("--kubernetes", "start", "--memory", "1500", "--network", "1", stopped); code != 0 || strings.TrimSpace(out) != "{}" {
		t.Fatalf("start: %d %s", code, out)
	}
	if calls := core.Calls("start"); len(calls) != 1 || calls[0].ProjectID != stopped || calls[0].Request.Quota.MemoryMiB != 1500 || !calls[0].Request.Quota.Network {
		t.Errorf("start over the wire %+v", calls)
	}
	if out, code := run("--kubernetes", "status", stopped); code != 0 || !strings.Contains(out, `"ip":"10.0.0.1"`) || !strings.Contains(out, `"local_hub.port":6000`) {
		t.Errorf("status: %d %s", code, out)
	}
	if out, code := run("--kubernetes", "stop", stopped); code != 0 {
		t.Errorf("stop: %d %s", code, out)
	}
	if out, _ := run("--kubernetes", "state", stopped); !strings.Contains(out, `"opened"`) {
		t.Errorf("state after stop: %s", out)
	}
	if out, code := run("--kubernetes", "mkdir", "a/b", stopped); code != 0 {
		t.Errorf("mkdir: %d %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(homes, stopped, "a/b")); err != nil {
		t.Errorf("mkdir did not use %s: %v", EnvHomes, err)
	}
	env[EnvAPI] = "http://127.0.0.1:1" // orchestrator down
	if out, code := run("--kubernetes", "state", stopped); code != 1 || !strings.Contains(out, `"error"`) {
		t.Errorf("unreachable orchestrator: %d %s", code, out)
	}
}

// TestStartAndStopReturnWithTheBlockingCall: the orchestrator's start and
// stop return once the project runs or its pod is gone, so smc-compute
// answers from their result and never polls the status afterwards (a
// status that cannot be read must not make them fail or wait).
func TestStartAndStopReturnWithTheBlockingCall(t *testing.T) {
	cfg, fake, _ := fixture(t)
	fake.StatusErr = errors.New("status unavailable")
	for _, args := range [][]string{
		{"--kubernetes", "start", stopped},
		{"--kubernetes", "restart", running},
		{"--kubernetes", "stop", stopped},
	} {
		start := time.Now()
		stdout, stderr, code := run(t, cfg, args...)
		if code != 0 || strings.TrimSpace(stdout) != "{}" {
			t.Errorf("%v: exit %d stdout %q stderr %q", args, code, stdout, stderr)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%v took %s", args, took)
		}
	}
	// A start that returns without the project running is an error.
	fake.StartErr = func(project.ID) error { return errors.New("ImagePullBackOff") }
	if _, stderr, code := run(t, cfg, "--kubernetes", "start", missing); code != 1 || !strings.Contains(stderr, "ImagePullBackOff") {
		t.Errorf("failed start: exit %d stderr %q", code, stderr)
	}
}
