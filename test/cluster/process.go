package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// process is one control-plane child process. Each child runs in its own
// process group, so stopping it also stops anything it started, and gets
// SIGKILL from the kernel when the process that started it dies (the test
// binary timing out, a panic, Ctrl-C): no stray control planes.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // set before done is closed
}

// spawner starts processes from one goroutine that stays locked to its OS
// thread for the life of the program. Linux delivers the parent-death
// signal when the *thread* that forked the child exits; Go may retire
// threads of goroutines that called LockOSThread and return, so the forking
// thread is pinned here and never released.
type spawner struct {
	once sync.Once
	reqs chan spawnRequest
}

type spawnRequest struct {
	cmd   *exec.Cmd
	reply chan error
}

var theSpawner spawner

func (s *spawner) start(cmd *exec.Cmd) error {
	s.once.Do(func() {
		s.reqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: see spawner
			for r := range s.reqs {
				r.reply <- r.cmd.Start()
			}
		}()
	})
	reply := make(chan error, 1)
	s.reqs <- spawnRequest{cmd: cmd, reply: reply}
	return <-reply
}

// startProcess runs binary with args, output appended to logPath.
func startProcess(name, logPath, binary string, args []string, env []string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log for %s: %w", name, err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Stdin = nil
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := theSpawner.start(cmd); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (also its process group id).
func (p *process) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs.
func (p *process) stop(grace time.Duration) error {
	if done, _ := p.exited(); done {
		return nil
	}
	pgid := p.Pid()
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Anything left in the group (a grandchild) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// kill SIGKILLs the process group at once (no graceful shutdown: a crash)
// and waits for the exit.
func (p *process) kill() {
	if done, _ := p.exited(); done {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// tail returns the last n bytes of a log file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// waitFor polls check every interval until it returns nil, ctx ends, or
// abort returns an error (a process died: no point waiting on).
func waitFor(ctx context.Context, interval time.Duration, check func(context.Context) error, abort func() error) error {
	var last error
	for {
		if abort != nil {
			if err := abort(); err != nil {
				return err
			}
		}
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}
