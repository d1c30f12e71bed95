package chart

import (
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
)

// projectTemplate decodes the rendered ConfigMap with the orchestrator's own parser.
func projectTemplate(t *testing.T, m manifests) *podtemplate.Template {
	t.Helper()
	cm := one[*corev1.ConfigMap](t, m, releaseName+"-project-template")
	require.Len(t, cm.Data, 1, "the ConfigMap holds only the template")
	doc, ok := cm.Data[podtemplate.TemplateKey]
	require.True(t, ok, "key %s", podtemplate.TemplateKey)
	tpl, err := podtemplate.Parse([]byte(doc))
	require.NoError(t, err, "the orchestrator would reject this template:\n%s", doc)
	return tpl
}

// The chart and the orchestrator agree on the template: it parses strictly,
// validates, and matches the server pod that mounts it.
func TestProjectTemplateContract(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			tpl := projectTemplate(t, m)

			assert.Equal(t, podtemplate.SchemaVersion, tpl.Version)
			assert.Equal(t, releaseName, tpl.Release)
			assert.Equal(t, map[string]string{
				podtemplate.LabelComponent: podtemplate.ComponentProject,
				podtemplate.LabelRelease:   releaseName,
			}, tpl.SelectorLabels, "selector labels are exactly component + release")
			assert.NotContains(t, tpl.Labels, "app.kubernetes.io/instance")
			assert.NotEqual(t, "latest", tpl.Image.Tag)
			assert.Positive(t, tpl.Security.RunAsUser)
			assert.Positive(t, tpl.Security.RunAsGroup)

			// The server mounts the template where --template points, and project homes at serverPath.
			d := serverDeployment(t, m)
			orch := container(t, d.Spec.Template.Spec, "orchestrator")
			assert.Contains(t, orch.Args, "--template="+podtemplate.DefaultPath)
			assert.Contains(t, mountPaths(orch), path.Dir(podtemplate.DefaultPath))
			assert.Contains(t, mountPaths(orch), tpl.Storage.ServerPath)
			assert.Contains(t, mountPaths(container(t, d.Spec.Template.Spec, "hub")), tpl.Storage.ServerPath)
			assert.Equal(t, "/projects/home", tpl.Storage.ServerPath)

			// Storage as the selected mode says.
			var homes *corev1.Volume
			for i, v := range d.Spec.Template.Spec.Volumes {
				if v.Name == "projects-home" {
					homes = &d.Spec.Template.Spec.Volumes[i]
				}
			}
			require.NotNil(t, homes)
			switch {
			case tpl.Storage.Mode == podtemplate.ModeNFS && tpl.Storage.NFS.ServiceName != "":
				// nfsServer: the Service exists, and the server mounts the NFS pod's claim directly.
				svc := one[*corev1.Service](t, m, tpl.Storage.NFS.ServiceName)
				assert.Equal(t, int32(2049), svc.Spec.Ports[0].Port)
				assert.Equal(t, "/", tpl.Storage.NFS.Path)
				require.NotNil(t, homes.PersistentVolumeClaim)
				assert.Equal(t, releaseName+"-projects", homes.PersistentVolumeClaim.ClaimName)
				pvc := one[*corev1.PersistentVolumeClaim](t, m, releaseName+"-projects")
				assert.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, pvc.Spec.AccessModes)
				aff := d.Spec.Template.Spec.Affinity
				require.NotNil(t, aff, "server must be co-scheduled with the NFS pod")
				require.NotNil(t, aff.PodAffinity)
				terms := aff.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
				require.NotEmpty(t, terms)
				assert.Equal(t, "kubernetes.io/hostname", terms[len(terms)-1].TopologyKey)
				assert.Equal(t, "nfs", terms[len(terms)-1].LabelSelector.MatchLabels["app.kubernetes.io/component"])
			case tpl.Storage.Mode == podtemplate.ModePVC:
				// Modes pvc and nfs (an external export behind the chart's pre-bound claims).
				require.NotNil(t, homes.PersistentVolumeClaim)
				assert.Equal(t, tpl.Storage.PVC.ClaimName, homes.PersistentVolumeClaim.ClaimName, "server and projects use claims of one name")
				// A claim is only mountable in its own namespace: the claim the template names
				// exists where project pods run, and the server's where the server runs.
				for _, ns := range []string{tpl.Namespace, d.Namespace} {
					if pvc, created := maybeIn[*corev1.PersistentVolumeClaim](m, ns, tpl.Storage.PVC.ClaimName); created {
						assert.Equal(t, releaseName+"-projects", pvc.Name)
						assert.NotEmpty(t, pvc.Spec.AccessModes)
					} else {
						assert.NotEqual(t, releaseName+"-projects", tpl.Storage.PVC.ClaimName, "the chart's claim must be rendered in namespace %s", ns)
						assert.Equal(t, tpl.Namespace, d.Namespace, "an existing claim serves only its own namespace")
					}
				}
				for _, ctr := range d.Spec.Template.Spec.Containers {
					for _, vm := range ctr.VolumeMounts {
						if vm.Name == "projects-home" {
							assert.Equal(t, tpl.Storage.PVC.SubPathPrefix, vm.SubPath, "server sees the same folder as projects")
						}
					}
				}
			default:
				t.Fatalf("unexpected storage mode %q", tpl.Storage.Mode)
			}
		})
	}
}

