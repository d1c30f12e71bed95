package chart

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// podSecurityViolations evaluates a pod against a Pod Security Standard level
// with the API server's own admission checks.
func podSecurityViolations(t *testing.T, level psaapi.Level, meta metav1.ObjectMeta, spec corev1.PodSpec) []string {
	t.Helper()
	ev, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	require.NoError(t, err)
	var bad []string
	for _, r := range ev.EvaluatePod(psaapi.LevelVersion{Level: level, Version: psaapi.LatestVersion()}, &meta, &spec) {
		if !r.Allowed {
			bad = append(bad, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return bad
}

// projectPodLevel is the strictest Pod Security Standard a project pod of
// this template meets: only the in-cluster NFS server's inline nfs volume
// (mode nfsServer) rules out restricted.
func projectPodLevel(tpl *podtemplate.Template) psaapi.Level {
	if tpl.Storage.Mode == podtemplate.ModeNFS {
		return psaapi.LevelBaseline
	}
	return psaapi.LevelRestricted
}

// The Pod Security Standard each chart pod meets: the NFS server alone needs
// privileged; the root-based server meets baseline; everything else,
// including runtime project pods on claim storage (modes pvc and nfs), meets
// restricted.
func TestPodSecurityStandards(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			for _, p := range podSpecs(m) {
				meta := metav1.ObjectMeta{Labels: p.labels}
				switch p.component {
				case "nfs":
					assert.NotEmpty(t, podSecurityViolations(t, psaapi.LevelBaseline, meta, p.spec), "%s: expected to need privileged", p.name)
				case "server":
					assert.Empty(t, podSecurityViolations(t, psaapi.LevelBaseline, meta, p.spec), "%s must meet baseline", p.name)
				default:
					assert.Empty(t, podSecurityViolations(t, psaapi.LevelRestricted, meta, p.spec), "%s must meet restricted", p.name)
				}
			}

			tpl := projectTemplate(t, m)
			if mergedValues(t, c)["storage"].(map[string]any)["mode"] == "nfs" {
				assert.Equal(t, psaapi.LevelRestricted, projectPodLevel(tpl), "an external NFS export must reach project pods through a claim")
			}
			for _, outside := range []bool{false, true} {
				pod := projectPod(t, tpl, "2e5ab7d0-0000-4000-8000-00000000000e", outside)
				restricted := podSecurityViolations(t, psaapi.LevelRestricted, pod.ObjectMeta, pod.Spec)
				if projectPodLevel(tpl) == psaapi.LevelBaseline {
					// Restricted allows no nfs volumes; nothing else may be wrong.
					assert.NotEmpty(t, restricted, "an inline nfs volume cannot meet restricted")
					for _, v := range restricted {
						assert.True(t, strings.HasPrefix(v, "restricted volume types"), "project pod: %s", v)
					}
					assert.Empty(t, podSecurityViolations(t, psaapi.LevelBaseline, pod.ObjectMeta, pod.Spec), "project pod must meet baseline")
				} else {
					assert.Empty(t, restricted, "project pod must meet restricted")
					for _, v := range pod.Spec.Volumes {
						assert.Nil(t, v.NFS, "project pod volume %s: inline nfs", v.Name)
					}
				}
			}
		})
	}
}

// A namespace the chart creates for projects enforces the strictest standard
// its project pods meet, in every values case that creates one.
func TestProjectsNamespaceEnforcesPodSecurity(t *testing.T) {
	created := 0
	for _, c := range renderCases(t) {
		m := renderObjects(t, c)
		for _, ns := range all[*corev1.Namespace](m) {
			created++
			tpl := projectTemplate(t, m)
			assert.Equal(t, tpl.Namespace, ns.Name, "%s: the chart creates only the projects namespace", c.name)
			assert.Equal(t, string(projectPodLevel(tpl)), ns.Labels["pod-security.kubernetes.io/enforce"], "%s", c.name)
			assert.Equal(t, "keep", ns.Annotations["helm.sh/resource-policy"], "%s", c.name)
		}
	}
	assert.GreaterOrEqual(t, created, 2, "onprem and ci-separate-projects-namespace create one")

	// A separate namespace needs storage.mode nfs, whose project pods mount a claim: restricted.
	ns := one[*corev1.Namespace](t, renderObjects(t, caseByName(t, "ci-separate-projects-namespace")), "cocalc-projects")
	assert.Equal(t, "restricted", ns.Labels["pod-security.kubernetes.io/enforce"])
}
