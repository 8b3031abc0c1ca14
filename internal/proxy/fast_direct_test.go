package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/test/testsync"
)

// HTTP/2 requests to an HTTP/1.1 target go over the fast path's pooled
// target connections (forwardDirect) where the fast path is on, and the
// target receives, and the client gets back, the same fields as through
// the reverse proxy (the fast path off): forwarding and identity fields,
// the rule's and the backend's header edits, bodies, HEAD.
func TestHTTP2DirectAgreesWithReverseProxy(t *testing.T) {
	echo := headerEcho(t)
	snap := oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))}, to("echo", 1))
	snap.Services[0].Rules = append(snap.Services[0].Rules, editRule("echo"))
	fast := newTestProxy(t, nil)
	update(t, fast, snap)
	slow := newProxyWith(t, Config{DisableFastPath: true})
	update(t, slow, snap)

	c := h2cClient()
	send := func(p *Proxy, method, path, body string, h http.Header) (*http.Response, []byte) {
		t.Helper()
		return sendH2(t, c, p, method, path, body, h)
	}

	type request struct {
		method, path, body string
		h                  http.Header
	}
	requests := []request{
		{"GET", "/", "", nil},
		{"GET", "/a/b?x=1&y=%20", "", http.Header{"Accept": {"*/*"}, "X-Multi": {"1", "2"}}},
		{"GET", "/%61%2Fb", "", http.Header{"User-Agent": {"test/1"}}},
		{"HEAD", "/h", "", nil},
		{"DELETE", "/d", "", nil},
		{"OPTIONS", "/o", "", nil},
		{"POST", "/p", "hello", http.Header{"Content-Type": {"text/plain"}}},
		{"PUT", "/big", strings.Repeat("x", 20000), nil},
		{"GET", "/edit", "", http.Header{"X-Multi": {"1"}, "X-Set": {"client"}, "X-Gone": {"1"}}},
		{"POST", "/edit/p", "body", http.Header{"X-Forwarded-For": {"1.1.1.1"}}},
		{"GET", "/te", "", http.Header{"Te": {"trailers"}}},
	}
	for _, f := range forwardingFields {
		switch http.CanonicalHeaderKey(f.name) {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Te":
			// Connection-specific: an HTTP/2 client does not send them.
			continue
		}
		for _, path := range []string{"/gen", "/edit/gen"} {
			requests = append(requests, request{"GET", path, "", http.Header{f.name: {f.value}, "X-Kept": {"1"}}})
		}
	}
	ignore := []string{headerRequestID, "Date"}
	for _, r := range requests {
		var raw strings.Builder // the request as agreeWithNetHTTP names and checks it
		raw.WriteString(r.method + " " + r.path + " HTTP/2.0\r\n")
		for k, vs := range r.h {
			for _, v := range vs {
				raw.WriteString(k + ": " + v + "\r\n")
			}
		}
		f, fb := send(fast, r.method, r.path, r.body, r.h)
		s, sb := send(slow, r.method, r.path, r.body, r.h)
		if f.StatusCode != http.StatusOK && r.method != "HEAD" {
			t.Errorf("%s %s: status %d", r.method, r.path, f.StatusCode)
		}
		agreeWithNetHTTP(t, raw.String(), f, s, fb, sb, ignore)
	}
	target := echo.Listener.Addr().String()
	if f, s := fast.pool.idleConns(target), slow.pool.idleConns(target); f == 0 || s != 0 {
		t.Errorf("pooled connections to the target: %d with the fast path, %d without", f, s)
	}
}

// The access log records an HTTP/2 request sent directly as it records one
// through the reverse proxy: the target, the status, a target that refuses
// the connection (502), and the time to the target's answer.
func TestHTTP2DirectAccessLog(t *testing.T) {
	echo, down := headerEcho(t), refusingTarget(t)
	var logs [2]testsync.Buffer
	c := h2cClient()
	for i, fastPath := range []bool{true, false} {
		p := newProxyWith(t, Config{DisableFastPath: !fastPath, AccessLog: &logs[i],
			test: testKnobs{accessLog: accesslog.Options{FlushInterval: 5 * time.Millisecond}}})
		snap := oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive)), group("down", down)}, to("echo", 1))
		snap.Services[0].Rules = append([]model.Rule{{
			Matches: prefixMatch("/down"),
			Action:  forward(to("down", 1)),
		}}, snap.Services[0].Rules...)
		update(t, p, snap)
		for _, path := range []string{"/ok", "/down"} {
			req, _ := http.NewRequest("GET", "http://"+addrOf(p, webPort)+path, nil)
			req.Host = "shop.example.com"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	lines := logsAgree(t, &logs, 2)
	for i := range lines {
		l := lines[i]["/ok"]
		if d, _ := l["requestToTargetDuration"].(float64); d <= 0 || l["targetIpPort"] != echo.Listener.Addr().String() {
			t.Errorf("fast path %v: /ok logged without its target or its time to the target: %v", i == 0, l)
		}
	}
	if lines[0]["/down"]["responseCode"] != float64(http.StatusBadGateway) {
		t.Errorf("/down logged %v, want 502", lines[0]["/down"]["responseCode"])
	}
}

