// Package chartdoc writes a chart's values reference (its README.md) from
// the helm-docs style "# --" comments of values.yaml, falling back to the
// descriptions of values.schema.json. `make docs` regenerates
// charts/cocalc/README.md with it; test/chart fails when the committed file
// differs from what it generates.
//
// A key's description is the "# --" comment above it (continuation lines
// included) or at the end of its line; without one, the schema property's
// description. A mapping is expanded into one row per key when any of its
// keys carries a comment; otherwise (Kubernetes objects such as resources)
// it is one row whose default is the whole value. Lists are one row.
package chartdoc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	yamlv3 "gopkg.in/yaml.v3"
)

// Row is one line of the values table.
type Row struct {
	Key         string // dotted path
	Type        string // YAML type of the default: string, int, float, bool, object, list, null
	Default     string // JSON of the default ("" for expanded mappings)
	Description string // one line
	Section     bool   // a mapping whose keys follow as their own rows
}

// Rows returns the values table of values (values.yaml) in file order,
// with descriptions from its comments or schema (values.schema.json). A key
// with neither is an error naming it.
func Rows(values, schema []byte) ([]Row, error) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(values, &doc); err != nil {
		return nil, fmt.Errorf("parse values: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yamlv3.MappingNode {
		return nil, fmt.Errorf("values: not a mapping")
	}
	var sch map[string]any
	if err := json.Unmarshal(schema, &sch); err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	var rows []Row
	var missing []string
	var walk func(n *yamlv3.Node, prefix []string, s map[string]any) error
	walk = func(n *yamlv3.Node, prefix []string, s map[string]any) error {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := append(append([]string{}, prefix...), k.Value)
			ps := property(sch, s, k.Value)
			desc := comment(k, v)
			if desc == "" {
				desc = description(sch, ps)
			}
			if desc == "" {
				missing = append(missing, strings.Join(path, "."))
			}
			r := Row{Key: strings.Join(path, "."), Type: typeOf(v), Description: desc}
			if v.Kind == yamlv3.MappingNode && anyCommented(v) {
				r.Section = true
				rows = append(rows, r)
				if err := walk(v, path, ps); err != nil {
					return err
				}
				continue
			}
			def, err := defaultOf(v)
			if err != nil {
				return fmt.Errorf("%s: %w", r.Key, err)
			}
			r.Default = def
			rows = append(rows, r)
		}
		return nil
	}
	if err := walk(doc.Content[0], nil, sch); err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("values without a description (a \"# --\" comment or a schema description): %s", strings.Join(missing, ", "))
	}
	return rows, nil
}

// comment is the "# --" text of key k (above it, or at the end of its or
// its value's line), one line.
func comment(k, v *yamlv3.Node) string {
	for _, c := range []string{k.HeadComment, k.LineComment, v.LineComment} {
		lines := strings.Split(c, "\n")
		start := -1
		for i, l := range lines {
			if strings.HasPrefix(strings.TrimSpace(l), "# --") {
				start = i // the last marker starts the description
			}
		}
		if start < 0 {
			continue
		}
		var words []string
		for i, l := range lines[start:] {
			l = strings.TrimPrefix(strings.TrimSpace(l), "#")
			if i == 0 {
				l = strings.TrimPrefix(strings.TrimSpace(l), "--")
			}
			if l = strings.TrimSpace(l); l != "" {
				words = append(words, l)
			}
		}
		return strings.Join(words, " ")
	}
	return ""
}

// anyCommented reports whether any key of mapping n carries a comment.
func anyCommented(n *yamlv3.Node) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if strings.TrimSpace(k.HeadComment+k.LineComment+v.LineComment) != "" {
			return true
		}
	}
	return false
}

// resolve follows a schema's $ref (to #/$defs/...) until it has none.
func resolve(root, s map[string]any) map[string]any {
	for i := 0; s != nil && i < 16; i++ {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		if !ok {
			return s
		}
		defs, _ := root["$defs"].(map[string]any)
		next, _ := defs[name].(map[string]any)
		if next == nil {
			return s
		}
		s = next
	}
	return s
}

// property is the schema of key under object schema s (through $ref and allOf).
func property(root, s map[string]any, key string) map[string]any {
	s = resolve(root, s)
	if s == nil {
		return nil
	}
	if props, ok := s["properties"].(map[string]any); ok {
		if p, ok := props[key].(map[string]any); ok {
			return p
		}
	}
	if all, ok := s["allOf"].([]any); ok {
		for _, a := range all {
			if m, ok := a.(map[string]any); ok {
				if p := property(root, m, key); p != nil {
					return p
				}
			}
		}
	}
	return nil
}

