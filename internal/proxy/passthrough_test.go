package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// tlsEcho runs a TLS server on loopback that answers every line with its name.
func tlsEcho(t *testing.T, cert tls.Certificate, name string) string {
	t.Helper()
	return tlsEchoOn(t, cert, name, "127.0.0.1")
}

// tlsEchoOn is tlsEcho listening on host (a loopback address).
func tlsEchoOn(t *testing.T, cert tls.Certificate, name, host string) string {
	t.Helper()
	return serveTLSOn(t, cert, host, func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			c.Write(append([]byte(name+":"), buf[:n]...))
		}
	})
}

// serveTLS runs a TLS server on loopback, with cert, that serves each
// connection with serve and then closes it. It returns the server's
// address.
func serveTLS(t *testing.T, cert tls.Certificate, serve func(net.Conn)) string {
	t.Helper()
	return serveTLSOn(t, cert, "127.0.0.1", serve)
}

// serveTLSOn is serveTLS listening on host (a loopback address).
func serveTLSOn(t *testing.T, cert tls.Certificate, host string, serve func(net.Conn)) string {
	t.Helper()
	ln, err := tls.Listen("tcp", net.JoinHostPort(host, "0"), &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	return testsync.ServeConns(t, ln, serve)
}

func TestPassthroughRoutesBySNIWithoutTerminating(t *testing.T) {
	ca := pki.NewCA(t)
	addrA := tlsEcho(t, ca.Issue(t, "a.example.com").TLS(t), "backend-a")
	addrB := tlsEcho(t, ca.Issue(t, "b.example.com").TLS(t), "backend-b")
	routes := map[string]string{"a.example.com": addrA, "b.example.com": addrB}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newPassthroughServer(ln, func(_, _ net.Addr, name string) (*router.Target, *router.Group, hopClaim) {
		a, ok := routes[name]
		if !ok {
			return nil, nil, hopClaim{}
		}
		return router.NewTarget(a, "", "tg", model.ProtocolTCP, model.HTTP1), nil, hopClaim{}
	}, slog.New(slog.DiscardHandler))
	go srv.serve()
	defer func() { srv.stopAccepting(); srv.drain(context.Background()) }()

	for name, want := range map[string]string{"a.example.com": "backend-a", "B.Example.com": "backend-b"} {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: name, RootCAs: ca.Pool()})
		if err != nil {
			t.Fatalf("%s: handshake through passthrough: %v", name, err)
		}
		// The certificate is the backend's: the proxy did not terminate.
		if got := conn.ConnectionState().PeerCertificates[0].DNSNames[0]; got != strings.ToLower(name) {
			t.Errorf("%s: certificate for %q", name, got)
		}
		conn.Write([]byte("ping"))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != want+":ping" {
			t.Errorf("%s: answer %q, %v", name, buf[:n], err)
		}
		conn.Close()
	}

	// A name no service takes gets its connection closed.
	_, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "c.example.com", RootCAs: ca.Pool()})
	if err == nil {
		t.Error("handshake for an unknown name succeeded")
	}
}

// Draining lets a spliced connection finish, and cuts it when time runs out.
func TestPassthroughDrain(t *testing.T) {
	ca := pki.NewCA(t)
	addr := tlsEcho(t, ca.Issue(t, "a.example.com").TLS(t), "a")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := newPassthroughServer(ln, func(_, _ net.Addr, _ string) (*router.Target, *router.Group, hopClaim) {
		return router.NewTarget(addr, "", "tg", model.ProtocolTCP, model.HTTP1), nil, hopClaim{}
	}, slog.New(slog.DiscardHandler))
	go srv.serve()

	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "a.example.com", RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv.stopAccepting()
	// The open connection still works after the port stopped accepting.
	conn.Write([]byte("x"))
	buf := make([]byte, 16)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "a:x" {
		t.Fatalf("after stopAccepting: %q, %v", buf[:n], err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.drain(ctx); err == nil {
		t.Error("drain returned nil with a connection still open past its deadline")
	}
	// The client sees its connection end, rather than hanging.
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Error("connection still open after drain's deadline")
		}
	}
}
