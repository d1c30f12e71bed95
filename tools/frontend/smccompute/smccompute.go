// Package smccompute is a drop-in replacement for the 2020 CoCalc
// `smc-compute` program in its `--kubernetes` mode: the compute server of the
// original server image runs `/usr/local/bin/smc-compute --kubernetes
// <action> [options] <project_id>...` and reads one JSON document from
// stdout. Installing the orchestrator binary under that name makes the
// original image work without kubectl and without the `admin` role.
//
// Output contract (as the compute server consumes it): on success, exit 0
// and one JSON document (an object, or an array for several project IDs).
// On failure, exit 1, the error text on stderr (the compute server passes
// stderr to the hub as the error) and, on stdout, the object the original's
// code meant to print: {"error": ..., "project_id": ...}. Command-line
// errors exit 2 with a usage message on stderr, as argparse did.
//
// See README.md for every difference from the original.
package smccompute

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/projectfiles"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// DefaultHomes is where the original kept project homes on the server.
const DefaultHomes = "/projects/home"

// maxSecretToken bounds how much of .smc/secret_token is read (the project
// writes 128 bytes; the file is writable by the project user).
const maxSecretToken = 4096

// Config is what Run needs besides the command line.
type Config struct {
	// Files is the homes root on the server with the project owner.
	Files projectfiles.Store
	// Connect returns the orchestrator (its HTTP API's client). It is only
	// called by actions that touch pods, so file actions work without
	// cluster access.
	Connect func(ctx context.Context) (orchestrator.Projects, error)
}

// ProgramName is the name the compute server runs; a binary installed (or
// symlinked) under it should call Run (see IsInvocation).
const ProgramName = "smc-compute"

// IsInvocation reports whether argv0 (os.Args[0]) names smc-compute, for
// dispatching a multi-call binary.
func IsInvocation(argv0 string) bool { return filepath.Base(argv0) == ProgramName }

// Run executes one smc-compute command line (args without the program
// name) and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, cfg Config) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, usage)
		return 0
	}
	in, err := parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "usage: smc-compute [--kubernetes] <action> [options] <project_id> [<project_id> ...]\nsmc-compute: error: %v\n", err)
		return 2
	}
	if cfg.Files.Dir == "" {
		cfg.Files.Dir = DefaultHomes
	}
	r := runner{cfg: cfg, in: in}
	var out []any
	failed := false
	for _, id := range in.projectIDs {
		res, err := r.do(ctx, id)
		if err != nil {
			failed = true
			fmt.Fprintf(stderr, "%s\n", err)
			res = errorResult{Error: err.Error(), ProjectID: id}
		}
		out = append(out, res)
	}
	var doc any = out
	if len(out) == 1 {
		doc = out[0]
	}
	if err := json.NewEncoder(stdout).Encode(doc); err != nil {
		fmt.Fprintf(stderr, "write result: %v\n", err)
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

const usage = `usage: smc-compute [--kubernetes] <action> [options] <project_id> [<project_id> ...]

Project compute control (cocalc-kubernetes replacement of the 2020 smc-compute).
actions: start stop restart status state save copy_path directory_listing
         read_file mkdir compute_quota disk_quota create_user delete_user killall
`

type errorResult struct {
	Error     string `json:"error"`
	ProjectID string `json:"project_id"`
}

type empty struct{}

type stateResult struct {
	State string `json:"state"`
}

// statusResult has the original's keys in the original's order.
type statusResult struct {
	SecretToken  string `json:"secret_token,omitempty"`
	State        string `json:"state"`
	IP           string `json:"ip,omitempty"`
	LocalHubPort int    `json:"local_hub.port,omitempty"`
	RawPort      int    `json:"raw.port,omitempty"`
}

type readFileResult struct {
	Base64 string `json:"base64"`
}

type runner struct {
	cfg      Config
	in       invocation
	projects orchestrator.Projects
}

func (r *runner) connect(ctx context.Context) (orchestrator.Projects, error) {
	if r.projects != nil {
		return r.projects, nil
	}
	if r.cfg.Connect == nil {
		return nil, errors.New("no orchestrator configured")
	}
	p, err := r.cfg.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the orchestrator: %w", err)
	}
	r.projects = p
	return p, nil
}

