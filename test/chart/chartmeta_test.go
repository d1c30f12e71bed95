package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

type chartMeta struct {
	Version     string            `json:"version"`
	AppVersion  string            `json:"appVersion"`
	Home        string            `json:"home"`
	Icon        string            `json:"icon"`
	Sources     []string          `json:"sources"`
	Maintainers []map[string]any  `json:"maintainers"`
	Annotations map[string]string `json:"annotations"`
}

// Chart.yaml carries what Artifact Hub and admins read, and it cannot go stale:
// artifacthub.io/images is exactly the set of images an install of the
// defaults (pre-pull on) runs, the license annotation names LICENSE's licence,
// the icon is a file of this repository, and artifacthub.io/changes uses only
// Artifact Hub's kinds.
func TestChartMetadata(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(chartDir, "Chart.yaml"))
	require.NoError(t, err)
	var meta chartMeta
	require.NoError(t, yaml.Unmarshal(data, &meta))

	assert.NotEmpty(t, meta.Home)
	assert.NotEmpty(t, meta.Sources)
	require.NotEmpty(t, meta.Maintainers)
	for _, m := range meta.Maintainers {
		assert.NotEmpty(t, m["name"], "maintainer name")
	}
	require.True(t, strings.HasPrefix(meta.Icon, meta.Home+"/-/raw/main/"), "icon %q: a file of this repository", meta.Icon)
	_, err = os.Stat(filepath.Join(repoRoot, strings.TrimPrefix(meta.Icon, meta.Home+"/-/raw/main/")))
	assert.NoError(t, err, "the icon file")

	license, err := os.ReadFile(filepath.Join(repoRoot, "LICENSE"))
	require.NoError(t, err)
	require.Contains(t, string(license), "GNU AFFERO GENERAL PUBLIC LICENSE\nVersion 3")
	assert.Equal(t, "AGPL-3.0-only", meta.Annotations["artifacthub.io/license"])

	var images []struct {
		Name  string `json:"name"`
		Image string `json:"image"`
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(meta.Annotations["artifacthub.io/images"]), &images))
	var listed []string
	for _, i := range images {
		require.NotEmpty(t, i.Name)
		parsedParts(t, i.Image)
		listed = append(listed, i.Image)
	}
	m := mustDecode(t, render(t, []string{defaultValuesFile()}, map[string]string{"projects.prePull.enabled": "true"}))
	rendered := []string{projectTemplate(t, m).Image.Reference()}
	for _, p := range podSpecs(m) {
		for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
			rendered = append(rendered, c.Image)
		}
	}
	_ = one[*appsv1.DaemonSet](t, m, releaseName+"-prepull")
	slices.Sort(listed)
	slices.Sort(rendered)
	assert.Equal(t, slices.Compact(rendered), listed, "artifacthub.io/images vs the images of a default install")

	var changes []struct {
		Kind        string `json:"kind"`
		Description string `json:"description"`
	}
	require.NoError(t, yaml.UnmarshalStrict([]byte(meta.Annotations["artifacthub.io/changes"]), &changes))
	require.NotEmpty(t, changes)
	for _, c := range changes {
		assert.Contains(t, []string{"added", "changed", "deprecated", "removed", "fixed", "security"}, c.Kind, c.Description)
		assert.NotEmpty(t, c.Description)
	}

	changelog, err := os.ReadFile(filepath.Join(repoRoot, "CHANGELOG.md"))
	require.NoError(t, err)
	assert.Contains(t, string(changelog), "## [Unreleased]", "CHANGELOG.md keeps an Unreleased section")
}
