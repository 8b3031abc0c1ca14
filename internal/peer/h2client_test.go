package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/pki"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// stockPeer is the stock net/http HTTP/2 server (TLS 1.3, the peer
// listener's configuration) on loopback as a proxy of cluster west, and
// east's client to it.
type stockPeer struct {
	addr       string
	srv        *http.Server
	c          *Client
	ca         *pki.CA
	id         *pki.Identity
	handshakes atomic.Int32
	closed     atomic.Int32
	mu         sync.Mutex
	serials    []string // of the client certificates, by connection
}

func startStock(t *testing.T, h http.Handler) *stockPeer {
	t.Helper()
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sp := &stockPeer{ca: ca}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := TLSConfig(testpki.ClusterIdentity(t, ca, "west"), ca.Pool())
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		sp.handshakes.Add(1)
		sp.mu.Lock()
		sp.serials = append(sp.serials, cs.PeerCertificates[0].SerialNumber.String())
		sp.mu.Unlock()
		return verify(cs)
	}
	sp.srv = stockHTTPServer(h)
	sp.srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			sp.closed.Add(1)
		}
	}
	go sp.srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { sp.srv.Close() })
	sp.addr = ln.Addr().String()
	sp.id = testpki.ClusterIdentity(t, ca, "east")
	sp.c = NewClient(sp.id, ca.Pool())
	t.Cleanup(sp.c.Close)
	sp.c.SetPeers(map[string]string{sp.addr: "west"})
	return sp
}

// stockHTTPServer is net/http's server, HTTP/2 only, whatever the peer
// listener serves with.
func stockHTTPServer(h http.Handler) *http.Server {
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols), ErrorLog: log.New(io.Discard, "", 0)}
	srv.Protocols.SetHTTP2(true)
	return srv
}

func (sp *stockPeer) to() Request {
	return Request{Cluster: "west", Addr: sp.addr, TargetGroup: "g", Target: "t:1"}
}

func (sp *stockPeer) send(r *http.Request) (*http.Response, error) { return sp.c.RoundTrip(r, sp.to()) }

// interopHandler answers with what it received, and trailers: the
// request's trailer X-Sent echoed as X-Got, and the body's hash.
func interopHandler(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	sum := sha256.Sum256(b)
	w.Header().Set("Trailer", "X-Got, X-Checksum")
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Peer-Target", r.Header.Get(HeaderTarget))
	w.Header().Set("X-Smuggled", r.Header.Get("Trellis-Peer-Smuggled"))
	if r.URL.Path == "/empty" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	fmt.Fprintf(w, "%s %s %s len=%d", r.Method, r.Host, r.Header.Get("X-Test"), len(b))
	w.Header().Set("X-Got", r.Trailer.Get("X-Sent"))
	w.Header().Set("X-Checksum", hex.EncodeToString(sum[:]))
}

