package model

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// Certificate is a TLS certificate chain and its private key, served by the
// listeners that terminate TLS and name it. A listener with several chooses
// by the client's SNI.
//
// The key travels to every proxy that serves the listener, which is where
// TLS terminates; it is stored with the other objects, as Kubernetes stores
// Secrets.
type Certificate struct {
	Meta
	// CertPEM is the PEM chain, leaf first.
	CertPEM string `json:"certPEM"`
	// KeyPEM is the leaf's PEM private key.
	KeyPEM string     `json:"keyPEM"`
	Source *SourceRef `json:"source,omitempty"`
}

// ObjectMeta implements Object.
func (c *Certificate) ObjectMeta() *Meta { return &c.Meta }

// ObjectKind implements Object.
func (*Certificate) ObjectKind() Kind { return KindCertificate }

// Validate checks that the chain and key parse and belong together.
func (c *Certificate) Validate() error {
	var f fieldErrs
	validateMeta(&f, &c.Meta)
	if _, err := c.Parse(); err != nil {
		f.add("certPEM", "%v", err)
	}
	return f.list.err()
}

// Parse returns the certificate as crypto/tls uses it, with its leaf parsed.
func (c *Certificate) Parse() (tls.Certificate, error) {
	if c.CertPEM == "" || c.KeyPEM == "" {
		return tls.Certificate{}, fmt.Errorf("certPEM and keyPEM are both required")
	}
	cert, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
	if err != nil {
		return tls.Certificate{}, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
	}
	return cert, nil
}

// Expired reports whether the leaf is outside its validity period at now.
func (c *Certificate) Expired(now time.Time) bool {
	cert, err := c.Parse()
	return err != nil || now.Before(cert.Leaf.NotBefore) || now.After(cert.Leaf.NotAfter)
}
