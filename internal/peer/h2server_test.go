package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/pki"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// h2Server starts an HTTPServer for h on a loopback TLS listener with the
// peer listener's configuration (mutual TLS, cluster west); tune may lower
// its limits. It returns the address and a stock HTTP/2 client (net/http's,
// HTTP/2 only, as peer.Client's) presenting cluster east's certificate.
func h2Server(t testing.TB, h http.Handler, tune func(*HTTPServer)) (string, *HTTPServer, *http.Client) {
	t.Helper()
	serverTLS, client := h2TLS(t)
	srv := NewHTTPServer(h, slog.New(slog.DiscardHandler))
	if tune != nil {
		tune(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(tls.NewListener(ln, serverTLS))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), srv, client
}

// h2TLS returns the peer listener's TLS configuration (cluster west) and
// a stock HTTP/2 client presenting cluster east's certificate.
func h2TLS(t testing.TB) (*tls.Config, *http.Client) {
	ca, _ := pki.NewCA(time.Now())
	east := testpki.ClusterIdentity(t, ca, "east")
	tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return east.Certificate(), nil },
	}}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return TLSConfig(testpki.ClusterIdentity(t, ca, "west"), ca.Pool()), &http.Client{Transport: tr}
}

// The stock HTTP/2 client against the server: requests with and without
// bodies, trailers both ways, the head's fields, r.TLS.
func TestH2ServerInterop(t *testing.T) {
	addr, _, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cluster := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cluster, _ = pki.ClusterOf(r.TLS.PeerCertificates[0])
		}
		sum := sha256.Sum256(b)
		w.Header().Set("X-Cluster", cluster)
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Uri", r.RequestURI)
		w.Header().Set("X-Cookie", r.Header.Get("Cookie"))
		w.Header().Set("X-Len", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Sum"))
		if r.URL.Query().Get("trailers") != "" {
			w.Header().Set("Trailer", "X-Checksum")
		}
		switch r.URL.Path {
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			return
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		}
		fmt.Fprintf(w, "%s %d %s", r.Method, len(b), hex.EncodeToString(sum[:]))
		if r.URL.Query().Get("trailers") != "" {
			w.Header().Set("X-Checksum", "declared")
			w.Header().Set(http.TrailerPrefix+"X-Late", "prefixed")
		}
	}), nil)

	t.Run("GET", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/a/b?x=1", nil)
		req.Host = "svc.example"
		req.Header.Add("Cookie", "a=1")
		req.Header.Add("Cookie", "b=2")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sum := sha256.Sum256(nil)
		if want := "GET 0 " + hex.EncodeToString(sum[:]); string(body) != want || resp.StatusCode != 200 {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
		for k, want := range map[string]string{"X-Cluster": "east", "X-Proto": "HTTP/2.0", "X-Host": "svc.example", "X-Uri": "/a/b?x=1",
			"X-Cookie": "a=1; b=2", "X-Len": "0", "Content-Length": fmt.Sprint(len(body)), "Content-Type": "text/plain; charset=utf-8"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s: %q, want %q", k, got, want)
			}
		}
	})
	t.Run("POST", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789"), 10000)
		resp, err := c.Post("https://"+addr+"/", "application/octet-stream", bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		sum := sha256.Sum256(payload)
		if want := "POST 100000 " + hex.EncodeToString(sum[:]); string(body) != want {
			t.Errorf("got %q, want %q", body, want)
		}
		if got := resp.Header.Get("X-Len"); got != "100000" {
			t.Errorf("ContentLength %s", got)
		}
	})
	t.Run("statuses", func(t *testing.T) {
		for path, want := range map[string]int{"/nocontent": 204, "/teapot": 418} {
			resp, err := c.Get("https://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want || want == 204 && len(body) != 0 {
				t.Errorf("%s: %d %q", path, resp.StatusCode, body)
			}
		}
	})
	t.Run("trailers", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/?trailers=1", pr)
		req.Trailer = http.Header{"X-Sum": nil}
		go func() {
			io.WriteString(pw, "streamed body")
			req.Trailer.Set("X-Sum", "sent-after-body")
			pw.Close()
		}()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get("X-Req-Trailer"); got != "sent-after-body" {
			t.Errorf("request trailer: %q", got)
		}
		if got := resp.Trailer.Get("X-Checksum"); got != "declared" {
			t.Errorf("declared response trailer: %q (trailers %v)", got, resp.Trailer)
		}
		if got := resp.Trailer.Get("X-Late"); got != "prefixed" {
			t.Errorf("TrailerPrefix response trailer: %q (trailers %v)", got, resp.Trailer)
		}
		if resp.Header.Get("X-Checksum") != "" {
			t.Error("a trailer went out in the head")
		}
	})
	t.Run("100-continue", func(t *testing.T) {
		tr := c.Transport.(*http.Transport).Clone()
		tr.ExpectContinueTimeout = time.Minute // the body waits for the 100
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/", strings.NewReader("after the 100"))
		req.Header.Set("Expect", "100-continue")
		start := time.Now()
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "POST 13 ") || time.Since(start) > 30*time.Second {
			t.Errorf("got %q after %v", body, time.Since(start))
		}
	})
	t.Run("http.Transport", func(t *testing.T) {
		// net/http's client with its default protocols, HTTP/2 forced.
		tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: c.Transport.(*http.Transport).TLSClientConfig}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post("https://"+addr+"/", "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Errorf("%s %d", resp.Proto, resp.StatusCode)
		}
	})
}

