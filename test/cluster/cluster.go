// Package cluster gives tests a real Kubernetes cluster, by tier:
//
//   - api: a real kube-apiserver, controller-manager, scheduler and etcd on
//     loopback with kwok simulating nodes and pod lifecycles (no containers
//     run). Starts in seconds from bin/kube-cluster (make kube-bin).
//   - kind: a kind cluster whose node image is built offline (make
//     cluster-kind). Real containers, NetworkPolicy enforced.
//   - existing: whatever $KUBECONFIG points at.
//
// The tier comes from COCALC_TEST_TIER (default api). COCALC_TEST_REUSE=1
// uses a cluster already started by `make cluster-api` / `make
// cluster-kind` (state under the repository's .cache/cluster/) instead of
// starting one. Tests ask for what they need with RequireCapability and are
// skipped with the exact reason when the tier lacks it.
//
// A test package shares one cluster between its tests when its TestMain
// calls Main; without Main, each Get starts (and stops) its own.
package cluster

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Tier selects how a cluster is provided.
type Tier string

const (
	TierAPI      Tier = "api"
	TierKind     Tier = "kind"
	TierExisting Tier = "existing"
)

// Environment variables that select and configure the cluster.
const (
	EnvTier         = "COCALC_TEST_TIER"
	EnvReuse        = "COCALC_TEST_REUSE"
	EnvKubeBin      = "COCALC_KUBE_BIN"
	EnvCapabilities = "COCALC_TEST_CAPABILITIES" // existing tier: comma-separated Capability list
)

// Capability is something a test may need that not every tier has.
type Capability string

const (
	// RealContainers: pods run real processes (images are pulled or
	// loaded, exec/logs/port-forward work).
	RealContainers Capability = "real-containers"
	// NetworkPolicyEnforced: a NetworkPolicy actually blocks traffic.
	NetworkPolicyEnforced Capability = "network-policy"
	// LoadBalancer: Services of type LoadBalancer get an address.
	LoadBalancer Capability = "load-balancer"
)

// AllCapabilities lists every Capability, for parsing and messages.
var AllCapabilities = []Capability{RealContainers, NetworkPolicyEnforced, LoadBalancer}

// tierCapabilities are what each tier provides by construction.
var tierCapabilities = map[Tier][]Capability{
	TierAPI:  nil,
	TierKind: {RealContainers, NetworkPolicyEnforced},
	// existing: declared by the user via EnvCapabilities; a real cluster
	// runs containers unless told otherwise.
	TierExisting: {RealContainers},
}

// Options configure Start.
type Options struct {
	// Tier to start; empty means TierFromEnv().
	Tier Tier
	// Nodes is the number of simulated nodes on the api tier (default 3,
	// spread over zones zone-a, zone-b, zone-c).
	Nodes int
	// StateDir holds certificates, kubeconfigs, etcd data and logs. Empty
	// means a fresh temporary directory, removed by Stop.
	StateDir string
	// KubeBinary is the multi-call control-plane binary; empty means
	// $COCALC_KUBE_BIN or <repo>/bin/kube-cluster.
	KubeBinary string
	// Logf receives progress messages (t.Logf, slog...). May be nil.
	Logf func(format string, args ...any)
}

// Cluster is a running cluster a test can use.
type Cluster struct {
	Tier Tier
	// Name identifies the cluster in messages (kind cluster name, state dir).
	Name string
	// KubeconfigPath is an admin kubeconfig (system:masters) for helm and
	// kubectl; RESTConfig and Client are built from it.
	KubeconfigPath string
	RESTConfig     *rest.Config
	Client         kubernetes.Interface
	// StateDir is where the tier keeps its files (logs are under logs/).
	StateDir string

	caps  map[Capability]bool
	owned bool // false when reusing a cluster someone else runs
	stop  func(ctx context.Context) error
	pids  func() []int // control-plane processes this process runs (api tier)
	// restartAPI restarts kube-apiserver in place (api tier started by
	// this process); nil where the tier cannot.
	restartAPI func(ctx context.Context, opts restartOptions) error
}

// TierFromEnv returns the tier selected by COCALC_TEST_TIER (default api).
func TierFromEnv() (Tier, error) {
	v := strings.TrimSpace(os.Getenv(EnvTier))
	switch Tier(v) {
	case "":
		return TierAPI, nil
	case TierAPI, TierKind, TierExisting:
		return Tier(v), nil
	}
	return "", fmt.Errorf("%s=%q: want %s, %s or %s", EnvTier, v, TierAPI, TierKind, TierExisting)
}

