package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/metrics/metricstest"
)

// The prometheus-operator kinds the chart renders, decoded strictly into the
// fields the chart uses (monitoring.coreos.com/v1; an unknown or misspelt
// field fails the decode like every other kind's).
type (
	relabel struct {
		Action       string   `json:"action,omitempty"`
		SourceLabels []string `json:"sourceLabels,omitempty"`
		Regex        string   `json:"regex,omitempty"`
		TargetLabel  string   `json:"targetLabel,omitempty"`
		Replacement  string   `json:"replacement,omitempty"`
	}
	scrapeEndpoint struct {
		Port              string    `json:"port"`
		Path              string    `json:"path"`
		Scheme            string    `json:"scheme"`
		Interval          string    `json:"interval"`
		ScrapeTimeout     string    `json:"scrapeTimeout,omitempty"`
		Relabelings       []relabel `json:"relabelings,omitempty"`
		MetricRelabelings []relabel `json:"metricRelabelings,omitempty"`
	}
	namespaceSelector struct {
		MatchNames []string `json:"matchNames"`
	}
	serviceMonitor struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Selector          metav1.LabelSelector `json:"selector"`
			NamespaceSelector namespaceSelector    `json:"namespaceSelector"`
			Endpoints         []scrapeEndpoint     `json:"endpoints"`
		} `json:"spec"`
	}
	podMonitor struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Selector            metav1.LabelSelector `json:"selector"`
			NamespaceSelector   namespaceSelector    `json:"namespaceSelector"`
			PodMetricsEndpoints []scrapeEndpoint     `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	rule struct {
		Alert       string            `json:"alert,omitempty"`
		Record      string            `json:"record,omitempty"`
		Expr        string            `json:"expr"`
		For         string            `json:"for,omitempty"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	ruleGroups struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	prometheusRule struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              ruleGroups `json:"spec"`
	}
)

func (o *serviceMonitor) DeepCopyObject() runtime.Object { c := *o; return &c }
func (o *podMonitor) DeepCopyObject() runtime.Object     { c := *o; return &c }
func (o *prometheusRule) DeepCopyObject() runtime.Object { c := *o; return &c }

func init() {
	kinds["monitoring.coreos.com/v1/ServiceMonitor"] = func() runtime.Object { return &serviceMonitor{} }
	kinds["monitoring.coreos.com/v1/PodMonitor"] = func() runtime.Object { return &podMonitor{} }
	kinds["monitoring.coreos.com/v1/PrometheusRule"] = func() runtime.Object { return &prometheusRule{} }
}

const metricsJob = releaseName + "-orchestrator"

func monitoringFiles() []string {
	return []string{filepath.Join(chartDir, "ci", "monitoring-values.yaml")}
}

func TestMonitoringOffByDefault(t *testing.T) {
	objs := renderObjects(t, caseByName(t, "default"))
	for _, o := range objs {
		assert.NotEqual(t, "metrics", o.Meta.Labels["app.kubernetes.io/component"], "%s %s rendered by default", o.Kind, o.Meta.Name)
	}
}

