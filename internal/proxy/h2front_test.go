package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// The client-facing HTTP/2 of the proxy: the fast path gives HTTP/2
// connections (the h2c preface, ALPN h2) to the listener's frame-level
// HTTP/2 server (peer.HTTPServer), which serves them with serveHTTP.

const tlsPort int32 = 8443

// h2Front is a proxy with an HTTP listener (webPort) and an HTTPS one
// (tlsPort, certificate for *.example.com) routing every request of the
// service's hosts to its rules; h2c and h2 are HTTP/2-only clients of each.
type h2Front struct {
	p        *Proxy
	web, tls string
	h2c, h2  *http.Client
}

func newH2Front(t *testing.T, groups []model.TargetGroup, rules ...model.Rule) *h2Front {
	t.Helper()
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "*.example.com")
	svc := edgeService("svc", nil, rules...)
	svc.Listeners = append(svc.Listeners, model.Listener{Name: "https", Port: tlsPort, Protocol: model.ProtocolHTTPS, Certificates: []string{"wild"}})
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: groups, Services: []model.Service{svc},
		Certificates: []model.Certificate{{Meta: model.Meta{Name: "wild", Owner: cluster, Revision: 1}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}},
	}, Revision: 1})
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool()}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	h2c := h2cClient()
	t.Cleanup(h2c.CloseIdleConnections)
	return &h2Front{p: p, web: addrOf(p, webPort), tls: addrOf(p, tlsPort), h2c: h2c, h2: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// each runs f for both clients: h2c on the HTTP port, h2 on the HTTPS one.
func (f *h2Front) each(t *testing.T, run func(t *testing.T, c *http.Client, base string)) {
	t.Run("h2c", func(t *testing.T) { run(t, f.h2c, "http://"+f.web) })
	t.Run("h2", func(t *testing.T) { run(t, f.h2, "https://"+f.tls) })
}

// frontRequest is a request to the h2Front's service (Host
// shop.example.com) at base.
func frontRequest(ctx context.Context, method, base, path string, body io.Reader) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, base+path, body)
	req.Host = "shop.example.com"
	return req
}

// upload POSTs body to the h2Front's service at base through c and wants
// a 200 whose body is want.
func upload(t *testing.T, c *http.Client, base, path string, body io.Reader, want string) {
	t.Helper()
	resp, err := c.Do(frontRequest(context.Background(), http.MethodPost, base, path, body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != want {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, b, want)
	}
}

// h2Server returns the HTTP/2 server of p's listener on port.
func h2ServerOf(t *testing.T, p *Proxy, port int32) interface{ Conns() int } {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.listeners[router.Bind{Port: port}].(*listener)
	if !ok || l.h2 == nil {
		t.Fatalf("no HTTP/2 server on port %d", port)
	}
	return l.h2
}

// Requests over h2c and over TLS with ALPN h2 are served by the frame-level
// server, with what the request path reads of them: the host from
// :authority, the client's address, r.TLS (X-Forwarded-Proto https);
// HTTP/1.1 on the same port stays on the fast path.
func TestHTTP2ServedByFrameServer(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s proto=%s xff=%s", r.Host, r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Forwarded-For"))
	}))
	t.Cleanup(be.Close)
	f := newH2Front(t, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, model.Rule{Action: forward(to("be", 1))})
	for _, tc := range []struct {
		name  string
		c     *http.Client
		url   string
		port  int32
		proto string
	}{
		{"h2c", f.h2c, "http://" + f.web + "/", webPort, "http"},
		{"h2", f.h2, "https://" + f.tls + "/", tlsPort, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := h2ServerOf(t, f.p, tc.port)
			before := srv.Conns()
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			req.Host = "shop.example.com"
			resp, err := tc.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := "host=shop.example.com proto=" + tc.proto + " xff=127.0.0.1"
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(b) != want {
				t.Errorf("got %d %s %q, want 200 HTTP/2.0 %q", resp.StatusCode, resp.Proto, b, want)
			}
			if n := srv.Conns(); n != before+1 {
				t.Errorf("the HTTP/2 server serves %d connections, want %d: the client's is not its", n, before+1)
			}
		})
	}
	srv := h2ServerOf(t, f.p, webPort)
	before := srv.Conns()
	c := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	if _, got := body(t, c, "http://"+f.web+"/", "shop.example.com"); !strings.Contains(got, "proto=http") {
		t.Errorf("HTTP/1.1: %q", got)
	}
	if n := srv.Conns(); n != before {
		t.Errorf("an HTTP/1.1 connection went to the HTTP/2 server (%d, was %d)", n, before)
	}
}