// A rule's timeout bounds an HTTP/2 request sent directly as it bounds one
// through the reverse proxy (504), and a client that resets its stream
// while the target works cancels the target's request too: either way the
// target sees its request end.
func TestHTTP2DirectTimeoutAndCancel(t *testing.T) {
	arrived, gone := make(chan struct{}, 4), make(chan struct{}, 4)
	hold := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
		gone <- struct{}{}
	}))
	t.Cleanup(hold.Close)
	ended := func(what string) {
		t.Helper()
		testsync.Receive(t, gone, 5*time.Second, what+": the end of the target's request")
	}
	c := h2cClient()
	for _, fastPath := range []bool{true, false} {
		p := newProxyWith(t, Config{DisableFastPath: !fastPath})
		snap := oneRoute(1, []model.TargetGroup{group("hold", target(t, hold, model.TargetActive))}, to("hold", 1))
		snap.Services[0].Rules = append([]model.Rule{{
			Matches:  []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/timed"}}},
			Timeouts: &model.Timeouts{Request: model.Duration(100 * time.Millisecond)},
			Action:   forward(to("hold", 1)),
		}}, snap.Services[0].Rules...)
		update(t, p, snap)

		req, _ := http.NewRequest("GET", "http://"+addrOf(p, webPort)+"/timed", nil)
		req.Host = "shop.example.com"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		<-arrived
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("fast path %v: the rule's timeout: status %d, want 504", fastPath, resp.StatusCode)
		}
		ended(fmt.Sprintf("fast path %v, timeout", fastPath))

		ctx, cancel := context.WithCancel(context.Background())
		req, _ = http.NewRequestWithContext(ctx, "GET", "http://"+addrOf(p, webPort)+"/left", nil)
		req.Host = "shop.example.com"
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		<-arrived
		cancel()
		ended(fmt.Sprintf("fast path %v, client gone", fastPath))
		<-done
	}
}

// An HTTP/2 request sent directly gets the target's response head as
// fields that go out as they came (peer.ResponseFields), not through a
// header map: the client gets what the reverse proxy relays, field for
// field (names in any case, repeated fields, empty values, hop-by-hop and
// Connection-named fields dropped, Content-Type sniffed when absent, not
// when encoded, Content-Length of a chunked response dropped; trailers
// announced take the header map), and the fields keep the target's order.
func TestHTTP2DirectResponseFields(t *testing.T) {
	many := "HTTP/1.1 200 OK\r\n"
	var order []string
	for i := range 20 {
		many += fmt.Sprintf("X-F%02d: %d\r\n", i, i)
		order = append(order, fmt.Sprintf("x-f%02d", i))
	}
	many += "Content-Length: 2\r\n\r\nok"
	order = append(order, "content-length")
	replies := map[string]string{
		"/mixed": "HTTP/1.1 200 OK\r\nX-Upper: A\r\nx-upper: b\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nConnection: X-Hop\r\n" +
			"X-Hop: gone\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Empty:\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"/sniff":     "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
		"/gzip":      "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
		"/chunked":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"/trailers":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nX-A: 1\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n",
		"/nocontent": "HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n",
		"/notmod":    "HTTP/1.1 304 Not Modified\r\nEtag: \"v1\"\r\n\r\n",
		"/many":      many,
	}
	streamed := map[string]bool{"/chunked": true, "/trailers": true}
	tgt, _ := scriptedTarget(t, func(conn net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			reply := replies[req.URL.Path]
			if req.Method == http.MethodHead {
				reply, _, _ = strings.Cut(reply, "\r\n\r\n")
				reply += "\r\n\r\n"
			}
			if _, err := io.WriteString(conn, reply); err != nil {
				return
			}
		}
	})
	snap := oneRoute(1, []model.TargetGroup{group("raw", tgt)}, to("raw", 1))
	fast := newTestProxy(t, nil)
	update(t, fast, snap)
	slow := newProxyWith(t, Config{DisableFastPath: true})
	update(t, slow, snap)

	c := h2cClient()
	c.Transport.(*http.Transport).DisableCompression = true // the gzip body as it came
	send := func(p *Proxy, method, path string) (*http.Response, string) {
		t.Helper()
		resp, b := sendH2(t, c, p, method, path, "", nil)
		// net/http's server (the reverse proxy's, the fast path off)
		// adds its own.
		resp.Header.Del("Date")
		return resp, string(b)
	}
	for path := range replies {
		for _, method := range []string{"GET", "HEAD"} {
			f, fb := send(fast, method, path)
			s, sb := send(slow, method, path)
			if f.StatusCode != s.StatusCode || fb != sb {
				t.Errorf("%s %s: fast %d %q, net/http %d %q", method, path, f.StatusCode, fb, s.StatusCode, sb)
			}
			if streamed[path] {
				// httputil flushes a streamed head from a timer that races
				// its first body write, so net/http's client may or may not
				// see a sniffed Content-Type; the fast path never sniffs one.
				if ct := f.Header.Get("Content-Type"); ct != "" {
					t.Errorf("%s %s: a streamed body got Content-Type %q, want none", method, path, ct)
				}
				s.Header.Del("Content-Type")
			}
			if a, b := sortedHeader(f.Header), sortedHeader(s.Header); a != b {
				t.Errorf("%s %s: response header\nfast     %s\nnet/http %s", method, path, a, b)
			}
			if a, b := sortedHeader(f.Trailer), sortedHeader(s.Trailer); a != b {
				t.Errorf("%s %s: trailers\nfast     %s\nnet/http %s", method, path, a, b)
			}
		}
	}
	if _, b := send(fast, "GET", "/mixed"); b != "hello" {
		t.Errorf("/mixed: body %q", b)
	}
	if f, _ := send(fast, "GET", "/sniff"); f.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("/sniff: Content-Type %q, want it sniffed", f.Header.Get("Content-Type"))
	}
	if f, _ := send(fast, "GET", "/trailers"); f.Trailer.Get("X-Sum") != "42" {
		t.Errorf("/trailers: trailers %v", f.Trailer)
	}

	rf := dialRawFront(t, addrOf(fast, webPort))
	rf.get(1, "/many")
	hf, ok := rf.next().(*http2.MetaHeadersFrame)
	if !ok {
		t.Fatal("/many: no HEADERS first")
	}
	var got []string
	for _, f := range hf.RegularFields() {
		got = append(got, f.Name)
	}
	// The sniffed Content-Type first, then the target's, in its order.
	if want := append([]string{"content-type"}, order...); !slices.Equal(got, want) {
		t.Errorf("/many: fields %v, want %v", got, want)
	}
}

