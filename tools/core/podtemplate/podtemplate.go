// Package podtemplate defines the project pod template: the document the Helm
// chart writes into the "<release>-project-template" ConfigMap (key
// TemplateKey) and the orchestrator reads from its mounted file.
//
// This type is the single contract between charts/cocalc and tools/. The chart
// render suite (test/chart) decodes the rendered ConfigMap strictly into
// Template and calls Validate; the orchestrator calls Load. A field added on
// one side without the other fails both test suites.
package podtemplate

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// TemplateKey is the ConfigMap data key that holds the template document.
const TemplateKey = "template.yaml"

// DefaultPath is where the server pod mounts the ConfigMap key.
const DefaultPath = "/etc/cocalc/project-template/" + TemplateKey

// SchemaVersion is the only template format version this code understands.
const SchemaVersion = 1

// Storage modes as seen by project pods. The chart's "nfsServer" mode renders
// as ModeNFS with NFS.ServiceName set (the in-cluster NFS server).
const (
	ModeNFS = "nfs"
	ModePVC = "pvc"
)

// Well-known ports of a CoCalc project (the original's KUBERNETES_LOCAL_HUB_PORT
// and KUBERNETES_RAW_PORT).
const (
	HubPort = 6000
	RawPort = 6001
)

// Labels every project pod carries. The chart's NetworkPolicies select on
// LabelComponent (value ComponentProject) plus Template.SelectorLabels, and on
// LabelNetwork for internet egress. The original's "run: project",
// "project_id" and "network" labels are kept so policies written for the
// original keep working.
const (
	LabelComponent = "app.kubernetes.io/component"
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelRun       = "run"
	LabelProjectID = "project_id"
	LabelNetwork   = "network"
	// LabelRelease carries the Helm release name on runtime project pods
	// (in SelectorLabels). It deliberately is not app.kubernetes.io/instance,
	// which ArgoCD's label tracking would claim.
	LabelRelease = "cocalc-kubernetes/release"

	ComponentProject = "project"
	PartOf           = "cocalc"
	ManagedBy        = "cocalc-k8s"
	RunProject       = "project"
	NetworkOutside   = "outside"
	NetworkNone      = "none"
)

// Template is the project pod template document.
type Template struct {
	// Version of this document's format; must equal SchemaVersion.
	Version int `json:"version"`
	// Release is the Helm release that rendered this template.
	Release string `json:"release"`
	// Namespace is where project pods are created.
	Namespace string `json:"namespace"`
	// SelectorLabels are set on every project pod of this release and are the
	// orchestrator's informer selector and the NetworkPolicies' pod selector.
	// They never include ArgoCD tracking labels (app.kubernetes.io/instance).
	SelectorLabels map[string]string `json:"selectorLabels"`
	// Labels and Annotations are extra metadata copied onto every project pod.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`

	Image     Image     `json:"image"`
	Resources Resources `json:"resources"`
	// Security is the identity project processes run as.
	Security Security `json:"security"`
	Storage  Storage  `json:"storage"`

	NodeSelector      map[string]string   `json:"nodeSelector,omitempty"`
	Tolerations       []corev1.Toleration `json:"tolerations,omitempty"`
	Affinity          *corev1.Affinity    `json:"affinity,omitempty"`
	PriorityClassName string              `json:"priorityClassName,omitempty"`
	RuntimeClassName  string              `json:"runtimeClassName,omitempty"`
	// DNSConfig, when set, replaces the cluster resolver of project pods
	// (dnsPolicy None with this dnsConfig): the chart's projects.dns, a
	// resolver that answers only the cluster zone, so that projects without
	// network cannot tunnel data out through DNS queries.
	DNSConfig *corev1.PodDNSConfig `json:"dnsConfig,omitempty"`
	// TerminationGracePeriodSeconds for project pods (stop grace period).
	TerminationGracePeriodSeconds int64 `json:"terminationGracePeriodSeconds"`

	Env          []corev1.EnvVar      `json:"env,omitempty"`
	ExtraVolumes []corev1.Volume      `json:"extraVolumes,omitempty"`
	ExtraMounts  []corev1.VolumeMount `json:"extraVolumeMounts,omitempty"`

	// LivenessProbe enables the original's /health probe on the raw port.
	LivenessProbe bool `json:"livenessProbe"`

	Timeouts Timeouts `json:"timeouts"`
}