// 64 MiB each way, with flow control, while the heap stays far below it.
func TestH2ServerLargeBodies(t *testing.T) {
	const size = 64 << 20
	addr, _, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x %v", n, h.Sum(nil), err)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		io.Copy(w, io.LimitReader(zeros{}, size))
	}), nil)
	var peak atomic.Uint64
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
		}
	})
	resp, err := c.Post("https://"+addr+"/", "application/octet-stream", io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	h := sha256.New()
	io.Copy(h, io.LimitReader(zeros{}, size))
	if want := fmt.Sprintf("%d %x <nil>", size, h.Sum(nil)); string(got) != want {
		t.Errorf("upload: %q, want %q", got, want)
	}
	resp, err = c.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != size || err != nil {
		t.Errorf("download: %d bytes, %v", n, err)
	}
	close(stop)
	wg.Wait()
	if p := peak.Load(); p > base+24<<20 {
		t.Errorf("heap peaked at %d MiB above the start: bodies are held, not streamed", (p-base)>>20)
	}
	t.Logf("heap peak above the start: %d KiB", (peak.Load()-base)>>10)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Many streams on one connection run their handlers at once.
func TestH2ServerConcurrentStreams(t *testing.T) {
	const n = 100
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	addr, _, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Done()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			http.Error(w, "not all streams ran at once", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, r.URL.Path)
	}), nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			resp, err := c.Get(fmt.Sprintf("https://%s/%d", addr, i))
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != fmt.Sprintf("/%d", i) {
				errs <- fmt.Errorf("stream %d: %d %q", i, resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A request's context ends when the client cancels it (RST_STREAM) and
// when the connection is lost.
func TestH2ServerCancellation(t *testing.T) {
	causes := make(chan error, 2)
	started := make(chan struct{}, 2)
	addr, _, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			causes <- context.Cause(r.Context())
		case <-time.After(10 * time.Second):
			causes <- errors.New("not cancelled")
		}
	}), nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	if err := <-causes; !strings.Contains(fmt.Sprint(err), "reset by the peer") {
		t.Errorf("after the client cancelled: %v", err)
	}

	// The connection lost.
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		causes <- context.Cause(r.Context())
	}), nil)
	rc.get(1, true)
	<-started
	rc.nc.Close()
	if err := <-causes; !strings.Contains(fmt.Sprint(err), "connection closed") {
		t.Errorf("after the connection was lost: %v", err)
	}
}

