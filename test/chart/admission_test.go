package chart

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
)

// vapAPI is what `helm install` finds in a cluster that serves
// ValidatingAdmissionPolicy (Kubernetes >= 1.30), and what `helm template`
// needs as --api-versions to render as for such a cluster.
const vapAPI = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"

const admissionPolicyName = releaseNamespace + "." + releaseName + "-project-pods"

// The policy follows the cluster (admissionPolicy.enabled auto), unless forced on or off.
func TestAdmissionPolicyFollowsTheAPI(t *testing.T) {
	for _, tc := range []struct {
		name    string
		set     map[string]string
		served  bool
		present bool
	}{
		{name: "auto, API served", served: true, present: true},
		{name: "auto, API not served", served: false, present: false},
		{name: "disabled, API served", set: map[string]string{"admissionPolicy.enabled": "false"}, served: true, present: false},
		{name: "forced, API not served", set: map[string]string{"admissionPolicy.enabled": "true"}, served: false, present: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var extra []string
			if tc.served {
				extra = []string{"--api-versions", vapAPI}
			}
			out, err := renderE(t, []string{defaultValuesFile()}, tc.set, extra...)
			require.NoError(t, err)
			m := mustDecode(t, out)
			assert.Len(t, all[*admissionregistrationv1.ValidatingAdmissionPolicy](m), map[bool]int{true: 1, false: 0}[tc.present])
			assert.Len(t, all[*admissionregistrationv1.ValidatingAdmissionPolicyBinding](m), map[bool]int{true: 1, false: 0}[tc.present])
		})
	}
}

