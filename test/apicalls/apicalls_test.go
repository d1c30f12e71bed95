package apicalls

import (
	"testing"

	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
)

func TestRecordReadsBackAndExpandsRoles(t *testing.T) {
	r, err := Load()
	require.NoError(t, err)
	for layout, calls := range r {
		for _, c := range calls {
			g, err := Parse(c)
			require.NoError(t, err, "%s: %s", layout, c)
			require.Equal(t, c, g.String(), "%s: %s must read back", layout, c)
		}
	}
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "pods/log"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{"x-nfs", "other"}, Verbs: []string{"get"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"patch"}},
	}
	require.Equal(t, []string{
		"get pods", "get pods/log", "get services name=$NFS_SERVICE", "get services name=other",
		"list pods", "list pods/log", "patch deployments.apps",
	}, Strings(RoleGrants(rules, "x-nfs")))
	for _, bad := range []string{"", "get", "get pods extra", "get pods name=", "a b c d"} {
		_, err := Parse(bad)
		require.Error(t, err, "%q", bad)
	}
}
