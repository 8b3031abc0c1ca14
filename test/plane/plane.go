// Package plane runs a Trellis control plane (internal/server) for tests:
// over a bolt store with its own CA, served over TLS on loopback at an
// address it keeps when it is stopped and started again, with clients for
// the admin, bearer tokens and clusters that joined.
// Test support only; nothing in the product imports it.
package plane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"
	"testing"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/teststore"
)

// AdminToken is the admin bearer token every Plane accepts.
const AdminToken = "admin"

// Plane is a control plane serving on loopback until the test ends.
type Plane struct {
	Store store.Store
	CA    *pki.CA        // issues the clusters' identities
	Roots *x509.CertPool // trusts the serving certificate
	// RootsPEM is Roots' one CA certificate, for a --ca-file.
	RootsPEM []byte

	cfg  server.Config
	cert tls.Certificate
	mu   sync.Mutex
	addr string
	hs   *http.Server
}

// Start serves a control plane configured by cfg, to which it adds
// AdminToken and its CA, over a fresh store.
func Start(t testing.TB, cfg server.Config) *Plane {
	t.Helper()
	st := teststore.Bolt(t)
	ca, err := server.EnsureCA(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CA = ca
	cfg.AdminTokens = map[string]struct{}{AdminToken: {}}
	serving := testpki.NewCA(t)
	p := &Plane{Store: st, CA: ca, Roots: serving.Pool(), RootsPEM: serving.CertPEM, cfg: cfg, cert: serving.Issue(t, "127.0.0.1").TLS(t), addr: "127.0.0.1:0"}
	p.Restart(t)
	t.Cleanup(p.Stop)
	return p
}

// Restart serves a new server, as after a restart, on the same store at
// the same address.
func (p *Plane) Restart(t testing.TB) {
	t.Helper()
	s := server.New(p.Store, p.cfg)
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s, TLSConfig: s.TLSConfig(&tls.Config{Certificates: []tls.Certificate{p.cert}})}
	go hs.ServeTLS(ln, "", "")
	p.mu.Lock()
	p.addr, p.hs = ln.Addr().String(), hs
	p.mu.Unlock()
}

// Stop ends the server and every connection to it: the control plane is
// out of reach until Restart.
func (p *Plane) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hs != nil {
		p.hs.Close()
		p.hs = nil
	}
}

// URL is the server's base URL.
func (p *Plane) URL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "https://" + p.addr
}

// Client returns a client that sends token as its bearer token ("" for
// none).
func (p *Plane) Client(t testing.TB, token string) *client.Client {
	t.Helper()
	return p.client(t, token, &tls.Config{RootCAs: p.Roots})
}

// Admin returns a client with AdminToken.
func (p *Plane) Admin(t testing.TB) *client.Client {
	t.Helper()
	return p.Client(t, AdminToken)
}

// JoinToken admits cluster and returns its one-time join token.
func (p *Plane) JoinToken(t testing.TB, cluster string) string {
	t.Helper()
	added, err := p.Admin(t).AddCluster(context.Background(), cluster, 0)
	if err != nil {
		t.Fatal(err)
	}
	return added.JoinToken
}

// Join admits cluster, exchanges its join token for an identity, and
// returns the identity and a client that authenticates with it alone.
// The join must answer with cluster's name and the plane's CA.
func (p *Plane) Join(t testing.TB, cluster string) (*pki.Identity, *client.Client) {
	t.Helper()
	keyPEM, csr, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Client(t, "").Join(context.Background(), p.JoinToken(t, cluster), csr)
	if err != nil {
		t.Fatal(err)
	}
	if res.Cluster != cluster || res.CA != string(p.CA.CertPEM()) {
		t.Fatalf("join answered cluster %q, CA %q", res.Cluster, res.CA)
	}
	id, err := pki.NewIdentity([]byte(res.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id, p.client(t, "", id.ClientConfig(p.Roots))
}

func (p *Plane) client(t testing.TB, token string, tc *tls.Config) *client.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := client.New(p.URL(), token, client.Options{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
