package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/test/testsync"
)

// h2Field is one header field of a raw HTTP/2 request, pseudo-header
// fields included.
type h2Field struct{ name, value string }

// dialH2 opens an h2c (prior knowledge) connection to addr and sends the
// preface and SETTINGS.
func dialH2(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	conn := dialRaw(t, addr, http2.ClientPreface)
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return conn, fr
}

// hpackFields is fields as a header block, written without indexing state
// shared with another block.
func hpackFields(fields []h2Field) []byte {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		enc.WriteField(hpack.HeaderField{Name: f.name, Value: f.value})
	}
	return block.Bytes()
}

// rawH2 sends one request on a new h2c (prior knowledge) connection to addr
// with fields written as given, which Go's client would refuse to send, and
// returns the response's :status, or -1 when the stream or the connection
// was reset instead.
func rawH2(t *testing.T, addr string, fields []h2Field) int {
	t.Helper()
	conn, fr := dialH2(t, addr)
	defer conn.Close()
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hpackFields(fields), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			hf, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hf {
				if h.Name == ":status" {
					code, _ := strconv.Atoi(h.Value)
					return code
				}
			}
			t.Fatal("response without :status")
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return -1
			}
		case *http2.GoAwayFrame:
			return -1
		}
	}
}

// HTTP/2 pseudo-header fields that an HTTP/1.1 request line cannot carry
// are refused with 400 before anything reaches a target: a :path with a
// space would otherwise be copied into the request line to the target
// ("GET /q?a HTTP/1.0 HTTP/1.1"). RFC 9113 section 8.3.1.
func TestHTTP2PseudoFieldsValidated(t *testing.T) {
	// A target that counts the request lines it reads, well formed or not:
	// Go's server would refuse a smuggled one before any handler saw it.
	var reached atomic.Int32
	var lastURI atomic.Value
	tgt, _ := scriptedTarget(t, func(conn net.Conn, br *bufio.Reader) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			reached.Add(1)
			lastURI.Store(line)
			for {
				h, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if h == "\r\n" {
					break
				}
			}
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", tgt)}, to("a", 1)))
	addr := addrOf(p, webPort)

	req := func(method, authority, path string) []h2Field {
		return []h2Field{{":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}}
	}
	tests := []struct {
		name   string
		fields []h2Field
		want   int
	}{
		{"valid", req("GET", "shop.example.com", "/q?a=1"), http.StatusOK},
		{"space in :path smuggles a version", req("GET", "shop.example.com", "/q?a HTTP/1.0"), http.StatusBadRequest},
		{"space in :path", req("GET", "shop.example.com", "/a b"), http.StatusBadRequest},
		{"tab in :path", req("GET", "shop.example.com", "/a\tb"), http.StatusBadRequest},
		{"fragment in :path", req("GET", "shop.example.com", "/a#b"), http.StatusBadRequest},
		{"non-ASCII in :path", req("GET", "shop.example.com", "/caf\xc3\xa9"), http.StatusBadRequest},
		{":path not origin form", req("GET", "shop.example.com", "q"), http.StatusBadRequest},
		{"asterisk :path on GET", req("GET", "shop.example.com", "*"), http.StatusBadRequest},
		{"space in :method", req("GE T", "shop.example.com", "/"), http.StatusBadRequest},
		{"userinfo in :authority", req("GET", "user@shop.example.com", "/"), http.StatusBadRequest},
		{"space in :authority", req("GET", "shop.example.com /x", "/"), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := reached.Load()
			got := rawH2(t, addr, tt.fields)
			if tt.want == http.StatusOK {
				if got != http.StatusOK || reached.Load() != before+1 {
					t.Fatalf("status %d, target reached %d times; want 200 once", got, reached.Load()-before)
				}
				return
			}
			// A stream reset by net/http itself is as good as a 400.
			if got != tt.want && got != -1 {
				t.Errorf("status %d, want %d", got, tt.want)
			}
			if n := reached.Load() - before; n != 0 {
				t.Errorf("target reached %d times, with request line %q", n, lastURI.Load())
			}
		})
	}
}

// rapidReset opens streams on one h2c connection to addr, each cancelled
// (RST_STREAM) right after its HEADERS, until the proxy closes the
// connection or max streams are sent. It returns how many it sent.
func rapidReset(t *testing.T, addr string, max int) int {
	t.Helper()
	conn, fr := dialH2(t, addr)
	defer conn.Close()
	// Read (and drop) what the proxy sends, so that it never blocks on
	// writing; closed is set once it closes the connection.
	var closed atomic.Bool
	go func() {
		rf := http2.NewFramer(io.Discard, conn)
		for {
			if _, err := rf.ReadFrame(); err != nil {
				closed.Store(true)
				return
			}
		}
	}()
	fields := hpackFields([]h2Field{{":method", "GET"}, {":scheme", "http"}, {":authority", "shop.example.com"}, {":path", "/slow"}})
	sent := 0
	for id := uint32(1); sent < max; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: fields, EndStream: true, EndHeaders: true}); err != nil {
			break
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
		if closed.Load() {
			break
		}
		if sent%50 == 0 {
			// Let the proxy's handlers run, as they would across a network.
			time.Sleep(time.Millisecond)
		}
	}
	return sent
}

