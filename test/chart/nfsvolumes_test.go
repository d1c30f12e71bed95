package chart

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// assertPreBound checks that pv can bind pvc and nothing else, by the rules
// the PersistentVolume controller applies to a claim with volumeName set:
// same (empty) class, the claim's access modes offered, request within
// capacity, same volume mode; and pv's claimRef names exactly this claim, so
// no other claim can take it.
func assertPreBound(t *testing.T, pv *corev1.PersistentVolume, pvc *corev1.PersistentVolumeClaim) {
	t.Helper()
	require.NotNil(t, pv.Spec.ClaimRef, "volume %s: claimRef", pv.Name)
	assert.Equal(t, pvc.Namespace, pv.Spec.ClaimRef.Namespace, "volume %s: claimRef.namespace", pv.Name)
	assert.Equal(t, pvc.Name, pv.Spec.ClaimRef.Name, "volume %s: claimRef.name", pv.Name)
	assert.Contains(t, []string{"", "PersistentVolumeClaim"}, pv.Spec.ClaimRef.Kind)
	assert.Empty(t, pv.Spec.ClaimRef.UID, "the controller fills in the uid when it binds")
	assert.Equal(t, pv.Name, pvc.Spec.VolumeName, "claim %s/%s: volumeName", pvc.Namespace, pvc.Name)

	assert.Empty(t, pv.Spec.StorageClassName, "volume %s: no class", pv.Name)
	require.NotNil(t, pvc.Spec.StorageClassName, "claim %s/%s: storageClassName must be \"\", not unset (the default class would provision)", pvc.Namespace, pvc.Name)
	assert.Empty(t, *pvc.Spec.StorageClassName)

	rwx := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	assert.Equal(t, rwx, pv.Spec.AccessModes, "volume %s", pv.Name)
	assert.Equal(t, rwx, pvc.Spec.AccessModes, "claim %s/%s", pvc.Namespace, pvc.Name)
	assert.Nil(t, pv.Spec.VolumeMode, "Filesystem by default on both")
	assert.Nil(t, pvc.Spec.VolumeMode)
	assert.Nil(t, pv.Spec.NodeAffinity, "every node mounts the export")
	assert.Nil(t, pvc.Spec.Selector, "volumeName binds; a selector could only get in the way")

	capacity, ok := pv.Spec.Capacity[corev1.ResourceStorage]
	require.True(t, ok, "volume %s: capacity", pv.Name)
	request, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	require.True(t, ok, "claim %s/%s: request", pvc.Namespace, pvc.Name)
	assert.LessOrEqual(t, request.Cmp(capacity), 0, "request %s must fit capacity %s", request.String(), capacity.String())
}

// nfsValues are the storage.nfs values of a case.
func nfsValues(t *testing.T, c valuesCase) (mode string, nfs map[string]any) {
	t.Helper()
	storage := mergedValues(t, c)["storage"].(map[string]any)
	return storage["mode"].(string), storage["nfs"].(map[string]any)
}

// Mode nfs renders one pre-bound volume + claim pair per namespace that mounts
// the export (the release namespace for the server, the projects namespace for
// project pods), both pointing at the configured export; other modes render
// no volume.
func TestNFSModeRendersPreBoundVolumes(t *testing.T) {
	pairs := 0
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			m := renderObjects(t, c)
			pvs := all[*corev1.PersistentVolume](m)
			mode, nfs := nfsValues(t, c)
			if mode != "nfs" {
				assert.Empty(t, pvs, "only mode nfs renders PersistentVolumes")
				return
			}
			tpl := projectTemplate(t, m)
			require.NotNil(t, tpl.Storage.PVC)
			claim := tpl.Storage.PVC.ClaimName
			namespaces := []string{releaseNamespace}
			if tpl.Namespace != releaseNamespace {
				namespaces = append(namespaces, tpl.Namespace)
			}
			require.Len(t, pvs, len(namespaces), "one volume per namespace that mounts the export")
			for _, ns := range namespaces {
				pvc, ok := maybeIn[*corev1.PersistentVolumeClaim](m, ns, claim)
				require.True(t, ok, "claim %s/%s", ns, claim)
				pv := one[*corev1.PersistentVolume](t, m, ns+"."+claim)
				assertPreBound(t, pv, pvc)
				pairs++

				require.NotNil(t, pv.Spec.NFS, "volume %s: nfs source", pv.Name)
				assert.Equal(t, nfs["server"], pv.Spec.NFS.Server)
				assert.Equal(t, nfs["path"], pv.Spec.NFS.Path)
				assert.False(t, pv.Spec.NFS.ReadOnly)
				assert.Empty(t, pv.Spec.MountOptions, "values give none")
				assert.Equal(t, resource.MustParse(nfs["size"].(string)), pv.Spec.Capacity[corev1.ResourceStorage])
				assert.Equal(t, "keep", pvc.Annotations["helm.sh/resource-policy"])
				assert.Equal(t, "keep", pv.Annotations["helm.sh/resource-policy"])
				assert.Equal(t, corev1.PersistentVolumeReclaimRetain, pv.Spec.PersistentVolumeReclaimPolicy)
			}
			// No inline nfs volume is left anywhere: the server mounts the claim too.
			for _, p := range podSpecs(m) {
				for _, v := range p.spec.Volumes {
					assert.Nil(t, v.NFS, "%s: inline nfs volume %s", p.name, v.Name)
				}
			}
		})
	}
	assert.GreaterOrEqual(t, pairs, 5, "onprem and ci-separate-projects-namespace render two pairs, ci-nfs-external one")
}