// The head fields a relayed response goes out with (appendResponseFields)
// are the ones the header map would carry (copyResponseFields, then the
// HTTP/2 server's lower-case names), value for value, for any response
// head the parser takes, and the common names come out lower-case too.
func FuzzAppendResponseFields(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 200 OK\r\nSERVER: a\r\ndate: b\r\nEtag: \"1\"\r\nVARY: *\r\nSet-Cookie: a\r\nset-cookie: b\r\nX-Empty:\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nCache-Control: no\r\nLast-Modified: y\r\nAccept-Ranges: bytes\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: x-hop, Date\r\nX-Hop: 1\r\nDate: d\r\nKeep-Alive: 1\r\nLocation: /\r\nContent-Encoding: br\r\n\r\n",
		"HTTP/1.0 204 No Content\r\nDatE: 1\r\nEtaG: 2\r\nDave: 3\r\nServes: 4\r\n\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, head string) {
		var resp h1.Response
		if h1.ParseResponse([]byte(head), &resp) != nil {
			return
		}
		if resp.Chunked && hasField(&resp, "Trailer") {
			return // the header map's (headFields)
		}
		want := map[string][]string{}
		for k, vs := range copyHeader(&resp) {
			want[strings.ToLower(k)] = vs
		}
		var fields []hpack.HeaderField
		appendResponseFields(&fields, &resp)
		got := map[string][]string{}
		for _, hf := range fields {
			if hf.Name != strings.ToLower(hf.Name) {
				t.Fatalf("name %q not lower-case", hf.Name)
			}
			got[hf.Name] = append(got[hf.Name], hf.Value)
		}
		if a, b := sortedHeader(got), sortedHeader(want); a != b {
			t.Fatalf("head %q:\nfields %s\nmap    %s", head, a, b)
		}
	})
}

func copyHeader(resp *h1.Response) http.Header {
	h := http.Header{}
	copyResponseFields(h, resp)
	return h
}

// sendH2 sends one request for shop.example.com to p's web port through the
// HTTP/2 client c and returns the answer with its body read whole; an answer
// over anything but HTTP/2 fails the test.
func sendH2(t *testing.T, c *http.Client, p *Proxy, method, path, body string, h http.Header) (*http.Response, []byte) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addrOf(p, webPort)+path, rb)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.example.com"
	req.Header = h.Clone()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s %s: answered over HTTP/%d", method, path, resp.ProtoMajor)
	}
	return resp, b
}
