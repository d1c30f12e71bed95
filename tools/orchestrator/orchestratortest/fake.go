// Package orchestratortest provides an in-memory orchestrator.Watcher for
// the front-ends' tests (the HTTP API and its client, smc-compute, the
// PostgreSQL controller): it records every call, can delay or fail
// operations, and broadcasts state changes as the orchestrator's informer
// notifications would.
package orchestratortest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Call is one recorded operation.
type Call struct {
	Op        string // "start", "stop", "restart", "touch"
	ProjectID project.ID
	Request   orchestrator.StartRequest
}

// Fake is a concurrency-safe in-memory orchestrator.
type Fake struct {
	mu       sync.Mutex
	projects map[project.ID]orchestrator.ProjectStatus
	calls    []Call
	watchers map[chan orchestrator.ProjectStatus]struct{}
	nextIP   int

	// StartDelay makes Start take this long (interruptible by ctx).
	StartDelay time.Duration
	// StartDelayFor, when set, gives a project's Start a delay of its own
	// instead of StartDelay (e.g. some projects that never start).
	StartDelayFor func(id project.ID) time.Duration
	// StartErr, when it returns non-nil for a project, fails Start with it.
	StartErr func(id project.ID) error
	// StatusErr, when set, fails Status (simulates an unreachable API).
	StatusErr error
	// NotReady makes Ready report false (cache not synced).
	NotReady bool
}

var _ orchestrator.Watcher = (*Fake)(nil)

// New returns a fake with no running projects.
func New() *Fake {
	return &Fake{projects: map[project.ID]orchestrator.ProjectStatus{}, watchers: map[chan orchestrator.ProjectStatus]struct{}{}}
}

// Start records the call and makes the project running (10.0.0.N).
func (f *Fake) Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Call{Op: "start", ProjectID: id, Request: req})
	startErr, delay := f.StartErr, f.StartDelay
	if f.StartDelayFor != nil {
		delay = f.StartDelayFor(id)
	}
	f.mu.Unlock()
	if err := id.Validate(); err != nil {
		return orchestrator.ProjectStatus{}, err
	}
	if startErr != nil {
		if err := startErr(id); err != nil {
			return f.current(id), err
		}
	}
	f.mu.Lock()
	if st, ok := f.projects[id]; ok && st.State == state.Running {
		f.mu.Unlock()
		return st, nil
	}
	f.setLocked(status(id, state.Status{State: state.Starting}))
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return f.current(id), fmt.Errorf("start %s: caller gave up: %w", id, ctx.Err())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextIP++
	started := time.Now().UTC()
	st := status(id, state.Status{State: state.Running, IP: fmt.Sprintf("10.0.0.%d", f.nextIP), StartedAt: &started})
	f.setLocked(st)
	return st, nil
}

// Stop records the call and removes the project's pod.
func (f *Fake) Stop(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, Call{Op: "stop", ProjectID: id})
	if err := id.Validate(); err != nil {
		return orchestrator.ProjectStatus{}, err
	}
	opened := status(id, state.Status{State: state.Opened})
	if _, ok := f.projects[id]; !ok {
		return opened, nil
	}
	f.setLocked(status(id, state.Status{State: state.Stopping}))
	delete(f.projects, id)
	f.broadcastLocked(opened)
	return opened, nil
}

// Restart records "restart", then stops and starts (both recorded too).
func (f *Fake) Restart(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Call{Op: "restart", ProjectID: id, Request: req})
	f.mu.Unlock()
	if st, err := f.Stop(ctx, id); err != nil {
		return st, err
	}
	return f.Start(ctx, id, req)
}

// Touch records the call and returns the status.
func (f *Fake) Touch(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	f.calls = append(f.calls, Call{Op: "touch", ProjectID: id})
	f.mu.Unlock()
	if err := id.Validate(); err != nil {
		return orchestrator.ProjectStatus{}, err
	}
	return f.current(id), nil
}

// Status reports the project's status (opened without a pod).
func (f *Fake) Status(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	err := f.StatusErr
	f.mu.Unlock()
	if err != nil {
		return orchestrator.ProjectStatus{}, err
	}
	if err := id.Validate(); err != nil {
		return orchestrator.ProjectStatus{}, err
	}
	return f.current(id), nil
}

// List returns every project with a pod, sorted by ID.
func (f *Fake) List(context.Context) ([]orchestrator.ProjectStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]orchestrator.ProjectStatus, 0, len(f.projects))
	for _, s := range f.projects {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ProjectID < out[j].ProjectID })
	return out, nil
}

// Watch sends every status change until ctx ends.
func (f *Fake) Watch(ctx context.Context) <-chan orchestrator.ProjectStatus {
	ch := make(chan orchestrator.ProjectStatus, 256)
	f.mu.Lock()
	f.watchers[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.watchers, ch)
		close(ch)
		f.mu.Unlock()
	}()
	return ch
}

// Ready reports whether the "cache" is synced (not NotReady).
func (f *Fake) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.NotReady
}

// Set forces a project's status (e.g. a pod that crashed) and broadcasts it;
// opened removes the pod.
func (f *Fake) Set(s orchestrator.ProjectStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.State == state.Opened {
		delete(f.projects, s.ProjectID)
		f.broadcastLocked(s)
		return
	}
	f.setLocked(s)
}

// Calls returns the recorded calls, optionally only those of one operation.
func (f *Fake) Calls(op string) []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.calls {
		if op == "" || c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

// CountCalls counts one operation on one project.
func (f *Fake) CountCalls(op string, id project.ID) int {
	n := 0
	for _, c := range f.Calls(op) {
		if c.ProjectID == id {
			n++
		}
	}
	return n
}

// status builds the status of a project in the given state, with the
// ports the orchestrator reports.
func status(id project.ID, s state.Status) orchestrator.ProjectStatus {
	st := orchestrator.ProjectStatus{ProjectID: id, Status: s, HubPort: podtemplate.HubPort, RawPort: podtemplate.RawPort}
	if s.State != state.Opened {
		st.Pod = id.PodName()
	}
	return st
}

func (f *Fake) current(id project.ID) orchestrator.ProjectStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.projects[id]; ok {
		return s
	}
	return status(id, state.Status{State: state.Opened})
}

func (f *Fake) setLocked(s orchestrator.ProjectStatus) {
	f.projects[s.ProjectID] = s
	f.broadcastLocked(s)
}

func (f *Fake) broadcastLocked(s orchestrator.ProjectStatus) {
	for ch := range f.watchers {
		select {
		case ch <- s:
		default: // a stuck watcher loses events, as with a real informer resync
		}
	}
}
