package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
)

// Original is the BASELINE: a re-creation of the 2020 system's method
// (CC20 smc_compute.py, see /work/shared/reference/original-system.md
// §2.2–2.4). Start writes the pod YAML to a temporary file, runs
// `kubectl apply -f`, then checks `kubectl get pod project-<id> -o wide |
// tail -1` until the text says Running, sleeping 1 s ×1.3 (capped at 5 s)
// between checks. Stop runs `kubectl delete pod`, then checks until the
// text says NotFound, re-issuing the delete after every sleep. Each check
// is a shell pipeline, as in the original.
type Original struct {
	Kubectl    string
	Kubeconfig string // its current context's namespace is the projects namespace (the original passes no --namespace)
	Home       string // kubectl's discovery cache lives here, kept warm across calls like on the original server pod
	TempDir    string
	NS         string
	NFSServer  string
	// ReadyDelay is the bench's kwok annotation (not part of the original).
	ReadyDelay time.Duration

	// MaxDelay caps the backoff (KUBECTL_MAX_DELAY_S = 5 in the original).
	MaxDelay time.Duration
	// FirstDelay is the first sleep (1 s in the original).
	FirstDelay time.Duration

	cpuNanos  atomic.Int64
	processes atomic.Int64
}

func (o *Original) Name() string       { return "original method (kubectl apply + poll), BASELINE" }
func (o *Original) Namespace() string  { return o.NS }
func (o *Original) CPU() time.Duration { return time.Duration(o.cpuNanos.Load()) }
func (o *Original) Processes() int64   { return o.processes.Load() }

// run executes a shell command line with kubectl's environment and
// returns stdout and stderr together (the original's cmd() did the same).
func (o *Original) run(ctx context.Context, line string) (string, error) {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	c.Env = append(os.Environ(), "KUBECONFIG="+o.Kubeconfig, "HOME="+o.Home, "KUBECTL="+o.Kubectl)
	out, err := c.CombinedOutput()
	o.cpuNanos.Add(int64(ChildCPU(c.ProcessState)))
	o.processes.Add(1)
	return string(out), err
}

// kubectl quotes the binary path for the shell line.
func (o *Original) kubectl() string { return `"$KUBECTL"` }

// state is kubernetes_output_to_state over `get pod -o wide | tail -1`.
func (o *Original) state(ctx context.Context, id project.ID) (string, error) {
	out, _ := o.run(ctx, o.kubectl()+" get pod "+id.PodName()+" -o wide 2>&1 | tail -1")
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return OutputToState(out), nil
}

// OutputToState is the original's substring match on kubectl's text.
func OutputToState(out string) string {
	switch {
	case strings.Contains(out, "Running"):
		return "running"
	case strings.Contains(out, "Terminating"):
		return "stopping"
	case strings.Contains(out, "Pending"):
		return "Pending" // sic: the original's capitalised, unknown state
	case strings.Contains(out, "NotFound"):
		return "opened"
	}
	return "starting"
}

func (o *Original) Start(ctx context.Context, id project.ID) error {
	f, err := os.CreateTemp(o.TempDir, "project-"+id.String()+"-*.yaml")
	if err != nil {
		return fmt.Errorf("original: temp file: %w", err)
	}
	path := f.Name()
	defer os.Remove(path)
	if _, err := f.WriteString(OriginalPodYAML(id, o.NFSServer, o.ReadyDelay)); err != nil {
		f.Close()
		return fmt.Errorf("original: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("original: write %s: %w", path, err)
	}
	if out, err := o.run(ctx, o.kubectl()+" apply -f "+path); err != nil {
		return fmt.Errorf("original: kubectl apply: %w: %s", err, out)
	}
	return o.until(ctx, id, "running", nil)
}

func (o *Original) Stop(ctx context.Context, id project.ID) error {
	del := func() { _, _ = o.run(ctx, o.kubectl()+" delete pod "+id.PodName()) }
	del()
	return o.until(ctx, id, "opened", del)
}

// until checks the state, then sleeps 1 s ×1.3 (capped) between checks,
// calling between (if any) after each sleep, as the original's loops do.
func (o *Original) until(ctx context.Context, id project.ID, want string, between func()) error {
	delay := o.FirstDelay
	for {
		st, err := o.state(ctx, id)
		if err != nil {
			return fmt.Errorf("original: waiting for %s: %w", want, err)
		}
		if st == want {
			return nil
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return fmt.Errorf("original: waiting for %s: %w", want, ctx.Err())
		}
		delay = min(time.Duration(float64(delay)*1.3), o.MaxDelay)
		if between != nil {
			between()
		}
	}
}

func (o *Original) Status(ctx context.Context, id project.ID) (bool, error) {
	st, err := o.state(ctx, id)
	return st == "running", err
}

// OriginalPodYAML is the original's pod (CC20 smc_compute.py, default
// quotas: 1 core, 1000 MiB, 50m CPU request, 500 MiB memory request,
// network off, preempt). A non-zero readyDelay adds the bench's kwok
// annotation, the only addition to the original's document.
func OriginalPodYAML(id project.ID, nfsServer string, readyDelay time.Duration) string {
	annotations := ""
	if readyDelay > 0 {
		annotations = fmt.Sprintf("  annotations:\n    %s: %q\n", ReadyDelayAnnotation, readyDelay.String())
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: project-%[1]s
%[3]s  labels:
    run: project
    project_id: %[1]s
    network: none
    node_selector: preempt
spec:
  containers:
    - name: project-%[1]s
      image: sagemathinc/cocalc-kubernetes-project
      env:
        - name: COCALC_PROJECT_ID
          value: %[1]s
        - name: COCALC_EXTRA_ENV
          value: ""
      ports:
        - containerPort: 6000
          name: local-hub
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /health
          port: 6001
        initialDelaySeconds: 60
        periodSeconds: 30
        timeoutSeconds: 10
        failureThreshold: 20
      resources:
        limits:
          cpu: "1"
          memory: 1000Mi
        requests:
          cpu: 50m
          memory: 500Mi
      volumeMounts:
        - name: home
          mountPath: /home/user
  automountServiceAccountToken: false
  volumes:
    - name: home
      nfs:
        server: %[2]s
        path: "/%[1]s"
`, id, nfsServer, annotations)
}