// The client speaks with the stock Go HTTP/2 server: methods, bodies,
// trailers both ways, escaped paths, bodyless answers; the peer protocol's
// fields go and a request's own Trellis-Peer- fields do not.
func TestH2ClientAgainstStockServer(t *testing.T) {
	sp := startStock(t, http.HandlerFunc(interopHandler))
	body := bytes.Repeat([]byte("0123456789"), 10_000)
	sum := sha256.Sum256(body)
	for _, tc := range []struct {
		name, method, target string
		body                 []byte
		trailer              string
		status               int
		want                 string
		wantTrailer          http.Header
	}{
		{name: "GET", method: "GET", target: "http://shop.example/a/b?q=1", status: 200, want: "GET shop.example x len=0",
			wantTrailer: http.Header{"X-Got": {""}, "X-Checksum": {hex.EncodeToString(sha256.New().Sum(nil))}}},
		{name: "escaped path", method: "GET", target: "http://shop.example/a%2Fb/c%20d?x=%41", status: 200, want: "GET shop.example x len=0"},
		{name: "POST with a body", method: "POST", target: "http://shop.example/up", body: body, status: 200,
			want: "POST shop.example x len=100000", wantTrailer: http.Header{"X-Checksum": {hex.EncodeToString(sum[:])}}},
		{name: "trailers both ways", method: "PUT", target: "http://shop.example/t", body: []byte("abc"), trailer: "sent-value", status: 200,
			want: "PUT shop.example x len=3", wantTrailer: http.Header{"X-Got": {"sent-value"}}},
		{name: "204", method: "GET", target: "http://shop.example/empty", status: 204},
		{name: "HEAD", method: "HEAD", target: "http://shop.example/h", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptestRequest(tc.method, tc.target, tc.body)
			r.Header.Set("X-Test", "x")
			r.Header.Set("Trellis-Peer-Smuggled", "yes")
			if tc.trailer != "" {
				// A body of unknown length, its trailer set once read.
				r.ContentLength = -1
				r.Trailer = http.Header{"X-Sent": nil}
				inner := r.Body
				r.Body = readFunc(func(p []byte) (int, error) {
					n, err := inner.Read(p)
					if err == io.EOF {
						r.Trailer.Set("X-Sent", tc.trailer)
					}
					return n, err
				})
			}
			resp, err := sp.send(r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || string(got) != tc.want {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, got, tc.status, tc.want)
			}
			if p := resp.Header.Get("X-Path"); p != r.URL.RequestURI() {
				t.Errorf("path %q, want %q", p, r.URL.RequestURI())
			}
			if resp.Header.Get("X-Peer-Target") != "t:1" || resp.Header.Get("X-Smuggled") != "" {
				t.Errorf("peer target %q, smuggled %q", resp.Header.Get("X-Peer-Target"), resp.Header.Get("X-Smuggled"))
			}
			for k, v := range tc.wantTrailer {
				if resp.Trailer.Get(k) != v[0] {
					t.Errorf("trailer %s: %q, want %q (all: %v)", k, resp.Trailer.Get(k), v[0], resp.Trailer)
				}
			}
		})
	}
	if n := sp.handshakes.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1", n)
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }
func (f readFunc) Close() error               { return nil }

// pattern is a deterministic stream of n bytes, never held whole.
func pattern(n int64) io.Reader {
	rng := rand.NewChaCha8([32]byte{1})
	return io.LimitReader(rng, n)
}

