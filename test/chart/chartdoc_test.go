package chart

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/stretchr/testify/require"

	"gitlab.com/resurgo/cocalc-kubernetes/test/chart/chartdoc"
)

// The committed chart README is what `make docs` generates from the current
// values.yaml and values.schema.json (-update rewrites it: make docs).
func TestChartREADMEIsCurrent(t *testing.T) {
	want, err := chartdoc.Generate(chartDir)
	require.NoError(t, err)
	path := filepath.Join(chartDir, "README.md")
	if *update {
		require.NoError(t, os.WriteFile(path, want, 0o644))
		return
	}
	got, err := os.ReadFile(path)
	require.NoError(t, err, "charts/cocalc/README.md missing: run make docs")
	if string(got) != string(want) {
		d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(got)), B: difflib.SplitLines(string(want)),
			FromFile: path, ToFile: "generated", Context: 1,
		})
		t.Fatalf("charts/cocalc/README.md is stale (run make docs):\n%s", d)
	}
}