func TestNFSVolumeOptionsComeFromValues(t *testing.T) {
	m := mustDecode(t, render(t, caseByName(t, "ci-separate-projects-namespace").files, map[string]string{
		"storage.nfs.mountOptions": "{nfsvers=4.1,hard}",
		"storage.nfs.size":         "10Ti",
	}))
	pvs := all[*corev1.PersistentVolume](m)
	require.Len(t, pvs, 2)
	for _, pv := range pvs {
		assert.Equal(t, []string{"nfsvers=4.1", "hard"}, pv.Spec.MountOptions, "volume %s", pv.Name)
		assert.Equal(t, resource.MustParse("10Ti"), pv.Spec.Capacity[corev1.ResourceStorage])
		pvc, ok := maybeIn[*corev1.PersistentVolumeClaim](m, pv.Spec.ClaimRef.Namespace, pv.Spec.ClaimRef.Name)
		require.True(t, ok)
		assert.Equal(t, resource.MustParse("10Ti"), pvc.Spec.Resources.Requests[corev1.ResourceStorage])
		assertPreBound(t, pv, pvc)
	}
}

// PersistentVolumes are cluster-scoped: their names must differ for any two
// claims, whatever the releases and namespaces. Helm renders each
// (release, namespace) here as `helm install` would.
func TestNFSVolumeNamesAreUnique(t *testing.T) {
	requireTools(t)
	long := strings.Repeat("n", 63)
	installs := []struct {
		release, namespace string
		set                []string
	}{
		{release: "cocalc", namespace: "team1"},
		{release: "cocalc", namespace: "team2"},
		{release: "other", namespace: "team1"},
		{release: "cocalc", namespace: "team3", set: []string{"projects.namespace=team3-projects", "projects.createNamespace=true"}},
		// "a-b" + release "c" and "a" + release "b-c" would both be "a-b-c-cocalc-projects" joined with "-".
		{release: "c", namespace: "a-b"},
		{release: "b-c", namespace: "a"},
		// The longest names: a 63-character namespace and claim ("<fullname>-projects" fits 63 with a 54-character fullname).
		{release: "cocalc", namespace: long, set: []string{"fullnameOverride=" + strings.Repeat("f", 54)}},
	}
	seen := map[string]string{}
	for _, in := range installs {
		args := []string{"template", in.release, chartDir, "--namespace", in.namespace, "-f", caseByName(t, "ci-nfs-external").files[0]}
		for _, s := range in.set {
			args = append(args, "--set", s)
		}
		out, err := runHelm(context.Background(), helm3Path, args...)
		require.NoError(t, err)
		m := mustDecode(t, out)
		pvs := all[*corev1.PersistentVolume](m)
		require.NotEmpty(t, pvs, "%s/%s", in.namespace, in.release)
		if in.namespace == long {
			assert.Len(t, pvs[0].Name, 63+1+63)
		}
		for _, pv := range pvs {
			who := in.namespace + "/" + in.release
			assert.Empty(t, validation.IsDNS1123Subdomain(pv.Name), "%s: volume name %q", who, pv.Name)
			if prev, dup := seen[pv.Name]; dup {
				t.Errorf("volume name %q rendered by both %s and %s", pv.Name, prev, who)
			}
			seen[pv.Name] = who
			// The name is its claim's namespace and name: the first dot splits it back.
			ns, claim, ok := strings.Cut(pv.Name, ".")
			require.True(t, ok, "%q", pv.Name)
			require.NotNil(t, pv.Spec.ClaimRef)
			assert.Equal(t, pv.Spec.ClaimRef.Namespace, ns)
			assert.Equal(t, pv.Spec.ClaimRef.Name, claim)
			pvc, ok := maybeIn[*corev1.PersistentVolumeClaim](m, ns, claim)
			require.True(t, ok, "%s: claim %s/%s rendered", who, ns, claim)
			assertPreBound(t, pv, pvc)
		}
	}
	assert.Len(t, seen, len(installs)+1, "one volume per install, two for the separate projects namespace")
}

// The longest names a release can have (helm allows 53-character release
// names; fullnameOverride up to 63) still give every object of a kind a
// name of its own, within Kubernetes' limits: components shorten the
// fullname, never their suffix.
func TestLongNamesStayDistinct(t *testing.T) {
	requireTools(t)
	everything := caseByName(t, "ci-everything-on").files
	for _, set := range [][]string{
		{"fullnameOverride=" + strings.Repeat("f", 63)},
		{"nameOverride=" + strings.Repeat("n", 40)},
		nil,
	} {
		release := strings.Repeat("r", 53)
		args := []string{"template", release, chartDir, "--namespace", "cocalc"}
		for _, f := range everything {
			args = append(args, "-f", f)
		}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := runHelm(context.Background(), helm3Path, args...)
		require.NoError(t, err, "%v", set)
		seen := map[string]bool{}
		for _, o := range mustDecode(t, out) {
			key := o.Kind + " " + o.Meta.Namespace + "/" + o.Meta.Name
			assert.False(t, seen[key], "%v: two objects named %s", set, key)
			seen[key] = true
			if subdomainNamed[o.Kind] {
				assert.Empty(t, validation.IsDNS1123Subdomain(o.Meta.Name), "%v: %s", set, key)
			} else {
				assert.LessOrEqual(t, len(o.Meta.Name), 63, "%v: %s", set, key)
			}
		}
	}
}
