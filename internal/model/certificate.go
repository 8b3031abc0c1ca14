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

// RedactedKey stands in for a private key its reader may not see.
const RedactedKey = "<redacted>"

// Redacted returns a copy of c whose private key is RedactedKey.
func (c *Certificate) Redacted() *Certificate {
	cp := *c
	cp.KeyPEM = RedactedKey
	return &cp
}

// Parse returns the certificate as crypto/tls uses it, with its leaf parsed.
func (c *Certificate) Parse() (tls.Certificate, error) {
	if c.CertPEM == "" || c.KeyPEM == "" {
		return tls.Certificate{}, fmt.Errorf("certPEM and keyPEM are both required")
	}
	if c.KeyPEM == RedactedKey {
		return tls.Certificate{}, fmt.Errorf("the private key is redacted: this cluster serves no listener that names the certificate")
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

// KeyReaders says which clusters may read which certificates' private keys:
// the certificate's owner, and the clusters whose proxies serve it. Those
// are the clusters a network allows (see ServiceNetwork.Allows) when one of
// the network's services that the certificate's owner wrote names it on a
// listener. Naming another cluster's certificate in one's own service
// grants nothing, even in a network of the certificate's owner: a cluster
// allowed into one network of another's would otherwise read the key of
// every certificate that other cluster has.
type KeyReaders struct {
	// servedIn lists, by certificate name, the networks whose services
	// name it, each with the owner of the naming service.
	servedIn map[string][]servedBy
}

type servedBy struct {
	network      *ServiceNetwork
	serviceOwner string
}

// NewKeyReaders indexes which networks serve which certificates.
func NewKeyReaders(networks []*ServiceNetwork, services []*Service) *KeyReaders {
	byName := make(map[string]*ServiceNetwork, len(networks))
	for _, n := range networks {
		byName[n.Name] = n
	}
	k := &KeyReaders{servedIn: map[string][]servedBy{}}
	for _, s := range services {
		n := byName[s.Network]
		if n == nil {
			continue
		}
		for _, l := range s.Listeners {
			for _, name := range l.Certificates {
				k.servedIn[name] = append(k.servedIn[name], servedBy{network: n, serviceOwner: s.Owner})
			}
		}
	}
	return k
}

// KeyReadersPart is what NewKeyReaders reads of s (its name, owner,
// network and listeners' certificates), for a caller that keeps services
// only to make KeyReaders: a copy, sharing the certificate names.
func (s *Service) KeyReadersPart() *Service {
	k := &Service{Meta: Meta{Name: s.Name, Owner: s.Owner}, Network: s.Network}
	for _, l := range s.Listeners {
		if len(l.Certificates) > 0 {
			k.Listeners = append(k.Listeners, Listener{Certificates: l.Certificates})
		}
	}
	return k
}

// CanRead reports whether cluster may read c's private key.
func (k *KeyReaders) CanRead(cluster string, c *Certificate) bool {
	if c.Owner == cluster {
		return true
	}
	for _, sb := range k.servedIn[c.Name] {
		if sb.serviceOwner == c.Owner && sb.network.Allows(cluster) {
			return true
		}
	}
	return false
}
