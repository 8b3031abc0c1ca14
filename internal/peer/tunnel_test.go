package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	testpki "trellis.dev/trellis/test/pki"

	"trellis.dev/trellis/internal/pki"
)

// A tunnel is full duplex: each line sent is answered before the next is
// sent, over the one HTTP/2 stream; the receiver reads what it needs before
// it accepts; the sender's end of stream reaches the receiver, and the
// receiver's return ends the sender's reads. The delivery carries the
// tunnel's kind and the checked identity.
func TestTunnelIsFullDuplex(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	got := make(chan Delivery, 1)
	srv := &Server{Deliver: func(w http.ResponseWriter, r *http.Request, d Delivery) {
		got <- d
		s := ReceivingStream(w, r)
		br := bufio.NewReader(s)
		first, err := br.ReadString('\n') // before accepting, as a receiver checks a hello
		if err != nil || AcceptTunnel(w) != nil {
			return
		}
		io.WriteString(s, strings.ToUpper(first))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				io.WriteString(s, "end\n")
				return
			}
			io.WriteString(s, strings.ToUpper(line))
		}
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := NewHTTPServer(srv, slog.New(slog.DiscardHandler))
	go hs.Serve(tls.NewListener(ln, TLSConfig(testpki.ClusterIdentity(t, ca, "west"), ca.Pool())))
	defer hs.Close()

	c := NewClient(testpki.ClusterIdentity(t, ca, "east"), ca.Pool())
	defer c.Close()
	c.SetPeers(map[string]string{ln.Addr().String(): "west"})
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	back, err := c.Tunnel(ctx, Request{Cluster: "west", Addr: ln.Addr().String(), TargetGroup: "TargetGroup/g", Target: "127.0.0.1:1",
		Identity: "spiffe://east/ns/shop/sa/web"}, TunnelTCP, []byte("hello\n"), pr)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if d := <-got; d.Tunnel != TunnelTCP || d.Identity != "spiffe://east/ns/shop/sa/web" || d.PeerCluster != "east" {
		t.Errorf("delivery %+v", d)
	}
	br := bufio.NewReader(back)
	for _, line := range []string{"", "second\n", "third\n"} {
		if line != "" {
			io.WriteString(pw, line)
		}
		want := strings.ToUpper(line)
		if line == "" {
			want = "HELLO\n"
		}
		if answer, err := br.ReadString('\n'); err != nil || answer != want {
			t.Fatalf("after %q: %q, %v", line, answer, err)
		}
	}
	pw.Close()
	if answer, err := br.ReadString('\n'); err != nil || answer != "end\n" {
		t.Errorf("after the sender's end: %q, %v", answer, err)
	}
	if _, err := br.ReadString('\n'); err != io.EOF {
		t.Errorf("after the receiver returned: %v, want EOF", err)
	}
}

// Unsent tells the failures that reached no target from the others.
func TestUnsent(t *testing.T) {
	ca, _ := pki.NewCA(time.Now())
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	c := NewClient(testpki.ClusterIdentity(t, ca, "east"), ca.Pool())
	defer c.Close()
	other, _ := pki.NewCA(time.Now())
	west := startPeer(t, other, "west", echo())
	c.SetPeers(map[string]string{closed: "west", west.addr: "west"})
	_, refused := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), Request{Cluster: "west", Addr: closed})
	_, stranger := c.RoundTrip(httptestRequest("GET", "http://shop.example/", nil), Request{Cluster: "west", Addr: west.addr})
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"a peer whose certificate another CA issued", stranger, true},
		{"a marked refusal", &RefusedError{Status: 403, Reason: RefusedNoTarget}, true},
		{"a tunnel whose target failed", &RefusedError{Status: 502}, false},
		{"a connection cut mid-request", io.ErrUnexpectedEOF, false},
		{"the caller's context", context.Canceled, false},
		{"an error of its own", errors.New("x"), false},
	} {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if got := Unsent(tc.err); got != tc.want {
			t.Errorf("%s (%v): Unsent = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