// 64 MiB go each way through one stream of the client; the response is
// read with pauses, and the stream never buffers more than its window,
// nor the process more than a fraction of the body.
func TestH2ClientLargeBodiesBoundedMemory(t *testing.T) {
	const size = 64 << 20
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
			return
		}
		io.Copy(w, pattern(size))
	}))
	want := sha256.New()
	io.Copy(want, pattern(size))
	wantSum := want.Sum(nil)

	// The heap is measured above what it holds before the transfers (other
	// tests' leftovers included).
	heapGrowth := testsync.HeapPeak()
	defer heapGrowth()

	up := httptestRequest("POST", "http://shop.example/up", nil)
	up.Body, up.ContentLength = io.NopCloser(pattern(size)), size
	resp, err := sp.send(up)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != fmt.Sprintf("%d %x", size, wantSum) {
		t.Errorf("upload: the server got %q", got)
	}

	resp, err = sp.send(httptestRequest("GET", "http://shop.example/down", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		h.Write(buf[:k])
		n += int64(k)
		if n%(8<<20) < int64(k) {
			// A pause: the server may send only what the window allows.
			time.Sleep(50 * time.Millisecond)
			s := resp.Body.(*h2Stream)
			s.cc.mu.Lock()
			buffered := s.buffered
			s.cc.mu.Unlock()
			if buffered > h2StreamWindow {
				t.Fatalf("the stream buffers %d bytes, more than its window %d", buffered, h2StreamWindow)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != size || !bytes.Equal(h.Sum(nil), wantSum) {
		t.Errorf("download: %d bytes, hash differs: %v", n, !bytes.Equal(h.Sum(nil), wantSum))
	}
	if grew := heapGrowth(); grew > 32<<20 {
		t.Errorf("heap in use grew by %d MiB at most moving 64 MiB each way", grew>>20)
	} else {
		t.Logf("heap in use grew by %d MiB at most", grew>>20)
	}
}

// Many concurrent streams share at most connsPerPeer connections, each
// getting its own answer.
func TestH2ClientConcurrentStreams(t *testing.T) {
	sp := startStock(t, http.HandlerFunc(interopHandler))
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := range 100 {
		wg.Go(func() {
			for j := range 4 {
				body := []byte(strings.Repeat(strconv.Itoa(i*10+j), 1+i*7))
				resp, err := sp.send(httptestRequest("POST", "http://shop.example/", body))
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				sum := sha256.Sum256(body)
				if want := fmt.Sprintf("POST shop.example  len=%d", len(body)); err != nil || string(got) != want || resp.Trailer.Get("X-Checksum") != hex.EncodeToString(sum[:]) {
					errs <- fmt.Errorf("request %d/%d: %q, %v, want %q", i, j, got, err, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := sp.handshakes.Load(); n < 1 || n > connsPerPeer {
		t.Errorf("%d connections, want 1 to %d", n, connsPerPeer)
	}
}

// Cancelling a request's context resets its stream: before the response
// head the round trip returns the context's error, during the body the
// reads do; either way the server's handler sees its request end.
func TestH2ClientCancellation(t *testing.T) {
	ended := make(chan string, 2)
	started := make(chan struct{}, 2)
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Write([]byte("first part"))
			w.(http.Flusher).Flush()
		}
		started <- struct{}{}
		<-r.Context().Done()
		ended <- r.URL.Path
	}))
	for _, path := range []string{"/head", "/body"} {
		ctx, cancel := context.WithCancel(context.Background())
		r := httptestRequest("GET", "http://shop.example"+path, nil).WithContext(ctx)
		if path == "/head" {
			// Cancelled once the server has the request: a request
			// cancelled before it left is never seen by the handler.
			go func() { <-started; cancel() }()
			if _, err := sp.send(r); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v, want the context's error", path, err)
			}
		} else {
			resp, err := sp.send(r)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 10)
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first part" {
				t.Fatalf("%s: %q, %v", path, buf, err)
			}
			<-started
			cancel()
			if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: read after cancel: %v", path, err)
			}
			resp.Body.Close()
		}
		if got := testsync.Receive(t, ended, 5*time.Second, path+": the stream reset seen by the server's handler"); got != path {
			t.Errorf("ended %s, want %s", got, path)
		}
		cancel()
	}
	if !sp.c.Up(sp.addr) {
		t.Error("a cancelled request took the peer out of use")
	}
}

// A server shutting down (GOAWAY) while requests run loses none: those it
// took finish, and those it did not take are reported unsent, for
// another pick.
func TestH2ClientGoAway(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(20)
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started.Done()
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}))
	type result struct {
		path string
		err  error
	}
	results := make(chan result, 60)
	send := func(path string) {
		resp, err := sp.send(httptestRequest("GET", "http://shop.example"+path, nil))
		if err == nil {
			var b []byte
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && string(b) != "done "+path {
				err = fmt.Errorf("answer %q", b)
			}
		}
		results <- result{path, err}
	}
	for range 20 {
		go send("/slow")
	}
	started.Wait()
	shut := make(chan error, 1)
	go func() { shut <- sp.srv.Shutdown(context.Background()) }()
	for range 40 {
		go send("/fast")
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	var ok, unsent int
	for range 60 {
		r := <-results
		switch {
		case r.err == nil:
			ok++
		case r.path == "/fast" && Unsent(r.err):
			unsent++
		default:
			t.Errorf("%s: %v (unsent %v)", r.path, r.err, Unsent(r.err))
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if ok < 20 {
		t.Errorf("%d requests answered, want at least the 20 the server took", ok)
	}
	t.Logf("%d answered, %d reported unsent", ok, unsent)
}

// A server gone mid-response cuts the body with an error (not a clean
// end), and takes the peer out of use until a probe reaches it.
func TestH2ClientServerKilledMidResponse(t *testing.T) {
	sent := make(chan struct{})
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		close(sent)
		<-r.Context().Done()
	}))
	resp, err := sp.send(httptestRequest("GET", "http://shop.example/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-sent
	// The first 1,000 bytes are read before the kill: data still in the
	// client's socket buffer is lost when the server's close resets the
	// connection (it may have unread frames of ours), which is the
	// kernel's doing, not the client's.
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatalf("the first 1000 bytes: %v", err)
	}
	sp.srv.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n != 0 || !brokenConn(err) {
		t.Errorf("read %d more bytes, %v (broken connection: %v); want none and a broken connection", n, err, err != nil && brokenConn(err))
	}
	if _, err := sp.send(httptestRequest("GET", "http://shop.example/", nil)); err == nil || !Unsent(err) {
		t.Errorf("a request to the dead peer: %v, want unsent", err)
	}
	if sp.c.Up(sp.addr) {
		t.Error("the dead peer is still in use")
	}
}

