package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parsePEMCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignAndVerify(t *testing.T) {
	ca := mustCA(t)
	_, csr, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csr, "east", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := parsePEMCert(t, certPEM)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		got, err := ca.Verify([]*x509.Certificate{cert}, t0.Add(time.Minute), usage)
		if err != nil || got != "east" {
			t.Fatalf("Verify(usage %v) = %q, %v; want east", usage, got, err)
		}
	}
	if got := cert.NotAfter.Sub(t0); got != time.Hour {
		t.Errorf("lifetime %v, want 1h", got)
	}
	if _, err := ca.Verify([]*x509.Certificate{cert}, t0.Add(2*time.Hour), x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("an expired certificate verified")
	}
	if _, err := mustCA(t).Verify([]*x509.Certificate{cert}, t0, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("another CA's certificate verified")
	}

	// The CA survives a round trip through PEM, as the store keeps it.
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Verify([]*x509.Certificate{cert}, t0, x509.ExtKeyUsageClientAuth); err != nil || got != "east" {
		t.Errorf("reloaded CA: %q, %v", got, err)
	}
}

// A request cannot choose its identity: names, URIs and extensions it asks
// for are ignored, and the certificate names only the cluster the CA was
// told.
func TestSignIgnoresWhatTheRequestAsksFor(t *testing.T) {
	ca := mustCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	evil, _ := url.Parse("spiffe://trellis/cluster/west")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "west"},
		DNSNames: []string{"west.example"},
		URIs:     []*url.URL{evil},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(pemBlock("CERTIFICATE REQUEST", der), "east", t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := parsePEMCert(t, certPEM)
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://trellis/cluster/east" || len(cert.DNSNames) != 0 || cert.Subject.CommonName != "east" {
		t.Errorf("certificate names URIs %v, DNS %v, CN %q", cert.URIs, cert.DNSNames, cert.Subject.CommonName)
	}
	if cert.IsCA {
		t.Error("issued certificate is a CA")
	}
}

func TestSignRefuses(t *testing.T) {
	ca := mustCA(t)
	_, csr, _ := NewKey()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	// The same request with the last byte of its signature changed.
	block, _ := pem.Decode(csr)
	der := append([]byte{}, block.Bytes...)
	der[len(der)-1] ^= 1
	tampered := pemBlock("CERTIFICATE REQUEST", der)
	for name, tc := range map[string]struct {
		csr     []byte
		cluster string
		ttl     time.Duration
		want    string
	}{
		"bad cluster":     {csr, "East_1", time.Hour, "not a valid cluster name"},
		"zero lifetime":   {csr, "east", 0, "out of range"},
		"long lifetime":   {csr, "east", MaxCertLifetime + time.Second, "out of range"},
		"not PEM":         {[]byte("hello"), "east", time.Hour, "CERTIFICATE REQUEST"},
		"two blocks":      {append(append([]byte{}, csr...), csr...), "east", time.Hour, "exactly one"},
		"RSA key":         {pemBlock("CERTIFICATE REQUEST", rsaDER), "east", time.Hour, "not accepted"},
		"bad signature":   {tampered, "east", time.Hour, "verification failure"},
		"wrong PEM block": {pemBlock("CERTIFICATE", []byte{1}), "east", time.Hour, "CERTIFICATE REQUEST"},
	} {
		if _, err := ca.Sign(tc.csr, tc.cluster, t0, tc.ttl); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestSignNeverOutlivesTheRoot(t *testing.T) {
	ca := mustCA(t)
	_, csr, _ := NewKey()
	late := ca.cert.NotAfter.Add(-time.Hour)
	certPEM, err := ca.Sign(csr, "east", late, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := parsePEMCert(t, certPEM).NotAfter; got.After(ca.cert.NotAfter) {
		t.Errorf("certificate expires %v, after its root %v", got, ca.cert.NotAfter)
	}
}

func TestClusterOf(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	for _, tc := range []struct {
		uris []*url.URL
		want string // "" = refused
	}{
		{[]*url.URL{u("spiffe://trellis/cluster/east")}, "east"},
		{[]*url.URL{u("spiffe://trellis/cluster/east.1")}, "east.1"},
		{nil, ""},
		{[]*url.URL{u("spiffe://trellis/cluster/east"), u("spiffe://trellis/cluster/west")}, ""},
		{[]*url.URL{u("spiffe://other/cluster/east")}, ""},
		{[]*url.URL{u("https://trellis/cluster/east")}, ""},
		{[]*url.URL{u("spiffe://trellis/ns/a/sa/b")}, ""},
		{[]*url.URL{u("spiffe://trellis/cluster/East")}, ""},
		{[]*url.URL{u("spiffe://trellis/cluster/east/x")}, ""},
		{[]*url.URL{u("spiffe://trellis/cluster/east?x=1")}, ""},
		{[]*url.URL{u("spiffe://trellis/cluster/")}, ""},
	} {
		got, err := ClusterOf(&x509.Certificate{URIs: tc.uris})
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("ClusterOf(%v) = %q, %v; want %q", tc.uris, got, err, tc.want)
		}
	}
}

func TestParseCARefuses(t *testing.T) {
	ca := mustCA(t)
	other := mustCA(t)
	otherKey, _ := other.KeyPEM()
	if _, err := ParseCA(ca.CertPEM(), otherKey); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v", err)
	}
	_, csr, _ := NewKey()
	leaf, _ := ca.Sign(csr, "east", t0, time.Hour)
	key, _ := ca.KeyPEM()
	if _, err := ParseCA(leaf, key); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf as CA: %v", err)
	}
	if _, err := ParseCA(ca.CertPEM(), pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte{1}})); err == nil {
		t.Error("a non-key PEM block was taken as the CA key")
	}
}