// ReuseFromEnv reports whether COCALC_TEST_REUSE asks to reuse a running cluster.
func ReuseFromEnv() bool {
	switch strings.ToLower(strings.TrimSpace(os.Getenv(EnvReuse))) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// Has reports whether the cluster provides c.
func (c *Cluster) Has(capability Capability) bool { return c.caps[capability] }

// Capabilities lists what the cluster provides, sorted.
func (c *Cluster) Capabilities() []Capability {
	out := make([]Capability, 0, len(c.caps))
	for k, ok := range c.caps {
		if ok {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// skipper is the part of testing.TB RequireCapability uses.
type skipper interface {
	Helper()
	Skipf(format string, args ...any)
}

// RequireCapability skips the test, saying exactly why, unless the cluster
// provides capability.
func (c *Cluster) RequireCapability(t skipper, capability Capability) {
	t.Helper()
	if c.Has(capability) {
		return
	}
	t.Skipf("needs capability %q, which the %s tier (%s) does not provide; %s",
		capability, c.Tier, c.Name, capabilityHint(c.Tier, capability))
}

// capabilityHint tells the reader how to get a cluster that has capability.
func capabilityHint(tier Tier, capability Capability) string {
	switch {
	case tier == TierExisting:
		return fmt.Sprintf("declare it with %s=%s if the cluster has it", EnvCapabilities, capability)
	case capability == LoadBalancer:
		return fmt.Sprintf("run against a cluster with a load balancer: %s=existing %s=%s", EnvTier, EnvCapabilities, capability)
	default:
		return fmt.Sprintf("run with %s=kind (make cluster-kind)", EnvTier)
	}
}

// Stop tears the cluster down if this process started it; a reused or
// existing cluster is left running.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.owned || c.stop == nil {
		return nil
	}
	stop := c.stop
	c.stop = nil
	return stop(ctx)
}

// Start brings up (or attaches to) a cluster of opts.Tier.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Tier == "" {
		tier, err := TierFromEnv()
		if err != nil {
			return nil, err
		}
		opts.Tier = tier
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	switch opts.Tier {
	case TierAPI:
		return startAPI(ctx, opts)
	case TierKind:
		return attachKind(ctx, opts)
	case TierExisting:
		return attachExisting(ctx)
	}
	return nil, fmt.Errorf("unknown tier %q", opts.Tier)
}

// attachExisting uses $KUBECONFIG (or ~/.kube/config) as is.
func attachExisting(ctx context.Context) (*Cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	path := os.Getenv("KUBECONFIG")
	if path == "" {
		path = rules.GetDefaultFilename()
	}
	caps, err := parseCapabilities(os.Getenv(EnvCapabilities), tierCapabilities[TierExisting])
	if err != nil {
		return nil, err
	}
	c, err := connect(ctx, TierExisting, path, path)
	if err != nil {
		return nil, err
	}
	c.caps = caps
	return c, nil
}

// parseCapabilities reads a comma-separated list; empty means def.
func parseCapabilities(list string, def []Capability) (map[Capability]bool, error) {
	out := map[Capability]bool{}
	if strings.TrimSpace(list) == "" {
		for _, c := range def {
			out[c] = true
		}
		return out, nil
	}
	known := map[Capability]bool{}
	for _, c := range AllCapabilities {
		known[c] = true
	}
	for _, f := range strings.Split(list, ",") {
		c := Capability(strings.TrimSpace(f))
		if c == "" {
			continue
		}
		if !known[c] {
			return nil, fmt.Errorf("%s: unknown capability %q (known: %v)", EnvCapabilities, c, AllCapabilities)
		}
		out[c] = true
	}
	return out, nil
}

// capsOf returns the fixed capability set of a tier.
func capsOf(tier Tier) map[Capability]bool {
	out := map[Capability]bool{}
	for _, c := range tierCapabilities[tier] {
		out[c] = true
	}
	return out
}

// connect builds clients from a kubeconfig and checks the server answers.
func connect(ctx context.Context, tier Tier, name, kubeconfig string) (*Cluster, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", kubeconfig, err)
	}
	if _, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return nil, fmt.Errorf("%s cluster %s is not ready: %w", tier, name, err)
	}
	return &Cluster{Tier: tier, Name: name, KubeconfigPath: kubeconfig, RESTConfig: cfg, Client: client}, nil
}
