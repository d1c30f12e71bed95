package chart

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/test/apicalls"
)

func TestRBACIsLeastPrivilege(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out := renderCase(t, c)
			assert.NotContains(t, out, "kind: ClusterRole", "never a ClusterRole or ClusterRoleBinding")
			m := mustDecode(t, out)
			tpl := projectTemplate(t, m)
			nfsServer := tpl.Storage.NFS != nil && tpl.Storage.NFS.ServiceName != ""
			separate := tpl.Namespace != releaseNamespace

			sa := one[*corev1.ServiceAccount](t, m, serverDeployment(t, m).Spec.Template.Spec.ServiceAccountName)
			require.NotNil(t, sa.AutomountServiceAccountToken)
			assert.False(t, *sa.AutomountServiceAccountToken)

			roles := all[*rbacv1.Role](m)
			bindings := all[*rbacv1.RoleBinding](m)
			role := one[*rbacv1.Role](t, m, releaseName+"-orchestrator")
			assert.Equal(t, tpl.Namespace, role.Namespace, "the Role lives where project pods live")
			// Exactly the calls the orchestrator was seen making on the api
			// tier (test/apicalls): nothing more may slip in unnoticed.
			record, err := apicalls.Load()
			require.NoError(t, err)
			nfsService := ""
			if nfsServer {
				require.False(t, separate, "nfsServer mode keeps projects in the release namespace")
				nfsService = tpl.Storage.NFS.ServiceName
			}
			assert.Equal(t, record[apicalls.Layout(nfsServer)], apicalls.Strings(apicalls.RoleGrants(role.Rules, nfsService)),
				"the Role (right) must grant exactly the recorded calls (left, %s)", apicalls.File())
			require.Len(t, roles, 1)
			require.Len(t, bindings, len(roles))
			for _, b := range bindings {
				assert.Equal(t, rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: b.Name}, b.RoleRef)
				assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: releaseNamespace}}, b.Subjects)
				r, ok := maybe[*rbacv1.Role](m, b.RoleRef.Name)
				require.True(t, ok, "binding %s refers to a missing Role", b.Name)
				assert.Equal(t, r.Namespace, b.Namespace)
			}
			for _, r := range roles {
				for _, rule := range r.Rules {
					for _, v := range rule.Verbs {
						assert.NotContains(t, []string{"*", "update", "escalate", "bind", "impersonate", "deletecollection"}, v, "role %s", r.Name)
					}
					for _, res := range rule.Resources {
						assert.False(t, res == "*" || strings.HasPrefix(res, "secrets") || res == "pods/exec", "role %s: resource %s", r.Name, res)
					}
				}
			}
		})
	}
}

func TestRBACCanBeDisabled(t *testing.T) {
	m := mustDecode(t, render(t, []string{defaultValuesFile()}, map[string]string{"rbac.create": "false", "serviceAccount.create": "false", "serviceAccount.name": "cocalc-existing"}))
	assert.Empty(t, all[*rbacv1.Role](m))
	assert.Empty(t, all[*rbacv1.RoleBinding](m))
	assert.Empty(t, all[*corev1.ServiceAccount](m))
	assert.Equal(t, "cocalc-existing", serverDeployment(t, m).Spec.Template.Spec.ServiceAccountName)
}
