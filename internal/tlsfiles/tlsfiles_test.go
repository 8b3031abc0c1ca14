package tlsfiles

import (
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// writeLeaf writes a leaf for 127.0.0.1 into dir and returns its serial.
func writeLeaf(t *testing.T, ca *pki.CA, dir string, mod time.Time) string {
	t.Helper()
	l := ca.Issue(t, "127.0.0.1", "localhost")
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string][]byte{cert: l.CertPEM, key: l.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	return l.TLS(t).Leaf.SerialNumber.String()
}

// A client trusting the CA file reaches a server presenting the files'
// certificate; the server presents a rotated certificate without a
// restart; a client trusting another CA is refused.
func TestServerAndClient(t *testing.T) {
	defer func(d time.Duration) { checkEvery = d }(checkEvery)
	checkEvery = 50 * time.Millisecond
	dir := t.TempDir()
	ca := pki.NewCA(t)
	first := writeLeaf(t, ca, dir, time.Now().Add(-time.Minute))
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	var reloadErrs []error
	srvCfg, err := Server(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), func(err error) { reloadErrs = append(reloadErrs, err) })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	defer srv.Close()
	url := "https://" + ln.Addr().String()

	cliCfg, err := Client(caFile)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cliCfg, DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(); got != first {
		t.Fatalf("serial %s, want the file's %s", got, first)
	}

	second := writeLeaf(t, ca, dir, time.Now())
	testsync.WaitFor(t, 3*checkEvery, "the rotated certificate to be served", func() bool { return serial() == second })

	// A broken rotation keeps the certificate serving and reports why.
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 3*checkEvery, "a broken key file to be reported", func() bool {
		if got := serial(); got != second {
			t.Fatalf("serial %s after a broken rotation, want %s still", got, second)
		}
		return len(reloadErrs) > 0
	})

	other, err := Client(writeCA(t, pki.NewCA(t)))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: other}}
	if _, err := c.Get(url); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client trusting another CA: %v, want a certificate error", err)
	}
}

func writeCA(t *testing.T, ca *pki.CA) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(f, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Server(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key"), nil); err == nil {
		t.Error("Server with missing files: no error")
	}
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("junk"), 0o600)
	if _, err := Client(junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("Client with a junk CA file: %v", err)
	}
	if cfg, err := Client(""); err != nil || cfg.RootCAs != nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("Client(\"\") = %+v, %v; want system roots, TLS 1.2 at least", cfg, err)
	}
}

// A server that asks for client certificates sees the files' certificate,
// and the rotated one without a restart of the client.
func TestClientCert(t *testing.T) {
	defer func(d time.Duration) { checkEvery = d }(checkEvery)
	checkEvery = 50 * time.Millisecond
	ca := pki.NewCA(t)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "127.0.0.1").TLS(t)}}
	srvCfg.ClientAuth = tls.RequireAndVerifyClientCert
	srvCfg.ClientCAs = ca.Pool()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.TLS.PeerCertificates[0].SerialNumber.String())
	})}
	go srv.Serve(ln)
	defer srv.Close()

	dir := t.TempDir()
	first := writeLeaf(t, ca, dir, time.Now().Add(-time.Minute))
	cfg, err := Client(writeCA(t, ca))
	if err != nil {
		t.Fatal(err)
	}
	if err := ClientCert(cfg, filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil); err != nil {
		t.Fatal(err)
	}
	seen := func() string {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		resp, err := c.Get("https://" + ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := seen(); got != first {
		t.Fatalf("server saw client certificate %s, want the file's %s", got, first)
	}
	second := writeLeaf(t, ca, dir, time.Now())
	testsync.WaitFor(t, 3*checkEvery, "the rotated client certificate to be presented", func() bool { return seen() == second })
	if err := ClientCert(cfg, filepath.Join(dir, "missing.crt"), filepath.Join(dir, "tls.key"), nil); err == nil {
		t.Error("ClientCert with a missing file: no error")
	}
}
