package sni

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// serveOnce accepts one connection on a loopback listener and hands it to fn.
func serveOnce(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		fn(c)
	}()
	return ln.Addr().String()
}

// After Peek, the replayed connection carries a complete, real handshake:
// a server terminating TLS on it talks to the client normally.
func TestPeekThenTerminate(t *testing.T) {
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "api.example.com")
	type result struct {
		hello Hello
		err   error
	}
	got := make(chan result, 1)
	addr := serveOnce(t, func(c net.Conn) {
		hello, replay, err := Peek(c, 5*time.Second)
		got <- result{hello, err}
		if err != nil {
			return
		}
		srv := tls.Server(replay, &tls.Config{Certificates: []tls.Certificate{leaf.TLS(t)}, NextProtos: []string{"h2", "http/1.1"}})
		io.Copy(srv, srv) // echo
	})

	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "API.example.com", RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatalf("handshake through the replayed connection: %v", err)
	}
	defer conn.Close()
	r := <-got
	if r.err != nil || r.hello.ServerName != "api.example.com" || len(r.hello.Protos) != 2 || r.hello.Protos[0] != "h2" {
		t.Fatalf("Peek = %+v, %v", r.hello, r.err)
	}
	if conn.ConnectionState().NegotiatedProtocol != "h2" {
		t.Errorf("ALPN = %q", conn.ConnectionState().NegotiatedProtocol)
	}
	msg := []byte("hello through tls")
	conn.Write(msg)
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil || !bytes.Equal(buf, msg) {
		t.Errorf("echo = %q, %v", buf, err)
	}
}

// A client that sends no SNI yields an empty name, not an error.
func TestPeekWithoutSNI(t *testing.T) {
	got := make(chan Hello, 1)
	addr := serveOnce(t, func(c net.Conn) {
		h, _, err := Peek(c, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- h
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake()
	if h := testsync.Receive(t, got, 5*time.Second, "the hello"); h.ServerName != "" {
		t.Errorf("ServerName = %q, want empty", h.ServerName)
	}
}

// Plain text and silence are errors within the timeout, never a hang.
func TestPeekRejectsNonTLS(t *testing.T) {
	for name, send := range map[string][]byte{
		"http":    []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"silence": nil,
	} {
		t.Run(name, func(t *testing.T) {
			errc := make(chan error, 1)
			addr := serveOnce(t, func(c net.Conn) {
				_, _, err := Peek(c, 300*time.Millisecond)
				errc <- err
			})
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(send)
			if err := testsync.Receive(t, errc, 5*time.Second, "Peek's answer"); err == nil {
				t.Error("Peek accepted a connection that is not TLS")
			}
		})
	}
}

func FuzzPeek(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		go func() {
			client.Write(data)
			client.Close()
		}()
		_, replay, err := Peek(server, time.Second)
		if err != nil {
			return
		}
		// The replayed stream is exactly what the client sent.
		got, _ := io.ReadAll(replay)
		if !bytes.Equal(got, data) {
			t.Fatalf("replayed %x, sent %x", got, data)
		}
	})
}
