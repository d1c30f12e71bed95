package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// modulePath identifies the repository root's go.mod.
const modulePath = "gitlab.com/resurgo/cocalc-kubernetes"

// RepoRoot finds the repository root by walking up from the working
// directory to the go.mod of this module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if isRepoRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func isRepoRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if line := strings.TrimSpace(s.Text()); strings.HasPrefix(line, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(line, "module ")) == modulePath
		}
	}
	return false
}

// SharedStateDir is where a long-running cluster of tier keeps its files
// (<repo>/.cache/cluster/<tier>), so `make cluster-*` and tests with
// COCALC_TEST_REUSE=1 find each other.
func SharedStateDir(tier Tier) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "cluster", string(tier)), nil
}

// State describes a long-running cluster for others to attach to.
type State struct {
	Tier       Tier   `json:"tier"`
	Name       string `json:"name"`
	Kubeconfig string `json:"kubeconfig"`
	// Pid of the process that owns the cluster (the supervisor of an api
	// tier, 0 for kind, whose nodes are containers).
	Pid          int          `json:"pid"`
	Capabilities []Capability `json:"capabilities"`
	StartedAt    time.Time    `json:"startedAt"`
}

const stateFile = "state.json"

// WriteState records st in dir atomically.
func WriteState(dir string, st State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode cluster state: %w", err)
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write cluster state: %w", err)
	}
	return nil
}

// ReadState loads the state recorded in dir.
func ReadState(dir string) (State, error) {
	var st State
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("decode %s: %w", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// RemoveState forgets the recorded cluster.
func RemoveState(dir string) error {
	err := os.Remove(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// alive reports whether pid is a running process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Attach connects to the long-running cluster of tier recorded under the
// shared state directory.
func Attach(ctx context.Context, tier Tier) (*Cluster, error) {
	dir, err := SharedStateDir(tier)
	if err != nil {
		return nil, err
	}
	if tier == TierKind {
		// COCALC_KIND_STATE: another kind cluster, e.g. the multi-node one.
		if d, err := kindStateFromEnv(); err != nil {
			return nil, err
		} else if d != "" {
			dir = d
		}
	}
	st, err := ReadState(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no running %s cluster (no %s): start one with `make cluster-%s`", tier, filepath.Join(dir, stateFile), tier)
		}
		return nil, err
	}
	if st.Pid != 0 && !alive(st.Pid) {
		return nil, fmt.Errorf("the %s cluster recorded in %s is gone (pid %d not running): start one with `make cluster-%s`", tier, dir, st.Pid, tier)
	}
	c, err := connect(ctx, st.Tier, st.Name, st.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c.StateDir = dir
	c.caps = map[Capability]bool{}
	for _, cp := range st.Capabilities {
		c.caps[cp] = true
	}
	return c, nil
}