func TestJoinToken(t *testing.T) {
	tok, err := NewJoinToken()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseJoinToken("  " + tok.String() + "\n")
	if err != nil || got != tok {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, tok)
	}
	other, _ := NewJoinToken()
	if tok == other {
		t.Fatal("two tokens are equal")
	}
	for _, s := range []string{
		"", "trellis-join.", tok.ID + "." + tok.Secret, "trellis-join." + tok.ID,
		"trellis-join." + strings.ToUpper(tok.ID) + "." + tok.Secret,
		"trellis-join." + tok.ID + "." + tok.Secret + "x",
		"trellis-join." + tok.ID + "." + tok.Secret[:42] + "=",
		"trellis-join." + tok.ID + ".." + tok.Secret[1:],
		"trellis-join.zzzzzzzzzzzzzzzz." + tok.Secret,
	} {
		if _, err := ParseJoinToken(s); !errors.Is(err, ErrMalformedToken) {
			t.Errorf("ParseJoinToken(%q) = %v, want ErrMalformedToken", s, err)
		}
	}
}

func TestGrantCheck(t *testing.T) {
	tok, _ := NewJoinToken()
	wrong, _ := NewJoinToken()
	wrong.ID = tok.ID
	fresh := func() *Grant {
		return &Grant{Cluster: "east", SecretHash: tok.SecretHash(), Expires: t0.Add(time.Hour)}
	}
	if err := fresh().Check(tok, t0); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	used := fresh()
	used.Used = t0
	expired := fresh()
	for name, tc := range map[string]struct {
		g    *Grant
		tok  JoinToken
		now  time.Time
		want error
	}{
		"unknown":      {nil, tok, t0, ErrTokenUnknown},
		"wrong secret": {fresh(), wrong, t0, ErrTokenUnknown},
		"used":         {used, tok, t0, ErrTokenUsed},
		"expired":      {expired, tok, t0.Add(time.Hour), ErrTokenExpired},
	} {
		if err := tc.g.Check(tc.tok, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func FuzzParseJoinToken(f *testing.F) {
	tok, _ := NewJoinToken()
	f.Add(tok.String())
	f.Add("trellis-join.0123456789abcdef.")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseJoinToken(s)
		if err != nil {
			return
		}
		// Whatever parses prints back as the trimmed input and parses again.
		if got.String() != strings.TrimSpace(s) {
			t.Fatalf("%q parsed to %q", s, got.String())
		}
		if again, err := ParseJoinToken(got.String()); err != nil || again != got {
			t.Fatalf("reparse of %q: %+v, %v", got.String(), again, err)
		}
	})
}

func FuzzParseCSR(f *testing.F) {
	_, csr, _ := NewKey()
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n"))
	ca, err := NewCA(t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		certPEM, err := ca.Sign(b, "east", t0, time.Hour)
		if err != nil {
			return
		}
		cert, err := parseCertificate(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ca.Verify([]*x509.Certificate{cert}, t0, x509.ExtKeyUsageClientAuth); err != nil || got != "east" {
			t.Fatalf("signed certificate: %q, %v", got, err)
		}
	})
}

// An identity renews itself before expiry with a fresh key, and a TLS
// server sees the new certificate at the next handshake without any
// restart.
func TestIdentityRenews(t *testing.T) {
	ca := mustCA(t)
	const ttl = 3 * time.Second
	issue := func(csr []byte) []byte {
		c, err := ca.Sign(csr, "east", time.Now(), ttl)
		if err != nil {
			t.Error(err)
		}
		return c
	}
	keyPEM, csr, _ := NewKey()
	id, err := NewIdentity(issue(csr), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id.Cluster() != "east" {
		t.Fatalf("cluster %q", id.Cluster())
	}
	first := id.Certificate()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var saved [][]byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		id.Run(ctx, func(_ context.Context, csr []byte) ([]byte, error) { return issue(csr), nil },
			func(certPEM, _ []byte) error { mu.Lock(); saved = append(saved, certPEM); mu.Unlock(); return nil },
			func(err error) { t.Error(err) })
	}()

	// The server checks client certificates against the CA, as the control
	// plane does, and records the serial it saw.
	serials := make(chan string, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serials <- r.TLS.PeerCertificates[0].SerialNumber.String()
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	get := func() string {
		tr := &http.Transport{TLSClientConfig: id.ClientConfig(roots)}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return <-serials
	}
	if got := get(); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("server saw serial %s, want the first certificate's", got)
	}
	// Renewal is due at 2 s; well before the first certificate expires the
	// server must see another one.
	testsync.Poll(ttl-200*time.Millisecond, func() bool { return id.Certificate() != first })
	second := id.Certificate()
	if second == first {
		t.Fatal("not renewed before expiry")
	}
	if got := get(); got != second.Leaf.SerialNumber.String() {
		t.Errorf("server saw serial %s after renewal, want %s", got, second.Leaf.SerialNumber)
	}
	if second.PrivateKey.(*ecdsa.PrivateKey).Equal(first.PrivateKey) {
		t.Error("renewal kept the old key")
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(saved) == 0 {
		t.Error("the renewed certificate was not handed to saved")
	}
}

// A renewal that answers for another cluster is refused: an identity never
// changes the cluster it speaks for.
func TestIdentityKeepsItsCluster(t *testing.T) {
	ca := mustCA(t)
	keyPEM, csr, _ := NewKey()
	certPEM, _ := ca.Sign(csr, "east", time.Now(), time.Hour)
	id, err := NewIdentity(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	err = id.renewOnce(context.Background(), func(_ context.Context, csr []byte) ([]byte, error) {
		return ca.Sign(csr, "west", time.Now(), time.Hour)
	}, nil)
	if err == nil || !strings.Contains(err.Error(), `names cluster "west", not "east"`) {
		t.Errorf("renewal to another cluster: %v", err)
	}
	if id.Cluster() != "east" {
		t.Errorf("cluster is now %q", id.Cluster())
	}
}

func TestServerCertificate(t *testing.T) {
	ca := mustCA(t)
	c, err := ca.ServerCertificate([]string{"127.0.0.1", "cp.example"}, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "cp.example"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host, CurrentTime: t0}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.example", CurrentTime: t0}); err == nil {
		t.Error("verified for a host it does not name")
	}
	if _, err := ClusterOf(c.Leaf); err == nil {
		t.Error("a serving certificate names a cluster")
	}
	if _, err := ca.ServerCertificate(nil, t0, time.Hour); err == nil {
		t.Error("no hosts accepted")
	}
}
