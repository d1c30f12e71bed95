package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

type projectOptions struct {
	api        string
	kubeconfig string
	template   string
	output     string
	timeout    time.Duration
	qps        float32
	burst      int
}

type quotaFlags struct {
	q   podtemplate.Quota
	env []string
}

func (f *quotaFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Float64Var(&f.q.Cores, "cores", 0, "CPU limit in cores (0: template default)")
	fl.Int64Var(&f.q.MemoryMiB, "memory", 0, "memory limit in MiB (0: template default)")
	fl.Int64Var(&f.q.CPUShares, "cpu-shares", 0, "CPU request in millicores (0: template default)")
	fl.BoolVar(&f.q.Network, "network", false, "allow internet access (pod label network=outside)")
	fl.Int64Var(&f.q.GPUs, "gpus", 0, "number of GPUs")
	fl.Int64Var(&f.q.IdleTimeoutSeconds, "idle-timeout", 0, "stop after this many seconds without activity (0: template default)")
	fl.StringArrayVar(&f.env, "env", nil, "extra environment variable NAME=VALUE for the project (repeatable)")
}

func (f *quotaFlags) request() (orchestrator.StartRequest, error) {
	req := orchestrator.StartRequest{Quota: f.q}
	for _, kv := range f.env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return req, usageErrorf("--env %q: want NAME=VALUE", kv)
		}
		if req.Env == nil {
			req.Env = map[string]string{}
		}
		req.Env[k] = v
	}
	return req, nil
}

func newProjectCmd(stdout io.Writer) *cobra.Command {
	o := &projectOptions{}
	cmd := &cobra.Command{
		Use:   "project",
		Short: "Start, stop, restart, touch, inspect and list CoCalc projects",
		Long: `Admin commands for CoCalc projects.

By default they call the orchestrator's HTTP API (--api), which listens on
the server pod's loopback; run them in the pod's orchestrator container, whose
image holds this binary at /cocalc-k8s:

  kubectl exec deploy/<release>-server -c orchestrator -- /cocalc-k8s project list

(the chart's NOTES, printed by helm install and helm status, give the exact
command for a release). With --kubeconfig they act on the cluster directly through the same
core as "serve" (the project pod template must be readable at --template and,
for start, the homes directory at its storage.serverPath must be mounted).

Output is a table, or JSON with -o json.

` + exitCodesHelp,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.api, "api", fmt.Sprintf("http://127.0.0.1:%d", DefaultAPIPort), "orchestrator API base URL")
	pf.StringVar(&o.kubeconfig, "kubeconfig", "", "act on the cluster directly with this kubeconfig instead of calling the API")
	pf.StringVar(&o.template, "template", podtemplate.DefaultPath, "project pod template file (direct mode only)")
	pf.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&o.timeout, "timeout", 5*time.Minute, "overall time limit of the command")
	pf.Float32Var(&o.qps, "kube-qps", 50, "Kubernetes API client queries per second (direct mode)")
	pf.IntVar(&o.burst, "kube-burst", 100, "Kubernetes API client burst (direct mode)")

	startQuota, restartQuota := &quotaFlags{}, &quotaFlags{}
	start := &cobra.Command{
		Use:     "start PROJECT_ID",
		Short:   "Start a project and wait until it is running",
		Long:    "Start a project (idempotent: a running project is returned at once) and wait until its pod is Ready. Quota flags left at 0 take the template defaults; all are clamped to the template's min/max.",
		Example: "  cocalc-k8s project start 7b3a4b32-8f0e-4c1a-9d2e-0123456789ab --cores 2 --memory 4000 --network",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := startQuota.request()
			if err != nil {
				return err
			}
			return o.runOne(cmd.Context(), stdout, args[0], func(ctx context.Context, ops orchestrator.Projects, id project.ID) (orchestrator.ProjectStatus, error) {
				return ops.Start(ctx, id, req)
			})
		},
	}
	startQuota.register(start)
	restart := &cobra.Command{
		Use:     "restart PROJECT_ID",
		Short:   "Stop a project (if running) and start it again",
		Long:    "Stop the project's pod and wait until it is gone, then start a new one with the current template and the given quota (flags as for start).",
		Example: "  cocalc-k8s project restart 7b3a4b32-8f0e-4c1a-9d2e-0123456789ab --memory 8000",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := restartQuota.request()
			if err != nil {
				return err
			}
			return o.runOne(cmd.Context(), stdout, args[0], func(ctx context.Context, ops orchestrator.Projects, id project.ID) (orchestrator.ProjectStatus, error) {
				return ops.Restart(ctx, id, req)
			})
		},
	}
	restartQuota.register(restart)
	simple := func(use, short, long string, op func(context.Context, orchestrator.Projects, project.ID) (orchestrator.ProjectStatus, error)) *cobra.Command {
		return &cobra.Command{
			Use:     use + " PROJECT_ID",
			Short:   short,
			Long:    long,
			Example: "  cocalc-k8s project " + use + " 7b3a4b32-8f0e-4c1a-9d2e-0123456789ab",
			Args:    exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return o.runOne(cmd.Context(), stdout, args[0], op)
			},
		}
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List every project that has a pod",
		Long:    "List every project that has a pod in the template's namespace, with state, error reason, IP and whether its pod is stale (built from an older template).",
		Example: "  cocalc-k8s project list -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			ops, closeOps, err := o.ops(ctx)
			if err != nil {
				return err
			}
			defer closeOps()
			l, err := ops.List(ctx)
			if err != nil {
				return err
			}
			return o.print(stdout, l, true)
		},
	}
	cmd.AddCommand(start, restart, list,
		simple("stop", "Stop a project and wait until its pod is gone",
			"Delete the project's pod with the template's grace period and wait until it is gone. Stopping a stopped project does nothing.",
			func(ctx context.Context, ops orchestrator.Projects, id project.ID) (orchestrator.ProjectStatus, error) {
				return ops.Stop(ctx, id)
			}),
		simple("status", "Show a project's state, error reason and IP",
			"Show a project's state (opened, starting, running, stopping), the error reason if any (OOMKilled, ImagePullBackOff, Unschedulable, ...), its pod IP when running and whether its pod is stale.",
			func(ctx context.Context, ops orchestrator.Projects, id project.ID) (orchestrator.ProjectStatus, error) {
				return ops.Status(ctx, id)
			}),
		simple("touch", "Record activity for a project (defers its idle stop)",
			"Record activity for a project, so the idle-stop loop counts its idle timeout from now.",
			func(ctx context.Context, ops orchestrator.Projects, id project.ID) (orchestrator.ProjectStatus, error) {
				return ops.Touch(ctx, id)
			}),
	)
	return cmd
}

