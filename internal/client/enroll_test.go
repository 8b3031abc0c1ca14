package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/test/testsync"
)

// issue returns a certificate and key of cluster (one PEM) signed by ca,
// valid for ttl.
func issue(t *testing.T, ca *pki.CA, cluster string, ttl time.Duration) []byte {
	t.Helper()
	keyPEM, csrPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Sign(csrPEM, cluster, time.Now(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return append(certPEM, keyPEM...)
}

func TestCheckIdentity(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	east := issue(t, ca, "east", time.Hour)
	for _, tc := range []struct {
		name        string
		id, ca      []byte
		cluster     string
		wantErrPart string
	}{
		{"good", east, ca.CertPEM(), "east", ""},
		{"any cluster", east, ca.CertPEM(), "", ""},
		{"another cluster's", east, ca.CertPEM(), "west", `names cluster "east", not "west"`},
		{"another CA", east, other.CertPEM(), "east", "does not chain"},
		{"no CA", east, nil, "east", "no CA certificate"},
		{"garbage", []byte("garbage"), ca.CertPEM(), "east", "cluster certificate"},
	} {
		_, err := client.CheckIdentity(tc.id, tc.ca, tc.cluster)
		if tc.wantErrPart == "" && err != nil || tc.wantErrPart != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrPart)) {
			t.Errorf("%s: %v, want error with %q", tc.name, err, tc.wantErrPart)
		}
	}
}

// A component that may not write its identity store (a proxy mounting the
// controller's Secret) takes up the newer certificates written there, and
// nothing else.
func TestFollowIdentity(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := client.DirStore(t.TempDir())
	write := func(idPEM []byte) {
		t.Helper()
		if err := store.Save(ctx, idPEM, ca.CertPEM()); err != nil {
			t.Fatal(err)
		}
	}
	first := issue(t, ca, "east", time.Hour)
	write(first)
	id, err := pki.NewIdentity(first, first)
	if err != nil {
		t.Fatal(err)
	}
	go client.FollowIdentity(ctx, id, store, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	settle := func() { time.Sleep(100 * time.Millisecond) }

	renewed := issue(t, ca, "east", 2*time.Hour)
	write(renewed)
	testsync.WaitFor(t, 5*time.Second, "the renewed certificate to be taken up", func() bool { return time.Until(id.Expires()) >= 90*time.Minute })
	want := id.Certificate()
	for name, idPEM := range map[string][]byte{
		"another cluster's": issue(t, ca, "west", 3*time.Hour),
		"an older one":      issue(t, ca, "east", 30*time.Minute),
		"garbage":           []byte("garbage"),
	} {
		write(idPEM)
		settle()
		if id.Certificate() != want || id.Cluster() != "east" {
			t.Errorf("%s was taken up", name)
		}
	}
}

// After a renewal, requests present the new certificate even where a
// connection made with the old one is still open: the control plane
// refuses a connection's certificate once it expires.
func TestEnrolledClientPresentsRenewedCertificate(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"name": "`+r.TLS.PeerCertificates[0].SerialNumber.String()+`"}]`)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	ctx := context.Background()
	store := client.DirStore(t.TempDir())
	first := issue(t, ca, "east", time.Hour)
	if err := store.Save(ctx, first, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	c, id, err := client.Enroll(ctx, client.Enrollment{Server: srv.URL, Roots: roots, Store: store, Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	seen := func() string {
		t.Helper()
		cl, err := c.Clusters(ctx)
		if err != nil || len(cl) != 1 {
			t.Fatalf("request: %v %v", cl, err)
		}
		return cl[0].Name
	}
	if got, want := seen(), id.Certificate().Leaf.SerialNumber.String(); got != want {
		t.Fatalf("presented %s, want %s", got, want)
	}
	renewed := issue(t, ca, "east", 2*time.Hour)
	if err := id.Replace(renewed, renewed); err != nil {
		t.Fatal(err)
	}
	if got, want := seen(), id.Certificate().Leaf.SerialNumber.String(); got != want {
		t.Errorf("after the renewal presented %s, want the renewed %s", got, want)
	}
}
