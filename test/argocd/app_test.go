package argocd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// appStatus is the part of an Application's status the tests read.
type appStatus struct {
	Sync struct {
		Status   string `json:"status"`
		Revision string `json:"revision"`
	} `json:"sync"`
	Health struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"health"`
	ReconciledAt   string `json:"reconciledAt"`
	OperationState *struct {
		Phase      string `json:"phase"`
		Message    string `json:"message"`
		FinishedAt string `json:"finishedAt"`
		SyncResult *struct {
			Revision  string `json:"revision"`
			Resources []struct {
				Kind      string `json:"kind"`
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
				Status    string `json:"status"`
				Message   string `json:"message"`
			} `json:"resources"`
		} `json:"syncResult"`
	} `json:"operationState"`
	Resources  []appResource `json:"resources"`
	Conditions []struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"conditions"`
}

type appResource struct {
	Group           string `json:"group"`
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace"`
	Name            string `json:"name"`
	Status          string `json:"status"`
	RequiresPruning bool   `json:"requiresPruning"`
	Health          *struct {
		Status string `json:"status"`
	} `json:"health"`
}

func (s appStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sync %s (revision %.8s), health %s %s, reconciled %s", s.Sync.Status, s.Sync.Revision, s.Health.Status, s.Health.Message, s.ReconciledAt)
	if op := s.OperationState; op != nil {
		rev := ""
		if op.SyncResult != nil {
			rev = op.SyncResult.Revision
		}
		fmt.Fprintf(&b, "; operation %s (revision %.8s): %s", op.Phase, rev, op.Message)
	}
	for _, r := range s.Resources {
		if r.Status != "Synced" || r.RequiresPruning || (r.Health != nil && r.Health.Status != "Healthy") {
			h := ""
			if r.Health != nil {
				h = r.Health.Status
			}
			fmt.Fprintf(&b, "\n  %s %s/%s: %s %s prune=%v", r.Kind, r.Namespace, r.Name, r.Status, h, r.RequiresPruning)
		}
	}
	for _, c := range s.Conditions {
		fmt.Fprintf(&b, "\n  condition %s: %s", c.Type, c.Message)
	}
	return b.String()
}

// resource returns the status entry of one object of the Application.
func (s appStatus) resource(kind, namespace, name string) (appResource, bool) {
	for _, r := range s.Resources {
		if r.Kind == kind && r.Namespace == namespace && r.Name == name {
			return r, true
		}
	}
	return appResource{}, false
}

// operationFor reports whether the last sync operation was for revision and
// has finished, and its phase.
func (s appStatus) operationFor(revision string) (phase string, done bool) {
	op := s.OperationState
	if op == nil || op.SyncResult == nil || op.SyncResult.Revision != revision {
		return "", false
	}
	switch op.Phase {
	case "Succeeded", "Failed", "Error":
		return op.Phase, true
	}
	return op.Phase, false
}

// exampleApplication is ci/argocd/application.yaml as shipped.
func exampleApplication(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "ci", "argocd", "application.yaml"))
	require.NoError(t, err)
	var obj map[string]any
	require.NoError(t, yaml.Unmarshal(data, &obj))
	return &unstructured.Unstructured{Object: obj}
}

// pointAt sets the Application's source to repo (branch main), the one
// change the example asks of its users.
func pointAt(t *testing.T, app *unstructured.Unstructured, repo *gitRepo) {
	t.Helper()
	require.NoError(t, unstructured.SetNestedField(app.Object, repo.URL(), "spec", "source", "repoURL"))
	require.NoError(t, unstructured.SetNestedField(app.Object, "main", "spec", "source", "targetRevision"))
}

func (a *argo) createApp(t *testing.T, app *unstructured.Unstructured) {
	t.Helper()
	_, err := a.dyn.Resource(applicationsGVR).Namespace(argoNamespace).Create(t.Context(), app, metav1.CreateOptions{})
	require.NoError(t, err, "create Application %s", app.GetName())
}

func (a *argo) status(ctx context.Context, name string) (appStatus, error) {
	var s appStatus
	u, err := a.dyn.Resource(applicationsGVR).Namespace(argoNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return s, err
	}
	raw, ok := u.Object["status"]
	if !ok {
		return s, nil
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(data, &s)
}

// waitApp polls the Application until cond holds, for at most bound; the
// failure shows the last status.
func (a *argo) waitApp(t *testing.T, name string, bound time.Duration, what string, cond func(appStatus) error) appStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), bound)
	defer cancel()
	var last appStatus
	err := poll(ctx, 500*time.Millisecond, func() error {
		s, err := a.status(ctx, name)
		if err != nil {
			return err
		}
		last = s
		return cond(s)
	})
	require.NoError(t, err, "Application %s: %s within %s; last status: %s", name, what, bound, last)
	return last
}

// refresh asks the controller to compare with git now, as a git webhook
// does (argocd.argoproj.io/refresh), instead of at its next periodic
// reconcile.
func (a *argo) refresh(t *testing.T, name string) {
	t.Helper()
	patch := []byte(`{"metadata":{"annotations":{"argocd.argoproj.io/refresh":"normal"}}}`)
	_, err := a.dyn.Resource(applicationsGVR).Namespace(argoNamespace).Patch(t.Context(), name, types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(t, err, "refresh Application %s", name)
}

// syncedHealthy: the Application shows the given revision Synced and Healthy.
func syncedHealthy(revision string) func(appStatus) error {
	return func(s appStatus) error {
		if s.Sync.Status != "Synced" || s.Health.Status != "Healthy" {
			return fmt.Errorf("not Synced and Healthy")
		}
		if revision != "" && s.Sync.Revision != revision {
			return fmt.Errorf("at revision %.8s, not %.8s", s.Sync.Revision, revision)
		}
		return nil
	}
}

// syncedTo: the automated sync of revision has finished (in any phase).
func syncedTo(revision string) func(appStatus) error {
	return func(s appStatus) error {
		if _, done := s.operationFor(revision); !done {
			return fmt.Errorf("no finished sync of %.8s yet", revision)
		}
		return nil
	}
}

// reconciles waits for n more reconciles (status.reconciledAt changing n
// times) and returns every status seen at a new reconcile.
func (a *argo) reconciles(t *testing.T, name string, n int, bound time.Duration) []appStatus {
	t.Helper()
	first, err := a.status(t.Context(), name)
	require.NoError(t, err)
	seen := []string{first.ReconciledAt}
	var out []appStatus
	a.waitApp(t, name, bound, fmt.Sprintf("%d more reconciles", n), func(s appStatus) error {
		if !slices.Contains(seen, s.ReconciledAt) {
			seen = append(seen, s.ReconciledAt)
			out = append(out, s)
		}
		if len(out) < n {
			return fmt.Errorf("%d of %d reconciles", len(out), n)
		}
		return nil
	})
	return out
}