// Image is the project container image.
//
// The reference rule, shared with the chart's "cocalc.image" helper: a tag, a
// digest, or both, never neither; "latest" is not a pin. The chart resolves
// an empty tag to its appVersion before writing the template, unless a digest
// is set (then the digest alone pins the image).
type Image struct {
	Repository string `json:"repository"`
	// Tag is a plain tag (no ":" or "@"); "" only with a Digest.
	Tag string `json:"tag"`
	// Digest is "sha256:<64 hex>"; with a Tag the reference is repository:tag@digest.
	Digest      string            `json:"digest,omitempty"`
	PullPolicy  corev1.PullPolicy `json:"pullPolicy"`
	PullSecrets []string          `json:"pullSecrets,omitempty"`
}

// Reference returns "repository:tag", "repository@digest" or
// "repository:tag@digest" (the runtime pulls by digest; the tag is for people).
func (i Image) Reference() string {
	ref := i.Repository
	if i.Tag != "" {
		ref += ":" + i.Tag
	}
	if i.Digest != "" {
		ref += "@" + i.Digest
	}
	return ref
}

var (
	tagPattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestPattern = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// validate reports what makes the image unpinned or its reference invalid.
func (i Image) validate(add func(string, ...any)) {
	if i.Repository == "" {
		add("image.repository: must not be empty")
	}
	switch {
	case i.Tag == "" && i.Digest == "":
		add("image.tag: a pinned tag or image.digest is required")
	case strings.EqualFold(i.Tag, "latest"):
		add("image.tag: must be a pinned tag, got %q", i.Tag)
	case i.Tag != "" && !tagPattern.MatchString(i.Tag):
		add("image.tag: %q is not a tag (put a digest in image.digest)", i.Tag)
	}
	if i.Digest != "" && !digestPattern.MatchString(i.Digest) {
		add("image.digest: %q is not sha256:<64 lowercase hex>", i.Digest)
	}
}

// Quota is a project's run quota in the units the CoCalc hub uses.
type Quota struct {
	// Cores is the CPU limit in cores (fractions allowed).
	Cores float64 `json:"cores"`
	// MemoryMiB is the memory limit in MiB.
	MemoryMiB int64 `json:"memoryMiB"`
	// CPUShares is a CPU request in millicores (the hub's cpu_shares).
	CPUShares int64 `json:"cpuShares"`
	// Network allows internet egress (label network=outside).
	Network bool `json:"network"`
	// GPUs is the number of GPUs (Resources.GPUResourceName).
	GPUs int64 `json:"gpus"`
	// IdleTimeoutSeconds stops the project after this long without activity; 0 never.
	IdleTimeoutSeconds int64 `json:"idleTimeoutSeconds"`
}

// Resources are the rules that turn a Quota into container requests/limits.
type Resources struct {
	// Default is the quota used for fields a start request leaves at zero.
	Default Quota `json:"default"`
	// Min and Max clamp every requested quota (a zero Max number means no
	// cap; Max.Network false means no project gets internet access).
	Min Quota `json:"min"`
	Max Quota `json:"max"`
	// CPUOvercommit and MemoryOvercommit derive requests from limits:
	// request = limit / ratio (ratio 1 means guaranteed).
	CPUOvercommit    float64 `json:"cpuOvercommit"`
	MemoryOvercommit float64 `json:"memoryOvercommit"`
	// MinCPURequestMilli and MinMemoryRequestMiB are floors for requests.
	MinCPURequestMilli  int64 `json:"minCPURequestMilli"`
	MinMemoryRequestMiB int64 `json:"minMemoryRequestMiB"`
	// GPUResourceName is the extended resource for GPUs, e.g. nvidia.com/gpu.
	GPUResourceName corev1.ResourceName `json:"gpuResourceName,omitempty"`
	// EphemeralStorageLimit caps the container's writable layer, e.g. "10Gi".
	EphemeralStorageLimit string `json:"ephemeralStorageLimit,omitempty"`
}

// Security is the fixed non-root identity of project processes (uid/gid 2001
// in the CoCalc project image).
type Security struct {
	RunAsUser  int64 `json:"runAsUser"`
	RunAsGroup int64 `json:"runAsGroup"`
	FSGroup    int64 `json:"fsGroup"`
}

// Storage says where project homes live.
type Storage struct {
	// Mode is ModeNFS or ModePVC.
	Mode string      `json:"mode"`
	NFS  *NFSStorage `json:"nfs,omitempty"`
	PVC  *PVCStorage `json:"pvc,omitempty"`
	// ServerPath is the homes root as mounted in the server pod; the
	// orchestrator creates "<ServerPath>/<project_id>" before a pod starts.
	ServerPath string `json:"serverPath"`
	// MountPath is the home directory inside project pods.
	MountPath string `json:"mountPath"`
}

// NFSStorage mounts "<Path>/<project_id>" from an NFS server.
type NFSStorage struct {
	// Server is a host name or IP the nodes can reach. Empty when
	// ServiceName is set: then the Service's ClusterIP is used (kubelets
	// mount NFS from the node, where cluster DNS usually does not resolve).
	Server      string `json:"server,omitempty"`
	ServiceName string `json:"serviceName,omitempty"`
	// Path is the exported directory that holds one folder per project.
	Path string `json:"path"`
}

// PVCStorage mounts the subPath "<SubPathPrefix>/<project_id>" of a claim.
type PVCStorage struct {
	ClaimName     string `json:"claimName"`
	SubPathPrefix string `json:"subPathPrefix,omitempty"`
}

// Timeouts bound the orchestrator's operations (seconds).
type Timeouts struct {
	StartSeconds   int64 `json:"startSeconds"`
	StopSeconds    int64 `json:"stopSeconds"`
	PendingSeconds int64 `json:"pendingSeconds"`
}

// Load reads and validates a template document from a file.
func Load(file string) (*Template, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read project pod template: %w", err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("project pod template %s: %w", file, err)
	}
	return t, nil
}

