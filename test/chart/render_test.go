package chart

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Every values case renders, decodes strictly, and every chart object carries
// the standard labels.
func TestRenderDecodesStrictly(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			objs := renderObjects(t, c)
			require.NotEmpty(t, objs)
			names := map[string]bool{}
			for _, o := range objs {
				key := o.Kind + "/" + o.Meta.Namespace + "/" + o.Meta.Name
				assert.False(t, names[key], "%s rendered twice", key)
				names[key] = true
				if clusterScoped[o.Kind] {
					assert.Empty(t, o.Meta.Namespace, "%s %s: cluster-scoped", o.Source, o.Meta.Name)
				} else {
					assert.NotEmpty(t, o.Meta.Namespace, "%s %s: namespace must be explicit", o.Source, o.Meta.Name)
				}
				for _, k := range []string{
					"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
					"app.kubernetes.io/version", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart",
				} {
					assert.NotEmpty(t, o.Meta.Labels[k], "%s %s: label %s", o.Source, o.Meta.Name, k)
				}
				if subdomainNamed[o.Kind] {
					// Named after a namespace and a name (see TestNFSVolumeNamesAreUnique): a DNS subdomain.
					assert.Empty(t, validation.IsDNS1123Subdomain(o.Meta.Name), "%s: name %q", o.Source, o.Meta.Name)
				} else {
					assert.LessOrEqual(t, len(o.Meta.Name), 63, "%s: name %q too long", o.Source, o.Meta.Name)
				}
			}
		})
	}
}

// clusterScoped are the kinds the chart renders without a namespace.
var clusterScoped = map[string]bool{"Namespace": true, "PersistentVolume": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}

// subdomainNamed are the cluster-scoped kinds named "<namespace>.<name>", so that
// releases in different namespaces never collide: DNS subdomains, not labels.
var subdomainNamed = map[string]bool{"PersistentVolume": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true}

// Helm 4 (what ArgoCD >= 3.5 renders with) produces the same manifests as Helm 3.
func TestHelm4RendersIdentically(t *testing.T) {
	requireTools(t)
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out4, err := helm4Template(context.Background(), c.files)
			require.NoError(t, err)
			objs4, err := decodeManifests(out4)
			require.NoError(t, err)
			// Helm 4 separates documents with an extra blank line; nothing else may differ.
			require.Equal(t, withoutBlankLines(renderCase(t, c)), withoutBlankLines(out4))
			require.NotEmpty(t, objs4)
		})
	}
}

// ArgoCD renders on every sync: two renders must be byte-identical.
func TestRenderIsDeterministic(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			first := renderCase(t, c)
			second := render(t, c.files, nil)
			require.Equal(t, first, second)
		})
	}
}

// forbiddenFuncs are template functions whose output changes between renders
// or depends on the cluster (ArgoCD has no cluster access at render time).
// A preceding "." or "$" makes it a field or variable, not a call.
var forbiddenFuncs = regexp.MustCompile(`(?:^|[^.$\w])(lookup|rand[A-Za-z0-9]*|uuidv4|uuid[A-Za-z0-9]*|now|date[A-Za-z]*|unixEpoch|genCA[A-Za-z]*|genSelfSigned[A-Za-z]*|genSignedCert[A-Za-z]*|genPrivateKey|derivePassword|htpasswd|shuffle)\b`)

// templateActions matches {{ ... }} actions; comments inside them are dropped below.
var templateActions = regexp.MustCompile(`(?s)\{\{(.*?)\}\}`)

var templateComment = regexp.MustCompile(`(?s)^-?\s*/\*.*\*/\s*-?$`)

var quotedString = regexp.MustCompile(`"(\\.|[^"\\])*"|` + "`[^`]*`")

// forbiddenCalls returns the forbidden functions used in a template's actions.
func forbiddenCalls(src string) []string {
	var found []string
	for _, m := range templateActions.FindAllStringSubmatch(src, -1) {
		action := m[1]
		if templateComment.MatchString(action) {
			continue
		}
		action = quotedString.ReplaceAllString(action, `""`)
		for _, m := range forbiddenFuncs.FindAllStringSubmatch(action, -1) {
			found = append(found, m[1])
		}
	}
	return found
}

func TestForbiddenFuncScanner(t *testing.T) {
	// The scanner itself must catch what it is meant to catch.
	cases := map[string][]string{
		`{{ randAlphaNum 10 }}`:                       {"randAlphaNum"},
		`{{- lookup "v1" "Secret" "ns" "x" -}}`:       {"lookup"},
		`{{ now | date "2006" }}`:                     {"now", "date"},
		`{{ genCA "x" 365 }}{{ uuidv4 }}`:             {"genCA", "uuidv4"},
		`{{ include "x" . }} lookup now`:              nil,
		`{{/* lookup is forbidden */}}`:               nil,
		`{{ printf "now %s" .Values.x }}`:             nil,
		`{{ .Values.dateOfBirth }}{{ .Values.nowx }}`: nil,
	}
	for src, want := range cases {
		assert.Equal(t, want, forbiddenCalls(src), src)
	}
}

