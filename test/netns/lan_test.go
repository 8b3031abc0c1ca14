package netns

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// Two namespaces on a LAN reach each other's LAN addresses, while each
// keeps LocalRange to itself: both serve on one address of it and each
// reaches only its own.
func TestLANJoinsNamespacesButNotTheirLocalRanges(t *testing.T) {
	lan := NewLAN(t)
	a, b := New(t), New(t)
	lan.Attach(t, a, "192.0.2.10")
	lan.Attach(t, b, "192.0.2.11")

	serve := func(ns *NS, addr, name string) {
		ln, err := ns.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		testsync.ServeConns(t, ln, func(c net.Conn) { io.WriteString(c, name) })
	}
	serve(b, "192.0.2.11:9000", "b-lan")
	serve(a, "198.18.0.50:80", "a-local")
	serve(b, "198.18.0.50:80", "b-local")

	read := func(ns *NS, addr string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := ns.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		bs, err := io.ReadAll(c)
		return string(bs), err
	}
	if got, err := read(a, "192.0.2.11:9000"); err != nil || got != "b-lan" {
		t.Errorf("a → b over the LAN: %q, %v", got, err)
	}
	if got, err := read(a, "198.18.0.50:80"); err != nil || got != "a-local" {
		t.Errorf("a → its own 198.18.0.50: %q, %v", got, err)
	}
	if got, err := read(b, "198.18.0.50:80"); err != nil || got != "b-local" {
		t.Errorf("b → its own 198.18.0.50: %q, %v", got, err)
	}
	if _, err := read(a, "192.0.2.12:9000"); err == nil {
		t.Error("an address nobody holds answered")
	}
}
