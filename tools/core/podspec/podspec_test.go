package podspec

import (
	"errors"
	"math"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/project"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

var pid = project.MustParse("7b3a4b32-8f0e-4c1a-9d2e-0123456789ab")

func build(t *testing.T, tpl *podtemplate.Template, q podtemplate.Quota) *corev1.Pod {
	t.Helper()
	pod, err := Build(tpl, Input{Project: pid, Request: Request{Quota: q}, NFSServer: "10.96.0.20"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return pod
}

func qty(s string) resource.Quantity { return resource.MustParse(s) }

func TestResources(t *testing.T) {
	tests := []struct {
		name           string
		quota          podtemplate.Quota
		edit           func(*podtemplate.Template)
		limCPU, limMem string
		reqCPU, reqMem string
		gpus           int64
	}{
		{name: "defaults", limCPU: "1", limMem: "1000Mi", reqCPU: "100m", reqMem: "500Mi"},
		{name: "overcommit ratios", quota: podtemplate.Quota{Cores: 2, MemoryMiB: 4000},
			limCPU: "2", limMem: "4000Mi", reqCPU: "200m", reqMem: "2000Mi"},
		{name: "cpu shares raise the request", quota: podtemplate.Quota{Cores: 2, CPUShares: 700},
			limCPU: "2", limMem: "1000Mi", reqCPU: "700m", reqMem: "500Mi"},
		{name: "min request floors", quota: podtemplate.Quota{Cores: 0.2, MemoryMiB: 600},
			limCPU: "200m", limMem: "600Mi", reqCPU: "50m", reqMem: "500Mi"},
		{name: "requests never above limits", quota: podtemplate.Quota{Cores: 0.1, MemoryMiB: 300, CPUShares: 5000},
			limCPU: "100m", limMem: "300Mi", reqCPU: "100m", reqMem: "300Mi"},
		{name: "clamped to max", quota: podtemplate.Quota{Cores: 64, MemoryMiB: 1 << 20},
			limCPU: "4", limMem: "8000Mi", reqCPU: "400m", reqMem: "4000Mi"},
		{name: "clamped to min", quota: podtemplate.Quota{Cores: 0.01, MemoryMiB: 10},
			limCPU: "100m", limMem: "256Mi", reqCPU: "50m", reqMem: "256Mi"},
		{name: "guaranteed with ratio 1", quota: podtemplate.Quota{Cores: 2, MemoryMiB: 2000},
			edit:   func(t *podtemplate.Template) { t.Resources.CPUOvercommit, t.Resources.MemoryOvercommit = 1, 1 },
			limCPU: "2", limMem: "2000Mi", reqCPU: "2", reqMem: "2000Mi"},
		{name: "gpus clamped", quota: podtemplate.Quota{GPUs: 5},
			limCPU: "1", limMem: "1000Mi", reqCPU: "100m", reqMem: "500Mi", gpus: 2},
		{name: "no max means no cap", quota: podtemplate.Quota{Cores: 16},
			edit:   func(t *podtemplate.Template) { t.Resources.Max = podtemplate.Quota{} },
			limCPU: "16", limMem: "1000Mi", reqCPU: "1600m", reqMem: "500Mi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl := fixture.Template()
			if tt.edit != nil {
				tt.edit(tpl)
			}
			r := build(t, tpl, tt.quota).Spec.Containers[0].Resources
			check := func(what string, got resource.Quantity, want string) {
				t.Helper()
				if got.Cmp(qty(want)) != 0 {
					t.Errorf("%s = %s, want %s", what, got.String(), want)
				}
			}
			check("limits.cpu", r.Limits[corev1.ResourceCPU], tt.limCPU)
			check("limits.memory", r.Limits[corev1.ResourceMemory], tt.limMem)
			check("requests.cpu", r.Requests[corev1.ResourceCPU], tt.reqCPU)
			check("requests.memory", r.Requests[corev1.ResourceMemory], tt.reqMem)
			gpu, ok := r.Limits["nvidia.com/gpu"]
			if tt.gpus == 0 && ok {
				t.Errorf("unexpected GPU limit %s", gpu.String())
			}
			if tt.gpus > 0 {
				check("limits.gpu", gpu, resource.NewQuantity(tt.gpus, resource.DecimalSI).String())
				check("requests.gpu", r.Requests["nvidia.com/gpu"], resource.NewQuantity(tt.gpus, resource.DecimalSI).String())
			}
		})
	}
}

func TestEphemeralStorage(t *testing.T) {
	tpl := fixture.Template()
	tpl.Resources.EphemeralStorageLimit = "10Gi"
	r := build(t, tpl, podtemplate.Quota{}).Spec.Containers[0].Resources
	if got := r.Limits[corev1.ResourceEphemeralStorage]; got.Cmp(qty("10Gi")) != 0 {
		t.Fatalf("ephemeral-storage limit %s", got.String())
	}
}

func TestInvalidQuota(t *testing.T) {
	for name, q := range map[string]podtemplate.Quota{
		"negative cores":  {Cores: -1},
		"NaN cores":       {Cores: math.NaN()},
		"inf cores":       {Cores: math.Inf(1)},
		"huge cores":      {Cores: 1e300},
		"negative memory": {MemoryMiB: -5},
		"huge memory":     {MemoryMiB: math.MaxInt64},
		"negative shares": {CPUShares: -1},
		"negative gpus":   {GPUs: -1},
		"negative idle":   {IdleTimeoutSeconds: -1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Build(fixture.Template(), Input{Project: pid, Request: Request{Quota: q}, NFSServer: "10.0.0.1"})
			if !errors.Is(err, ErrInvalidQuota) {
				t.Fatalf("want ErrInvalidQuota, got %v", err)
			}
		})
	}
	tpl := fixture.Template()
	tpl.Resources.GPUResourceName = ""
	tpl.Resources.Max.GPUs = 0
	if _, err := Build(tpl, Input{Project: pid, Request: Request{Quota: podtemplate.Quota{GPUs: 1}}, NFSServer: "10.0.0.1"}); !errors.Is(err, ErrInvalidQuota) {
		t.Fatalf("GPUs without resource name: %v", err)
	}
}

func TestLabelsAndAnnotations(t *testing.T) {
	tpl := fixture.Template()
	tpl.Labels["app.kubernetes.io/instance"] = "cocalc"         // ArgoCD tracking: dropped
	tpl.Labels[podtemplate.LabelProjectID] = "spoofed"          // identity: not overridable
	tpl.Labels[podtemplate.LabelRelease] = "other"              // selector: not overridable
	tpl.Annotations["argocd.argoproj.io/tracking-id"] = "x:y/z" // dropped
	pod := build(t, tpl, podtemplate.Quota{Network: true})
	want := map[string]string{
		podtemplate.LabelRelease:   "cocalc",
		podtemplate.LabelComponent: podtemplate.ComponentProject,
		podtemplate.LabelPartOf:    "cocalc",
		podtemplate.LabelManagedBy: "cocalc-k8s",
		podtemplate.LabelRun:       "project",
		podtemplate.LabelProjectID: pid.String(),
		podtemplate.LabelNetwork:   podtemplate.NetworkOutside,
		"team":                     "math",
	}
	if len(pod.Labels) != len(want) {
		t.Errorf("labels = %v, want %v", pod.Labels, want)
	}
	for k, v := range want {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if _, ok := pod.Annotations["argocd.argoproj.io/tracking-id"]; ok {
		t.Error("ArgoCD tracking annotation copied onto a runtime pod")
	}
	if pod.Annotations["example.com/owner"] != "ops" || pod.Annotations[AnnotationSpecHash] == "" {
		t.Errorf("annotations = %v", pod.Annotations)
	}
	if got := build(t, fixture.Template(), podtemplate.Quota{}).Labels[podtemplate.LabelNetwork]; got != podtemplate.NetworkNone {
		t.Errorf("network label without network quota = %q", got)
	}
	if pod.Name != "project-"+pid.String() || pod.Namespace != fixture.Namespace {
		t.Errorf("name %s/%s", pod.Namespace, pod.Name)
	}
}

func TestSecurityAndContainer(t *testing.T) {
	pod := build(t, fixture.Template(), podtemplate.Quota{})
	s := pod.Spec
	if *s.AutomountServiceAccountToken || *s.EnableServiceLinks || s.RestartPolicy != corev1.RestartPolicyAlways {
		t.Errorf("automount=%v serviceLinks=%v restart=%s", *s.AutomountServiceAccountToken, *s.EnableServiceLinks, s.RestartPolicy)
	}
	sc := s.SecurityContext
	if !*sc.RunAsNonRoot || *sc.RunAsUser != 2001 || *sc.RunAsGroup != 2001 || *sc.FSGroup != 2001 ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v", sc)
	}
	if *s.TerminationGracePeriodSeconds != 10 {
		t.Errorf("grace = %d", *s.TerminationGracePeriodSeconds)
	}
	c := s.Containers[0]
	if *c.SecurityContext.AllowPrivilegeEscalation || len(c.SecurityContext.Capabilities.Drop) != 1 || c.SecurityContext.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container securityContext = %+v", c.SecurityContext)
	}
	if c.Image != "registry.example/cocalc-project:1.2.3" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports[HubPortName] != 6000 || ports[RawPortName] != 6001 {
		t.Errorf("ports = %v", ports)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/health" || c.LivenessProbe.HTTPGet.Port.StrVal != RawPortName {
		t.Errorf("liveness = %+v", c.LivenessProbe)
	}
	if c.Env[0].Name != EnvProjectID || c.Env[0].Value != pid.String() {
		t.Errorf("env[0] = %+v", c.Env[0])
	}
	tpl := fixture.Template()
	tpl.LivenessProbe = false
	tpl.Security.FSGroup = 0
	tpl.RuntimeClassName = "gvisor"
	tpl.Image.PullSecrets = []string{"regcred"}
	pod = build(t, tpl, podtemplate.Quota{})
	if pod.Spec.Containers[0].LivenessProbe != nil || pod.Spec.SecurityContext.FSGroup != nil {
		t.Error("liveness probe or fsGroup set although disabled")
	}
	if *pod.Spec.RuntimeClassName != "gvisor" || pod.Spec.ImagePullSecrets[0].Name != "regcred" {
		t.Error("runtimeClassName or pull secrets not copied")
	}
}