// gRPC over TLS with ALPN h2 through the frame-level server: unary calls,
// an error status in the trailers and a server stream (h2c:
// TestGRPCThroughProxy).
func TestGRPCOverTLSThroughProxy(t *testing.T) {
	tg, hs := grpcHealthTarget(t, cluster)
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "grpc.example.com")
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: []model.TargetGroup{tg},
		Certificates: []model.Certificate{{Meta: model.Meta{Name: "grpc", Owner: cluster, Revision: 1}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}},
		Services: []model.Service{{
			Meta: model.Meta{Name: "grpc", Owner: cluster}, Network: "edge", CustomDomains: []string{"grpc.example.com"},
			Listeners: []model.Listener{{Name: "https", Port: tlsPort, Protocol: model.ProtocolHTTPS, Certificates: []string{"grpc"}}},
			Rules:     []model.Rule{{Action: forward(to("grpc", 1))}},
		}},
	}, Revision: 1})
	creds := credentials.NewTLS(&tls.Config{ServerName: "grpc.example.com", RootCAs: ca.Pool()})
	checkGRPCHealth(t, addrOf(p, tlsPort), hs, grpc.WithTransportCredentials(creds))
}

// A request body and a response body stream at once through the proxy to
// an HTTP/2 target, each message echoed before the next is sent, and the
// target's trailers reach the client.
func TestHTTP2StreamsBothWays(t *testing.T) {
	echo := h2cEchoBackend(t)
	g := versioned(group("echo", target(t, echo, model.TargetActive)), model.ProtocolHTTP, model.HTTP2)
	f := newH2Front(t, []model.TargetGroup{g}, model.Rule{Action: forward(to("echo", 1))})
	f.each(t, func(t *testing.T, c *http.Client, base string) {
		pr, pw := io.Pipe()
		req := frontRequest(context.Background(), http.MethodPost, base, "/echo", pr)
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() { resp, err := c.Do(req); done <- result{resp, err} }()
		var resp *http.Response
		buf := make([]byte, 64)
		for i := range 5 {
			msg := fmt.Sprintf("message %d;", i)
			if _, err := io.WriteString(pw, msg); err != nil {
				t.Fatal(err)
			}
			if resp == nil {
				r := <-done
				if r.err != nil {
					t.Fatal(r.err)
				}
				resp = r.resp
				defer resp.Body.Close()
			}
			n, err := io.ReadAtLeast(resp.Body, buf, len(msg))
			if err != nil || string(buf[:n]) != msg {
				t.Fatalf("echo of %q: %q, %v", msg, buf[:n], err)
			}
		}
		pw.Close()
		if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
			t.Fatalf("after the request ended: %q, %v", rest, err)
		}
		if got := resp.Trailer.Get("X-Echoed"); got != "5" {
			t.Errorf("trailer X-Echoed = %q, want 5 (trailers %v)", got, resp.Trailer)
		}
	})
}

// h2cEchoBackend is an h2c target that writes back each piece of the
// request body as it reads it, flushed, and then the number of pieces in
// the trailer X-Echoed.
func h2cEchoBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Echoed")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		rc.Flush()
		buf := make([]byte, 1<<10)
		n := 0
		for {
			k, err := r.Body.Read(buf)
			if k > 0 {
				n++
				w.Write(buf[:k])
				rc.Flush()
			}
			if err != nil {
				break
			}
		}
		w.Header().Set("X-Echoed", fmt.Sprint(n))
	}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// A request body far larger than the flow-control windows arrives whole.