// Shutdown sends a GOAWAY, lets the open stream finish and waits for it;
// a stream still open at the deadline is cut.
func TestH2ServerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var done atomic.Bool
	addr, srv, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "finished")
		done.Store(true)
	}), nil)
	res := make(chan string, 1)
	go func() {
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			res <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(b)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a stream was open", err)
	default:
	}
	// The GOAWAY reached the client: a new request does not go on the
	// connection (and the listener is closed).
	if resp, err := c.Get("https://" + addr + "/"); err == nil {
		resp.Body.Close()
		t.Error("a request after the GOAWAY was served")
	}
	close(release)
	if err := <-shut; err != nil || !done.Load() {
		t.Errorf("Shutdown: %v, handler done %v", err, done.Load())
	}
	if got := <-res; got != "finished" {
		t.Errorf("the open stream got %q", got)
	}

	// With a deadline, a stream that does not end is cut.
	addr, srv, c = h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	}), nil)
	go func() {
		resp, err := c.Get("https://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a stuck stream: %v", err)
	}
}

// http.ResponseController: Flush sends what was written at once, and
// SetReadDeadline bounds body reads.
func TestH2ServerResponseController(t *testing.T) {
	readErr := make(chan error, 1)
	addr, _, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.URL.Path == "/deadline" {
			rc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := r.Body.Read(make([]byte, 10))
			readErr <- err
			return
		}
		io.WriteString(w, "first ")
		if err := rc.Flush(); err != nil {
			t.Error(err)
		}
		io.Copy(io.Discard, r.Body) // until the client has seen the first part
		io.WriteString(w, "second")
	}), nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	resp, err := c.Post("https://"+addr+"/flush", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first " {
		t.Fatalf("flushed part: %q %v", first, err)
	}
	pw.Close()
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(rest) != "second" {
		t.Errorf("rest %q", rest)
	}

	pr2, pw2 := io.Pipe()
	defer pw2.Close()
	go func() {
		if resp, err := c.Post("https://"+addr+"/deadline", "text/plain", pr2); err == nil {
			resp.Body.Close()
		}
	}()
	if err := testsync.Receive(t, readErr, 5*time.Second, "the end of the read past its deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
}

// rawConn is a client speaking frames, for the cases the stock client
// never sends.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	fr *http2.Framer
	// fieldEncoder's block encodes the header blocks it sends.
	fieldEncoder
}

// rawServer starts a server on a plain TCP loopback listener (HTTP/2 with
// prior knowledge) and returns a connected rawConn past the SETTINGS
// exchange.
func rawServer(t testing.TB, h http.Handler, tune func(*HTTPServer)) (*rawConn, *HTTPServer) {
	t.Helper()
	srv := NewHTTPServer(h, slog.New(slog.DiscardHandler))
	srv.linger = 50 * time.Millisecond
	if tune != nil {
		tune(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return dialRaw(t, ln.Addr().String()), srv
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	rc, _ := dialRawSettings(t, addr)
	return rc
}

// dialRawSettings is dialRaw that also returns the settings of the
// server's first SETTINGS frame.
func dialRawSettings(t testing.TB, addr string) (*rawConn, map[http2.SettingID]uint32) {
	t.Helper()
	nc := testsync.Dial(t, addr)
	rc := &rawConn{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	io.WriteString(nc, http2.ClientPreface)
	rc.fr.WriteSettings()
	f, err := rc.fr.ReadFrame()
	sf, ok := f.(*http2.SettingsFrame)
	if err != nil || !ok || sf.IsAck() {
		t.Fatalf("first frame %v %v, want SETTINGS", f, err)
	}
	settings := map[http2.SettingID]uint32{}
	sf.ForeachSetting(func(st http2.Setting) error { settings[st.ID] = st.Val; return nil })
	rc.fr.WriteSettingsAck()
	return rc, settings
}

var getFields = []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "x"}

func (rc *rawConn) get(id uint32, end bool, extra ...string) {
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(append(append([]string(nil), getFields...), extra...)...), EndStream: end, EndHeaders: true})
}

// next reads frames until one matches, and fails the test on an error
// first (EOF included).
func (rc *rawConn) next(match func(http2.Frame) bool) http2.Frame {
	rc.t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			rc.t.Fatalf("reading frames: %v", err)
		}
		if match(f) {
			return f
		}
	}
}

func (rc *rawConn) goAway() http2.ErrCode {
	rc.t.Helper()
	return rc.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame).ErrCode
}

