package chart

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// dataKinds are the kinds whose objects hold data, or (a Namespace) hold
// every project pod and the claims of mode nfs: whatever of these the chart
// renders must never be deleted by anything but a person.
var dataKinds = []string{"PersistentVolumeClaim", "PersistentVolume", "Namespace"}

// keepAnnotations are what protects a data object: helm uninstall keeps it
// (resource-policy), and ArgoCD neither prunes it when it drops out of the
// render (Prune=false: ArgoCD honours resource-policy only when the
// Application itself is deleted, argo-cd issue #17819) nor deletes it with
// the Application (Delete=false).
var keepAnnotations = map[string]string{
	"helm.sh/resource-policy":         "keep",
	"argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
}

// Every PersistentVolumeClaim, PersistentVolume and Namespace the chart
// renders, in every values case (defaults, values/*.yaml, ci/*-values.yaml),
// carries both annotations. The set is whatever the render holds of those
// kinds, so a data object added later is covered without naming it here; the
// cases must between them render each kind and use every storage.mode of the
// schema, or the test fails for want of coverage.
func TestDataObjectsAreNeverPrunedOrDeleted(t *testing.T) {
	isData := map[string]bool{}
	for _, k := range dataKinds {
		isData[k] = true
	}
	seenKinds := map[string]int{}
	seenModes := map[string]bool{}
	for _, c := range renderCases(t) {
		seenModes[storageMode(t, c)] = true
		n := 0
		for _, o := range renderObjects(t, c) {
			if !isData[o.Kind] {
				continue
			}
			n++
			seenKinds[o.Kind]++
			for k, want := range keepAnnotations {
				assert.Equal(t, want, o.Meta.Annotations[k], "%s: %s %s/%s: annotation %s", c.name, o.Kind, o.Meta.Namespace, o.Meta.Name, k)
			}
		}
		t.Logf("%s: %d data objects", c.name, n)
	}
	for _, k := range dataKinds {
		assert.NotZero(t, seenKinds[k], "no values case renders a %s: the test would prove nothing about it", k)
	}
	var missing []string
	for _, m := range schemaStorageModes(t) {
		if !seenModes[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "storage modes no values case renders")
}

// The backup repository's claim is a data object too; it is rendered only with
// backup.enabled and a claim repository, which a ci/ case must cover.
func TestBackupClaimCarriesKeepAnnotations(t *testing.T) {
	m := renderObjects(t, caseByName(t, "ci-backup"))
	var found bool
	for _, o := range m {
		if o.Kind == "PersistentVolumeClaim" && o.Meta.Labels["app.kubernetes.io/component"] == "backup" {
			found = true
			for k, want := range keepAnnotations {
				assert.Equal(t, want, o.Meta.Annotations[k], "backup claim %s: %s", o.Meta.Name, k)
			}
		}
	}
	assert.True(t, found, "ci-backup renders no backup claim")
}

// storageMode is the storage.mode a values case installs: its last values
// file that sets it, else the chart's default.
func storageMode(t *testing.T, c valuesCase) string {
	t.Helper()
	mode := ""
	for _, f := range append([]string{filepath.Join(chartDir, "values.yaml")}, c.files...) {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var v struct {
			Storage struct {
				Mode string `json:"mode"`
			} `json:"storage"`
		}
		require.NoError(t, yaml.Unmarshal(data, &v), f)
		if v.Storage.Mode != "" {
			mode = v.Storage.Mode
		}
	}
	require.NotEmpty(t, mode, "%s: no storage.mode", c.name)
	return mode
}

// schemaStorageModes is the enum of storage.mode in values.schema.json.
func schemaStorageModes(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	require.NoError(t, err)
	var s struct {
		Properties struct {
			Storage struct {
				Properties struct {
					Mode struct {
						Enum []string `json:"enum"`
					} `json:"mode"`
				} `json:"properties"`
			} `json:"storage"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(data, &s))
	require.NotEmpty(t, s.Properties.Storage.Properties.Mode.Enum)
	return s.Properties.Storage.Properties.Mode.Enum
}
