package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/test/apicalls"
	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/state"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// usedGrants turns the audit events of one identity into the grants they
// needed. A request on a named object keeps its name only for resources
// the Role names (namedResources); nfsService is recorded as
// apicalls.NFSService. It fails the test on any request the API server
// refused as forbidden: the Role would then lack something the code does.
func usedGrants(t *testing.T, events []cluster.AuditEvent, namedResources map[string]bool, nfsService string) []apicalls.Grant {
	t.Helper()
	var out []apicalls.Grant
	for _, ev := range events {
		if ev.ObjectRef == nil {
			continue
		}
		if ev.ResponseStatus != nil && ev.ResponseStatus.Code == 403 {
			t.Errorf("the orchestrator was refused %s %s (%s): the Role lacks something the code does", ev.Verb, ev.ObjectRef.Resource, ev.RequestURI)
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		g := apicalls.Grant{Group: ev.ObjectRef.APIGroup, Resource: res, Verb: ev.Verb}
		if namedResources[res] {
			g.Name = ev.ObjectRef.Name
			if g.Name == nfsService {
				g.Name = apicalls.NFSService
			}
		}
		out = append(out, g)
	}
	return out
}

// TestRoleIsExactlyWhatTheOrchestratorUses drives every kind of work the
// orchestrator does (start, stop, restart, idle stop, stale-spec
// replacement, start timeouts repeated on the same stuck pod, clean-up of
// a pod stuck pending, the pod cache filled by a streaming list and, as on
// API servers without it, by a paged list) as the chart's ServiceAccount, collects every
// request it made from the API server's audit log, and asserts the
// rendered Role grants exactly that set: nothing the code needs is
// missing (no request was forbidden) and nothing is granted that it never
// uses. In both storage modes: nfsServer adds the NFS Service lookup.
func TestRoleIsExactlyWhatTheOrchestratorUses(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	if c.Tier != cluster.TierAPI {
		t.Skipf("needs the API server's audit log, which only the api tier keeps (this is the %s tier)", c.Tier)
	}
	for _, mode := range []struct {
		name  string
		set   map[string]string
		files []string
	}{
		// values/kind.yaml: storage.mode pvc.
		{"pvc", map[string]string{"projects.resources.ephemeralStorageLimit": ""}, []string{valuesFile("kind.yaml")}},
		{"nfsServer", map[string]string{"projects.resources.ephemeralStorageLimit": ""}, nil},
	} {
		t.Run(mode.name, func(t *testing.T) {
			ns := newNamespace(t, c, "audit-"+strings.ToLower(mode.name), nil)
			install(t, c, ns, helmOptions(t, c, ns, mergeValues(standinValues, mode.set), mode.files...))
			saConfig := serviceAccountConfig(t, c, ns)
			kubeconfig := serviceAccountKubeconfig(t, saConfig)
			file, _ := orchestratorTemplate(t, c, ns)
			tpl, err := podtemplate.Load(file)
			require.NoError(t, err)
			driveEveryOperation(t, c, kubeconfig, file, tpl)

			role, err := c.Client.RbacV1().Roles(tpl.Namespace).Get(t.Context(), roleName, metav1.GetOptions{})
			require.NoError(t, err, "rendered Role")
			named := map[string]bool{}
			for _, r := range role.Rules {
				if len(r.ResourceNames) > 0 {
					for _, res := range r.Resources {
						named[res] = true
					}
				}
			}
			nfsService := ""
			if tpl.Storage.NFS != nil {
				nfsService = tpl.Storage.NFS.ServiceName
			}
			user := fmt.Sprintf("system:serviceaccount:%s:%s", ns, serviceAccountName)
			// The audit log is written (blocking mode) before each response:
			// every request above is in it.
			events, err := c.AuditEvents(user)
			if errors.Is(err, cluster.ErrNoAuditLog) {
				t.Skipf("needs the API server's audit log: %v", err)
			}
			require.NoError(t, err)
			used := apicalls.Strings(usedGrants(t, events, named, nfsService))
			require.NotEmpty(t, used, "no audited request by %s", user)
			layout := apicalls.Layout(nfsService != "")
			if os.Getenv("COCALC_UPDATE_API_CALLS") == "1" {
				require.NoError(t, apicalls.Save(layout, used))
			}
			record, err := apicalls.Load()
			require.NoError(t, err)
			require.Equal(t, record[layout], used,
				"the calls the orchestrator made (right) differ from %s (left); if the code changed on purpose, regenerate it (COCALC_UPDATE_API_CALLS=1)", apicalls.File())
			require.Equal(t, used, apicalls.Strings(apicalls.RoleGrants(role.Rules, nfsService)),
				"the installed Role (right) must grant exactly what the orchestrator used (left), as %s in %s", user, tpl.Namespace)
		})
	}
}

// driveEveryOperation runs the orchestrator (as the ServiceAccount in
// kubeconfig) through each code path that talks to the API server.
func driveEveryOperation(t *testing.T, c *cluster.Cluster, kubeconfig, templateFile string, tpl *podtemplate.Template) {
	ctx := t.Context()
	orch := startOrchestrator(t, kubeconfig, templateFile, "--idle-stop=on")
	a, b, idle := newProjectID(), newProjectID(), newProjectID()

	for _, id := range []project.ID{a, b} {
		st, err := orch.api.Start(ctx, id, orchestrator.StartRequest{})
		require.NoError(t, err, "start %s", id)
		require.Equal(t, state.Running, st.State)
	}
	st, err := orch.api.Restart(ctx, a, orchestrator.StartRequest{})
	require.NoError(t, err, "restart")
	require.Equal(t, state.Running, st.State)
	st, err = orch.api.Stop(ctx, a)
	require.NoError(t, err, "stop")
	require.Equal(t, state.Opened, st.State)

	// Idle stop: a 1 s idle timeout, swept every 2 s.
	st, err = orch.api.Start(ctx, idle, orchestrator.StartRequest{Quota: podtemplate.Quota{IdleTimeoutSeconds: 1}})
	require.NoError(t, err, "start the idle project")
	require.Equal(t, state.Running, st.State)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return len(projectPods(t, c, tpl.Namespace, idle)) == 0, nil
	}), "the idle project was never stopped")
	orch.kill()

	// A new template: B's running pod is now stale, and every new pod asks
	// for ephemeral storage, which the api tier's simulated nodes do not
	// have: it stays Pending (Unschedulable).
	stuck := *tpl
	stuck.Resources.EphemeralStorageLimit = "1Gi"
	stuck.Timeouts.StartSeconds = 2
	stuck.Timeouts.PendingSeconds = 4
	require.NoError(t, stuck.Validate())
	data, err := yaml.Marshal(&stuck)
	require.NoError(t, err)
	stuckFile := filepath.Join(t.TempDir(), "template.yaml")
	require.NoError(t, os.WriteFile(stuckFile, data, 0o644))
	orch = startOrchestrator(t, kubeconfig, stuckFile, "--idle-stop=off")

	// A restart replaces the stale pod by one that never runs and times
	// out; a start of the same project times out on that same pod (the
	// same Event again: the recorder counts it on the existing one).
	oldUID := projectPods(t, c, tpl.Namespace, b)[0].UID
	status, err := orch.api.Status(ctx, b)
	require.NoError(t, err)
	require.True(t, status.StaleSpec, "B's pod is from the old template")
	_, err = orch.api.Restart(ctx, b, orchestrator.StartRequest{})
	require.Error(t, err, "restart onto a pod that cannot be scheduled")
	_, err = orch.api.Start(ctx, b, orchestrator.StartRequest{})
	require.Error(t, err, "start of a project whose pod cannot be scheduled")
	pods := projectPods(t, c, tpl.Namespace, b)
	require.Len(t, pods, 1)
	require.NotEqual(t, oldUID, pods[0].UID, "the stale pod must have been replaced")
	// The clean-up loop removes it once pending longer than pendingSeconds.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return len(projectPods(t, c, tpl.Namespace, b)) == 0, nil
	}), "the pod stuck pending was never cleaned up")
	// Let the event recorder flush what it queued (it writes asynchronously).
	time.Sleep(2 * time.Second)
	orch.kill()

	// An API server without streaming lists (WatchList; older clusters):
	// client-go's informer falls back to a paged LIST, which the Role must
	// allow too. The client's feature gate turns streaming off.
	orch = startOrchestratorWithEnv(t, []string{"KUBE_FEATURE_WatchListClient=false"}, kubeconfig, templateFile)
	_, err = orch.api.Status(ctx, a)
	require.NoError(t, err)
	orch.kill()
}