func TestHTTP2LargeRequestBody(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}))
	t.Cleanup(be.Close)
	f := newH2Front(t, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, model.Rule{Action: forward(to("be", 1))})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 12<<20/16)
	sum := sha256.Sum256(payload)
	want := fmt.Sprintf("%d %s", len(payload), hex.EncodeToString(sum[:]))
	f.each(t, func(t *testing.T, c *http.Client, base string) {
		upload(t, c, base, "/upload", bytes.NewReader(payload), want)
	})
}

// A client that cancels its request (RST_STREAM) cancels the request to the
// target.
func TestHTTP2CancelReachesTarget(t *testing.T) {
	arrived, cancelled := make(chan struct{}, 2), make(chan struct{}, 2)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(be.Close)
	f := newH2Front(t, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, model.Rule{Action: forward(to("be", 1))})
	f.each(t, func(t *testing.T, c *http.Client, base string) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			resp, err := c.Do(frontRequest(ctx, http.MethodGet, base, "/wait", nil))
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		<-arrived
		cancel()
		if err := <-done; err == nil {
			t.Error("the cancelled request succeeded")
		}
		testsync.Receive(t, cancelled, 5*time.Second, "the cancel of the target's request")
	})
}

// rawFront opens an h2c connection to addr as a raw framer, and answers
// the server's SETTINGS.
type rawFront struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRawFront(t *testing.T, addr string) *rawFront {
	t.Helper()
	nc, fr := dialH2(t, addr)
	rf := &rawFront{t: t, nc: nc, fr: fr}
	rf.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rf.enc = hpack.NewEncoder(&rf.buf)
	return rf
}

func (rf *rawFront) get(id uint32, path string) {
	rf.t.Helper()
	rf.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "shop.example.com"}, {":path", path}} {
		rf.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := rf.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rf.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		rf.t.Fatal(err)
	}
}

// next returns the next frame that is not SETTINGS or WINDOW_UPDATE
// (acknowledging SETTINGS).
func (rf *rawFront) next() http2.Frame {
	rf.t.Helper()
	for {
		f, err := rf.fr.ReadFrame()
		if err != nil {
			rf.t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				rf.fr.WriteSettingsAck()
			}
			continue
		case *http2.WindowUpdateFrame, *http2.PingFrame:
			continue
		}
		return f
	}
}