// wantGoAway fails the test unless the next GOAWAY the server sends
// carries one of the codes wanted.
func (rc *rawConn) wantGoAway(want ...http2.ErrCode) {
	rc.t.Helper()
	if code := rc.goAway(); !slices.Contains(want, code) {
		rc.t.Errorf("GOAWAY %v, want %v", code, want)
	}
}

// flood calls write in a goroutine n times, or without end for n < 0,
// until it fails (the server has closed the connection).
func flood(n int, write func() error) {
	go func() {
		for i := 0; n < 0 || i < n; i++ {
			if write() != nil {
				return
			}
		}
	}()
}

func (rc *rawConn) reset(id uint32) http2.ErrCode {
	rc.t.Helper()
	return rc.next(func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == id
	}).(*http2.RSTStreamFrame).ErrCode
}

func (rc *rawConn) status(id uint32) string {
	rc.t.Helper()
	return rc.next(func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == id
	}).(*http2.MetaHeadersFrame).PseudoValue("status")
}

// closed reports whether the server closed the connection within 5 s.
func (rc *rawConn) closed() bool {
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, rc.nc)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func ok200(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }

// Each limit, tried by the worst sender.
func TestH2ServerLimits(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	stuck := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block })

	t.Run("concurrent streams", func(t *testing.T) {
		rc, _ := rawServer(t, stuck, func(s *HTTPServer) { s.maxStreams = 2 })
		rc.get(1, true)
		rc.get(3, true)
		rc.get(5, true)
		if code := rc.reset(5); code != http2.ErrCodeRefusedStream {
			t.Errorf("third stream: %v", code)
		}
	})
	t.Run("refused streams flood", func(t *testing.T) {
		rc, _ := rawServer(t, stuck, func(s *HTTPServer) { s.maxStreams, s.maxControl = 1, 50 })
		go func() {
			for id := uint32(1); id < 400; id += 2 {
				rc.get(id, true)
			}
		}()
		rc.wantGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("reset streams count until their handlers return", func(t *testing.T) {
		rc, _ := rawServer(t, stuck, func(s *HTTPServer) { s.maxStreams = 2 })
		rc.get(1, true)
		rc.get(3, true)
		rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		rc.fr.WriteRSTStream(3, http2.ErrCodeCancel)
		rc.get(5, true)
		if code := rc.reset(5); code != http2.ErrCodeRefusedStream {
			t.Errorf("a stream opened while reset ones still run: %v", code)
		}
	})
	t.Run("rapid reset", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }), func(s *HTTPServer) { s.maxResets = 20 })
		for id := uint32(1); id < 100; id += 2 {
			rc.get(id, true)
			rc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		rc.wantGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("PING flood", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), func(s *HTTPServer) { s.maxControl = 50 })
		flood(200, func() error { return rc.fr.WritePing(false, [8]byte{1}) })
		rc.wantGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("SETTINGS flood", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), func(s *HTTPServer) { s.maxControl = 50 })
		flood(200, func() error { return rc.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}) })
		rc.wantGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("empty DATA flood", func(t *testing.T) {
		rc, _ := rawServer(t, stuck, func(s *HTTPServer) { s.maxControl = 50 })
		rc.get(1, false)
		flood(200, func() error { return rc.fr.WriteData(1, false, nil) })
		rc.wantGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("header list too large", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), func(s *HTTPServer) { s.maxHeaderList = 1 << 10 })
		v := strings.Repeat("a", 500)
		rc.get(1, true, "x-a", v, "x-b", v, "x-c", v)
		if st := rc.status(1); st != "431" {
			t.Errorf("status %s", st)
		}
		// The connection still serves.
		rc.get(3, true)
		if st := rc.status(3); st != "200" {
			t.Errorf("next request: %s", st)
		}
		rc.get(5, true, "x-big", strings.Repeat("a", 10000))
		rc.wantGoAway(http2.ErrCodeProtocol, http2.ErrCodeCompression)
	})
	t.Run("CONTINUATION flood", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(getFields...)})
		// Empty fragments: no header list grows, only the bytes.
		flood(-1, func() error { return rc.fr.WriteContinuation(1, false, nil) })
		rc.wantGoAway(http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("CONTINUATION flood of fields", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(getFields...)})
		frag := rc.block("x-a", strings.Repeat("b", 1000))
		flood(-1, func() error { return rc.fr.WriteContinuation(1, false, frag) })
		rc.wantGoAway(http2.ErrCodeProtocol, http2.ErrCodeEnhanceYourCalm)
	})
	t.Run("connection window overflow", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.fr.WriteWindowUpdate(0, 1<<31-1)
		rc.wantGoAway(http2.ErrCodeFlowControl)
	})
	t.Run("stream window overflow", func(t *testing.T) {
		rc, _ := rawServer(t, stuck, nil)
		rc.get(1, true)
		rc.fr.WriteWindowUpdate(1, 1<<31-1)
		if code := rc.reset(1); code != http2.ErrCodeFlowControl {
			t.Errorf("RST_STREAM %v", code)
		}
	})
	t.Run("DATA beyond the window", func(t *testing.T) {
		rc, _ := rawServer(t, stuck, nil)
		rc.get(1, false)
		chunk := make([]byte, 16<<10)
		flood(connWindow/len(chunk)+2, func() error { return rc.fr.WriteData(1, false, chunk) })
		rc.wantGoAway(http2.ErrCodeFlowControl)
	})
	t.Run("even stream", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.get(2, true)
		rc.wantGoAway(http2.ErrCodeProtocol)
	})
	t.Run("stream below the last", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.get(5, true)
		rc.get(3, true)
		rc.wantGoAway(http2.ErrCodeProtocol)
	})
	t.Run("DATA on an idle stream", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.fr.WriteData(7, true, []byte("x"))
		rc.wantGoAway(http2.ErrCodeProtocol)
	})
	t.Run("DATA on a closed stream", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), nil)
		rc.get(1, true)
		rc.status(1)
		rc.next(func(f http2.Frame) bool { return f.Header().Flags.Has(http2.FlagDataEndStream) })
		rc.fr.WriteData(1, true, []byte("x"))
		if code := rc.reset(1); code != http2.ErrCodeStreamClosed {
			t.Errorf("RST_STREAM %v", code)
		}
	})
	t.Run("read-header timeout", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), func(s *HTTPServer) { s.readHeaderTimeout = 100 * time.Millisecond })
		if !rc.closed() {
			t.Error("a connection that sends no request stays open")
		}
	})
	t.Run("silent connection", func(t *testing.T) {
		srv := NewHTTPServer(http.HandlerFunc(ok200), slog.New(slog.DiscardHandler))
		srv.readHeaderTimeout = 100 * time.Millisecond
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(tls.NewListener(ln, &tls.Config{}))
		defer srv.Close()
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if !(&rawConn{nc: nc}).closed() {
			t.Error("a connection that sends nothing stays open")
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		rc, _ := rawServer(t, http.HandlerFunc(ok200), func(s *HTTPServer) { s.idleTimeout = 100 * time.Millisecond })
		rc.get(1, true)
		rc.status(1)
		rc.wantGoAway(http2.ErrCodeNo)
		if !rc.closed() {
			t.Error("an idle connection stays open")
		}
	})
}