// After the client's certificate is renewed, requests go on a new
// connection presenting it, and the old connection closes once its
// streams end.
func TestH2ClientRenewedCertificate(t *testing.T) {
	release := make(chan struct{})
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	get := func(path string) error {
		resp, err := sp.send(httptestRequest("GET", "http://shop.example"+path, nil))
		if err != nil {
			return err
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		return err
	}
	if err := get("/"); err != nil {
		t.Fatal(err)
	}
	long := make(chan error, 1)
	go func() { long <- get("/long") }()
	time.Sleep(50 * time.Millisecond) // the long request is on the first connection
	keyPEM, csrPEM, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := sp.ca.Sign(csrPEM, "east", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.id.Replace(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := get("/"); err != nil {
			t.Fatal(err)
		}
	}
	sp.mu.Lock()
	serials := append([]string(nil), sp.serials...)
	sp.mu.Unlock()
	renewed, _ := x509.ParseCertificate(sp.id.Certificate().Certificate[0])
	if len(serials) != 2 || serials[1] != renewed.SerialNumber.String() || serials[0] == serials[1] {
		t.Errorf("client certificates by connection %v, want the first and then the renewed one (%s)", serials, renewed.SerialNumber)
	}
	if n := sp.closed.Load(); n != 0 {
		t.Errorf("%d connections closed while the old one still had a stream", n)
	}
	close(release)
	if err := <-long; err != nil {
		t.Errorf("the request on the old connection: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sp.closed.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections closed after the old one's last stream ended, want 1", sp.closed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// endlessBody is a request body that never ends, and tells when it is
// closed.
type endlessBody struct {
	closed chan struct{}
	once   sync.Once
}

func (b *endlessBody) Read(p []byte) (int, error) {
	select {
	case <-b.closed:
		return 0, io.ErrClosedPipe
	default:
	}
	return copy(p, bytes.Repeat([]byte("x"), len(p))), nil
}

func (b *endlessBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// A server that answers before it read the request body (413) has its
// answer delivered whole, and the body the client was sending is stopped
// and closed.
func TestH2ClientEarlyAnswer(t *testing.T) {
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	body := &endlessBody{closed: make(chan struct{})}
	r := httptestRequest("POST", "http://shop.example/up", nil)
	r.Body, r.ContentLength = body, -1
	resp, err := sp.send(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || string(got) != "too large\n" {
		t.Errorf("%d %q, %v", resp.StatusCode, got, err)
	}
	select {
	case <-body.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the request body is still being sent")
	}
	// The connection serves on.
	resp, err = sp.send(httptestRequest("GET", "http://shop.example/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := sp.handshakes.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// Buffered: a response whose body came whole is, one whose peer still
// holds the body open is not, and neither is anything not of the client.
func TestH2ClientBuffered(t *testing.T) {
	release := make(chan struct{})
	sp := startStock(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part")
		if r.URL.Path == "/held" {
			w.(http.Flusher).Flush()
			<-release
		}
	}))
	defer close(release)
	whole, err := sp.send(httptestRequest("GET", "http://shop.example/whole", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Body.Close()
	testsync.WaitFor(t, 5*time.Second, "the whole body buffered", func() bool { return Buffered(whole.Body) })
	held, err := sp.send(httptestRequest("GET", "http://shop.example/held", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Body.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(held.Body, buf); err != nil {
		t.Fatal(err)
	}
	if Buffered(held.Body) {
		t.Error("a body the peer still sends is reported buffered")
	}
	if Buffered(strings.NewReader("x")) {
		t.Error("a reader not of the client is reported buffered")
	}
	b, _ := io.ReadAll(whole.Body)
	if string(b) != "part" {
		t.Errorf("body %q", b)
	}
	whole.Body.Close()
	if Buffered(whole.Body) {
		t.Error("a closed body is reported buffered")
	}
}