func TestTemplatesAvoidNondeterministicFuncs(t *testing.T) {
	var files []string
	err := filepath.WalkDir(filepath.Join(chartDir, "templates"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.Empty(t, forbiddenCalls(string(src)), "%s uses functions that break ArgoCD/determinism", f)
	}
}

// No Helm hooks except the `helm test` pod: ArgoCD maps hooks differently.
func TestOnlyHookIsTheTestPod(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, o := range renderObjects(t, c) {
				hook, ok := o.Meta.Annotations["helm.sh/hook"]
				if !ok {
					continue
				}
				assert.Equal(t, "test", hook, "%s: only test hooks are allowed", o.Source)
				pod, isPod := o.Obj.(*corev1.Pod)
				require.True(t, isPod, "%s: the test hook must be a Pod", o.Source)
				assert.Equal(t, corev1.RestartPolicyNever, pod.Spec.RestartPolicy)
			}
		})
	}
}

// Every data volume survives uninstall (helm.sh/resource-policy; ArgoCD's
// pruning is covered by TestDataObjectsAreNeverPrunedOrDeleted), and so does
// the export behind a volume: Retain, never Delete or Recycle.
func TestDataClaimsAreKept(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			for _, pvc := range all[*corev1.PersistentVolumeClaim](m) {
				assert.Equal(t, "keep", pvc.Annotations["helm.sh/resource-policy"], "claim %s/%s", pvc.Namespace, pvc.Name)
			}
			for _, pv := range all[*corev1.PersistentVolume](m) {
				assert.Equal(t, "keep", pv.Annotations["helm.sh/resource-policy"], "volume %s", pv.Name)
				assert.Equal(t, corev1.PersistentVolumeReclaimRetain, pv.Spec.PersistentVolumeReclaimPolicy, "volume %s", pv.Name)
			}
		})
	}
}

// Golden files: the exact render of the defaults and of each values/ file.
// `make golden` (go test ./test/chart/... -run Golden -update) rewrites them.
func TestGolden(t *testing.T) {
	for _, c := range platformCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := renderCase(t, c) + "\n"
			path := filepath.Join("testdata", "golden", c.name+".yaml")
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
				return
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "missing golden file: run `make golden`")
			if string(want) != got {
				diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
					A: difflib.SplitLines(string(want)), B: difflib.SplitLines(got),
					FromFile: path, ToFile: "render", Context: 2,
				})
				t.Fatalf("render differs from %s (review, then run `make golden`):\n%s", path, diff)
			}
		})
	}
}

// `helm lint --strict` with Helm 3 and Helm 4, on the defaults and every values/ file.
func TestHelmLintStrict(t *testing.T) {
	requireTools(t)
	for _, bin := range []string{helm3Path, helm4Path} {
		for _, c := range platformCases(t) {
			t.Run(filepath.Base(bin)+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				args := []string{"lint", "--strict", chartDir, "--namespace", releaseNamespace}
				for _, f := range c.files {
					args = append(args, "-f", f)
				}
				out, err := runHelm(context.Background(), bin, args...)
				require.NoError(t, err, out)
				assert.Contains(t, out, "0 chart(s) failed")
			})
		}
	}
}

func withoutBlankLines(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// `helm install` on each values case, client-side only (Helm 4 needs no cluster for
// --dry-run=client; the kubeconfig points nowhere so nothing can be contacted).
// This also renders NOTES.txt, which must tell how to reach the server.
func TestInstallDryRun(t *testing.T) {
	requireTools(t)
	noCluster := filepath.Join(t.TempDir(), "no-kubeconfig")
	for _, c := range platformCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"install", releaseName, chartDir, "--dry-run=client", "--namespace", releaseNamespace, "--kubeconfig", noCluster}
			for _, f := range c.files {
				args = append(args, "-f", f)
			}
			out, err := runHelm(context.Background(), helm4Path, args...)
			require.NoError(t, err)
			require.Contains(t, out, "NOTES:", "install printed no NOTES")
			notes := out[strings.Index(out, "NOTES:"):]
			v := mergedValues(t, c)
			switch {
			case v["ingress"].(map[string]any)["enabled"] == true:
				assert.Contains(t, notes, "https://"+v["ingress"].(map[string]any)["hosts"].([]any)[0].(string)+"/")
			case v["loadBalancer"].(map[string]any)["enabled"] == true:
				assert.Contains(t, notes, "get service "+releaseName+"-lb")
			default:
				assert.Contains(t, notes, "port-forward service/"+releaseName+"-server")
			}
			assert.Contains(t, notes, "helm test "+releaseName)
		})
	}
}

// The helm test pod runs the orchestrator image's `check` against the server Service.
func TestHelmTestPodChecksTheServer(t *testing.T) {
	m := renderObjects(t, caseByName(t, "default"))
	pod := one[*corev1.Pod](t, m, releaseName+"-test-connection")
	require.Len(t, pod.Spec.Containers, 1)
	c := pod.Spec.Containers[0]
	assert.Empty(t, c.Command, "the image's entrypoint is cocalc-k8s")
	// The 2020 hub's /alive, through the Service's https port (haproxy, self-signed certificate); every
	// case's URL is derived in TestHubProbesAndHelmTestAskTheHub.
	assert.Equal(t, []string{"check", "--http", "https://" + releaseName + "-server:443/alive", "--insecure-skip-tls-verify", "--timeout", "60s"}, c.Args)
	assert.Equal(t, serverDeployment(t, m).Spec.Template.Spec.Containers[1].Image, c.Image)
	assert.Equal(t, true, ptrVal(pod.Spec.SecurityContext.RunAsNonRoot))
}