// For every values case, the policy is bound to the orchestrator's
// ServiceAccount in the projects namespace and its CEL names what the
// orchestrator's own builder (podspec.Build) puts into a project pod: the
// template's image, its selector labels, exactly its volumes; and forbids
// the rest (data claim, host namespaces and paths, Secrets, tokens, root,
// privilege). The api tier (test/e2e TestAdmissionPolicy*) proves the API
// server evaluates it as written.
func TestAdmissionPolicyAdmitsOnlyTheTemplatesPods(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out, err := renderE(t, c.files, nil, "--api-versions", vapAPI)
			require.NoError(t, err)
			m := mustDecode(t, out)
			tpl := projectTemplate(t, m)
			d := serverDeployment(t, m)
			policy := one[*admissionregistrationv1.ValidatingAdmissionPolicy](t, m, admissionPolicyName)
			binding := one[*admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, m, admissionPolicyName)

			// Bound, enforcing, to pod writes in the namespace where the Role lets the orchestrator create pods.
			role := one[*rbacv1.Role](t, m, releaseName+"-orchestrator")
			assert.Equal(t, tpl.Namespace, role.Namespace)
			assert.Equal(t, policy.Name, binding.Spec.PolicyName)
			assert.Equal(t, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}, binding.Spec.ValidationActions)
			for _, mr := range []*admissionregistrationv1.MatchResources{policy.Spec.MatchConstraints, binding.Spec.MatchResources} {
				require.NotNil(t, mr)
				require.NotNil(t, mr.NamespaceSelector)
				assert.True(t, selects(t, *mr.NamespaceSelector, nsLabels(tpl.Namespace)), "selects the projects namespace")
				assert.False(t, selects(t, *mr.NamespaceSelector, nsLabels("kube-system")))
			}
			require.NotNil(t, policy.Spec.FailurePolicy)
			assert.Equal(t, admissionregistrationv1.Fail, *policy.Spec.FailurePolicy, "an evaluation error denies")
			require.Len(t, policy.Spec.MatchConstraints.ResourceRules, 1)
			rule := policy.Spec.MatchConstraints.ResourceRules[0]
			assert.Equal(t, []string{""}, rule.APIGroups)
			assert.Equal(t, []string{"pods"}, rule.Resources, "the pod itself, not its subresources")
			assert.ElementsMatch(t, []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}, rule.Operations)

			// Only the orchestrator's requests: its ServiceAccount, as the RoleBinding names it.
			sa := fmt.Sprintf("system:serviceaccount:%s:%s", releaseNamespace, d.Spec.Template.Spec.ServiceAccountName)
			rb := one[*rbacv1.RoleBinding](t, m, releaseName+"-orchestrator")
			require.Len(t, rb.Subjects, 1)
			assert.Equal(t, sa, fmt.Sprintf("system:serviceaccount:%s:%s", rb.Subjects[0].Namespace, rb.Subjects[0].Name))
			require.Len(t, policy.Spec.MatchConditions, 1)
			assert.Equal(t, fmt.Sprintf("request.userInfo.username == %q", sa), policy.Spec.MatchConditions[0].Expression)

			var cel strings.Builder
			for _, v := range policy.Spec.Validations {
				assert.NotEmpty(t, v.Message, "validation %q has no message", v.Expression)
				cel.WriteString(v.Expression + "\n")
			}
			expr := cel.String()

			// What Build puts into a project pod is what the policy names.
			pod := projectPod(t, tpl, "2e5ab7d0-0000-4000-8000-00000000000e", false)
			require.Len(t, pod.Spec.Containers, 1)
			assert.Contains(t, expr, fmt.Sprintf("c.image == %q", pod.Spec.Containers[0].Image), "the template's image")
			assert.Equal(t, tpl.Image.Reference(), pod.Spec.Containers[0].Image)
			for k, v := range tpl.SelectorLabels {
				assert.Contains(t, expr, fmt.Sprintf("object.metadata.labels[%q] == %q", k, v))
			}
			allowed := validationFor(t, policy, "only the template's volumes").Expression
			for _, vol := range pod.Spec.Volumes {
				assert.Contains(t, allowed, fmt.Sprintf("v.name == %q", vol.Name), "volume %s of the built pod", vol.Name)
			}
			assert.Equal(t, len(pod.Spec.Volumes), strings.Count(allowed, "v.name == "), "no volume the template does not produce")
			home := pod.Spec.Volumes[0]
			require.Equal(t, podspec.HomeVolume, home.Name)
			switch {
			case home.NFS != nil:
				assert.Contains(t, allowed, fmt.Sprintf("v.nfs.path == %q + variables.projectID", strings.TrimSuffix(tpl.Storage.NFS.Path, "/")+"/"))
			case home.PersistentVolumeClaim != nil:
				assert.Contains(t, allowed, fmt.Sprintf("v.persistentVolumeClaim.claimName == %q", home.PersistentVolumeClaim.ClaimName))
				mount := validationFor(t, policy, "mounted only as the project's own home").Expression
				prefix := strings.TrimSuffix(pod.Spec.Containers[0].VolumeMounts[0].SubPath, pod.Labels["project_id"])
				assert.Contains(t, mount, fmt.Sprintf("m.subPath == %q + variables.projectID", prefix), "a shared claim: only the project's own sub-directory")
			default:
				t.Fatalf("home volume of unknown kind: %+v", home)
			}

			// What it forbids, each with its own message.
			var data string
			for _, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == "data" {
					data = v.PersistentVolumeClaim.ClaimName
				}
			}
			require.NotEmpty(t, data)
			assert.Contains(t, validationFor(t, policy, "data claim").Expression, fmt.Sprintf("claimName != %q", data))
			assert.Contains(t, validationFor(t, policy, "hostPath").Expression, "!has(v.hostPath)")
			for _, f := range []string{"hostNetwork", "hostPID", "hostIPC", "hostPort"} {
				assert.Contains(t, validationFor(t, policy, "hostNetwork").Expression, f)
			}
			for _, f := range []string{"!has(v.secret)", "!has(v.projected)", "!has(s.serviceAccountToken)"} {
				assert.Contains(t, validationFor(t, policy, "service account tokens").Expression, f)
			}
			assert.Contains(t, validationFor(t, policy, "automountServiceAccountToken").Expression, "!object.spec.automountServiceAccountToken")
			assert.Contains(t, validationFor(t, policy, "non-root").Expression, "object.spec.securityContext.runAsNonRoot")
			priv := validationFor(t, policy, "not privileged").Expression
			for _, f := range []string{"c.securityContext.privileged", "!c.securityContext.allowPrivilegeEscalation", `"ALL" in c.securityContext.capabilities.drop`} {
				assert.Contains(t, priv, f)
			}
			// The pod Build makes meets the fields the policy checks.
			assert.False(t, *pod.Spec.AutomountServiceAccountToken)
			assert.True(t, *pod.Spec.SecurityContext.RunAsNonRoot)
			sc := pod.Spec.Containers[0].SecurityContext
			assert.False(t, *sc.AllowPrivilegeEscalation)
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
			assert.Empty(t, pod.Spec.InitContainers)
		})
	}
}

// validationFor returns the one validation whose message contains text.
func validationFor(t *testing.T, p *admissionregistrationv1.ValidatingAdmissionPolicy, text string) admissionregistrationv1.Validation {
	t.Helper()
	var found []admissionregistrationv1.Validation
	for _, v := range p.Spec.Validations {
		if strings.Contains(v.Message, text) {
			found = append(found, v)
		}
	}
	require.Len(t, found, 1, "validations with a message containing %q", text)
	return found[0]
}
