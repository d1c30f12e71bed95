package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"gitlab.com/resurgo/cocalc-kubernetes/test/cluster"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podspec"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/orchestrator"
)

// TestAdmissionPolicyAdmitsOnlyProjectPods installs the chart (values/kind.yaml:
// storage mode pvc, so homes are sub-directories of one shared claim) into a
// namespace without Pod Security enforcement, so that the chart's
// ValidatingAdmissionPolicy is the only thing that can refuse a pod. helm
// renders it because the API server serves the API (admissionPolicy.enabled
// auto). Then, with the orchestrator's ServiceAccount token:
//   - a project start through the orchestrator is admitted;
//   - the pod podspec.Build makes, created by hand, is admitted (control);
//   - the same pod changed in one way each (the server's data claim, a
//     hostPath, privileged, the shared claim without the project's subPath,
//     a Secret volume, a token) is denied with the policy's message;
//   - the cluster admin's requests are not the policy's business.
func TestAdmissionPolicyAdmitsOnlyProjectPods(t *testing.T) {
	timed(t)
	c := cluster.Get(t)
	simulatedPodsOnly(t, c)
	ctx := t.Context()
	ns := newNamespace(t, c, "admission", nil)
	set := mergeValues(standinValues, map[string]string{
		"projects.resources.ephemeralStorageLimit": "",
		"projects.timeouts.startSeconds":           "45",
	})
	install(t, c, ns, helmOptions(t, c, ns, set, valuesFile("kind.yaml")))

	policyName := ns + "." + releaseName + "-project-pods"
	_, err := c.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, policyName, metav1.GetOptions{})
	require.NoError(t, err, "admissionPolicy.enabled auto renders the policy where the API exists")
	_, err = c.Client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, policyName, metav1.GetOptions{})
	require.NoError(t, err, "binding")

	saCfg := serviceAccountConfig(t, c, ns)
	sa, err := kubernetes.NewForConfig(saCfg)
	require.NoError(t, err)
	tpl := liveTemplate(t, c, ns)
	base, err := podspec.Build(tpl, podspec.Input{Project: newProjectID()})
	require.NoError(t, err)
	var dataClaim string
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, serverName, metav1.GetOptions{})
	require.NoError(t, err)
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" {
			dataClaim = v.PersistentVolumeClaim.ClaimName
		}
	}
	require.NotEmpty(t, dataClaim)

	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	create := func(client kubernetes.Interface, pod *corev1.Pod) error {
		_, err := client.CoreV1().Pods(ns).Create(ctx, pod, dryRun)
		return err
	}
	privileged := func(p *corev1.Pod) {
		// allowPrivilegeEscalation false with privileged true fails API validation before admission.
		p.Spec.Containers[0].SecurityContext.Privileged = ptr.To(true)
		p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
	}
	const privilegedMsg = "project containers are not privileged"

	// A policy takes effect once the API server's policy informer has it: wait for the first denial.
	probe := base.DeepCopy()
	privileged(probe)
	var last error
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		last = create(sa, probe)
		return last != nil && strings.Contains(last.Error(), privilegedMsg), nil
	}), "the policy never denied a privileged pod of the orchestrator: last answer %v", last)

	// A project start through the orchestrator is admitted.
	tplFile, _ := orchestratorTemplate(t, c, ns)
	orch := startOrchestrator(t, serviceAccountKubeconfig(t, saCfg), tplFile)
	id := newProjectID()
	_, err = orch.api.Start(ctx, id, orchestrator.StartRequest{})
	require.NoError(t, err, "start a project through the orchestrator")
	require.Len(t, projectPods(t, c, ns, id), 1, "the orchestrator's pod was admitted")

	// The pod Build makes, sent by hand with the orchestrator's token: admitted.
	require.NoError(t, create(sa, base.DeepCopy()), "the template's own pod")

	mountVolume := func(p *corev1.Pod, v corev1.Volume, path string) {
		p.Spec.Volumes = append(p.Spec.Volumes, v)
		p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: path})
	}
	for _, tc := range []struct {
		name   string
		mutate func(*corev1.Pod)
		msg    string
	}{
		{"the server's data claim", func(p *corev1.Pod) {
			mountVolume(p, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: dataClaim}}}, "/mnt/data")
		}, "the server's data claim " + dataClaim + " is not allowed"},
		{"a hostPath", func(p *corev1.Pod) {
			mountVolume(p, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}, "/host")
		}, "hostPath volumes are not allowed"},
		{"privileged", privileged, privilegedMsg},
		{"every home (the shared claim without the project's subPath)", func(p *corev1.Pod) {
			p.Spec.Containers[0].VolumeMounts[0].SubPath = ""
		}, "the home volume is mounted only as the project's own home"},
		{"a Secret", func(p *corev1.Pod) {
			mountVolume(p, corev1.Volume{Name: "creds", VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: "anything"}}}, "/creds")
		}, "Secret volumes and service account tokens are not allowed"},
		// The ServiceAccount admission plugin turns automount into a projected token volume before
		// validation: the token rule answers.
		{"the ServiceAccount token", func(p *corev1.Pod) {
			p.Spec.AutomountServiceAccountToken = ptr.To(true)
		}, "Secret volumes and service account tokens are not allowed"},
		{"another ServiceAccount", func(p *corev1.Pod) {
			p.Spec.ServiceAccountName = serviceAccountName
		}, "automountServiceAccountToken false and the namespace's default ServiceAccount"},
		{"another image", func(p *corev1.Pod) {
			p.Spec.Containers[0].Image = "registry.example/attacker:1"
		}, "of the template's image " + tpl.Image.Reference()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := base.DeepCopy()
			tc.mutate(pod)
			err := create(sa, pod)
			require.Error(t, err, "the orchestrator's token created a pod with %s", tc.name)
			require.Contains(t, err.Error(), "ValidatingAdmissionPolicy '"+policyName+"'", "denied by the chart's policy")
			require.Contains(t, err.Error(), tc.msg)
			t.Logf("denied: %v", err)
			// Only the orchestrator is confined: the cluster admin's identical request is not the policy's.
			require.NoError(t, create(c.Client, pod), "the policy must match only the orchestrator's ServiceAccount")
		})
	}
}
