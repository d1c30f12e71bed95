package chart

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/frontend/smccompute"
)

const saTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// Capabilities the root-based CoCalc server image may keep (see values.yaml server.securityContext).
var allowedHubCaps = []corev1.Capability{"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("container %q not found", name)
	return corev1.Container{}
}

func orch(t *testing.T, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	return container(t, spec, "orchestrator")
}

// argValue returns the value of a "--name=value" argument, or "".
func argValue(c corev1.Container, name string) string {
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func serverDeployment(t *testing.T, m manifests) *appsv1.Deployment {
	t.Helper()
	return one[*appsv1.Deployment](t, m, releaseName+"-server")
}

func TestServerDeployment(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			d := serverDeployment(t, m)
			spec := d.Spec.Template.Spec

			require.NotNil(t, d.Spec.Replicas)
			assert.EqualValues(t, 1, *d.Spec.Replicas)
			assert.Equal(t, appsv1.RecreateDeploymentStrategyType, d.Spec.Strategy.Type)
			require.NotNil(t, spec.TerminationGracePeriodSeconds)
			assert.Positive(t, *spec.TerminationGracePeriodSeconds)
			assert.NotEmpty(t, d.Spec.Template.Annotations["checksum/project-template"])
			// The hub and the orchestrator; the embedded database's dump server only where its backup is on.
			want := []string{"hub", "orchestrator"}
			if _, ok := maybe[*corev1.Service](m, releaseName+"-db-dump"); ok {
				want = append(want, "db-dump")
			}
			var names []string
			for _, c := range spec.Containers {
				names = append(names, c.Name)
			}
			assert.Equal(t, want, names)

			// The pod never mounts API credentials by default; only the orchestrator gets a projected token.
			require.NotNil(t, spec.AutomountServiceAccountToken)
			assert.False(t, *spec.AutomountServiceAccountToken)
			assert.NotEqual(t, "default", spec.ServiceAccountName)
			require.NotNil(t, spec.SecurityContext.SeccompProfile)
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, spec.SecurityContext.SeccompProfile.Type)

			hub := container(t, spec, "hub")
			assert.NotNil(t, hub.StartupProbe, "hub startupProbe")
			assert.NotNil(t, hub.LivenessProbe, "hub livenessProbe")
			assert.NotNil(t, hub.ReadinessProbe, "hub readinessProbe")
			assert.NotEmpty(t, hub.Resources.Requests, "hub resources")
			sc := hub.SecurityContext
			require.NotNil(t, sc)
			assert.True(t, sc.Privileged != nil && !*sc.Privileged, "hub must not be privileged")
			assert.True(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "hub: no privilege escalation")
			require.NotNil(t, sc.Capabilities)
			assert.Contains(t, sc.Capabilities.Drop, corev1.Capability("ALL"))
			for _, cap := range sc.Capabilities.Add {
				assert.Contains(t, allowedHubCaps, cap, "hub capability")
			}
			for _, vm := range hub.VolumeMounts {
				assert.False(t, strings.HasPrefix(vm.MountPath, "/var/run/secrets"), "hub must hold no Kubernetes credentials: %s", vm.MountPath)
			}
			assert.Contains(t, mountPaths(hub), "/projects")
			// smc-compute in the hub container finds the orchestrator's API and the
			// homes through these variables (the names it reads, not copies of them).
			hubEnv := map[string]string{}
			for _, e := range hub.Env {
				hubEnv[e.Name] = e.Value
			}
			assert.Equal(t, smccompute.DefaultAPI, hubEnv[smccompute.EnvAPI], "hub env %s", smccompute.EnvAPI)
			assert.Equal(t, "http://"+strings.TrimPrefix(argValue(orch(t, spec), "--listen"), "http://"), hubEnv[smccompute.EnvAPI], "%s must point at the orchestrator's --listen", smccompute.EnvAPI)
			assert.Contains(t, mountPaths(hub), hubEnv[smccompute.EnvHomes], "%s must be where the hub mounts the homes", smccompute.EnvHomes)

			// The only root init container: chown of the homes root, nothing else.
			for _, ic := range spec.InitContainers {
				require.Equal(t, "homes-owner", ic.Name)
				assert.Equal(t, []string{"chown", "2001:2001", "/projects/home"}, ic.Command)
				require.NotNil(t, ic.SecurityContext.Capabilities)
				assert.Equal(t, []corev1.Capability{"CHOWN"}, ic.SecurityContext.Capabilities.Add)
				assert.Equal(t, true, ptrVal(ic.SecurityContext.ReadOnlyRootFilesystem))
				assert.Equal(t, []string{"/projects/home"}, mountPaths(ic))
			}

			orch := container(t, spec, "orchestrator")
			osc := orch.SecurityContext
			require.NotNil(t, osc)
			assert.Equal(t, ptrVal(osc.RunAsNonRoot), true)
			assert.EqualValues(t, 2001, ptrVal(osc.RunAsUser))
			assert.EqualValues(t, 2001, ptrVal(osc.RunAsGroup))
			assert.Equal(t, true, ptrVal(osc.ReadOnlyRootFilesystem))
			assert.Equal(t, false, ptrVal(osc.AllowPrivilegeEscalation))
			assert.Equal(t, false, ptrVal(osc.Privileged))
			require.NotNil(t, osc.Capabilities)
			assert.Equal(t, []corev1.Capability{"ALL"}, osc.Capabilities.Drop)
			assert.Empty(t, osc.Capabilities.Add)
			require.NotNil(t, orch.LivenessProbe)
			require.NotNil(t, orch.ReadinessProbe)
			assert.Equal(t, "/healthz", orch.LivenessProbe.HTTPGet.Path)
			assert.Equal(t, "/readyz", orch.ReadinessProbe.HTTPGet.Path)
			assert.Equal(t, "health", orch.LivenessProbe.HTTPGet.Port.StrVal)
			assert.Equal(t, int32(8471), orch.Ports[0].ContainerPort)
			assert.Equal(t, "health", orch.Ports[0].Name)
			// The image's ENTRYPOINT is the binary (tools/images/orchestrator/Dockerfile): only args.
			assert.Empty(t, orch.Command)
			require.NotEmpty(t, orch.Args)
			assert.Equal(t, "serve", orch.Args[0])
			for _, arg := range []string{"--template=" + podtemplate.DefaultPath, "--listen=127.0.0.1:8470", "--health-listen=:8471", "--log-format=json"} {
				assert.Contains(t, orch.Args, arg)
			}
			assert.Contains(t, mountPaths(orch), saTokenPath)
			var memLimit *corev1.ResourceFieldSelector
			for _, e := range orch.Env {
				if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil {
					memLimit = e.ValueFrom.ResourceFieldRef
				}
			}
			require.NotNil(t, memLimit, "orchestrator GOMEMLIMIT from its memory limit")
			assert.Equal(t, "orchestrator", memLimit.ContainerName)
			assert.Equal(t, "limits.memory", memLimit.Resource)

			// The projected token volume is exactly what automount would give, for one container.
			var projected *corev1.ProjectedVolumeSource
			for _, v := range spec.Volumes {
				for _, vm := range orch.VolumeMounts {
					if vm.MountPath == saTokenPath && vm.Name == v.Name {
						projected = v.Projected
					}
				}
			}
			require.NotNil(t, projected, "orchestrator token must be a projected volume")
			var hasToken, hasCA, hasNS bool
			for _, s := range projected.Sources {
				switch {
				case s.ServiceAccountToken != nil:
					hasToken = s.ServiceAccountToken.Path == "token"
				case s.ConfigMap != nil:
					hasCA = s.ConfigMap.Name == "kube-root-ca.crt"
				case s.DownwardAPI != nil:
					hasNS = len(s.DownwardAPI.Items) == 1 && s.DownwardAPI.Items[0].FieldRef.FieldPath == "metadata.namespace"
				}
			}
			assert.True(t, hasToken && hasCA && hasNS, "projected token volume: token=%v ca=%v namespace=%v", hasToken, hasCA, hasNS)
		})
	}
}