// Requests RFC 9113 §8 calls malformed are reset with PROTOCOL_ERROR, and
// the connection goes on.
func TestH2ServerMalformedRequests(t *testing.T) {
	var served atomic.Int32
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.Copy(io.Discard, r.Body)
	}), nil)
	cases := []struct {
		name   string
		fields []string
		data   string // sent after the HEADERS, ending the stream
	}{
		{"no :method", []string{":scheme", "https", ":path", "/", ":authority", "x"}, ""},
		{"no :path", []string{":method", "GET", ":scheme", "https", ":authority", "x"}, ""},
		{"empty :path", []string{":method", "GET", ":scheme", "https", ":path", "", ":authority", "x"}, ""},
		{"relative :path", []string{":method", "GET", ":scheme", "https", ":path", "a", ":authority", "x"}, ""},
		{"no :scheme", []string{":method", "GET", ":path", "/", ":authority", "x"}, ""},
		{"unknown pseudo", append([]string{":foo", "1"}, getFields...), ""},
		{"pseudo after regular", append([]string{"x-a", "1"}, getFields...), ""},
		{"response pseudo", append(append([]string(nil), getFields...), ":status", "200"), ""},
		{":protocol", append(append([]string(nil), getFields...), ":protocol", "websocket"), ""},
		{"CONNECT with :path", []string{":method", "CONNECT", ":authority", "x:1", ":path", "/"}, ""},
		{"connection", append(append([]string(nil), getFields...), "connection", "close"), ""},
		{"transfer-encoding", append(append([]string(nil), getFields...), "transfer-encoding", "chunked"), ""},
		{"te gzip", append(append([]string(nil), getFields...), "te", "gzip"), ""},
		{"upper-case name", append(append([]string(nil), getFields...), "X-Upper", "1"), ""},
		{"invalid value", append(append([]string(nil), getFields...), "x-a", "a\nb"), ""},
		{"content-length too long", append(append([]string(nil), getFields...), "content-length", "10"), "abc"},
		{"content-length too short", append(append([]string(nil), getFields...), "content-length", "1"), "abc"},
		{"two content-lengths", append(append([]string(nil), getFields...), "content-length", "1", "content-length", "2"), "a"},
		{"method not a token", []string{":method", "G T", ":scheme", "https", ":path", "/", ":authority", "x"}, ""},
	}
	id := uint32(1)
	for _, c := range cases {
		rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(c.fields...), EndStream: c.data == "", EndHeaders: true})
		if c.data != "" {
			rc.fr.WriteData(id, true, []byte(c.data))
		}
		if code := rc.reset(id); code != http2.ErrCodeProtocol {
			t.Errorf("%s: RST_STREAM %v", c.name, code)
		}
		id += 2
	}
	// A well-formed one after them all is served.
	rc.get(id, true)
	if st := rc.status(id); st != "200" {
		t.Errorf("a valid request after the malformed ones: %s", st)
	}
	// The content-length cases reach the handler (the mismatch shows
	// only with the body); the others must not.
	if n := served.Load(); n > 4 {
		t.Errorf("%d malformed requests reached the handler", n-1)
	}
}

