package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPKIChainsAndNames(t *testing.T) {
	p, err := newPKI()
	require.NoError(t, err)

	roots := x509.NewCertPool()
	roots.AddCert(p.CA.cert)
	frontRoots := x509.NewCertPool()
	frontRoots.AddCert(p.FrontProxyCA.cert)

	dns, ips := apiServerSANs()
	for _, name := range dns {
		_, err := p.APIServer.cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
		require.NoError(t, err, "apiserver cert must be valid for %s", name)
	}
	for _, ip := range ips {
		_, err := p.APIServer.cert.Verify(x509.VerifyOptions{DNSName: ip.String(), Roots: roots})
		require.NoError(t, err, "apiserver cert must be valid for %s", ip)
	}
	_, err = p.APIServer.cert.Verify(x509.VerifyOptions{DNSName: "example.org", Roots: roots})
	require.Error(t, err, "apiserver cert must not be valid for other names")

	clientUse := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tests := []struct {
		name     string
		kp       *keyPair
		roots    *x509.CertPool
		wantCN   string
		wantOrgs []string
	}{
		{"admin", p.Admin, roots, "cocalc-test-admin", []string{"system:masters"}},
		{"controller-manager", p.ControllerMgr, roots, "system:kube-controller-manager", nil},
		{"scheduler", p.Scheduler, roots, "system:kube-scheduler", nil},
		{"front-proxy", p.FrontProxy, frontRoots, "front-proxy-client", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.kp.cert.Verify(x509.VerifyOptions{Roots: tc.roots, KeyUsages: clientUse})
			require.NoError(t, err)
			require.Equal(t, tc.wantCN, tc.kp.cert.Subject.CommonName)
			require.Equal(t, tc.wantOrgs, tc.kp.cert.Subject.Organization)
			// The PEM pair must load as a TLS client certificate.
			_, err = tls.X509KeyPair(tc.kp.CertPEM, tc.kp.KeyPEM)
			require.NoError(t, err)
		})
	}
	// The front-proxy client must not be trusted by the main CA (the API
	// server would otherwise accept it as a normal client).
	_, err = p.FrontProxy.cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: clientUse})
	require.Error(t, err)
}

func TestPKIWrite(t *testing.T) {
	p, err := newPKI()
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "pki")
	require.NoError(t, p.write(dir))
	for _, f := range []string{"ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "front-proxy-ca.crt",
		"front-proxy-client.crt", "front-proxy-client.key", "sa.key", "sa.pub", "apiserver-kubelet.crt", "apiserver-kubelet.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "%s holds secrets or is read by processes of the same user only", f)
	}
	data, err := os.ReadFile(filepath.Join(dir, "sa.pub"))
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	require.NoError(t, err)
	require.True(t, p.ServiceAccount.PublicKey.Equal(pub))
}

func TestAPIServerSANsIncludeServiceIP(t *testing.T) {
	// 10.96.0.1 is the first address of serviceCIDR: the kubernetes
	// Service, which pods use to reach the API server.
	_, cidr, err := net.ParseCIDR(serviceCIDR)
	require.NoError(t, err)
	_, ips := apiServerSANs()
	found := false
	for _, ip := range ips {
		if cidr.Contains(ip) {
			found = true
			require.Equal(t, "10.96.0.1", ip.String())
		}
	}
	require.True(t, found)
}
