// Package httpapitest provides an in-memory httpapi.Orchestrator, so that
// clients of the HTTP API (the smc-compute front-end, the hub adapters) are
// tested against the real server and wire format without a cluster.
package httpapitest

import (
	"context"
	"sort"
	"sync"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// RunningIP is the IP every running fake project reports.
const RunningIP = "10.4.0.7"

// Orchestrator runs projects instantly: Start makes a project running,
// Stop makes it opened. It records the requests it was given.
type Orchestrator struct {
	mu      sync.Mutex
	running map[project.ID]orchestrator.StartRequest
	touched []project.ID
}

var _ httpapi.Orchestrator = (*Orchestrator)(nil)

// New returns an Orchestrator with no project running.
func New() *Orchestrator {
	return &Orchestrator{running: map[project.ID]orchestrator.StartRequest{}}
}

// Request returns the start request a running project was started with.
func (o *Orchestrator) Request(id project.ID) (orchestrator.StartRequest, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	req, ok := o.running[id]
	return req, ok
}

// Touched returns the projects Touch was called for, in order.
func (o *Orchestrator) Touched() []project.ID {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]project.ID(nil), o.touched...)
}

func (o *Orchestrator) Start(_ context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	o.mu.Lock()
	o.running[id] = req
	o.mu.Unlock()
	return o.Status(id), nil
}

func (o *Orchestrator) Stop(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	o.mu.Lock()
	delete(o.running, id)
	o.mu.Unlock()
	return o.Status(id), nil
}

func (o *Orchestrator) Restart(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	return o.Start(ctx, id, req)
}

func (o *Orchestrator) Status(id project.ID) orchestrator.ProjectStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.running[id]; ok {
		return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Running, IP: RunningIP}}
	}
	return orchestrator.ProjectStatus{ProjectID: id, Status: state.Status{State: state.Opened}}
}

// List returns the running projects, sorted by ID.
func (o *Orchestrator) List() []orchestrator.ProjectStatus {
	o.mu.Lock()
	ids := make([]project.ID, 0, len(o.running))
	for id := range o.running {
		ids = append(ids, id)
	}
	o.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	out := make([]orchestrator.ProjectStatus, 0, len(ids))
	for _, id := range ids {
		out = append(out, o.Status(id))
	}
	return out
}

func (o *Orchestrator) Touch(id project.ID) error {
	o.mu.Lock()
	o.touched = append(o.touched, id)
	o.mu.Unlock()
	return nil
}

func (o *Orchestrator) Ready() bool { return true }