// The metrics Service reaches the orchestrator's health port, apart from
// the user-facing Service; the ServiceMonitor selects exactly it and names
// the job; the dashboard ConfigMap carries the sidecar label and the file.
func TestMonitoringObjects(t *testing.T) {
	objs := mustDecode(t, render(t, monitoringFiles(), nil))
	dep := one[*appsv1.Deployment](t, objs, releaseName+"-server")
	svc := one[*corev1.Service](t, objs, releaseName+"-metrics")
	user := one[*corev1.Service](t, objs, releaseName+"-server")
	assert.Equal(t, corev1.ServiceTypeClusterIP, svc.Spec.Type)
	require.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)), "metrics Service does not select the server pod")
	require.Len(t, svc.Spec.Ports, 1)
	port := svc.Spec.Ports[0]
	var health *corev1.ContainerPort
	for _, c := range dep.Spec.Template.Spec.Containers {
		for i, p := range c.Ports {
			if c.Name == "orchestrator" && p.Name == port.TargetPort.String() {
				health = &c.Ports[i]
			}
		}
	}
	require.NotNil(t, health, "targetPort %s is no port of the orchestrator container", port.TargetPort.String())
	assert.Equal(t, health.ContainerPort, port.Port)
	for _, p := range user.Spec.Ports {
		assert.NotEqual(t, health.ContainerPort, p.TargetPort.IntVal, "the user-facing Service exposes the metrics port")
		assert.NotEqual(t, "health", p.TargetPort.String(), "the user-facing Service exposes the metrics port")
	}

	sm := one[*serviceMonitor](t, objs, releaseName+"-metrics")
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	require.NoError(t, err)
	for _, s := range all[*corev1.Service](objs) {
		assert.Equal(t, s.Name == svc.Name, sel.Matches(labels.Set(s.Labels)), "ServiceMonitor selection of Service %s", s.Name)
	}
	assert.Equal(t, []string{releaseNamespace}, sm.Spec.NamespaceSelector.MatchNames)
	require.Len(t, sm.Spec.Endpoints, 1)
	ep := sm.Spec.Endpoints[0]
	assert.Equal(t, "metrics", ep.Port)
	assert.Equal(t, "/metrics", ep.Path)
	assert.Equal(t, "15s", ep.Interval)
	assert.Equal(t, "kube-prometheus-stack", sm.Labels["release"])
	require.NotEmpty(t, ep.Relabelings)
	assert.Equal(t, relabel{Action: "replace", TargetLabel: "job", Replacement: metricsJob}, ep.Relabelings[0])

	pr := one[*prometheusRule](t, objs, metricsJob)
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			assert.Equal(t, "platform", r.Labels["team"], "%s: ruleLabels", r.Alert)
			assert.NotEmpty(t, r.Labels["severity"], "%s: severity", r.Alert)
			assert.Contains(t, r.Expr, `job="`+metricsJob+`"`, "%s selects the chart's job", r.Alert)
		}
	}

	cm := one[*corev1.ConfigMap](t, objs, releaseName+"-dashboard")
	assert.Equal(t, "1", cm.Labels["grafana_dashboard"])
	assert.Equal(t, "CoCalc", cm.Annotations["grafana_folder"])
	file, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboard.json"))
	require.NoError(t, err)
	assert.JSONEq(t, string(file), cm.Data["cocalc-orchestrator.json"])
}

func TestPodMonitor(t *testing.T) {
	set := map[string]string{"metrics.podMonitor.enabled": "true"}
	objs := mustDecode(t, render(t, []string{defaultValuesFile()}, set))
	dep := one[*appsv1.Deployment](t, objs, releaseName+"-server")
	pm := one[*podMonitor](t, objs, metricsJob)
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(labels.Set(dep.Spec.Template.Labels)), "PodMonitor does not select the server pod")
	require.Len(t, pm.Spec.PodMetricsEndpoints, 1)
	ep := pm.Spec.PodMetricsEndpoints[0]
	named := false
	for _, c := range dep.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			named = named || (c.Name == "orchestrator" && p.Name == ep.Port)
		}
	}
	assert.True(t, named, "PodMonitor port %q is no port of the orchestrator container", ep.Port)
	assert.Equal(t, relabel{Action: "replace", TargetLabel: "job", Replacement: metricsJob}, ep.Relabelings[0])
	_, ok := maybe[*corev1.Service](objs, releaseName+"-metrics")
	assert.False(t, ok, "a PodMonitor needs no metrics Service")

	set["metrics.serviceMonitor.enabled"] = "true"
	_, err = renderE(t, []string{defaultValuesFile()}, set)
	require.ErrorContains(t, err, "not both")
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := findTool(repoRoot, name)
	if err != nil {
		t.Fatalf("%v (make tools builds bin/promtool and bin/promql-names from ci/tools/promtool)", err)
	}
	return p
}

// renderedRules renders the alert rules of the default install with
// prometheusRule on, as a Prometheus rule file.
func renderedRules(t *testing.T) ruleGroups {
	t.Helper()
	objs := mustDecode(t, render(t, []string{defaultValuesFile()}, map[string]string{"metrics.prometheusRule.enabled": "true"}))
	return one[*prometheusRule](t, objs, metricsJob).Spec
}

func writeYAML(t *testing.T, file string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, data, 0o644))
}