// FuzzH2ServerConn feeds arbitrary bytes as a connection after the client
// preface and SETTINGS: the server must neither panic nor hang (the
// connection and every handler end once the client closes).
func FuzzH2ServerConn(f *testing.F) {
	post := []string{":method", "POST", ":scheme", "https", ":path", "/p", ":authority", "x", "trailer", "x-t"}
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(getFields...), EndStream: true, EndHeaders: true})
	}))
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(post...), EndHeaders: true})
		fr.WriteData(1, false, []byte("body"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-t", "v"), EndStream: true, EndHeaders: true})
	}))
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) { // rapid reset
		for id := uint32(1); id < 60; id += 2 {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(getFields...), EndHeaders: true})
			fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	}))
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) { // PING and SETTINGS floods
		for range 60 {
			fr.WritePing(false, [8]byte{})
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
		}
	}))
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) { // CONTINUATION flood
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(getFields...)})
		for range 200 {
			fr.WriteContinuation(1, false, block("x-a", "b"))
		}
	}))
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) { // windows
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(post...), EndHeaders: true})
		fr.WriteWindowUpdate(1, 1<<31-1)
		fr.WriteWindowUpdate(0, 1<<31-1)
		fr.WriteData(1, false, make([]byte, 16384))
		fr.WriteData(3, true, nil)
	}))
	f.Add(headerStream(func(fr *http2.Framer, block func(...string) []byte) { // small window, big response
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(append(append([]string(nil), getFields[:5]...), "/big", ":authority", "x")...), EndStream: true, EndHeaders: true})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
			if r.URL.Path == "/big" {
				w.Write(make([]byte, 100<<10))
			}
			fmt.Fprintf(w, "%d %v", n, r.Trailer)
			w.Header().Set("X-Sum", "1")
		}), slog.New(slog.DiscardHandler))
		srv.maxStreams, srv.maxResets, srv.maxControl, srv.maxHeaderList = 8, 10, 20, 4<<10
		srv.linger, srv.readHeaderTimeout, srv.writeTimeout = 10*time.Millisecond, 2*time.Second, 2*time.Second
		client, server := net.Pipe()
		go io.Copy(io.Discard, client)
		served := make(chan struct{})
		go func() { srv.ServeConn(server); close(served) }()
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(client, http2.ClientPreface)
		http2.NewFramer(client, nil).WriteSettings()
		client.Write(data)
		client.Close()
		deadline := time.Now().Add(10 * time.Second)
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the connection is still read after the client closed it:\n%s", buf[:runtime.Stack(buf, true)])
		}
		for {
			srv.mu.Lock()
			n := len(srv.conns)
			srv.mu.Unlock()
			if n == 0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("the connection did not end after the client closed it:\n%s", buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// serveCountingWrites serves srv on loopback until the test ends, counting
// the writes to its connections in writes, and returns a raw connection to
// it whose settings the server has acknowledged.
func serveCountingWrites(t *testing.T, srv *HTTPServer, writes *atomic.Int32) *rawConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(countingListener{ln, writes})
	t.Cleanup(func() { srv.Close() })
	rc := dialRaw(t, ln.Addr().String())
	rc.next(func(f http2.Frame) bool {
		return f.Header().Type == http2.FrameSettings && f.Header().Flags.Has(http2.FlagSettingsAck)
	})
	return rc
}

// countingListener counts the writes to its connections.
type countingListener struct {
	net.Listener
	writes *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return countingConn{c, l.writes}, err
}

type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A small response — head, body and end, or with trailers, or without a
// body — leaves in one write to the connection.
func TestH2ServerSmallResponseIsOneWrite(t *testing.T) {
	srv := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "1")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, strings.Repeat("x", 4000))
		}
	}), slog.New(slog.DiscardHandler))
	var writes atomic.Int32
	rc := serveCountingWrites(t, srv, &writes)
	id := uint32(1)
	for _, path := range []string{"/", "/trailers", "/empty"} {
		before := writes.Load()
		rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(":method", "GET", ":scheme", "https", ":path", path, ":authority", "x"), EndStream: true, EndHeaders: true})
		rc.next(func(f http2.Frame) bool {
			return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
		})
		time.Sleep(20 * time.Millisecond) // anything more would have been written by now
		if n := writes.Load() - before; n != 1 {
			t.Errorf("%s: %d writes, want 1", path, n)
		}
		id += 2
	}
}

