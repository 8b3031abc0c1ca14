// Package pki is the control plane's certificate authority: the trust root
// that turns a cluster's one-time join token into a short-lived certificate
// naming the cluster, and that every server, controller and proxy checks
// peers against.
//
// A cluster's certificate carries exactly one URI SAN,
// spiffe://trellis/cluster/<name>; the cluster a connection speaks for is
// what that SAN says, never what the peer claims in a header. The package
// owns keys, certificates and join tokens as values; it stores nothing and
// serves nothing (the server keeps the CA and the tokens in its store and
// answers the join and renew calls).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	"trellis.dev/trellis/internal/model"
)

// TrustDomain is the SPIFFE trust domain of cluster identities.
const TrustDomain = "trellis"

// clusterPathPrefix starts the path of a cluster's SPIFFE ID.
const clusterPathPrefix = "/cluster/"

// ClusterID is the SPIFFE ID naming cluster.
func ClusterID(cluster string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: clusterPathPrefix + cluster}
}

// ClusterOf is the cluster a certificate names: its one URI SAN must be a
// cluster ID of this trust domain. A certificate with no such SAN, or more
// than one URI SAN, names no cluster: a peer cannot add a second identity to
// a certificate and have either one believed.
func ClusterOf(cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("certificate has %d URI SANs, want exactly one cluster ID", len(cert.URIs))
	}
	u := cert.URIs[0]
	name, ok := strings.CutPrefix(u.Path, clusterPathPrefix)
	if u.Scheme != "spiffe" || u.Host != TrustDomain || !ok || u.RawQuery != "" || u.Fragment != "" || !model.ValidClusterName(name) {
		return "", fmt.Errorf("certificate's URI SAN %q is not a cluster ID (spiffe://%s%s<name>)", u, TrustDomain, clusterPathPrefix)
	}
	return name, nil
}

// caLifetime is how long a generated CA is valid. Cluster certificates are
// short-lived and renewed; the root is replaced by an operator.
const caLifetime = 10 * 365 * 24 * time.Hour

// clockSkew backdates every certificate so that a peer whose clock is a
// little behind accepts it at once.
const clockSkew = 5 * time.Minute

// CA is a certificate authority: a self-signed root and its key.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	pool    *x509.CertPool
}

// NewCA generates a root (ECDSA P-256) valid for ten years from now.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Trellis control plane CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return ParseCA(pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER))
}

// ParseCA reads a CA from PEM: a CA certificate and its private key
// (PKCS#8, or SEC 1 "EC PRIVATE KEY").
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate: not a CA (basic constraints CA:TRUE and key usage certSign required)")
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", cert.Raw), pool: pool}, nil
}

// CertPEM is the root certificate, for clients to trust.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// KeyPEM is the root's private key (PKCS#8), for the store that keeps it.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// Pool is a pool holding only the root.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// MaxCertLifetime bounds what Sign issues.
const MaxCertLifetime = 7 * 24 * time.Hour

// Sign issues a certificate for the key in csrPEM naming cluster, valid
// from now for ttl (at most MaxCertLifetime, and never past the root's own
// expiry). Everything the request asks for besides its key is ignored: the
// CA alone decides the name, the lifetime and the usages, so a CSR cannot
// smuggle in a second identity. The certificate serves as client and as
// server (a proxy is both to its peers).
func (ca *CA) Sign(csrPEM []byte, cluster string, now time.Time, ttl time.Duration) ([]byte, error) {
	if !model.ValidClusterName(cluster) {
		return nil, fmt.Errorf("%q is not a valid cluster name", cluster)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	der, err := ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cluster, OrganizationalUnit: []string{"trellis cluster"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{ClusterID(cluster)},
	}, csr.PublicKey, now, ttl)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// ServerCertificate issues the control plane's own serving certificate for
// hosts (DNS names or IP addresses), with a fresh key, valid from now for
// ttl (at most MaxCertLifetime). Clients that trust the CA, as every
// joined component does, trust it.
func (ca *CA) ServerCertificate(hosts []string, now time.Time, ttl time.Duration) (*tls.Certificate, error) {
	if len(hosts) == 0 {
		return nil, errors.New("a serving certificate needs at least one host name or address")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0], OrganizationalUnit: []string{"trellis control plane"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := ca.issue(tmpl, key.Public(), now, ttl)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// issue signs tmpl (its names and usages) for pub: a fresh serial, valid
// from now (backdated for clock skew) for ttl, at most MaxCertLifetime and
// never past the root's own expiry, for digital signatures.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([]byte, error) {
	if ttl <= 0 || ttl > MaxCertLifetime {
		return nil, fmt.Errorf("lifetime %v out of range (0, %v]", ttl, MaxCertLifetime)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-clockSkew), now.Add(ttl)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	return x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
}

// Verify checks that chain (leaf first, as a TLS peer presents it) is a
// valid certificate of this CA at now, for usage, and returns the cluster
// it names.
func (ca *CA) Verify(chain []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: ca.pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return "", err
	}
	return ClusterOf(chain[0])
}

// ParseCSR reads a PEM certificate request and checks its signature (the
// requester holds the key).
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("certificate request: want exactly one PEM block of type CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, errors.New("certificate request: ECDSA keys must use P-256 or P-384")
		}
	default:
		return nil, fmt.Errorf("certificate request: key type %T not accepted (use ECDSA P-256)", k)
	}
	return csr, nil
}

// NewKey generates a private key and a certificate request for it, both PEM.
// The request names nothing: the CA decides the identity.
func NewKey() (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("PRIVATE KEY", keyDER), pemBlock("CERTIFICATE REQUEST", csrDER), nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func parseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key type %T cannot sign", k)
		}
		return s, nil
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block of type %q is not a private key", block.Type)
	}
}