func (r *runner) do(ctx context.Context, id string) (any, error) {
	// project.Parse's rule, with the original's message.
	if err := projectfiles.CheckProjectID(id); err != nil {
		return nil, err
	}
	pid, err := project.Parse(id)
	if err != nil {
		return nil, err
	}
	in, files := r.in, r.cfg.Files
	switch in.action {
	case "save", "compute_quota", "disk_quota", "create_user", "delete_user", "killall":
		return empty{}, nil
	case "state":
		st, err := r.status(ctx, pid)
		if err != nil {
			return nil, err
		}
		return stateResult{State: string(st.State)}, nil
	case "status":
		return r.fullStatus(ctx, pid)
	case "start":
		return empty{}, r.start(ctx, pid, false)
	case "stop":
		return empty{}, r.stop(ctx, pid)
	case "restart":
		return empty{}, r.start(ctx, pid, true)
	case "directory_listing":
		return files.DirectoryListing(ctx, id, in.str("path", ""), projectfiles.ListOptions{
			Hidden: in.flag("hidden"), Time: in.flag("time"),
			Start: int(in.int("start", 0)), Limit: int(in.int("limit", -1)),
		})
	case "read_file":
		data, err := files.ReadFile(ctx, id, in.path, in.int("maxsize", projectfiles.DefaultMaxReadSize))
		if err != nil {
			return nil, err
		}
		return readFileResult{Base64: base64.StdEncoding.EncodeToString(data)}, nil
	case "mkdir":
		return empty{}, files.Mkdir(id, in.path)
	case "copy_path":
		targetPath := in.str("target_path", "")
		if _, given := in.set["target_path"]; !given {
			targetPath = in.str("path", "")
		}
		return empty{}, files.Copy(ctx, projectfiles.CopyRequest{
			SourceProject:  id,
			SourcePath:     in.str("path", ""),
			TargetProject:  in.str("target_project_id", ""),
			TargetPath:     targetPath,
			OverwriteNewer: in.flag("overwrite_newer"),
			DeleteMissing:  in.flag("delete_missing"),
			Backup:         in.flag("backup"),
			ExcludeHistory: in.flag("exclude_history"),
		})
	}
	return nil, fmt.Errorf("action %s is not implemented", in.action)
}

func (r *runner) status(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	p, err := r.connect(ctx)
	if err != nil {
		return orchestrator.ProjectStatus{}, err
	}
	st, err := p.Status(ctx, id)
	if err != nil {
		return orchestrator.ProjectStatus{}, fmt.Errorf("status of project %s: %w", id, err)
	}
	return st, nil
}

func (r *runner) fullStatus(ctx context.Context, id project.ID) (any, error) {
	st, err := r.status(ctx, id)
	if err != nil {
		return nil, err
	}
	if st.State == state.Opened {
		// Without a pod the original returned only the state.
		return statusResult{State: string(state.Opened)}, nil
	}
	out := statusResult{State: string(st.State), LocalHubPort: podtemplate.HubPort, RawPort: podtemplate.RawPort}
	if st.State == state.Running {
		out.IP = st.IP
	}
	if tok, err := r.cfg.Files.ReadFile(ctx, id.String(), ".smc/secret_token", maxSecretToken); err == nil {
		out.SecretToken = string(tok)
	}
	return out, nil
}

// start starts the project (restart: stops it first) and returns once it
// runs: the orchestrator's Start and Restart block until then, as the
// original's start did.
func (r *runner) start(ctx context.Context, id project.ID, restart bool) error {
	in := r.in
	extra := decodeExtraEnv(in.str("extra_env", ""), slog.Default())
	if b := in.str("base_url", ""); b != "" && b != "/" {
		// The chart serves the 2020 hub at the site's root and the hub
		// proxies project URLs itself: a base path never reaches a project.
		slog.Warn("smc-compute: --base_url is not used (the chart serves CoCalc at /)", "base_url", b, "project", id)
	}
	q := podtemplate.Quota{
		Cores:     in.float("cores", 0),
		MemoryMiB: in.int("memory", 0),
		CPUShares: in.int("cpu_shares", 0),
		Network:   in.int("network", 0) != 0,
	}
	if q.Cores < 0 || q.MemoryMiB < 0 || q.CPUShares < 0 {
		return fmt.Errorf("quota must not be negative (cores=%v memory=%d cpu_shares=%d)", q.Cores, q.MemoryMiB, q.CPUShares)
	}
	p, err := r.connect(ctx)
	if err != nil {
		return err
	}
	// The original's flags, as smc_compute.py exported them.
	if in.flag("ephemeral_state") || in.flag("ephemeral_disk") {
		if extra == nil {
			extra = map[string]string{}
		}
		if in.flag("ephemeral_state") {
			extra["COCALC_EPHEMERAL_STATE"] = "yes"
		}
		if in.flag("ephemeral_disk") {
			extra["COCALC_EPHEMERAL_DISK"] = "yes"
		}
	}
	// The orchestrator creates the home (owned by the project user) before
	// the pod can mount it, as the original's create_project_path did.
	req := orchestrator.StartRequest{Quota: q, Env: extra}
	op, what := p.Start, "start"
	if restart {
		op, what = p.Restart, "restart"
	}
	st, err := op(ctx, id, req)
	if err != nil {
		return fmt.Errorf("%s project %s: %w", what, id, err)
	}
	if st.State != state.Running {
		return fmt.Errorf("%s project %s: project is %s", what, id, st.State)
	}
	return nil
}

// stop returns once the pod is gone (the orchestrator's Stop blocks until
// then, as the original's stop did).
func (r *runner) stop(ctx context.Context, id project.ID) error {
	p, err := r.connect(ctx)
	if err != nil {
		return err
	}
	if _, err := p.Stop(ctx, id); err != nil {
		return fmt.Errorf("stop project %s: %w", id, err)
	}
	return nil
}