// A peer that opens every window and then reads nothing cannot hold a
// handler: a write that does not finish within the write timeout ends the
// connection.
func TestH2ServerWriteTimeout(t *testing.T) {
	writeErr := make(chan error, 1)
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}), func(s *HTTPServer) { s.writeTimeout = 200 * time.Millisecond })
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.get(1, true)
	if err := testsync.Receive(t, writeErr, 10*time.Second, "the end of the handler's writes to a peer that reads nothing"); err == nil {
		t.Error("no error")
	}
}

// A client that measures the connection with a PING per round trip while
// data flows (gRPC's flow-control estimator: a PING on reading DATA when
// none is outstanding) is not a PING flood: with a bound of 50 control
// frames a second, hundreds of such PINGs in under a second leave the
// connection serving. The bound still holds for PINGs with nothing sent in
// between (TestH2ServerLimits/PING_flood).
func TestH2ServerPingsWhileDataFlows(t *testing.T) {
	const chunks = 400
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range chunks {
			io.WriteString(w, "x")
			w.(http.Flusher).Flush()
			time.Sleep(500 * time.Microsecond)
		}
	}), func(s *HTTPServer) { s.maxControl = 50 })
	rc.get(1, true)
	pings, got, outstanding := 0, 0, false
	start := time.Now()
	rc.next(func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %d PINGs and %d bytes", f.ErrCode, pings, got)
		case *http2.PingFrame:
			outstanding = false
		case *http2.DataFrame:
			got += len(f.Data())
			if !outstanding {
				if err := rc.fr.WritePing(false, [8]byte{byte(pings)}); err != nil {
					t.Fatal(err)
				}
				pings++
				outstanding = true
			}
			return f.StreamEnded()
		}
		return false
	})
	if got != chunks || pings < 100 {
		t.Errorf("%d bytes, %d PINGs sent in %v; want %d bytes, at least 100 PINGs", got, pings, time.Since(start), chunks)
	}
	// The connection still serves.
	rc.get(3, true)
	if st := rc.status(3); st != "200" {
		t.Errorf("next request: %s", st)
	}
}

