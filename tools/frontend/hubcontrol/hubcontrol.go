// Package hubcontrol is what the two hub front-ends (smc-compute and the
// PostgreSQL controller) need from the orchestrator core: start, stop and
// observe one project's pod. It is the consumer-side contract; the core
// implements it (an adapter lives next to the wiring), and the front-ends'
// tests run against hubcontroltest.Fake.
package hubcontrol

import (
	"context"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// State is a project state as CoCalc's COMPUTE_STATES names it. Only the
// states a pod-per-project deployment can be in are used.
type State string

const (
	// Opened means no pod exists (the hub shows "Stopped").
	Opened State = "opened"
	// Starting covers Pending pods (scheduling, image pull, container
	// creating) and pods whose container is not running yet or crashed.
	Starting State = "starting"
	// Running means the project container runs and the pod has an IP.
	Running State = "running"
	// Stopping means the pod is being deleted.
	Stopping State = "stopping"
)

// Status is the observed state of one project's pod.
type Status struct {
	ProjectID string
	State     State
	// IP is the pod IP (set when Running).
	IP string
	// Error is a short reason when the pod is unhealthy
	// ("ImagePullBackOff", "OOMKilled", "Unschedulable: ..."), else empty.
	Error string
	// StartedAt is when the project container started (zero unless Running).
	StartedAt time.Time
}

// StartOptions are the start arguments besides the quota.
type StartOptions struct {
	// BaseURL is the hub's base URL path (smc-compute --base_url).
	BaseURL string
	// ExtraEnv are extra environment variables for the project
	// (smc-compute --extra_env, decoded).
	ExtraEnv map[string]string
	// EphemeralState and EphemeralDisk are the original's flags, passed on
	// as COCALC_EPHEMERAL_STATE / COCALC_EPHEMERAL_DISK.
	EphemeralState bool
	EphemeralDisk  bool
}

// Projects starts, stops and reports projects. Implementations must be
// idempotent: Start of a running project and Stop of a stopped one succeed
// without effect, and two concurrent Starts create one pod (the pod name is
// derived from the project ID).
type Projects interface {
	// Start creates the project's pod with the quota (fields left at zero
	// take the template's defaults, all are clamped to its min/max) and
	// returns once it is Running, or with an error (ctx ends, the pod fails).
	Start(ctx context.Context, projectID string, q podtemplate.Quota, o StartOptions) error
	// Stop deletes the pod and returns once it is gone.
	Stop(ctx context.Context, projectID string) error
	// Status reports the current state; a project without a pod is Opened.
	Status(ctx context.Context, projectID string) (Status, error)
}

// Watcher adds what a long-running front-end needs to mirror state changes.
type Watcher interface {
	Projects
	// List returns the status of every project that has a pod.
	List(ctx context.Context) ([]Status, error)
	// Watch sends every state change (of any project) until ctx ends; the
	// channel is closed then, or earlier if the watch breaks (callers
	// re-List and re-Watch).
	Watch(ctx context.Context) (<-chan Status, error)
}

// Toucher is implemented by orchestrators that also stop idle projects on
// their own (measuring from the last Start or Touch). A front-end that knows
// about user activity (the database's last_edited) touches active projects,
// so the orchestrator never stops a project someone is working in.
type Toucher interface {
	Touch(ctx context.Context, projectID string) error
}