// Parse decodes a template document strictly (unknown fields are errors) and
// validates it.
func Parse(data []byte) (*Template, error) {
	var t Template
	if err := yaml.UnmarshalStrict(data, &t); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// Validate reports every problem of the template at once.
func (t *Template) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if t.Version != SchemaVersion {
		add("version: got %d, this orchestrator understands %d", t.Version, SchemaVersion)
	}
	for _, msg := range validation.IsDNS1123Label(t.Namespace) {
		add("namespace %q: %s", t.Namespace, msg)
	}
	if len(t.SelectorLabels) == 0 {
		add("selectorLabels: must not be empty")
	}
	for k, v := range t.SelectorLabels {
		if k == "app.kubernetes.io/instance" {
			add("selectorLabels: %q is ArgoCD's tracking label and must not be set on runtime pods", k)
		}
		checkLabel(add, "selectorLabels", k, v)
	}
	for k, v := range t.Labels {
		checkLabel(add, "labels", k, v)
	}
	t.Image.validate(add)
	switch t.Image.PullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		add("image.pullPolicy: %q is not Always, IfNotPresent or Never", t.Image.PullPolicy)
	}
	t.Resources.validate(add)
	if t.Security.RunAsUser <= 0 || t.Security.RunAsGroup <= 0 {
		add("security: runAsUser and runAsGroup must be non-root (> 0)")
	}
	t.Storage.validate(add)
	if d := t.DNSConfig; d != nil {
		// The API server's limits for dnsPolicy None.
		if n := len(d.Nameservers); n < 1 || n > 3 {
			add("dnsConfig.nameservers: 1 to 3 resolver IPs are required, got %d", n)
		}
		for _, ns := range d.Nameservers {
			if _, err := netip.ParseAddr(ns); err != nil {
				add("dnsConfig.nameservers: %q is not an IP address", ns)
			}
		}
		if len(d.Searches) > 32 {
			add("dnsConfig.searches: at most 32, got %d", len(d.Searches))
		}
	}
	if t.TerminationGracePeriodSeconds < 0 {
		add("terminationGracePeriodSeconds: must be >= 0")
	}
	if t.Timeouts.StartSeconds <= 0 || t.Timeouts.StopSeconds <= 0 || t.Timeouts.PendingSeconds <= 0 {
		add("timeouts: startSeconds, stopSeconds and pendingSeconds must be > 0")
	}
	return errors.Join(errs...)
}