// description is s's own description, else that of what its $ref names.
func description(root, s map[string]any) string {
	for i := 0; s != nil && i < 16; i++ {
		if d, ok := s["description"].(string); ok && d != "" {
			return strings.Join(strings.Fields(d), " ")
		}
		next := resolve(root, map[string]any{"$ref": s["$ref"]})
		if next == nil || next["$ref"] != nil {
			return ""
		}
		s = next
	}
	return ""
}

func typeOf(n *yamlv3.Node) string {
	switch n.Kind {
	case yamlv3.MappingNode:
		return "object"
	case yamlv3.SequenceNode:
		return "list"
	case yamlv3.AliasNode:
		return typeOf(n.Alias)
	}
	switch n.ShortTag() {
	case "!!int":
		return "int"
	case "!!float":
		return "float"
	case "!!bool":
		return "bool"
	case "!!null":
		return "null"
	}
	return "string"
}

// defaultOf is n's value as compact JSON.
func defaultOf(n *yamlv3.Node) (string, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}

// Render writes the chart README: name, description and versions from
// Chart.yaml, then one values table per top-level key.
func Render(chartYAML, values, schema []byte) ([]byte, error) {
	var meta struct {
		Name        string `yaml:"name"`
		Description string `yaml:"description"`
		Version     string `yaml:"version"`
		AppVersion  string `yaml:"appVersion"`
		KubeVersion string `yaml:"kubeVersion"`
		Home        string `yaml:"home"`
	}
	if err := yamlv3.Unmarshal(chartYAML, &meta); err != nil {
		return nil, fmt.Errorf("parse Chart.yaml: %w", err)
	}
	rows, err := Rows(values, schema)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", meta.Name)
	b.WriteString("<!-- Generated by `make docs` from values.yaml and values.schema.json: edit those, not this file. -->\n\n")
	fmt.Fprintf(&b, "%s\n\n", strings.Join(strings.Fields(meta.Description), " "))
	fmt.Fprintf(&b, "Chart version %s, app version %s, Kubernetes %s. Home: %s\n\n", meta.Version, meta.AppVersion, meta.KubeVersion, meta.Home)
	b.WriteString("Installing, upgrading and operating the chart: docs/operator-guide.md in the repository. ")
	b.WriteString("Every key below is validated by values.schema.json; unknown keys are errors.\n\n")
	b.WriteString("## Values\n")
	heading := "" // the table being written belongs to this top-level key
	for _, r := range rows {
		top, _, nested := strings.Cut(r.Key, ".")
		switch {
		case !nested && r.Section:
			// A top-level mapping: its own heading and table.
			fmt.Fprintf(&b, "\n### %s\n\n%s\n\n", top, text(r.Description))
			b.WriteString(tableHead)
			heading = top
			continue
		case !nested && heading != "":
			// Top-level scalars and lists after a mapping: their own heading.
			fmt.Fprintf(&b, "\n### %s\n\n", top)
			b.WriteString(tableHead)
			heading = top
		case !nested && heading == "" && !strings.HasSuffix(b.String(), "|\n"):
			// Top-level scalars and lists before the first mapping: one table.
			b.WriteString("\n" + tableHead)
		}
		def := ""
		if !r.Section {
			def = "`" + code(r.Default) + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.Key, r.Type, def, text(r.Description))
	}
	return []byte(b.String()), nil
}

const tableHead = "| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n"

// code escapes text for a code span in a Markdown table cell.
func code(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "|", `\|`)
}

// text escapes prose for a Markdown table cell: outside `code spans`, "<"
// would open an HTML tag ("<release>" would vanish).
func text(s string) string {
	parts := strings.Split(code(s), "`")
	for i := 0; i < len(parts); i += 2 {
		parts[i] = strings.ReplaceAll(parts[i], "<", "&lt;")
	}
	return strings.Join(parts, "`")
}

// Generate renders the README of the chart in dir.
func Generate(dir string) ([]byte, error) {
	var in [3][]byte
	for i, f := range []string{"Chart.yaml", "values.yaml", "values.schema.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		in[i] = b
	}
	return Render(in[0], in[1], in[2])
}