// Chart-wide pod hardening: no host namespaces or host paths anywhere, pinned
// images, no automounted tokens, nothing privileged (the NFS server included:
// NFS-Ganesha needs four capabilities, see TestNFSServerExports).
func TestPodsAreHardened(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range podSpecs(renderObjects(t, c)) {
				spec := p.spec
				assert.False(t, spec.HostNetwork || spec.HostPID || spec.HostIPC, "%s: host namespaces", p.name)
				require.NotNil(t, spec.AutomountServiceAccountToken, "%s: automountServiceAccountToken must be explicit", p.name)
				assert.False(t, *spec.AutomountServiceAccountToken, "%s", p.name)
				for _, v := range spec.Volumes {
					assert.Nil(t, v.HostPath, "%s: hostPath volume %s", p.name, v.Name)
				}
				for _, ctr := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
					ref := ctr.Image
					_, tag, digest := parsedParts(t, ref)
					assert.True(t, tag != "" || digest != "", "%s/%s: image %s must carry a pinned tag or a digest", p.name, ctr.Name, ref)
					assert.NotEqual(t, "latest", strings.ToLower(tag), "%s/%s: %s", p.name, ctr.Name, ref)
					assert.False(t, strings.HasSuffix(ref, ":latest"), "%s/%s: %s", p.name, ctr.Name, ref)
					require.NotNil(t, ctr.SecurityContext, "%s/%s: securityContext", p.name, ctr.Name)
					assert.False(t, ptrVal(ctr.SecurityContext.Privileged), "%s/%s must not be privileged", p.name, ctr.Name)
					assert.Equal(t, false, ptrVal(ctr.SecurityContext.AllowPrivilegeEscalation), "%s/%s", p.name, ctr.Name)
					require.NotNil(t, ctr.SecurityContext.Capabilities, "%s/%s", p.name, ctr.Name)
					assert.Contains(t, ctr.SecurityContext.Capabilities.Drop, corev1.Capability("ALL"), "%s/%s", p.name, ctr.Name)
				}
			}
		})
	}
}

