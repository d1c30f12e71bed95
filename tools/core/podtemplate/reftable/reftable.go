// Package reftable reads the image reference table
// (tools/core/podtemplate/testdata/image-references.yaml) that the
// orchestrator's tests and the chart's render tests both check, so the two
// sides of the one reference rule are held to the same rows.
package reftable

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"sigs.k8s.io/yaml"
)

// Row is one image reference case: the image values and either the
// reference they must render (Want) or the field that refuses them
// (Refused).
type Row struct {
	Name       string `json:"name"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Digest     string `json:"digest"`
	Want       string `json:"want"`
	Refused    string `json:"refused"`
}

// Load reads the table, strictly, and refuses one with fewer than 5 rows.
func Load() ([]Row, error) {
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "testdata", "image-references.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []Row
	if err := yaml.UnmarshalStrict(data, &rows); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) < 5 {
		return nil, fmt.Errorf("%s: only %d rows in the image reference table", path, len(rows))
	}
	return rows, nil
}
