package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"gitlab.com/resurgo/cocalc-kubernetes/test/apicalls"
	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
)

// access is one question to the authorizer. Namespace "" with a
// namespaced resource means the release namespace; "-" means cluster scope.
type access struct {
	verb, group, resource, subresource, name, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.group != "" {
		r += "." + a.group
	}
	if a.name != "" {
		r += "/" + a.name
	}
	return fmt.Sprintf("%s %s in %q", a.verb, r, a.namespace)
}

// TestServiceAccountCanDoExactlyWhatTheOrchestratorNeeds asks the API
// server, as the chart's ServiceAccount (TokenRequest token), whether it may
// do each thing the orchestrator does and each thing an attacker holding
// the server pod's token would want.
func TestServiceAccountCanDoExactlyWhatTheOrchestratorNeeds(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	ns := newNamespace(t, c, "rbac", nil)
	install(t, c, ns, helmOptions(t, c, ns, standinValues)) // defaults: storage.mode nfsServer
	sa, err := kubernetes.NewForConfig(serviceAccountConfig(t, c, ns))
	require.NoError(t, err)
	other := newNamespace(t, c, "rbac-other", nil)

	// Exactly what the orchestrator was seen doing (test/apicalls, from
	// the audit log), in this layout (storage.mode nfsServer).
	record, err := apicalls.Load()
	require.NoError(t, err)
	var allowed []access
	for _, call := range record[apicalls.LayoutNFSServer] {
		g, err := apicalls.Parse(call)
		require.NoError(t, err)
		res, sub, _ := strings.Cut(g.Resource, "/")
		name := g.Name
		if name == apicalls.NFSService {
			name = releaseName + "-nfs"
		}
		allowed = append(allowed, access{verb: g.Verb, group: g.Group, resource: res, subresource: sub, name: name})
	}
	denied := []access{
		// Not used by the code, so not granted.
		{verb: "get", resource: "pods", subresource: "log"},
		{verb: "list", resource: "events"},
		{verb: "get", resource: "secrets", name: "anything"},
		{verb: "list", resource: "secrets"},
		{verb: "watch", resource: "secrets"},
		{verb: "create", resource: "pods", subresource: "exec"},
		{verb: "create", resource: "pods", subresource: "attach"},
		{verb: "create", resource: "pods", subresource: "portforward"},
		{verb: "patch", resource: "pods"},
		{verb: "update", resource: "pods"},
		{verb: "create", resource: "pods", namespace: other},
		{verb: "list", resource: "pods", namespace: other},
		{verb: "list", resource: "pods", namespace: "kube-system"},
		{verb: "delete", resource: "pods", namespace: "kube-system"},
		{verb: "list", resource: "nodes", namespace: "-"},
		{verb: "get", resource: "nodes", subresource: "proxy", namespace: "-"},
		{verb: "list", resource: "namespaces", namespace: "-"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "roles"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "rolebindings"},
		{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "roles", name: roleName},
		{verb: "bind", group: "rbac.authorization.k8s.io", resource: "roles", name: roleName},
		{verb: "update", group: "rbac.authorization.k8s.io", resource: "roles", name: roleName},
		{verb: "bind", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "cluster-admin", namespace: "-"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterroles", namespace: "-"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings", namespace: "-"},
		{verb: "patch", group: "apps", resource: "deployments", name: serverName},
		{verb: "update", group: "apps", resource: "deployments", name: serverName},
		{verb: "update", resource: "configmaps", name: templateConfigMap},
		{verb: "patch", resource: "configmaps", name: templateConfigMap},
		{verb: "create", resource: "serviceaccounts", subresource: "token", name: serviceAccountName},
		{verb: "impersonate", resource: "serviceaccounts"},
		{verb: "delete", resource: "persistentvolumeclaims", name: dataClaimName},
		{verb: "delete", resource: "persistentvolumeclaims", name: projectsClaimName},
		{verb: "delete", group: "networking.k8s.io", resource: "networkpolicies"},
		{verb: "create", group: "networking.k8s.io", resource: "networkpolicies"},
		{verb: "get", resource: "services", name: "kubernetes"},
		{verb: "update", resource: "services", name: releaseName + "-nfs"},
		{verb: "delete", resource: "persistentvolumes", namespace: "-"},
		{verb: "create", group: "batch", resource: "jobs"},
		{verb: "create", group: "apps", resource: "daemonsets"},
		{verb: "patch", resource: "namespaces", name: ns, namespace: "-"},
		// The admission policy that confines its pod creates is helm's, never the orchestrator's to lift.
		{verb: "delete", group: "admissionregistration.k8s.io", resource: "validatingadmissionpolicies", namespace: "-"},
		{verb: "update", group: "admissionregistration.k8s.io", resource: "validatingadmissionpolicies", namespace: "-"},
		{verb: "delete", group: "admissionregistration.k8s.io", resource: "validatingadmissionpolicybindings", namespace: "-"},
		{verb: "patch", group: "admissionregistration.k8s.io", resource: "validatingadmissionpolicybindings", namespace: "-"},
		{verb: "create", group: "admissionregistration.k8s.io", resource: "validatingadmissionpolicybindings", namespace: "-"},
	}
	require.GreaterOrEqual(t, len(denied), 10)

	check := func(a access, want bool) {
		t.Helper()
		attrs := &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource, Name: a.name, Namespace: a.namespace}
		switch a.namespace {
		case "":
			attrs.Namespace, a.namespace = ns, ns
		case "-":
			attrs.Namespace, a.namespace = "", "(cluster)"
		}
		rev, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(), &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs},
		}, metav1.CreateOptions{})
		require.NoError(t, err, "SelfSubjectAccessReview %s", a)
		verdict := map[bool]string{true: "allowed", false: "denied"}
		t.Logf("%-7s %s", verdict[rev.Status.Allowed], a)
		if rev.Status.Allowed != want {
			t.Errorf("ServiceAccount %s: %s is %s, want %s (%s)", serviceAccountName, a, verdict[rev.Status.Allowed], verdict[want], rev.Status.Reason)
		}
	}
	for _, a := range allowed {
		check(a, true)
	}
	for _, a := range denied {
		check(a, false)
	}

	// The authorizer's answer is what the API enforces: try two for real.
	_, err = sa.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
	require.True(t, apierrors.IsForbidden(err), "list secrets as the ServiceAccount: want Forbidden, got %v", err)
	_, err = sa.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err, "list pods as the ServiceAccount")
}
