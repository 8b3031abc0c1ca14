package peer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// h2cServer serves h with net/http's server, HTTP/2 with prior knowledge
// only.
func h2cServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func newTarget(t *testing.T, o TargetOptions) *TargetTransport {
	t.Helper()
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	tt := NewTargetTransport(o)
	t.Cleanup(tt.CloseIdleConnections)
	return tt
}

// Over TLS the target's certificate (self-signed here) is not verified,
// no client certificate is presented, and HTTP/2 is negotiated by ALPN.
func TestTargetTransportTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) != 0 || r.ProtoMajor != 2 {
			http.Error(w, "not TLS h2 without a client certificate", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tt := newTarget(t, TargetOptions{TLS: true})
	resp, err := tt.RoundTrip(httptest.NewRequest(http.MethodGet, srv.URL+"/", nil).WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
}

// A TLS target that does not negotiate h2 is an error, not HTTP/1.1.
func TestTargetTransportTLSNotH2(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	tt := newTarget(t, TargetOptions{TLS: true})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	_, err := tt.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "not h2") && !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("err = %v, want a refusal of the protocol", err)
	}
}

func newRequest(t *testing.T, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// Cancelling a request's context resets its stream: the target's handler
// sees its request end.
func TestTargetTransportCancel(t *testing.T) {
	ended := make(chan struct{})
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(ended)
	})
	tt := newTarget(t, TargetOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := tt.RoundTrip(newRequest(t, ctx, http.MethodGet, srv.URL+"/", nil))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the target's request did not end after the cancel")
	}
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("body read after the cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
}

// A response head later than ResponseHeaderTimeout ends the request with
// a timeout error, and the stream is reset.
func TestTargetTransportHeaderTimeout(t *testing.T) {
	ended := make(chan struct{})
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(ended)
	})
	tt := newTarget(t, TargetOptions{ResponseHeaderTimeout: 50 * time.Millisecond})
	_, err := tt.RoundTrip(newRequest(t, context.Background(), http.MethodGet, srv.URL+"/", nil))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the target's request did not end after the timeout")
	}
}

// A request and its response stream both ways at once, and the response's
// trailers (gRPC's status) arrive.
func TestTargetTransportFullDuplexTrailers(t *testing.T) {
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			io.WriteString(w, "echo "+sc.Text()+"\n")
			w.(http.Flusher).Flush()
		}
		w.Header().Set("Grpc-Status", "7")
	})
	tt := newTarget(t, TargetOptions{})
	pr, pw := io.Pipe()
	resp, err := tt.RoundTrip(newRequest(t, context.Background(), http.MethodPost, srv.URL+"/", pr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, m := range []string{"one", "two", "three"} {
		io.WriteString(pw, m+"\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "echo "+m+"\n" {
			t.Fatalf("read %q, %v after sending %q", line, err, m)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "7" {
		t.Errorf("trailer Grpc-Status %q, want 7 (trailers %v)", got, resp.Trailer)
	}
}

// The response head's timeout runs from the end of the request, not its
// head: a request body slower than the timeout is not cut short.
func TestTargetTransportHeaderTimeoutAfterBody(t *testing.T) {
	srv := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	tt := newTarget(t, TargetOptions{ResponseHeaderTimeout: 100 * time.Millisecond})
	pr, pw := io.Pipe()
	go func() {
		for _, m := range []string{"slow ", "body"} {
			time.Sleep(150 * time.Millisecond)
			io.WriteString(pw, m)
		}
		pw.Close()
	}()
	resp, err := tt.RoundTrip(newRequest(t, context.Background(), http.MethodPost, srv.URL+"/", pr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "slow body" {
		t.Fatalf("%q, %v", b, err)
	}
}
