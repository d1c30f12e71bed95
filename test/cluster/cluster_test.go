package cluster

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTierFromEnv(t *testing.T) {
	tests := []struct {
		env     string
		want    Tier
		wantErr bool
	}{
		{"", TierAPI, false},
		{"api", TierAPI, false},
		{" kind ", TierKind, false},
		{"existing", TierExisting, false},
		{"minikube", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(EnvTier, tc.env)
			got, err := TierFromEnv()
			if tc.wantErr {
				require.ErrorContains(t, err, EnvTier)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestReuseFromEnv(t *testing.T) {
	for env, want := range map[string]bool{"": false, "0": false, "1": true, "true": true, "YES": true, "no": false} {
		t.Setenv(EnvReuse, env)
		require.Equal(t, want, ReuseFromEnv(), "%s=%q", EnvReuse, env)
	}
}

func TestParseCapabilities(t *testing.T) {
	tests := []struct {
		list    string
		def     []Capability
		want    map[Capability]bool
		wantErr string
	}{
		{"", []Capability{RealContainers}, map[Capability]bool{RealContainers: true}, ""},
		{"network-policy, load-balancer", nil, map[Capability]bool{NetworkPolicyEnforced: true, LoadBalancer: true}, ""},
		{"gpu", nil, nil, `unknown capability "gpu"`},
	}
	for _, tc := range tests {
		t.Run(tc.list, func(t *testing.T) {
			got, err := parseCapabilities(tc.list, tc.def)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

// recordingT captures what RequireCapability does to a test.
type recordingT struct{ skipped string }

func (r *recordingT) Helper() {}
func (r *recordingT) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
}

func TestRequireCapability(t *testing.T) {
	tests := []struct {
		name     string
		tier     Tier
		caps     map[Capability]bool
		need     Capability
		wantSkip string // "" = runs
	}{
		{"api tier has no containers", TierAPI, capsOf(TierAPI), RealContainers,
			`needs capability "real-containers", which the api tier (x) does not provide; run with COCALC_TEST_TIER=kind (make cluster-kind)`},
		{"kind enforces policies", TierKind, capsOf(TierKind), NetworkPolicyEnforced, ""},
		{"kind has no load balancer", TierKind, capsOf(TierKind), LoadBalancer,
			`needs capability "load-balancer", which the kind tier (x) does not provide; run against a cluster with a load balancer: COCALC_TEST_TIER=existing COCALC_TEST_CAPABILITIES=load-balancer`},
		{"existing declares", TierExisting, map[Capability]bool{}, NetworkPolicyEnforced,
			`needs capability "network-policy", which the existing tier (x) does not provide; declare it with COCALC_TEST_CAPABILITIES=network-policy if the cluster has it`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Cluster{Tier: tc.tier, Name: "x", caps: tc.caps}
			rec := &recordingT{}
			c.RequireCapability(rec, tc.need)
			require.Equal(t, tc.wantSkip, rec.skipped)
		})
	}
}

func TestTierCapabilities(t *testing.T) {
	// The api tier simulates pods: claiming any capability would let tests
	// pass that prove nothing.
	require.Empty(t, capsOf(TierAPI))
	require.True(t, capsOf(TierKind)[RealContainers])
	require.True(t, capsOf(TierKind)[NetworkPolicyEnforced])
}

func TestNeverPulledImages(t *testing.T) {
	manifest := []byte(`apiVersion: v1
kind: ServiceAccount
metadata: {name: a}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  template:
    spec:
      containers:
      - {name: a, image: local/agent:v1, imagePullPolicy: Never}
      - {name: b, image: registry.example/b:v1}
`)
	require.Equal(t, []string{"local/agent:v1"}, neverPulledImages(manifest))
	require.Nil(t, neverPulledImages([]byte("{")))
}