func runTool(t *testing.T, dir, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Prometheus' own checker accepts the rendered rules (expressions,
// durations, annotation templates, duplicate names).
func TestAlertRulesPassPromtoolCheck(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "rules.yaml"), renderedRules(t))
	out, err := runTool(t, dir, promtool, "check", "rules", "rules.yaml")
	require.NoError(t, err, out)
	assert.Contains(t, out, "SUCCESS")

	// The check can fail: a broken expression is refused.
	bad := renderedRules(t)
	bad.Groups[0].Rules[0].Expr = "rate(cocalc_k8s_operations_total[5m]"
	writeYAML(t, filepath.Join(dir, "bad.yaml"), bad)
	out, err = runTool(t, dir, promtool, "check", "rules", "bad.yaml")
	require.Error(t, err, "promtool accepted a broken expression: %s", out)
}

// promtool test rules runs testdata/alerts_test.yaml against the rendered
// rules: each alert fires on its synthetic series and stays quiet on the
// harmless ones. Annotations are removed first (the test file checks labels
// and timing; check rules checks the annotation templates).
func TestAlertRulesFire(t *testing.T) {
	promtool := requireTool(t, "promtool")
	dir := t.TempDir()
	rules := renderedRules(t)
	var alerts []string
	for gi := range rules.Groups {
		for ri := range rules.Groups[gi].Rules {
			rules.Groups[gi].Rules[ri].Annotations = nil
			alerts = append(alerts, rules.Groups[gi].Rules[ri].Alert)
		}
	}
	writeYAML(t, filepath.Join(dir, "rules.yaml"), rules)
	tests, err := os.ReadFile(filepath.Join(repoRoot, "test", "chart", "testdata", "alerts_test.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "alerts_test.yaml"), tests, 0o644))
	out, err := runTool(t, dir, promtool, "test", "rules", "alerts_test.yaml")
	require.NoError(t, err, out)

	// Every alert has a case that expects it to fire.
	var suite struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	require.NoError(t, yaml.Unmarshal(tests, &suite))
	fires := map[string]bool{}
	for _, tc := range suite.Tests {
		for _, a := range tc.AlertRuleTest {
			fires[a.Alertname] = fires[a.Alertname] || len(a.ExpAlerts) > 0
		}
	}
	for _, a := range alerts {
		assert.True(t, fires[a], "alert %s has no promtool case in which it fires", a)
	}

	// The tests can fail: with a threshold moved they do.
	for gi := range rules.Groups {
		for ri, r := range rules.Groups[gi].Rules {
			if r.Alert == "CocalcProjectStartsFailing" {
				rules.Groups[gi].Rules[ri].Expr = strings.Replace(r.Expr, "> 0.1", "> 0.5", 1)
			}
		}
	}
	writeYAML(t, filepath.Join(dir, "rules.yaml"), rules)
	out, err = runTool(t, dir, promtool, "test", "rules", "alerts_test.yaml")
	require.Error(t, err, "promtool tests passed on a changed threshold: %s", out)
}

// grafanaVars are the dashboard's variables, replaced by values the PromQL
// parser accepts (Grafana does the same before it queries).
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$job", metricsJob)

func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboard.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(data, &dash))
	var exprs []string
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, "panel %q has an empty query", p.Title)
			require.Contains(t, tg.Expr, `job="$job"`, "panel %q ignores the job variable", p.Title)
			exprs = append(exprs, grafanaVars.Replace(tg.Expr))
		}
	}
	// label_values(<metric>, <label>): the metric must be exported too.
	lv := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_]+\)$`)
	for _, v := range dash.Templating.List {
		if v.Definition == "" {
			continue
		}
		m := lv.FindStringSubmatch(v.Definition)
		require.NotNil(t, m, "variable %s: %q is not label_values(metric, label)", v.Name, v.Definition)
		exprs = append(exprs, m[1])
	}
	return exprs
}

// Every expression of the alert rules and of the dashboard parses with
// Prometheus' PromQL parser (bin/promql-names, built from the module pinned
// with promtool) and names only metrics the orchestrator exports: the real
// registry (metrics.New and RegisterStates with the Go and process
// collectors, every vector exercised), plus "up", which Prometheus writes
// for every target.
func TestMonitoringExpressionsUseExportedMetrics(t *testing.T) {
	names := requireTool(t, "promql-names")
	var exprs []string
	for _, g := range renderedRules(t).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	nRules := len(exprs)
	exprs = append(exprs, dashboardExprs(t)...)
	require.Greater(t, len(exprs), nRules, "no dashboard expressions")

	reg, _ := metricstest.Registry()
	exported, err := metricstest.Names(reg)
	require.NoError(t, err)
	exported["up"] = true

	check := func(exprs []string) (bad []string) {
		in, err := json.Marshal(exprs)
		require.NoError(t, err)
		cmd := exec.Command(names)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.Output()
		require.NoError(t, err)
		var res []struct {
			Expr  string   `json:"expr"`
			Names []string `json:"names"`
			Error string   `json:"error"`
		}
		require.NoError(t, json.Unmarshal(out, &res))
		require.Len(t, res, len(exprs))
		for _, r := range res {
			if r.Error != "" {
				bad = append(bad, r.Expr+": "+r.Error)
			}
			for _, n := range r.Names {
				if !exported[n] {
					bad = append(bad, r.Expr+": "+n+" is not exported")
				}
			}
		}
		return bad
	}
	assert.Empty(t, check(exprs))
	// The check can fail: a misspelt metric and a syntax error are caught.
	assert.Len(t, check([]string{`rate(cocalc_k8s_operation_total[5m])`, `sum(up`}), 2)
}

// docs/metrics.md lists every alert.
func TestAlertsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	require.NoError(t, err)
	for _, g := range renderedRules(t).Groups {
		for _, r := range g.Rules {
			assert.Contains(t, string(doc), "`"+r.Alert+"`", "docs/metrics.md does not list alert %s", r.Alert)
		}
	}
}

// Upgrade safety: a helm upgrade that changes only project settings the
// orchestrator reloads leaves the server pod template unchanged (no
// restart: users stay connected); a change of the server's own settings, or
// of a template field the orchestrator cannot reload, changes it.
func TestProjectSettingsDoNotRestartServer(t *testing.T) {
	podTemplate := func(set map[string]string) (corev1.PodTemplateSpec, string) {
		objs := mustDecode(t, render(t, []string{defaultValuesFile()}, set))
		tpl := one[*corev1.ConfigMap](t, objs, releaseName+"-project-template").Data[podtemplate.TemplateKey]
		return one[*appsv1.Deployment](t, objs, releaseName+"-server").Spec.Template, tpl
	}
	base, baseTpl := podTemplate(nil)
	for _, tc := range []struct {
		set     map[string]string
		restart bool
	}{
		{map[string]string{"projects.image.tag": "9.9.9"}, false},
		{map[string]string{"projects.resources.default.cores": "3", "projects.resources.max.memoryMiB": "65536"}, false},
		{map[string]string{"projects.env[0].name": "X", "projects.env[0].value": "y"}, false},
		{map[string]string{"projects.nodeSelector.pool": "projects"}, false},
		{map[string]string{"server.resources.limits.memory": "9Gi"}, true},
		{map[string]string{"orchestrator.logLevel": "debug"}, true},
		{map[string]string{"projects.timeouts.startSeconds": "333"}, true},
		{map[string]string{"projects.resources.default.idleTimeoutSeconds": "60"}, true},
	} {
		got, tpl := podTemplate(tc.set)
		for k := range tc.set {
			if strings.HasPrefix(k, "projects.") {
				require.NotEqual(t, baseTpl, tpl, "%v: not a change of the project template", tc.set)
			}
		}
		if tc.restart {
			assert.NotEqual(t, base, got, "%v: the server pod template must change (restart)", tc.set)
		} else {
			assert.Equal(t, base, got, "%v: reloadable project settings changed the server pod template (restart)", tc.set)
		}
	}
}

// The chart's checksum covers exactly the fields the orchestrator refuses to
// reload (podtemplate.RestartFields): one fewer and an upgrade would neither
// restart nor reload; one more and it would restart the server for nothing.
func TestTemplateRestartFieldsMatchOrchestrator(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(chartDir, "templates", "projects", "_reload.tpl"))
	require.NoError(t, err)
	m := regexp.MustCompile(`range \$path := list ((?:"[^"]+"\s*)+)`).FindSubmatch(src)
	require.NotNil(t, m, "the field list of cocalc.projectTemplate.restartChecksum")
	var chart []string
	for _, f := range regexp.MustCompile(`"([^"]+)"`).FindAllSubmatch(m[1], -1) {
		chart = append(chart, string(f[1]))
	}
	assert.Equal(t, podtemplate.RestartFields, chart)
}