type namedPodSpec struct {
	name, component string
	labels          map[string]string
	namespace       string
	spec            corev1.PodSpec
}

func podSpecs(m manifests) []namedPodSpec {
	var res []namedPodSpec
	add := func(kind, ns, name string, tpl corev1.PodTemplateSpec) {
		res = append(res, namedPodSpec{kind + "/" + name, tpl.Labels["app.kubernetes.io/component"], tpl.Labels, ns, tpl.Spec})
	}
	for _, d := range all[*appsv1.Deployment](m) {
		add("Deployment", d.Namespace, d.Name, d.Spec.Template)
	}
	for _, s := range all[*appsv1.StatefulSet](m) {
		add("StatefulSet", s.Namespace, s.Name, s.Spec.Template)
	}
	for _, s := range all[*appsv1.DaemonSet](m) {
		add("DaemonSet", s.Namespace, s.Name, s.Spec.Template)
	}
	for _, c := range all[*batchv1.CronJob](m) {
		add("CronJob", c.Namespace, c.Name, c.Spec.JobTemplate.Spec.Template)
	}
	for _, p := range all[*corev1.Pod](m) {
		add("Pod", p.Namespace, p.Name, corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec})
	}
	return res
}

func mountPaths(c corev1.Container) []string {
	var res []string
	for _, vm := range c.VolumeMounts {
		res = append(res, vm.MountPath)
	}
	return res
}

func ptrVal[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// Workload selectors match their own pod labels, and Services select the pods that serve them.
func TestSelectorsMatchPods(t *testing.T) {
	for _, c := range renderCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, c)
			pods := podSpecs(m)
			for _, d := range all[*appsv1.Deployment](m) {
				assert.Subset(t, d.Spec.Template.Labels, d.Spec.Selector.MatchLabels, d.Name)
			}
			for _, s := range all[*appsv1.StatefulSet](m) {
				assert.Subset(t, s.Spec.Template.Labels, s.Spec.Selector.MatchLabels, s.Name)
			}
			for _, s := range all[*appsv1.DaemonSet](m) {
				assert.Subset(t, s.Spec.Template.Labels, s.Spec.Selector.MatchLabels, s.Name)
			}
			for _, svc := range all[*corev1.Service](m) {
				var matched []namedPodSpec
				for _, p := range pods {
					if p.namespace == svc.Namespace && isSubset(svc.Spec.Selector, p.labels) && !strings.HasPrefix(p.name, "Pod/") {
						matched = append(matched, p)
					}
				}
				require.Len(t, matched, 1, "service %s must select exactly one workload", svc.Name)
				for _, port := range svc.Spec.Ports {
					found := false
					for _, ctr := range matched[0].spec.Containers {
						for _, cp := range ctr.Ports {
							if cp.Name == port.TargetPort.StrVal || cp.ContainerPort == port.TargetPort.IntVal {
								found = true
							}
						}
					}
					assert.True(t, found, "service %s port %s targets no container port", svc.Name, port.Name)
				}
			}
		})
	}
}