// FuzzPlainTarget holds the server's own URL of a plain :path
// (plainTarget) to what url.ParseRequestURI makes of it.
func FuzzPlainTarget(f *testing.F) {
	for _, s := range []string{"/", "/api/items", "/a?b=1&c", "/a?", "/a??", "//x", "/a%20b", "/a b", "/a?\x01", "/~u/$&+,:;=@", "/a!b", "/?#x", "*", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		if !plainTarget(path) {
			return
		}
		want, err := url.ParseRequestURI(path)
		if err != nil {
			t.Fatalf("plainTarget(%q) but ParseRequestURI: %v", path, err)
		}
		if got := plainURL(path); got != *want {
			t.Fatalf("%q: got %#v, ParseRequestURI %#v", path, got, *want)
		}
	})
}

// A handler's head fields (ResponseFields) go out with the header map's:
// their Content-Length bounds the body (a short one resets the stream, an
// invalid one is dropped), their Content-Type or Content-Encoding stops the
// sniffing, and a writer that is not the server's own, or whose head is
// written, has none.
func TestH2ServerResponseFields(t *testing.T) {
	var wrapped, afterHead atomic.Bool
	addr, _, c := h2Server(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ResponseFields(struct{ http.ResponseWriter }{w}) != nil {
			wrapped.Store(true)
		}
		f := ResponseFields(w)
		if f == nil {
			http.Error(w, "no fields", http.StatusInternalServerError)
			return
		}
		add := func(name, value string) { *f = append(*f, hpack.HeaderField{Name: name, Value: value}) }
		add("x-a", "1")
		add("x-a", "2")
		w.Header().Set("X-Map", "m")
		body := "<html>hi</html>"
		switch r.URL.Path {
		case "/typed":
			add("content-type", "text/plain")
		case "/encoded":
			add("content-encoding", "br")
		case "/length":
			add("content-length", "15")
		case "/short":
			add("content-length", "99")
		case "/badlength":
			add("content-length", "x1")
		}
		w.WriteHeader(http.StatusOK)
		if ResponseFields(w) != nil {
			afterHead.Store(true)
		}
		io.WriteString(w, body)
	}), nil)
	get := func(path string) (*http.Response, string, error) {
		resp, err := c.Get("https://" + addr + path)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	for _, tc := range []struct{ path, ctype, clen string }{
		{"/", "text/html; charset=utf-8", "15"},
		{"/typed", "text/plain", "15"},
		{"/encoded", "", "15"},
		{"/length", "text/html; charset=utf-8", "15"},
		{"/badlength", "text/html; charset=utf-8", "15"},
	} {
		resp, body, err := get(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if body != "<html>hi</html>" || !slices.Equal(resp.Header["X-A"], []string{"1", "2"}) || resp.Header.Get("X-Map") != "m" {
			t.Errorf("%s: body %q, header %v", tc.path, body, resp.Header)
		}
		if resp.Header.Get("Content-Type") != tc.ctype || !slices.Equal(resp.Header["Content-Length"], []string{tc.clen}) {
			t.Errorf("%s: Content-Type %q, Content-Length %q; want %q, %q", tc.path, resp.Header.Get("Content-Type"), resp.Header["Content-Length"], tc.ctype, tc.clen)
		}
	}
	if _, body, err := get("/short"); err == nil {
		t.Errorf("/short: body %q taken whole, 15 of the 99 bytes its Content-Length promised", body)
	}
	if wrapped.Load() || afterHead.Load() {
		t.Errorf("fields offered to a wrapper (%v) or after the head was written (%v)", wrapped.Load(), afterHead.Load())
	}
}
