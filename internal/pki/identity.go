package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Identity is a component's own cluster certificate and key, kept current:
// Run renews it before it expires, with a fresh key each time, and every TLS
// configuration made from it presents the newest certificate at its next
// handshake, so a rotation needs no restart.
type Identity struct {
	mu      sync.RWMutex
	cert    *tls.Certificate
	cluster string
	// renewAt is when Run renews: two thirds of the way from when this
	// certificate was taken up to its expiry. Counting from NotBefore would
	// count the backdating for clock skew as life already spent.
	renewAt time.Time
}

// NewIdentity reads a certificate and its key (PEM).
func NewIdentity(certPEM, keyPEM []byte) (*Identity, error) {
	id := &Identity{}
	if err := id.set(certPEM, keyPEM); err != nil {
		return nil, err
	}
	return id, nil
}

func (id *Identity) set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("cluster certificate: %w", err)
	}
	cluster, err := ClusterOf(c.Leaf)
	if err != nil {
		return fmt.Errorf("cluster certificate: %w", err)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.cluster != "" && id.cluster != cluster {
		return fmt.Errorf("cluster certificate names cluster %q, not %q", cluster, id.cluster)
	}
	now := time.Now()
	id.cert, id.cluster = &c, cluster
	id.renewAt = now.Add(c.Leaf.NotAfter.Sub(now) * 2 / 3)
	return nil
}

// Cluster is the cluster the certificate names.
func (id *Identity) Cluster() string {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.cluster
}

// Certificate is the current certificate and key.
func (id *Identity) Certificate() *tls.Certificate {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.cert
}

// Expires is when the current certificate expires.
func (id *Identity) Expires() time.Time { return id.Certificate().Leaf.NotAfter }

// ClientConfig is a client configuration presenting the identity and
// trusting roots.
func (id *Identity) ClientConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.Certificate(), nil
		},
	}
}

// RenewFunc asks the control plane for a certificate for the key of csrPEM,
// authenticated as the identity being renewed.
type RenewFunc func(ctx context.Context, csrPEM []byte) (certPEM []byte, err error)

// Run renews the identity until ctx ends: two thirds of the way from taking
// up a certificate to its expiry, leaving a third for retries, it makes a new key, has renew sign it, and switches to
// the result; saved (which may be nil) gets the new certificate and key to
// keep them across a restart. A failed renewal is retried with backoff
// (from one second, at most a minute apart) and reported to onError (which
// may be nil); the current certificate keeps serving until it expires.
func (id *Identity) Run(ctx context.Context, renew RenewFunc, saved func(certPEM, keyPEM []byte) error, onError func(error)) {
	backoff := time.Second
	for {
		id.mu.RLock()
		wait := time.Until(id.renewAt)
		id.mu.RUnlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		id.mu.RLock()
		replaced := time.Now().Before(id.renewAt)
		id.mu.RUnlock()
		if replaced {
			// Replace took up a newer certificate meanwhile.
			continue
		}
		err := id.renewOnce(ctx, renew, saved)
		if err == nil {
			backoff = time.Second
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func (id *Identity) renewOnce(ctx context.Context, renew RenewFunc, saved func(certPEM, keyPEM []byte) error) error {
	keyPEM, csrPEM, err := NewKey()
	if err != nil {
		return err
	}
	certPEM, err := renew(ctx, csrPEM)
	if err != nil {
		return fmt.Errorf("renewing the cluster certificate: %w", err)
	}
	if err := id.set(certPEM, keyPEM); err != nil {
		return fmt.Errorf("renewing the cluster certificate: %w", err)
	}
	if saved != nil {
		if err := saved(certPEM, keyPEM); err != nil {
			return errors.Join(errors.New("renewed, but keeping the certificate failed"), err)
		}
	}
	return nil
}

// IssueIdentity makes a key and has ca sign it for cluster, valid from now
// for ttl: an identity without the join call, for a component that holds
// the CA itself (and for tests).
func (ca *CA) IssueIdentity(cluster string, now time.Time, ttl time.Duration) (*Identity, error) {
	keyPEM, csrPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.Sign(csrPEM, cluster, now, ttl)
	if err != nil {
		return nil, err
	}
	return NewIdentity(certPEM, keyPEM)
}

// Replace switches to another certificate and key of the same cluster, as
// if Run had renewed to them (a certificate another component renewed).
func (id *Identity) Replace(certPEM, keyPEM []byte) error { return id.set(certPEM, keyPEM) }