// An HTTP/2 client that opens streams and resets them at once (CVE-2023-
// 44487, "rapid reset") has its connection cut after a few hundred
// streams rather than tens of thousands, and few of its requests reach a
// target; the cancelled requests are logged as 499 ClientClosedRequest,
// never as a 5xx.
func TestHTTP2RapidResetCut(t *testing.T) {
	var reached atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(200 * time.Millisecond):
		}
	}))
	t.Cleanup(slow.Close)
	var logs testsync.Buffer
	p := newProxyWith(t, Config{AccessLog: &logs, test: testKnobs{accessLog: accesslog.Options{FlushInterval: 5 * time.Millisecond}}})
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, slow, model.TargetActive))}, to("a", 1)))
	const max = 5000
	sent := rapidReset(t, addrOf(p, webPort), max)
	t.Logf("%d streams sent before the connection closed; %d reached the target", sent, reached.Load())
	if sent >= max {
		t.Fatalf("connection still open after %d reset streams", sent)
	}
	// What the client had written when the cut came includes streams the
	// proxy never looked at; what it served is in its access log.
	if sent > 2500 {
		t.Errorf("connection cut only after %d reset streams", sent)
	}
	if n := reached.Load(); n > 300 {
		t.Errorf("%d cancelled requests reached the target", n)
	}
	time.Sleep(50 * time.Millisecond)
	lines := logLines(t, &logs)
	if len(lines) > 500 {
		t.Errorf("the proxy served %d reset streams before it cut the connection", len(lines))
	}
	for _, l := range lines {
		if code, _ := l["responseCode"].(float64); code >= 500 {
			t.Errorf("a cancelled request logged as %v %v: %v", code, l["failureReason"], l)
			break
		}
	}
}

// A client that cancels some of its streams but completes more keeps its
// connection: rapid reset protection cuts only connections whose resets
// outnumber their completed streams.
func TestHTTP2OccasionalCancelsKeepConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		}
	}))
	t.Cleanup(srv.Close)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, srv, model.TargetActive))}, to("a", 1)))
	c := h2cClient()
	var dials atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{ConnectStart: func(string, string) { dials.Add(1) }})
	url := "http://" + addrOf(p, webPort)
	for i := range 3 * (rapidResets + 20) {
		if i%3 == 2 {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			req, _ := http.NewRequestWithContext(cctx, "GET", url+"/slow", nil)
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
			cancel()
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/fast", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d connections dialed, want 1: the proxy cut a well-behaved client's connection", n)
	}
}