// Values reach the template unchanged (spot checks on the everything-on case).
func TestProjectTemplateCarriesValues(t *testing.T) {
	tpl := projectTemplate(t, renderObjects(t, caseByName(t, "ci-everything-on")))
	assert.Equal(t, corev1.ResourceName("nvidia.com/gpu"), tpl.Resources.GPUResourceName)
	assert.EqualValues(t, 2, tpl.Resources.Max.GPUs)
	assert.Equal(t, []string{"regcred"}, tpl.Image.PullSecrets)
	assert.Equal(t, "gvisor", tpl.RuntimeClassName)
	assert.Equal(t, "projects", tpl.PriorityClassName)
	assert.Equal(t, map[string]string{"pool": "projects"}, tpl.NodeSelector)
	require.Len(t, tpl.Tolerations, 1)
	require.NotNil(t, tpl.Affinity)
	require.Len(t, tpl.ExtraVolumes, 1)
	require.Len(t, tpl.ExtraMounts, 1)
	assert.Equal(t, "standard", tpl.Labels["cocalc.example.com/tier"])

	pvc := projectTemplate(t, renderObjects(t, caseByName(t, "ci-pvc-existing")))
	assert.Equal(t, podtemplate.ModePVC, pvc.Storage.Mode)
	assert.Equal(t, "shared-homes", pvc.Storage.PVC.ClaimName)
	assert.Equal(t, "cocalc/projects", pvc.Storage.PVC.SubPathPrefix)

	// projects.dns: the projects' own resolver, and the pods the orchestrator builds use only it.
	locked := projectTemplate(t, renderObjects(t, caseByName(t, "ci-locked-down")))
	require.NotNil(t, locked.DNSConfig)
	assert.Equal(t, []string{"10.0.0.53"}, locked.DNSConfig.Nameservers)
	assert.Equal(t, []string{"cocalc.svc.cluster.local", "svc.cluster.local"}, locked.DNSConfig.Searches)
	require.Len(t, locked.DNSConfig.Options, 1)
	assert.Equal(t, "ndots", locked.DNSConfig.Options[0].Name)
	pod := projectPod(t, locked, "2e5ab7d0-0000-4000-8000-00000000000f", false)
	assert.Equal(t, corev1.DNSNone, pod.Spec.DNSPolicy)
	assert.Equal(t, locked.DNSConfig, pod.Spec.DNSConfig)
	assert.Nil(t, tpl.DNSConfig, "no resolver named: the cluster's")

	sep := projectTemplate(t, renderObjects(t, caseByName(t, "ci-separate-projects-namespace")))
	assert.Equal(t, "cocalc-projects", sep.Namespace)

	// Mode nfs: the chart's claim, at the export's root.
	nfs := projectTemplate(t, renderObjects(t, caseByName(t, "ci-nfs-external")))
	assert.Equal(t, podtemplate.ModePVC, nfs.Storage.Mode)
	assert.Nil(t, nfs.Storage.NFS)
	assert.Equal(t, &podtemplate.PVCStorage{ClaimName: releaseName + "-projects"}, nfs.Storage.PVC)
}

// storage.pvc.* belongs to mode pvc: a leftover subPathPrefix must not move
// mode nfs homes away from the export's root (neither for projects nor the server).
func TestNFSModeIgnoresPVCSubPath(t *testing.T) {
	m := mustDecode(t, render(t, []string{caseByName(t, "ci-nfs-external").files[0]}, map[string]string{"storage.pvc.subPathPrefix": "homes"}))
	tpl := projectTemplate(t, m)
	require.NotNil(t, tpl.Storage.PVC)
	assert.Empty(t, tpl.Storage.PVC.SubPathPrefix)
	for _, ctr := range serverDeployment(t, m).Spec.Template.Spec.Containers {
		for _, vm := range ctr.VolumeMounts {
			if vm.Name == "projects-home" {
				assert.Empty(t, vm.SubPath, "%s", ctr.Name)
			}
		}
	}
}

// The kind tier is offline: every image of values/kind.yaml must be one the tier
// builds and loads itself, never pulled, and nothing may need a cloud LoadBalancer.
func TestKindValuesNeedNoRegistry(t *testing.T) {
	m := renderObjects(t, caseByName(t, "kind"))
	for _, p := range podSpecs(m) {
		for _, c := range append(append([]corev1.Container{}, p.spec.InitContainers...), p.spec.Containers...) {
			assert.True(t, strings.HasPrefix(c.Image, "cocalc-kubernetes/"), "%s/%s: %s is not a locally built image", p.name, c.Name, c.Image)
			assert.Equal(t, corev1.PullNever, c.ImagePullPolicy, "%s/%s", p.name, c.Name)
		}
	}
	tpl := projectTemplate(t, m)
	assert.True(t, strings.HasPrefix(tpl.Image.Repository, "cocalc-kubernetes/"))
	assert.Equal(t, corev1.PullNever, tpl.Image.PullPolicy)
	assert.Equal(t, podtemplate.ModePVC, tpl.Storage.Mode, "kind has no NFS")
	for _, svc := range all[*corev1.Service](m) {
		assert.Equal(t, corev1.ServiceTypeClusterIP, svc.Spec.Type, "service %s", svc.Name)
	}
}
