package cluster

import (
	"regexp"
	"testing"
	"text/template"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

type stageDoc struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		ResourceRef struct {
			Kind string `json:"kind"`
		} `json:"resourceRef"`
		Next struct {
			StatusTemplate string `json:"statusTemplate"`
			Delete         bool   `json:"delete"`
		} `json:"next"`
	} `json:"spec"`
}

func parseStages(t *testing.T) []stageDoc {
	t.Helper()
	var out []stageDoc
	for _, part := range regexp.MustCompile(`(?m)^---$`).Split(string(kwokStages), -1) {
		var doc stageDoc
		require.NoError(t, yaml.Unmarshal([]byte(part), &doc))
		out = append(out, doc)
	}
	return out
}

func TestStagesCoverTheLifecycle(t *testing.T) {
	docs := parseStages(t)
	names := map[string]string{}
	for _, d := range docs {
		require.Equal(t, "kwok.x-k8s.io/v1alpha1", d.APIVersion)
		require.Equal(t, "Stage", d.Kind, "a KwokConfiguration in the stages file makes kwok exit; use flags")
		names[d.Metadata.Name] = d.Spec.ResourceRef.Kind
	}
	for name, kind := range map[string]string{
		"node-initialize": "Node", "node-heartbeat": "Node",
		"pod-create": "Pod", "pod-init-containers-completed": "Pod", "pod-ready": "Pod",
		"pod-complete-job": "Pod", "pod-complete-bare": "Pod", "pod-delete": "Pod",
	} {
		require.Equal(t, kind, names[name], "stage %s", name)
	}
}

// TestStageTemplatesParse catches template syntax errors here rather than
// as a kwok log line during a test run. The functions are kwok's names
// with stand-in bodies: only parsing is checked.
func TestStageTemplatesParse(t *testing.T) {
	funcs := template.FuncMap{}
	for _, name := range []string{"Now", "Quote", "YAML", "NodeConditions", "NodeIPWith", "PodIPWith", "Version", "NodeIP", "NodeName", "NodePort"} {
		funcs[name] = func(...any) any { return nil }
	}
	for _, d := range parseStages(t) {
		if d.Spec.Next.StatusTemplate == "" {
			require.True(t, d.Spec.Next.Delete, "stage %s neither changes status nor deletes", d.Metadata.Name)
			continue
		}
		_, err := template.New(d.Metadata.Name).Funcs(funcs).Parse(d.Spec.Next.StatusTemplate)
		require.NoError(t, err, "stage %s", d.Metadata.Name)
	}
}
