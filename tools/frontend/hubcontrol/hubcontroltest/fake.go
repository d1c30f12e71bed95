// Package hubcontroltest provides an in-memory hubcontrol.Watcher for the
// front-ends' tests: it records every call, can delay or fail operations,
// and broadcasts state changes like the orchestrator's informer would.
package hubcontroltest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
)

// Call is one recorded Start or Stop.
type Call struct {
	Op        string // "start", "stop" or "touch"
	ProjectID string
	Quota     podtemplate.Quota
	Options   hubcontrol.StartOptions
}

// Fake is a concurrency-safe in-memory orchestrator.
type Fake struct {
	mu       sync.Mutex
	projects map[string]hubcontrol.Status
	calls    []Call
	watchers map[chan hubcontrol.Status]struct{}
	nextIP   int

	// StartDelay makes Start take this long (interruptible by ctx).
	StartDelay time.Duration
	// StartErr, when it returns non-nil for a project, fails Start with it.
	StartErr func(projectID string) error
	// StatusErr, when set, fails Status (simulates an unreachable API).
	StatusErr error
}

var (
	_ hubcontrol.Watcher = (*Fake)(nil)
	_ hubcontrol.Toucher = (*Fake)(nil)
)

// New returns a fake with no running projects.
func New() *Fake {
	return &Fake{projects: map[string]hubcontrol.Status{}, watchers: map[chan hubcontrol.Status]struct{}{}}
}

// Start implements hubcontrol.Projects.
func (f *Fake) Start(ctx context.Context, id string, q podtemplate.Quota, o hubcontrol.StartOptions) error {
	f.mu.Lock()
	f.calls = append(f.calls, Call{Op: "start", ProjectID: id, Quota: q, Options: o})
	startErr, delay := f.StartErr, f.StartDelay
	f.mu.Unlock()
	if startErr != nil {
		if err := startErr(id); err != nil {
			return err
		}
	}
	f.mu.Lock()
	if f.projects[id].State == hubcontrol.Running {
		f.mu.Unlock()
		return nil
	}
	f.setLocked(hubcontrol.Status{ProjectID: id, State: hubcontrol.Starting})
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextIP++
	f.setLocked(hubcontrol.Status{ProjectID: id, State: hubcontrol.Running, IP: fmt.Sprintf("10.0.0.%d", f.nextIP), StartedAt: time.Now().UTC()})
	return nil
}

// Stop implements hubcontrol.Projects.
func (f *Fake) Stop(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, Call{Op: "stop", ProjectID: id})
	if _, ok := f.projects[id]; !ok {
		return nil
	}
	f.setLocked(hubcontrol.Status{ProjectID: id, State: hubcontrol.Stopping})
	delete(f.projects, id)
	f.broadcastLocked(hubcontrol.Status{ProjectID: id, State: hubcontrol.Opened})
	return nil
}

// Touch implements hubcontrol.Toucher (recorded as a "touch" call).
func (f *Fake) Touch(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, Call{Op: "touch", ProjectID: id})
	return nil
}

// Status implements hubcontrol.Projects.
func (f *Fake) Status(ctx context.Context, id string) (hubcontrol.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.StatusErr != nil {
		return hubcontrol.Status{}, f.StatusErr
	}
	if s, ok := f.projects[id]; ok {
		return s, nil
	}
	return hubcontrol.Status{ProjectID: id, State: hubcontrol.Opened}, nil
}

// List implements hubcontrol.Watcher.
func (f *Fake) List(ctx context.Context) ([]hubcontrol.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]hubcontrol.Status, 0, len(f.projects))
	for _, s := range f.projects {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ProjectID < out[j].ProjectID })
	return out, nil
}

// Watch implements hubcontrol.Watcher.
func (f *Fake) Watch(ctx context.Context) (<-chan hubcontrol.Status, error) {
	ch := make(chan hubcontrol.Status, 256)
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
	return ch, nil
}

// Set forces a project's status (e.g. a pod that crashed) and broadcasts it.
func (f *Fake) Set(s hubcontrol.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.State == hubcontrol.Opened {
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
func (f *Fake) CountCalls(op, id string) int {
	n := 0
	for _, c := range f.Calls(op) {
		if c.ProjectID == id {
			n++
		}
	}
	return n
}

func (f *Fake) setLocked(s hubcontrol.Status) {
	f.projects[s.ProjectID] = s
	f.broadcastLocked(s)
}

func (f *Fake) broadcastLocked(s hubcontrol.Status) {
	for ch := range f.watchers {
		select {
		case ch <- s:
		default: // a stuck watcher loses events, as with a real informer resync
		}
	}
}
