package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ErrUnsupported is wrapped by operations a cluster cannot perform (for
// example restarting the API server of a cluster this process does not
// run); the error text says why, for t.Skip.
var ErrUnsupported = errors.New("not supported by this cluster")

// apiServerName is the kube-apiserver process (and its log file) on the api tier.
const apiServerName = "kube-apiserver"

// CanRestartAPIServer returns nil if RestartAPIServer can work on this
// cluster, else an error wrapping ErrUnsupported that says why. Tests call
// it before setting up, to skip early.
func (c *Cluster) CanRestartAPIServer() error {
	if c.owned && c.restartAPI != nil {
		return nil
	}
	var why string
	switch {
	case c.Tier == TierKind:
		why = "kind's kube-apiserver is a static pod inside the node container; restarting it is not implemented"
	case c.Tier == TierExisting:
		why = "the control plane of an existing cluster is not the test's to restart"
	case c.Tier == TierAPI && !c.owned:
		why = fmt.Sprintf("attached to an api tier another process runs (%s=1); only the process that started it can restart its kube-apiserver: run without %s", EnvReuse, EnvReuse)
	default:
		why = "the cluster was not started with a restartable API server"
	}
	return fmt.Errorf("restart the API server of the %s cluster %s: %w: %s", c.Tier, c.Name, ErrUnsupported, why)
}

// RestartOption changes how RestartAPIServer takes the API server down.
type RestartOption func(*restartOptions)

type restartOptions struct {
	crash    bool
	downtime time.Duration
}

// WithCrash SIGKILLs the API server instead of shutting it down
// gracefully: connections and watches break mid-request, as on a crash or
// an OOM kill.
func WithCrash() RestartOption { return func(o *restartOptions) { o.crash = true } }

// WithDowntime keeps the API server down for d before starting it again
// (an outage longer than clients' own retries).
func WithDowntime(d time.Duration) RestartOption {
	return func(o *restartOptions) { o.downtime = d }
}

// RestartAPIServer stops kube-apiserver (SIGTERM, SIGKILL after a grace
// period; see the options) and starts it again with the same flags, port,
// certificates and etcd, then waits until /readyz answers. etcd keeps
// running, so every object survives; clients see the outage a real
// control-plane upgrade or crash causes (429s while it drains, refused
// connections, broken watches) and the same server afterwards. Existing
// clients (c.Client, kubeconfigs, ServiceAccount tokens) keep working.
//
// Only an api-tier cluster this process started can do this; elsewhere the
// error wraps ErrUnsupported (see CanRestartAPIServer).
func (c *Cluster) RestartAPIServer(ctx context.Context, opts ...RestartOption) error {
	if err := c.CanRestartAPIServer(); err != nil {
		return err
	}
	var o restartOptions
	for _, opt := range opts {
		opt(&o)
	}
	return c.restartAPI(ctx, o)
}

// restartAPIServer replaces the kube-apiserver process with a new one run
// from the same flags. The new process takes the old one's place in the
// process list, so Stop still stops it (before etcd) and pids reports it;
// it is started like every child (own process group, parent-death signal).
func (t *apiTier) restartAPIServer(ctx context.Context, opts restartOptions) error {
	t.lifecycle.Lock()
	defer t.lifecycle.Unlock()
	if t.stopped {
		return errors.New("restart kube-apiserver: the api tier is stopped")
	}
	t.mu.Lock()
	idx := -1
	for i, p := range t.procs {
		if p.name == apiServerName {
			idx = i
		}
	}
	var old *process
	if idx >= 0 {
		old = t.procs[idx]
	}
	t.mu.Unlock()
	if old == nil || len(t.apiArgs) == 0 {
		return fmt.Errorf("restart kube-apiserver: no %s process recorded", apiServerName)
	}

	begin := time.Now()
	how := "stopped"
	if opts.crash {
		how = "killed"
		old.kill()
	} else if err := old.stop(stopGrace(ctx)); err != nil {
		return fmt.Errorf("restart kube-apiserver: stop pid %d: %w", old.Pid(), err)
	}
	t.logf("api tier: kube-apiserver (pid %d) %s after %s", old.Pid(), how, time.Since(begin).Round(time.Millisecond))
	if opts.downtime > 0 {
		// Cut short if ctx ends; the server is started again anyway, so a
		// shared cluster is not left without one.
		select {
		case <-ctx.Done():
		case <-time.After(opts.downtime):
		}
	}
	logPath := t.path("logs", apiServerName+".log")
	// The new process appends to the same log: mark where it begins.
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		fmt.Fprintf(f, "\n==== test/cluster: kube-apiserver restarted at %s (old pid %d %s) ====\n", time.Now().UTC().Format(time.RFC3339Nano), old.Pid(), how)
		f.Close()
	}

	// The port was the old process's until it exited; something else on
	// the machine may grab it in that instant (the start then fails with
	// "address already in use"). It cannot move (every kubeconfig names
	// it), so the start is retried on the same port.
	var lastErr error
	for attempt := 1; attempt <= 5; attempt++ {
		p, err := startProcess(apiServerName, logPath, t.bin, append([]string{apiServerName}, t.apiArgs...), childEnv())
		if err != nil {
			return fmt.Errorf("restart kube-apiserver: %w", err)
		}
		t.mu.Lock()
		t.procs[idx] = p
		t.mu.Unlock()
		_, lastErr = waitForAPI(ctx, t.path("admin.kubeconfig"), t.anyDied)
		if lastErr == nil {
			t.logf("api tier: kube-apiserver restarted (pid %d → %d), ready after %s", old.Pid(), p.Pid(), time.Since(begin).Round(time.Millisecond))
			return nil
		}
		if !strings.Contains(lastErr.Error(), "address already in use") || ctx.Err() != nil {
			break
		}
		t.logf("api tier: kube-apiserver port taken during restart (attempt %d), retrying", attempt)
		_ = p.stop(stopGrace(ctx))
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("restart kube-apiserver: not ready again: %w", lastErr)
}