// A template resolver replaces the cluster's (dnsPolicy None); without one
// the pod keeps the API default (ClusterFirst) and its spec hash is unchanged.
func TestDNSConfig(t *testing.T) {
	plain := build(t, fixture.Template(), podtemplate.Quota{})
	if plain.Spec.DNSPolicy != "" || plain.Spec.DNSConfig != nil {
		t.Errorf("no template resolver: dnsPolicy %q dnsConfig %+v", plain.Spec.DNSPolicy, plain.Spec.DNSConfig)
	}
	tpl := fixture.Template()
	tpl.DNSConfig = &corev1.PodDNSConfig{
		Nameservers: []string{"10.0.0.53"},
		Searches:    []string{"svc.cluster.local"},
		Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("2")}},
	}
	pod := build(t, tpl, podtemplate.Quota{})
	if pod.Spec.DNSPolicy != corev1.DNSNone {
		t.Errorf("dnsPolicy = %q, want None", pod.Spec.DNSPolicy)
	}
	if got := pod.Spec.DNSConfig; got == nil || got.Nameservers[0] != "10.0.0.53" || got.Searches[0] != "svc.cluster.local" ||
		got.Options[0].Name != "ndots" || *got.Options[0].Value != "2" {
		t.Errorf("dnsConfig = %+v", got)
	}
	// The pod holds a copy: the template is shared by every start.
	pod.Spec.DNSConfig.Nameservers[0] = "192.0.2.1"
	if tpl.DNSConfig.Nameservers[0] != "10.0.0.53" {
		t.Error("Build shares the template's dnsConfig with the pod")
	}
	if pod.Annotations[AnnotationSpecHash] == plain.Annotations[AnnotationSpecHash] {
		t.Error("spec hash ignores the resolver: running pods would not be seen as stale")
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestEnv(t *testing.T) {
	tpl := fixture.Template()
	tpl.Env = []corev1.EnvVar{{Name: "TZ", Value: "UTC"}, {Name: EnvProjectID, Value: "spoof"}}
	pod, err := Build(tpl, Input{Project: pid, NFSServer: "10.0.0.1",
		Request: Request{Env: map[string]string{"COCALC_EXTRA_ENV": "e30=", "A": "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range pod.Spec.Containers[0].Env {
		names = append(names, e.Name+"="+e.Value)
	}
	want := EnvProjectID + "=" + pid.String() + ",TZ=UTC,A=1,COCALC_EXTRA_ENV=e30="
	if strings.Join(names, ",") != want {
		t.Fatalf("env = %v, want %s", names, want)
	}
	for _, bad := range []map[string]string{{EnvProjectID: "x"}, {"1BAD": "x"}, {"a=b": "x"}, {"": "x"}} {
		if _, err := Build(tpl, Input{Project: pid, NFSServer: "10.0.0.1", Request: Request{Env: bad}}); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("env %v: want ErrInvalidRequest, got %v", bad, err)
		}
	}
}

func TestStorage(t *testing.T) {
	pod := build(t, fixture.Template(), podtemplate.Quota{})
	v := pod.Spec.Volumes[0]
	if v.NFS == nil || v.NFS.Server != "10.96.0.20" || v.NFS.Path != "/"+pid.String() {
		t.Errorf("nfs volume = %+v", v.NFS)
	}
	m := pod.Spec.Containers[0].VolumeMounts[0]
	if m.MountPath != "/home/user" || m.SubPath != "" || m.Name != HomeVolume {
		t.Errorf("mount = %+v", m)
	}

	ext := fixture.Template()
	ext.Storage.NFS = &podtemplate.NFSStorage{Server: "nfs.example", Path: "/export/homes"}
	pod = build(t, ext, podtemplate.Quota{})
	if v := pod.Spec.Volumes[0].NFS; v.Server != "nfs.example" || v.Path != "/export/homes/"+pid.String() {
		t.Errorf("external nfs = %+v", v)
	}

	pod = build(t, fixture.PVCTemplate(), podtemplate.Quota{})
	if v := pod.Spec.Volumes[0]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "cocalc-projects" {
		t.Errorf("pvc volume = %+v", v)
	}
	if m := pod.Spec.Containers[0].VolumeMounts[0]; m.SubPath != "homes/"+pid.String() {
		t.Errorf("pvc subPath = %q", m.SubPath)
	}

	if _, err := Build(fixture.Template(), Input{Project: pid}); err == nil {
		t.Error("NFS service mode without resolved server must fail")
	}
	if _, err := Build(fixture.Template(), Input{Project: project.ID("../x"), NFSServer: "1.2.3.4"}); err == nil {
		t.Error("unvalidated project ID accepted")
	}
}

func TestSpecHash(t *testing.T) {
	a := build(t, fixture.Template(), podtemplate.Quota{Cores: 2})
	b := build(t, fixture.Template(), podtemplate.Quota{Cores: 2})
	if a.Annotations[AnnotationSpecHash] != b.Annotations[AnnotationSpecHash] {
		t.Fatal("hash not deterministic")
	}
	tpl := fixture.Template()
	tpl.Image.Tag = "1.2.4"
	c := build(t, tpl, podtemplate.Quota{Cores: 2})
	if a.Annotations[AnnotationSpecHash] == c.Annotations[AnnotationSpecHash] {
		t.Fatal("template change did not change the hash")
	}
	d := build(t, fixture.Template(), podtemplate.Quota{Cores: 3})
	if a.Annotations[AnnotationSpecHash] == d.Annotations[AnnotationSpecHash] {
		t.Fatal("quota change did not change the hash")
	}
	if h, _ := SpecHash(a); h != a.Annotations[AnnotationSpecHash] {
		t.Fatal("SpecHash of a built pod differs from its annotation")
	}
	req, err := RecordedRequest(a)
	if err != nil || req.Quota.Cores != 2 || req.Quota.MemoryMiB != 1000 || req.Quota.IdleTimeoutSeconds != 1800 {
		t.Fatalf("recorded request = %+v, %v", req, err)
	}
}

func TestValidateCatchesBrokenPods(t *testing.T) {
	for name, edit := range map[string]func(*corev1.Pod){
		"request above limit": func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = qty("100")
		},
		"root":           func(p *corev1.Pod) { *p.Spec.SecurityContext.RunAsNonRoot = false },
		"escalation":     func(p *corev1.Pod) { *p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = true },
		"token":          func(p *corev1.Pod) { *p.Spec.AutomountServiceAccountToken = true },
		"bad label":      func(p *corev1.Pod) { p.Labels["x"] = "not valid!" },
		"argo label":     func(p *corev1.Pod) { p.Labels["app.kubernetes.io/instance"] = "a" },
		"escape subpath": func(p *corev1.Pod) { p.Spec.Containers[0].VolumeMounts[0].SubPath = "../other" },
		"dangling mount": func(p *corev1.Pod) { p.Spec.Volumes = nil },
		"gpu mismatch": func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"] = qty("2")
			p.Spec.Containers[0].Resources.Requests["nvidia.com/gpu"] = qty("1")
		},
	} {
		t.Run(name, func(t *testing.T) {
			pod := build(t, fixture.Template(), podtemplate.Quota{})
			edit(pod)
			if err := Validate(pod); err == nil {
				t.Fatal("Validate accepted a broken pod")
			}
		})
	}
}

func FuzzBuild(f *testing.F) {
	f.Add(1.0, int64(1000), int64(0), false, int64(0), int64(1800), "A", "x")
	f.Add(0.0, int64(0), int64(0), true, int64(1), int64(0), "", "")
	f.Add(0.001, int64(1), int64(999999), false, int64(3), int64(1), "COCALC_EXTRA_ENV", "e30=")
	f.Add(-1.0, int64(-1), int64(-1), false, int64(-1), int64(-1), "1x", "")
	f.Add(math.NaN(), int64(math.MaxInt64), int64(math.MinInt64), true, int64(math.MaxInt64), int64(math.MaxInt64), "a=b", "\x00")
	f.Add(1e308, int64(1<<40), int64(5000), true, int64(2), int64(86400), EnvProjectID, "spoof")
	f.Fuzz(func(t *testing.T, cores float64, mem, shares int64, network bool, gpus, idle int64, envKey, envVal string) {
		q := podtemplate.Quota{Cores: cores, MemoryMiB: mem, CPUShares: shares, Network: network, GPUs: gpus, IdleTimeoutSeconds: idle}
		var env map[string]string
		if envKey != "" {
			env = map[string]string{envKey: envVal}
		}
		for _, tpl := range []*podtemplate.Template{fixture.Template(), fixture.PVCTemplate()} {
			pod, err := Build(tpl, Input{Project: pid, Request: Request{Quota: q, Env: env}, NFSServer: "10.96.0.20"})
			if err != nil {
				if !errors.Is(err, ErrInvalidQuota) && !errors.Is(err, ErrInvalidRequest) {
					t.Fatalf("unexpected error class: %v", err)
				}
				continue
			}
			if err := Validate(pod); err != nil {
				t.Fatalf("Build produced an invalid pod for %+v: %v", q, err)
			}
			r := pod.Spec.Containers[0].Resources
			lim := r.Limits[corev1.ResourceCPU]
			if lim.Cmp(qty("4")) > 0 || lim.Cmp(qty("100m")) < 0 {
				t.Fatalf("cpu limit %s outside template [min,max]", lim.String())
			}
			got, err := RecordedRequest(pod)
			if err != nil {
				t.Fatal(err)
			}
			if got.Quota.Network != (pod.Labels[podtemplate.LabelNetwork] == podtemplate.NetworkOutside) {
				t.Fatalf("network label disagrees with quota")
			}
		}
	})
}

// TestMaxNetworkIsACap: an admin who sets max.network false means no
// project gets internet access, whatever the hub's quota says.
func TestMaxNetworkIsACap(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		request, def, min, maxOK bool
		want                     string
	}{
		{"requested and allowed", true, false, false, true, podtemplate.NetworkOutside},
		{"default and allowed", false, true, false, true, podtemplate.NetworkOutside},
		{"not requested", false, false, false, true, podtemplate.NetworkNone},
		{"requested, max forbids", true, false, false, false, podtemplate.NetworkNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl := fixture.Template()
			tpl.Resources.Default.Network = tc.def
			tpl.Resources.Min.Network = tc.min
			tpl.Resources.Max.Network = tc.maxOK
			if got := build(t, tpl, podtemplate.Quota{Network: tc.request}).Labels[podtemplate.LabelNetwork]; got != tc.want {
				t.Errorf("network label %q, want %q", got, tc.want)
			}
		})
	}
	// A default or minimum that grants what the maximum forbids is a broken
	// template, refused where it is loaded.
	for _, set := range []func(*podtemplate.Resources){
		func(r *podtemplate.Resources) { r.Default.Network = true },
		func(r *podtemplate.Resources) { r.Min.Network = true },
	} {
		tpl := fixture.Template()
		set(&tpl.Resources)
		tpl.Resources.Max.Network = false
		if err := tpl.Validate(); err == nil || !strings.Contains(err.Error(), "max.network false forbids") {
			t.Errorf("contradictory network quota accepted: %v", err)
		}
	}
}
