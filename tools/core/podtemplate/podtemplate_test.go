package podtemplate_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"gitlab.com/resurgo/cocalc-kubernetes/tools/core/podtemplate"
	"gitlab.com/resurgo/cocalc-kubernetes/tools/internal/fixture"
)

func TestValidateAcceptsFixtures(t *testing.T) {
	for name, tpl := range map[string]*podtemplate.Template{
		"nfs-service": fixture.Template(),
		"pvc":         fixture.PVCTemplate(),
	} {
		if err := tpl.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Each case breaks one rule; the error must name the offending field so an
// admin reading the orchestrator's log knows which value to fix.
func TestValidateNamesTheBadField(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*podtemplate.Template)
		field  string
	}{
		{"future version", func(t *podtemplate.Template) { t.Version = 2 }, "version"},
		{"bad namespace", func(t *podtemplate.Template) { t.Namespace = "Not_A_Namespace" }, "namespace"},
		{"no selector", func(t *podtemplate.Template) { t.SelectorLabels = nil }, "selectorLabels"},
		{"argocd tracking label", func(t *podtemplate.Template) { t.SelectorLabels["app.kubernetes.io/instance"] = "cocalc" }, "ArgoCD"},
		{"bad label value", func(t *podtemplate.Template) { t.Labels["team"] = "has spaces" }, "labels"},
		{"no image", func(t *podtemplate.Template) { t.Image.Repository = "" }, "image.repository"},
		{"latest tag", func(t *podtemplate.Template) { t.Image.Tag = "latest" }, "image.tag"},
		{"empty tag", func(t *podtemplate.Template) { t.Image.Tag = "" }, "image.tag"},
		{"pull policy", func(t *podtemplate.Template) { t.Image.PullPolicy = "Sometimes" }, "image.pullPolicy"},
		{"zero default cores", func(t *podtemplate.Template) { t.Resources.Default.Cores = 0 }, "resources.default"},
		{"min over max cores", func(t *podtemplate.Template) { t.Resources.Min.Cores = 8 }, "min.cores"},
		{"min over max memory", func(t *podtemplate.Template) { t.Resources.Min.MemoryMiB = 9000 }, "min.memoryMiB"},
		{"overcommit below 1", func(t *podtemplate.Template) { t.Resources.CPUOvercommit = 0.5 }, "cpuOvercommit"},
		{"negative request floor", func(t *podtemplate.Template) { t.Resources.MinCPURequestMilli = -1 }, "minimum requests"},
		{"gpus without resource name", func(t *podtemplate.Template) { t.Resources.GPUResourceName = "" }, "gpuResourceName"},
		{"bad ephemeral storage", func(t *podtemplate.Template) { t.Resources.EphemeralStorageLimit = "lots" }, "ephemeralStorageLimit"},
		{"root uid", func(t *podtemplate.Template) { t.Security.RunAsUser = 0 }, "runAsUser"},
		{"unknown storage mode", func(t *podtemplate.Template) { t.Storage.Mode = "iscsi" }, "storage.mode"},
		{"nfs without block", func(t *podtemplate.Template) { t.Storage.NFS = nil }, "storage.nfs"},
		{"nfs server and service", func(t *podtemplate.Template) { t.Storage.NFS.Server = "10.0.0.5" }, "exactly one of server and serviceName"},
		{"nfs relative path", func(t *podtemplate.Template) { t.Storage.NFS.Path = "exports" }, "storage.nfs.path"},
		{"relative server path", func(t *podtemplate.Template) { t.Storage.ServerPath = "projects" }, "storage.serverPath"},
		{"relative mount path", func(t *podtemplate.Template) { t.Storage.MountPath = "home" }, "storage.mountPath"},
		{"negative grace", func(t *podtemplate.Template) { t.TerminationGracePeriodSeconds = -1 }, "terminationGracePeriodSeconds"},
		{"zero start timeout", func(t *podtemplate.Template) { t.Timeouts.StartSeconds = 0 }, "timeouts"},
		{"pvc without claim", func(t *podtemplate.Template) {
			t.Storage.Mode, t.Storage.NFS, t.Storage.PVC = podtemplate.ModePVC, nil, &podtemplate.PVCStorage{}
		}, "storage.pvc.claimName"},
		{"pvc subPath escape", func(t *podtemplate.Template) {
			t.Storage.Mode, t.Storage.NFS = podtemplate.ModePVC, nil
			t.Storage.PVC = &podtemplate.PVCStorage{ClaimName: "homes", SubPathPrefix: "../other"}
		}, "subPathPrefix"},
		{"pvc absolute subPath", func(t *podtemplate.Template) {
			t.Storage.Mode, t.Storage.NFS = podtemplate.ModePVC, nil
			t.Storage.PVC = &podtemplate.PVCStorage{ClaimName: "homes", SubPathPrefix: "/abs"}
		}, "subPathPrefix"},
		{"dns without nameservers", func(t *podtemplate.Template) {
			t.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"svc.cluster.local"}}
		}, "dnsConfig.nameservers"},
		{"dns with four nameservers", func(t *podtemplate.Template) {
			t.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}}
		}, "dnsConfig.nameservers"},
		{"dns nameserver not an IP", func(t *podtemplate.Template) { t.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"kube-dns"}} }, `"kube-dns" is not an IP`},
		{"pvc with nfs block", func(t *podtemplate.Template) {
			t.Storage.Mode = podtemplate.ModePVC
			t.Storage.PVC = &podtemplate.PVCStorage{ClaimName: "homes"}
		}, "storage.nfs: must be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tpl := fixture.Template()
			tt.mutate(tpl)
			err := tpl.Validate()
			if err == nil {
				t.Fatal("Validate accepted an invalid template")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error does not name %q: %v", tt.field, err)
			}
		})
	}
}

func TestParseRoundTripAndStrictness(t *testing.T) {
	data, err := yaml.Marshal(fixture.Template())
	if err != nil {
		t.Fatal(err)
	}
	got, err := podtemplate.Parse(data)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if got.Storage.NFS.ServiceName != fixture.NFSServiceName {
		t.Fatalf("round trip lost storage.nfs.serviceName: %+v", got.Storage.NFS)
	}

	// A field the orchestrator does not know (e.g. from a newer chart) is an
	// error, never silently ignored.
	if _, err := podtemplate.Parse(append(data, []byte("unknownField: 1\n")...)); err == nil || !strings.Contains(err.Error(), "unknownField") {
		t.Fatalf("unknown field accepted or not named: %v", err)
	}
	if _, err := podtemplate.Parse([]byte("version: [")); err == nil {
		t.Fatal("malformed YAML accepted")
	}
}

func TestLoad(t *testing.T) {
	data, err := yaml.Marshal(fixture.PVCTemplate())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), podtemplate.TemplateKey)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tpl, err := podtemplate.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if tpl.Storage.PVC.ClaimName != "cocalc-projects" {
		t.Fatalf("claim: %q", tpl.Storage.PVC.ClaimName)
	}
	if _, err := podtemplate.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "read project pod template") {
		t.Fatalf("missing file: %v", err)
	}
	if err := os.WriteFile(file, []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := podtemplate.Load(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("invalid file not named in error: %v", err)
	}
}