func checkLabel(add func(string, ...any), field, k, v string) {
	for _, msg := range validation.IsQualifiedName(k) {
		add("%s key %q: %s", field, k, msg)
	}
	for _, msg := range validation.IsValidLabelValue(v) {
		add("%s[%q] value %q: %s", field, k, v, msg)
	}
}

func (r Resources) validate(add func(string, ...any)) {
	if r.Default.Cores <= 0 || r.Default.MemoryMiB <= 0 {
		add("resources.default: cores and memoryMiB must be > 0")
	}
	if r.Max.Cores > 0 && r.Min.Cores > r.Max.Cores {
		add("resources: min.cores %v exceeds max.cores %v", r.Min.Cores, r.Max.Cores)
	}
	if r.Max.MemoryMiB > 0 && r.Min.MemoryMiB > r.Max.MemoryMiB {
		add("resources: min.memoryMiB %d exceeds max.memoryMiB %d", r.Min.MemoryMiB, r.Max.MemoryMiB)
	}
	if (r.Default.Network || r.Min.Network) && !r.Max.Network {
		add("resources: default.network or min.network grants internet access that max.network false forbids")
	}
	if r.CPUOvercommit < 1 || r.MemoryOvercommit < 1 {
		add("resources: cpuOvercommit and memoryOvercommit must be >= 1")
	}
	if r.MinCPURequestMilli < 0 || r.MinMemoryRequestMiB < 0 {
		add("resources: minimum requests must be >= 0")
	}
	if r.Default.GPUs > 0 || r.Max.GPUs > 0 {
		if r.GPUResourceName == "" {
			add("resources.gpuResourceName: required when GPUs are allowed")
		}
	}
	if r.EphemeralStorageLimit != "" {
		if _, err := resource.ParseQuantity(r.EphemeralStorageLimit); err != nil {
			add("resources.ephemeralStorageLimit %q: %v", r.EphemeralStorageLimit, err)
		}
	}
}

func (s Storage) validate(add func(string, ...any)) {
	switch s.Mode {
	case ModeNFS:
		if s.NFS == nil {
			add("storage.nfs: required in mode %q", s.Mode)
		} else {
			if (s.NFS.Server == "") == (s.NFS.ServiceName == "") {
				add("storage.nfs: set exactly one of server and serviceName")
			}
			if !path.IsAbs(s.NFS.Path) {
				add("storage.nfs.path %q: must be absolute", s.NFS.Path)
			}
		}
		if s.PVC != nil {
			add("storage.pvc: must be empty in mode %q", s.Mode)
		}
	case ModePVC:
		if s.PVC == nil || s.PVC.ClaimName == "" {
			add("storage.pvc.claimName: required in mode %q", s.Mode)
		} else if p := s.PVC.SubPathPrefix; p != "" && (path.IsAbs(p) || strings.Contains(p, "..")) {
			add("storage.pvc.subPathPrefix %q: must be relative without '..'", p)
		}
		if s.NFS != nil {
			add("storage.nfs: must be empty in mode %q", s.Mode)
		}
	default:
		add("storage.mode: %q is not %q or %q", s.Mode, ModeNFS, ModePVC)
	}
	if !path.IsAbs(s.ServerPath) {
		add("storage.serverPath %q: must be absolute", s.ServerPath)
	}
	if !path.IsAbs(s.MountPath) {
		add("storage.mountPath %q: must be absolute", s.MountPath)
	}
}
