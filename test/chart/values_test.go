package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yamlv3 "gopkg.in/yaml.v3"
	"sigs.k8s.io/yaml"
)

// Each file in testdata/invalid starts with "# want: <text>": helm must reject
// the file, and its error must contain the text (which names the bad key).
func TestInvalidValuesAreRejected(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "invalid", "*.yaml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 20, "at least 20 invalid values files")
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			require.NoError(t, err)
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			require.True(t, ok, "first line must be `# want: <expected error text>`")
			abs, err := filepath.Abs(f)
			require.NoError(t, err)
			_, err = renderE(t, []string{abs}, nil)
			require.Error(t, err, "helm accepted invalid values")
			assert.Contains(t, err.Error(), want)
		})
	}
}

// mergedValues overlays a case's files on the chart's values.yaml the way helm does for maps.
func mergedValues(t *testing.T, c valuesCase) map[string]any {
	t.Helper()
	base := readYAMLMap(t, filepath.Join(chartDir, "values.yaml"))
	for _, f := range c.files {
		base = mergeMaps(base, readYAMLMap(t, f))
	}
	return base
}

func readYAMLMap(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	m := map[string]any{}
	require.NoError(t, yaml.Unmarshal(data, &m), file)
	return m
}

func mergeMaps(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeMaps(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func TestMergeMaps(t *testing.T) {
	got := mergeMaps(
		map[string]any{"a": map[string]any{"b": 1.0, "c": 2.0}, "l": []any{1.0}},
		map[string]any{"a": map[string]any{"c": 3.0}, "l": []any{}},
	)
	assert.Equal(t, map[string]any{"a": map[string]any{"b": 1.0, "c": 3.0}, "l": []any{}}, got)
}

// Keys inside these Kubernetes-native objects are documented by the comment on the object itself.
var nativeObjects = map[string]bool{
	"server.resources": true, "server.podSecurityContext": true, "server.securityContext": true,
	"server.startupProbe": true, "server.livenessProbe": true, "server.readinessProbe": true,
	"orchestrator.resources": true, "orchestrator.securityContext": true,
	"storage.nfsServer.resources":          true,
	"backup.resources":                     true,
	"backup.database.dumpServer.resources": true,
}

// Every chart-defined key in values.yaml carries a comment (above it or at the end of its line).
func TestEveryValueIsCommented(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	var doc yamlv3.Node
	require.NoError(t, yamlv3.Unmarshal(data, &doc))
	var missing []string
	var walk func(n *yamlv3.Node, prefix string)
	walk = func(n *yamlv3.Node, prefix string) {
		if n.Kind != yamlv3.MappingNode || nativeObjects[prefix] {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := strings.TrimPrefix(prefix+"."+k.Value, ".")
			if strings.TrimSpace(k.HeadComment+k.LineComment+v.LineComment) == "" {
				missing = append(missing, path)
			}
			walk(v, path)
		}
	}
	walk(doc.Content[0], "")
	sort.Strings(missing)
	assert.Empty(t, missing, "values.yaml keys without a comment")
}

// The schema is strict at every level: each object schema with properties forbids others.
func TestSchemaIsStrict(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(data, &schema))
	var loose []string
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["properties"]; ok {
				if ap, ok := x["additionalProperties"]; !ok || ap != false {
					// allOf branches that refine an already-strict $ref are fine.
					if !strings.Contains(path, "allOf/1") {
						loose = append(loose, path)
					}
				}
			}
			for k, child := range x {
				walk(child, path+"/"+k)
			}
		case []any:
			for i, child := range x {
				walk(child, path+"/"+string(rune('0'+i)))
			}
		}
	}
	walk(schema, "#")
	sort.Strings(loose)
	assert.Empty(t, loose, "object schemas without additionalProperties: false")
}

// Every property of the schema (values, $defs and the refinements in allOf
// branches) carries a description: editors and the chart README show it.
func TestEverySchemaPropertyHasDescription(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var schema map[string]any
	require.NoError(t, json.Unmarshal(data, &schema))
	var missing []string
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch x := v.(type) {
		case map[string]any:
			if props, ok := x["properties"].(map[string]any); ok {
				for name, p := range props {
					if d, _ := p.(map[string]any)["description"].(string); strings.TrimSpace(d) == "" {
						missing = append(missing, path+"/properties/"+name)
					}
				}
			}
			for k, child := range x {
				walk(child, path+"/"+k)
			}
		case []any:
			for i, child := range x {
				walk(child, fmt.Sprintf("%s/%d", path, i))
			}
		}
	}
	walk(schema, "#")
	sort.Strings(missing)
	assert.Empty(t, missing, "schema properties without a description")
}
