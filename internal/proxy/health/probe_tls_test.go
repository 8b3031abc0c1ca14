package health

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// targetCert is a self-signed certificate for TLS targets, made once.
var targetCert = sync.OnceValues(func() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "check target"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
})

// targetTLS is the TLS of a test target, offering alpn.
func targetTLS(t testing.TB, alpn ...string) *tls.Config {
	t.Helper()
	cert, err := targetCert()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: alpn}
}

// tlsIf serves a rawTarget's connections over TLS when on is set.
func tlsIf(t testing.TB, on bool, serve func(int, net.Conn, *bufio.Reader)) func(int, net.Conn, *bufio.Reader) {
	if !on {
		return serve
	}
	cfg := targetTLS(t)
	return func(n int, conn net.Conn, _ *bufio.Reader) {
		tc := tls.Server(conn, cfg)
		defer tc.Close()
		serve(n, tc, bufio.NewReader(tc))
	}
}
