package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/cli"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/httpapi"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/smccompute"
)

// The orchestrator's ports are one value each (orchestrator.ports.api and
// .health): the chart's defaults are the binary's flag defaults, and every
// template that names a port (the serve flags, the hub's API URL, the health
// containerPort, the server NetworkPolicy) follows the values.
func TestOrchestratorPorts(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var values struct {
		Orchestrator struct {
			Ports struct {
				API    int `json:"api"`
				Health int `json:"health"`
			} `json:"ports"`
		} `json:"orchestrator"`
	}
	require.NoError(t, yaml.Unmarshal(data, &values))
	ports := values.Orchestrator.Ports
	assert.Equal(t, cli.DefaultAPIPort, ports.API, "orchestrator.ports.api default vs cocalc-k8s serve")
	assert.Equal(t, cli.DefaultHealthPort, ports.Health, "orchestrator.ports.health default vs cocalc-k8s serve")

	assert.Equal(t, fmt.Sprintf("http://127.0.0.1:%d", ports.API), smccompute.DefaultAPI, "smc-compute's default API URL")

	var help, stderr bytes.Buffer
	require.Equal(t, 0, cli.Execute(context.Background(), []string{"serve", "--help"}, &help, &stderr), stderr.String())
	assert.Regexp(t, fmt.Sprintf(`--listen string +address of the project API \(default "127\.0\.0\.1:%d"\)`, ports.API), help.String())
	assert.Regexp(t, fmt.Sprintf(`--health-listen string +address of /healthz, /readyz and /metrics \(default ":%d"\)`, ports.Health), help.String())

	for _, p := range []struct{ api, health int }{{ports.API, ports.Health}, {9000, 9001}} {
		t.Run(fmt.Sprintf("%d-%d", p.api, p.health), func(t *testing.T) {
			out := render(t, []string{defaultValuesFile(), writeHealthFrom(t)}, map[string]string{
				"orchestrator.ports.api":    fmt.Sprint(p.api),
				"orchestrator.ports.health": fmt.Sprint(p.health),
			})
			m := mustDecode(t, out)
			spec := one[*appsv1.Deployment](t, m, releaseName+"-server").Spec.Template.Spec
			var hub, orch corev1.Container
			for _, c := range spec.Containers {
				switch c.Name {
				case "hub":
					hub = c
				case "orchestrator":
					orch = c
				}
			}
			assert.Contains(t, orch.Args, fmt.Sprintf("--listen=127.0.0.1:%d", p.api))
			assert.Contains(t, orch.Args, fmt.Sprintf("--health-listen=:%d", p.health))
			require.Len(t, orch.Ports, 1)
			assert.Equal(t, int32(p.health), orch.Ports[0].ContainerPort)
			assert.True(t, slices.ContainsFunc(hub.Env, func(e corev1.EnvVar) bool {
				return e.Name == "COCALC_K8S_API" && e.Value == fmt.Sprintf("http://127.0.0.1:%d", p.api)
			}), "hub env COCALC_K8S_API: %v", hub.Env)

			np := one[*networkingv1.NetworkPolicy](t, m, releaseName+"-server")
			var healthPorts []int
			for _, r := range np.Spec.Ingress {
				if len(r.From) > 0 && len(r.Ports) == 1 {
					healthPorts = append(healthPorts, r.Ports[0].Port.IntValue())
				}
			}
			assert.Equal(t, []int{p.health}, healthPorts, "the server policy's health rule")
		})
	}
}

// writeHealthFrom writes a values file that opens the health port to one peer.
func writeHealthFrom(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "health-from.yaml")
	require.NoError(t, os.WriteFile(f, []byte("networkPolicy:\n  server:\n    healthFrom:\n      - podSelector:\n          matchLabels:\n            app: monitoring\n"), 0o644))
	return f
}

// The project API's bounds are values whose defaults are the binary's
// (httpapi's), passed as serve flags.
func TestOrchestratorOperationBounds(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var values struct {
		Orchestrator struct {
			MaxInFlight int `json:"maxInFlight"`
			MaxQueued   int `json:"maxQueued"`
		} `json:"orchestrator"`
	}
	require.NoError(t, yaml.Unmarshal(data, &values))
	assert.Equal(t, httpapi.DefaultMaxInFlight, values.Orchestrator.MaxInFlight, "orchestrator.maxInFlight default vs cocalc-k8s serve")
	assert.Equal(t, httpapi.DefaultMaxQueued, values.Orchestrator.MaxQueued, "orchestrator.maxQueued default vs cocalc-k8s serve")

	out := render(t, []string{defaultValuesFile()}, map[string]string{"orchestrator.maxInFlight": "64", "orchestrator.maxQueued": "0"})
	args := orch(t, one[*appsv1.Deployment](t, mustDecode(t, out), releaseName+"-server").Spec.Template.Spec).Args
	assert.Contains(t, args, "--max-inflight=64")
	assert.Contains(t, args, "--max-queued=0")
}