// Shutdown sends an HTTP/2 client a GOAWAY at once, lets its stream in
// flight finish with its whole response, and returns without error.
func TestHTTP2DrainSendsGoAway(t *testing.T) {
	slow, started, release := slowBackend(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("slow", target(t, slow, model.TargetActive))}, to("slow", 1)))
	rf := dialRawFront(t, addrOf(p, webPort))
	rf.get(1, "/")
	<-started
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- p.Shutdown(ctx)
	}()
	ga, ok := rf.next().(*http2.GoAwayFrame)
	if !ok || ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
		t.Fatalf("first frame after Shutdown: %v, want GOAWAY NO_ERROR naming stream 1", ga)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a stream in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	h, ok := rf.next().(*http2.MetaHeadersFrame)
	if !ok || h.StreamID != 1 || h.PseudoValue("status") != "200" {
		t.Fatalf("response: %v, want 200 on stream 1", h)
	}
	var got []byte
	for {
		d, ok := rf.next().(*http2.DataFrame)
		if !ok || d.StreamID != 1 {
			t.Fatalf("response body: %v", d)
		}
		got = append(got, d.Data()...)
		if d.StreamEnded() {
			break
		}
	}
	if string(got) != "slow" {
		t.Errorf("body %q, want slow", got)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// A client that opens more streams than SETTINGS_MAX_CONCURRENT_STREAMS has
// the excess refused (REFUSED_STREAM); the others are served.
func TestHTTP2TooManyStreams(t *testing.T) {
	gate := make(chan struct{})
	var arrived atomic.Int32
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		select {
		case <-gate:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(be.Close)
	t.Cleanup(func() { close(gate) })
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, to("be", 1)))
	rf := dialRawFront(t, addrOf(p, webPort))
	const extra = 10
	for i := range maxConcurrentStreams + extra {
		rf.get(uint32(2*i+1), "/")
	}
	refused := map[uint32]bool{}
	for len(refused) < extra {
		switch f := rf.next().(type) {
		case *http2.RSTStreamFrame:
			if f.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("stream %d reset with %v", f.StreamID, f.ErrCode)
			}
			refused[f.StreamID] = true
		default:
			t.Fatalf("unexpected %v while streams are held", f)
		}
	}
	for id := range refused {
		if id <= 2*maxConcurrentStreams {
			t.Errorf("stream %d refused, within the first %d", id, maxConcurrentStreams)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for arrived.Load() < maxConcurrentStreams && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := arrived.Load(); n != maxConcurrentStreams {
		t.Errorf("%d requests reached the target, want %d", n, maxConcurrentStreams)
	}
}

// A connection that starts like the h2c preface and goes on otherwise, or
// stops, is closed: at once, or at the head timeout. An HTTP/1.1 request
// whose method only starts like it is served.
func TestH2cPrefaceHostile(t *testing.T) {
	be := backend(t, "be")
	p := newTestProxyWith(t, Config{Cluster: cluster, BindAddress: "127.0.0.1", test: testKnobs{readHeaderTimeout: 300 * time.Millisecond}})
	update(t, p, oneRoute(1, []model.TargetGroup{group("be", target(t, be, model.TargetActive))}, to("be", 1)))
	addr := addrOf(p, webPort)
	for _, tc := range []struct{ name, sent string }{
		{"wrong rest", "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + strings.Repeat("garbage", 10)},
		{"stalled", "PRI * HTTP/2.0\r\n\r\nSM"},
		{"stalled after the preface", http2.ClientPreface},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialRaw(t, addr, tc.sent)
			start := time.Now()
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection still open after 5 s (%d bytes read)", n)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("closed after %v", d)
			}
		})
	}
	conn := dialRaw(t, addr, "PRIX / HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 ") {
		t.Errorf("HTTP/1.1 request with method PRIX: %q", line)
	}
}

// A 1 MiB upload from an HTTP/2 client (h2c and h2 over TLS), with its
// length declared and without, arrives whole at an HTTP/1.1 target and at
// an h2c one (what a gRPC route's target speaks): each body is larger than
// the server's frames, the clients' first windows and what the fast path
// sends itself.
func TestHTTP2UploadReachesTargetsWhole(t *testing.T) {
	digest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%s %d %x", r.Proto, n, h.Sum(nil))
	})
	h1 := httptest.NewServer(digest)
	t.Cleanup(h1.Close)
	h2c := httptest.NewUnstartedServer(digest)
	h2c.Config.Protocols = new(http.Protocols)
	h2c.Config.Protocols.SetUnencryptedHTTP2(true)
	h2c.Start()
	t.Cleanup(h2c.Close)
	f := newH2Front(t, []model.TargetGroup{
		group("h1", target(t, h1, model.TargetActive)),
		versioned(group("h2c", target(t, h2c, model.TargetActive)), model.ProtocolHTTP, model.HTTP2),
	},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/h1/"}}}, Action: forward(to("h1", 1))},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/h2c/"}}}, Action: forward(to("h2c", 1))},
	)
	// 1 MiB is the server's stream and connection windows, exactly;
	// 100 bytes more go past them.
	for _, size := range []int{1 << 20, 1<<20 + 100} {
		payload := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		sum := sha256.Sum256(payload)
		for _, tc := range []struct{ path, proto string }{{"/h1/up", "HTTP/1.1"}, {"/h2c/up", "HTTP/2.0"}} {
			want := fmt.Sprintf("%s %d %s", tc.proto, len(payload), hex.EncodeToString(sum[:]))
			for _, declared := range []bool{true, false} {
				t.Run(fmt.Sprintf("%d%s/declared=%v", size, tc.path, declared), func(t *testing.T) {
					f.each(t, func(t *testing.T, c *http.Client, base string) {
						var body io.Reader = bytes.NewReader(payload)
						if !declared {
							body = io.MultiReader(body) // no length: none declared
						}
						upload(t, c, base, tc.path, body, want)
					})
				})
			}
		}
	}
}
