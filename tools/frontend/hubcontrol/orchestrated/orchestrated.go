// Package orchestrated adapts the orchestrator core to hubcontrol, the
// contract the hub front-ends (smc-compute, the PostgreSQL controller) use.
package orchestrated

import (
	"context"
	"fmt"
	"maps"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/hubcontrol"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// Core is the orchestrator as the adapter calls it: in-process (Local) or
// through its HTTP API (Remote), which have the same operations.
type Core interface {
	Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error)
	Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error)
	Status(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error)
	List(ctx context.Context) ([]orchestrator.ProjectStatus, error)
	Touch(ctx context.Context, id project.ID) error
}

// Local is the in-process orchestrator (used by `serve`, where the
// PostgreSQL controller runs next to the core).
func Local(o *orchestrator.Orchestrator) Core { return local{o} }

type local struct{ o *orchestrator.Orchestrator }

func (l local) Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	return l.o.Start(ctx, id, req)
}

func (l local) Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	return l.o.Stop(ctx, id)
}

func (l local) Status(_ context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	return l.o.Status(id), nil
}

func (l local) List(context.Context) ([]orchestrator.ProjectStatus, error) { return l.o.List(), nil }

func (l local) Touch(_ context.Context, id project.ID) error { return l.o.Touch(id) }

// Remote is the orchestrator's HTTP API (used by smc-compute, a short-lived
// process the 2020 compute server runs next to the orchestrator).
func Remote(c *httpapi.Client) Core { return remote{c} }

type remote struct{ c *httpapi.Client }

func (r remote) Start(ctx context.Context, id project.ID, req orchestrator.StartRequest) (orchestrator.ProjectStatus, error) {
	return r.c.Start(ctx, id, req)
}

func (r remote) Stop(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	return r.c.Stop(ctx, id)
}

func (r remote) Status(ctx context.Context, id project.ID) (orchestrator.ProjectStatus, error) {
	return r.c.Status(ctx, id)
}

func (r remote) List(ctx context.Context) ([]orchestrator.ProjectStatus, error) { return r.c.List(ctx) }

func (r remote) Touch(ctx context.Context, id project.ID) error {
	_, err := r.c.Touch(ctx, id)
	return err
}

// Adapter is a hubcontrol.Watcher and hubcontrol.Toucher over the core.
type Adapter struct {
	Core Core
	// PollInterval is how often Watch compares the pod list (1s): the core
	// answers List from its informer cache without Kubernetes API calls.
	PollInterval time.Duration
}

var (
	_ hubcontrol.Watcher = Adapter{}
	_ hubcontrol.Toucher = Adapter{}
)

// Start implements hubcontrol.Projects.
func (a Adapter) Start(ctx context.Context, id string, q podtemplate.Quota, o hubcontrol.StartOptions) error {
	pid, err := project.Parse(id)
	if err != nil {
		return err
	}
	env := maps.Clone(o.ExtraEnv)
	if env == nil {
		env = map[string]string{}
	}
	// The original's flags, as smc_compute.py exported them.
	if o.EphemeralState {
		env["COCALC_EPHEMERAL_STATE"] = "yes"
	}
	if o.EphemeralDisk {
		env["COCALC_EPHEMERAL_DISK"] = "yes"
	}
	if len(env) == 0 {
		env = nil
	}
	st, err := a.Core.Start(ctx, pid, orchestrator.StartRequest{Quota: q, Env: env})
	if err != nil {
		return err
	}
	if hubcontrol.State(st.State) != hubcontrol.Running {
		return fmt.Errorf("start %s: project is %s", id, st.State)
	}
	return nil
}

// Stop implements hubcontrol.Projects.
func (a Adapter) Stop(ctx context.Context, id string) error {
	pid, err := project.Parse(id)
	if err != nil {
		return err
	}
	_, err = a.Core.Stop(ctx, pid)
	return err
}

// Status implements hubcontrol.Projects.
func (a Adapter) Status(ctx context.Context, id string) (hubcontrol.Status, error) {
	pid, err := project.Parse(id)
	if err != nil {
		return hubcontrol.Status{}, err
	}
	st, err := a.Core.Status(ctx, pid)
	if err != nil {
		return hubcontrol.Status{}, err
	}
	return convert(st), nil
}

// List implements hubcontrol.Watcher.
func (a Adapter) List(ctx context.Context) ([]hubcontrol.Status, error) {
	list, err := a.Core.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]hubcontrol.Status, 0, len(list))
	for _, s := range list {
		out = append(out, convert(s))
	}
	return out, nil
}

// Watch implements hubcontrol.Watcher by polling the cached list.
func (a Adapter) Watch(ctx context.Context) (<-chan hubcontrol.Status, error) {
	interval := a.PollInterval
	if interval <= 0 {
		interval = time.Second
	}
	return hubcontrol.PollWatch(ctx, a.List, interval), nil
}

// Touch implements hubcontrol.Toucher.
func (a Adapter) Touch(ctx context.Context, id string) error {
	pid, err := project.Parse(id)
	if err != nil {
		return err
	}
	return a.Core.Touch(ctx, pid)
}

func convert(s orchestrator.ProjectStatus) hubcontrol.Status {
	out := hubcontrol.Status{
		ProjectID: s.ProjectID.String(),
		State:     hubcontrol.State(s.State),
		IP:        s.IP,
		Error:     s.Reason,
	}
	if s.StartedAt != nil {
		out.StartedAt = *s.StartedAt
	}
	return out
}
