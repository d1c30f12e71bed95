package orchestrator

import (
	"context"

	"k8s.io/client-go/util/workqueue"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// Projects is the one interface for project operations. The in-process
// *Orchestrator and the HTTP API's client (httpapi.Client) satisfy it, and
// every front-end drives projects through it: the admin CLI (either), the
// HTTP API (the orchestrator), smc-compute (the client) and the PostgreSQL
// controller (the orchestrator). Every ID has passed project.Parse.
type Projects interface {
	// Start is idempotent and returns once the project is running.
	Start(ctx context.Context, id project.ID, req StartRequest) (ProjectStatus, error)
	// Stop returns once the pod is gone; stopping a stopped project is a no-op.
	Stop(ctx context.Context, id project.ID) (ProjectStatus, error)
	// Restart stops (if running) and starts with req.
	Restart(ctx context.Context, id project.ID, req StartRequest) (ProjectStatus, error)
	// Status reports the current state; a project without a pod is opened.
	Status(ctx context.Context, id project.ID) (ProjectStatus, error)
	// List returns the status of every project that has a pod.
	List(ctx context.Context) ([]ProjectStatus, error)
	// Touch records activity (defers the idle stop) and returns the status.
	Touch(ctx context.Context, id project.ID) (ProjectStatus, error)
}

// Watcher adds change notifications for a front-end running next to the
// orchestrator that mirrors states elsewhere (the PostgreSQL controller).
type Watcher interface {
	Projects
	// Watch sends a project's status after each change of its pod in the
	// informer cache until ctx ends, then closes the channel. Changes of one
	// project the receiver has not taken yet are coalesced: it gets the
	// latest status once.
	Watch(ctx context.Context) <-chan ProjectStatus
}

var _ Watcher = (*Orchestrator)(nil)

// Status answers from the cache (zero API calls).
func (o *Orchestrator) Status(_ context.Context, id project.ID) (ProjectStatus, error) {
	if err := id.Validate(); err != nil {
		return ProjectStatus{}, err
	}
	return o.current(id), nil
}

// List returns every project with a pod, sorted by ID, from the cache.
func (o *Orchestrator) List(context.Context) ([]ProjectStatus, error) { return o.list(), nil }

// Touch records activity, deferring the idle stop.
func (o *Orchestrator) Touch(_ context.Context, id project.ID) (ProjectStatus, error) {
	if err := id.Validate(); err != nil {
		return ProjectStatus{}, err
	}
	o.touch(id)
	return o.current(id), nil
}

// Watch implements Watcher on the cache's change notifications: the
// informer's event handler adds the pod's name to a work queue (which
// coalesces repeated changes), and the status is read from the cache when
// the name is taken, so it is the latest.
func (o *Orchestrator) Watch(ctx context.Context) <-chan ProjectStatus {
	q := workqueue.NewTyped[string]()
	unsubscribe := o.cluster.Subscribe(func(podName string) { q.Add(podName) })
	go func() {
		<-ctx.Done()
		unsubscribe()
		q.ShutDown()
	}()
	ch := make(chan ProjectStatus)
	go func() {
		defer close(ch)
		for {
			name, shutdown := q.Get()
			if shutdown {
				return
			}
			if id, err := project.FromPodName(name); err == nil {
				select {
				case ch <- o.current(id):
				case <-ctx.Done():
				}
			}
			q.Done(name)
		}
	}()
	return ch
}