func isSubset(sub, super map[string]string) bool {
	for k, v := range sub {
		if super[k] != v {
			return false
		}
	}
	return true
}

// PostgreSQL: embedded needs nothing; external takes the password from a
// Secret, the chart's own only when a password is in values (never generated).
func TestPostgreSQLModes(t *testing.T) {
	env := func(c corev1.Container) map[string]corev1.EnvVar {
		res := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			res[e.Name] = e
		}
		return res
	}
	cases := []struct {
		name, secret, key, host string
		chartSecret             bool
	}{
		{name: "default"},
		{name: "ci-external-pg", secret: releaseName + "-postgresql", key: "password", host: "10.20.0.5", chartSecret: true},
		{name: "ci-nfs-external", secret: "pg-credentials", key: "pw", host: "pg.example.org"},
		{name: "database", secret: "cocalc-postgresql", key: "password", host: "postgres.db.example.org"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := renderObjects(t, caseByName(t, tc.name))
			d := serverDeployment(t, m)
			e := env(container(t, d.Spec.Template.Spec, "hub"))
			secrets := all[*corev1.Secret](m)
			if tc.secret == "" {
				assert.NotContains(t, e, "PGHOST")
				assert.NotContains(t, e, "PGPASSWORD")
				assert.Empty(t, secrets)
				return
			}
			assert.Equal(t, tc.host, e["PGHOST"].Value)
			for _, k := range []string{"PGPORT", "PGDATABASE", "PGUSER"} {
				assert.NotEmpty(t, e[k].Value, k)
			}
			pw := e["PGPASSWORD"]
			assert.Empty(t, pw.Value, "the password never appears in the pod spec")
			require.NotNil(t, pw.ValueFrom)
			require.NotNil(t, pw.ValueFrom.SecretKeyRef)
			assert.Equal(t, tc.secret, pw.ValueFrom.SecretKeyRef.Name)
			assert.Equal(t, tc.key, pw.ValueFrom.SecretKeyRef.Key)
			if tc.chartSecret {
				s := one[*corev1.Secret](t, m, tc.secret)
				assert.Equal(t, "not-a-real-password", string(s.Data[tc.key]))
				assert.NotContains(t, d.Spec.Template.Annotations, "checksum/postgresql", "no hash of the password Secret")
			} else {
				assert.Empty(t, secrets, "an existing Secret is used as is")
			}
		})
	}
}

func TestHomesOwnerInitContainer(t *testing.T) {
	for name, want := range map[string]bool{"default": true, "gke": true, "ci-pvc-existing": true, "onprem": false, "ci-nfs-external": false, "kind": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			spec := serverDeployment(t, renderObjects(t, caseByName(t, name))).Spec.Template.Spec
			assert.Equal(t, want, len(spec.InitContainers) == 1, "homes-owner init container")
		})
	}
}

// The server's pod template reveals nothing about the PostgreSQL password: an
// unsalted hash of the chart's Secret (predictable fields plus the password)
// as an annotation would let anyone who may read Deployments test password
// guesses offline. Two passwords give the same Deployment; the checksum of
// the project template's restart fields (no secret in it) still rolls the
// server.
func TestPostgreSQLPasswordLeavesNoTraceInTheServerPod(t *testing.T) {
	files := caseByName(t, "ci-external-pg").files
	server := func(set map[string]string) (*appsv1.Deployment, *corev1.Secret) {
		m := mustDecode(t, render(t, files, set))
		return serverDeployment(t, m), one[*corev1.Secret](t, m, releaseName+"-postgresql")
	}
	d1, s1 := server(map[string]string{"postgresql.external.password": "first-password"})
	d2, s2 := server(map[string]string{"postgresql.external.password": "second-password"})
	require.NotEqual(t, s1.Data, s2.Data, "the Secret holds the password")
	assert.Equal(t, d1.Spec.Template, d2.Spec.Template, "the server pod depends on the password")

	// A template field the orchestrator cannot reload (TestProjectSettingsDoNotRestartServer has the rest).
	d3, _ := server(map[string]string{"postgresql.external.password": "first-password", "projects.timeouts.startSeconds": "333"})
	require.NotEmpty(t, d1.Spec.Template.Annotations["checksum/project-template"])
	assert.NotEqual(t, d1.Spec.Template.Annotations["checksum/project-template"], d3.Spec.Template.Annotations["checksum/project-template"],
		"a project template change the orchestrator cannot reload restarts the server")
}
