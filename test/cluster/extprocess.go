package cluster

import (
	"context"
	"fmt"
	"time"
)

// Process is a program a test runs next to the cluster (ArgoCD's
// controller, a Redis), started like the control plane: its own process
// group, SIGKILLed by the kernel when the test binary dies, output in a log
// file.
type Process struct {
	p   *process
	Log string // path of its combined stdout and stderr
}

// StartProcess starts binary with args and exactly env (nil: an empty
// environment), its output appended to logPath. Stop it with Stop (in
// t.Cleanup).
func StartProcess(name, logPath, binary string, args, env []string) (*Process, error) {
	p, err := startProcess(name, logPath, binary, args, env)
	if err != nil {
		return nil, err
	}
	return &Process{p: p, Log: logPath}, nil
}

// Pid is the process id (and its process group id).
func (p *Process) Pid() int { return p.p.Pid() }

// Exited reports whether the process has ended, with its error.
func (p *Process) Exited() (bool, error) { return p.p.exited() }

// Stop sends SIGTERM to the process group, SIGKILL after grace, and waits.
func (p *Process) Stop(grace time.Duration) error { return p.p.stop(grace) }

// Tail is the last n bytes of the log, for failure messages.
func (p *Process) Tail(n int64) string { return tail(p.Log, n) }

// WaitFor polls check every interval until it returns nil or ctx ends; it
// gives up at once, with the log's tail, when the process exits.
func (p *Process) WaitFor(ctx context.Context, interval time.Duration, check func(context.Context) error) error {
	return waitFor(ctx, interval, check, func() error {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v):\n%s", p.p.name, err, p.Tail(4096))
		}
		return nil
	})
}
