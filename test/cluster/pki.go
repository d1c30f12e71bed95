package cluster

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certLifetime is generous: a reused developer cluster may live for days.
const certLifetime = 30 * 24 * time.Hour

// keyPair is a certificate with its private key, both PEM encoded.
type keyPair struct {
	cert    *x509.Certificate
	key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// certRequest describes one certificate to issue.
type certRequest struct {
	commonName   string
	organization []string
	dnsNames     []string
	ips          []net.IP
	server       bool
	client       bool
}

// newCA creates a self-signed certificate authority.
func newCA(commonName string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA %q: %w", commonName, err)
	}
	return encodePair(der, key)
}

// issue signs a leaf certificate with ca.
func (ca *keyPair) issue(req certRequest) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %q: %w", req.commonName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.commonName, Organization: req.organization},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     req.dnsNames,
		IPAddresses:  req.ips,
	}
	if req.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if req.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate %q: %w", req.commonName, err)
	}
	return encodePair(der, key)
}

func encodePair(der []byte, key crypto.Signer) (*keyPair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return &keyPair{
		cert:    cert,
		key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would still
		// produce valid (if indistinguishable) certificates.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// pki is every credential the api tier's control plane needs.
type pki struct {
	CA             *keyPair
	APIServer      *keyPair
	Admin          *keyPair
	ControllerMgr  *keyPair
	Scheduler      *keyPair
	Kwok           *keyPair
	KubeletClient  *keyPair
	FrontProxyCA   *keyPair
	FrontProxy     *keyPair
	ServiceAccount *rsa.PrivateKey
}

// apiServerSANs are the names a client may use for the API server: loopback
// from the host, the in-cluster Service IP and DNS names from pods.
func apiServerSANs() ([]string, []net.IP) {
	return []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		}, []net.IP{
			net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1"),
		}
}

// newPKI generates all certificates and keys in memory.
func newPKI() (*pki, error) {
	ca, err := newCA("cocalc-test-cluster-ca")
	if err != nil {
		return nil, err
	}
	frontCA, err := newCA("cocalc-test-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	p := &pki{CA: ca, FrontProxyCA: frontCA}
	dns, ips := apiServerSANs()
	steps := []struct {
		dst *(*keyPair)
		ca  *keyPair
		req certRequest
	}{
		{&p.APIServer, ca, certRequest{commonName: "kube-apiserver", dnsNames: dns, ips: ips, server: true}},
		{&p.Admin, ca, certRequest{commonName: "cocalc-test-admin", organization: []string{"system:masters"}, client: true}},
		{&p.ControllerMgr, ca, certRequest{commonName: "system:kube-controller-manager", client: true}},
		{&p.Scheduler, ca, certRequest{commonName: "system:kube-scheduler", client: true}},
		// kwok acts for many nodes at once, so it is an admin rather than a
		// system:node:<name> identity (the Node authorizer would limit it
		// to a single node).
		{&p.Kwok, ca, certRequest{commonName: "kwok", organization: []string{"system:masters"}, client: true}},
		{&p.KubeletClient, ca, certRequest{commonName: "kube-apiserver-kubelet-client", organization: []string{"system:masters"}, client: true}},
		{&p.FrontProxy, frontCA, certRequest{commonName: "front-proxy-client", client: true}},
	}
	for _, s := range steps {
		kp, err := s.ca.issue(s.req)
		if err != nil {
			return nil, err
		}
		*s.dst = kp
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	p.ServiceAccount = sa
	return p, nil
}

// write stores the files the control-plane flags refer to under dir.
func (p *pki) write(dir string) error {
	saKey, err := x509.MarshalPKCS8PrivateKey(p.ServiceAccount)
	if err != nil {
		return fmt.Errorf("marshal service-account key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&p.ServiceAccount.PublicKey)
	if err != nil {
		return fmt.Errorf("marshal service-account public key: %w", err)
	}
	files := map[string][]byte{
		"ca.crt":                 p.CA.CertPEM,
		"ca.key":                 p.CA.KeyPEM,
		"apiserver.crt":          p.APIServer.CertPEM,
		"apiserver.key":          p.APIServer.KeyPEM,
		"apiserver-kubelet.crt":  p.KubeletClient.CertPEM,
		"apiserver-kubelet.key":  p.KubeletClient.KeyPEM,
		"front-proxy-ca.crt":     p.FrontProxyCA.CertPEM,
		"front-proxy-client.crt": p.FrontProxy.CertPEM,
		"front-proxy-client.key": p.FrontProxy.KeyPEM,
		"sa.key":                 pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saKey}),
		"sa.pub":                 pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pki dir: %w", err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}