func (o *projectOptions) runOne(ctx context.Context, stdout io.Writer, rawID string, op func(context.Context, orchestrator.Projects, project.ID) (orchestrator.ProjectStatus, error)) error {
	if o.output != "table" && o.output != "json" {
		return usageErrorf("--output %q: want table or json", o.output)
	}
	id, err := parseID(rawID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	ops, closeOps, err := o.ops(ctx)
	if err != nil {
		return err
	}
	defer closeOps()
	st, err := op(ctx, ops, id)
	if err != nil {
		return err
	}
	return o.print(stdout, []orchestrator.ProjectStatus{st}, false)
}

// ops returns the API client, or the in-process orchestrator with
// --kubeconfig: both are orchestrator.Projects.
func (o *projectOptions) ops(ctx context.Context) (orchestrator.Projects, func(), error) {
	if o.output != "table" && o.output != "json" {
		return nil, nil, usageErrorf("--output %q: want table or json", o.output)
	}
	if o.kubeconfig == "" {
		return &httpapi.Client{BaseURL: o.api, HTTP: &http.Client{}}, func() {}, nil
	}
	tpl, err := podtemplate.Load(o.template)
	if err != nil {
		return nil, nil, withCode(ExitUsage, err)
	}
	kc, err := newKubeClient(o.kubeconfig, o.qps, o.burst, tpl, nil)
	if err != nil {
		return nil, nil, err
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	kc.Start(runCtx)
	if err := kc.WaitForSync(ctx); err != nil {
		stop()
		return nil, nil, withCode(ExitUnavailable, err)
	}
	orch, err := orchestrator.New(orchestrator.Config{Template: tpl, Cluster: kc})
	if err != nil {
		stop()
		return nil, nil, err
	}
	return orch, func() { orch.Close(); stop() }, nil
}

func (o *projectOptions) print(w io.Writer, l []orchestrator.ProjectStatus, isList bool) error {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if isList {
			if l == nil {
				l = []orchestrator.ProjectStatus{}
			}
			return enc.Encode(l)
		}
		return enc.Encode(l[0])
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECT\tSTATE\tREASON\tIP\tSTALE")
	for _, st := range l {
		stale := "no"
		if st.StaleSpec {
			stale = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.ProjectID, st.State, dash(st.Reason), dash(st.IP), stale)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
