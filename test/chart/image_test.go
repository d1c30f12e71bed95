package chart

import (
	"context"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate/reftable"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/gruntwork-io/terratest/modules/helm"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

func loadImageRows(t *testing.T) []reftable.Row {
	t.Helper()
	rows, err := reftable.Load()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// renderImages renders the chart with the project and server images set to
// (repository, tag, digest), as strings (helm --set-string), pre-pull on.
func renderImages(t *testing.T, repo, tag, digest string) (string, error) {
	t.Helper()
	requireTools(t)
	opts := helmOptions([]string{defaultValuesFile()}, map[string]string{
		"projects.prePull.enabled": "true",
		"admissionPolicy.enabled":  "true",
	})
	opts.SetStrValues = map[string]string{}
	for _, key := range []string{"projects.image", "server.image"} {
		opts.SetStrValues[key+".repository"] = repo
		opts.SetStrValues[key+".tag"] = tag
		opts.SetStrValues[key+".digest"] = digest
	}
	return helm.RenderTemplateContextE(t, context.Background(), opts, chartDir, releaseName, nil)
}

// parsedParts splits ref with github.com/distribution/reference, failing on an invalid reference.
func parsedParts(t *testing.T, ref string) (repo, tag, digest string) {
	t.Helper()
	parsed, err := reference.Parse(ref)
	require.NoError(t, err, "%q is not a valid image reference", ref)
	if named, ok := parsed.(reference.Named); ok {
		repo = named.Name()
	}
	if tagged, ok := parsed.(reference.Tagged); ok {
		tag = tagged.Tag()
	}
	if digested, ok := parsed.(reference.Digested); ok {
		digest = digested.Digest().String()
	}
	return repo, tag, digest
}

// The chart renders the table's reference wherever an image is used (the server
// pod, the pre-pull DaemonSet, the admission policy) and writes the template
// the orchestrator reads so that podtemplate.Image.Reference() gives the same
// string; the values schema refuses the rows the orchestrator refuses.
func TestImageReferences(t *testing.T) {
	for _, row := range loadImageRows(t) {
		t.Run(row.Name, func(t *testing.T) {
			t.Parallel()
			out, err := renderImages(t, row.Repository, row.Tag, row.Digest)
			if row.Refused != "" {
				require.Error(t, err, "the values schema must refuse tag %q digest %q", row.Tag, row.Digest)
				assert.Contains(t, err.Error(), strings.TrimPrefix(row.Refused, "image."), "the error names the field")
				return
			}
			require.NoError(t, err)
			m := mustDecode(t, out)

			tpl := projectTemplate(t, m)
			assert.Equal(t, row.Want, tpl.Image.Reference(), "the orchestrator's reference from the rendered template")
			assert.Equal(t, row.Digest, tpl.Image.Digest)

			server := one[*appsv1.Deployment](t, m, releaseName+"-server")
			prepull := one[*appsv1.DaemonSet](t, m, releaseName+"-prepull")
			assert.Contains(t, out, `c.image == "`+row.Want+`"`, "the admission policy admits exactly the template's image")
			refs := map[string]string{
				"server hub":    server.Spec.Template.Spec.Containers[0].Image,
				"pre-pull":      prepull.Spec.Template.Spec.InitContainers[0].Image,
				"template (Go)": tpl.Image.Reference(),
			}
			for where, ref := range refs {
				assert.Equal(t, row.Want, ref, where)
				repo, tag, digest := parsedParts(t, ref)
				assert.Equal(t, []string{row.Repository, row.Tag, row.Digest}, []string{repo, tag, digest}, "%s: %q parsed", where, ref)
			}
		})
	}
}

// Tag "" and digest "" mean the chart's appVersion, on both sides of the template.
func TestImageDefaultsToAppVersion(t *testing.T) {
	out, err := renderImages(t, "registry.example.org/cocalc/project", "", "")
	require.NoError(t, err)
	m := mustDecode(t, out)
	chart, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	require.NoError(t, err)
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	require.NoError(t, yaml.Unmarshal(chart, &meta))
	require.NotEmpty(t, meta.AppVersion)
	want := "registry.example.org/cocalc/project:" + meta.AppVersion
	assert.Equal(t, want, projectTemplate(t, m).Image.Reference())
	assert.Equal(t, want, one[*appsv1.Deployment](t, m, releaseName+"-server").Spec.Template.Spec.Containers[0].Image)
}
