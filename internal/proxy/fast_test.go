package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// scriptedTarget is a target that speaks raw bytes: serve runs on each
// connection it accepts. It returns the target and a count of connections.
func scriptedTarget(t *testing.T, serve func(conn net.Conn, br *bufio.Reader)) (model.Target, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	testsync.ServeConns(t, ln, func(conn net.Conn) {
		conns.Add(1)
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		serve(conn, bufio.NewReader(conn))
	})
	tcp := ln.Addr().(*net.TCPAddr)
	return model.Target{Address: "127.0.0.1", Port: int32(tcp.Port), Cluster: cluster, State: model.TargetActive}, &conns
}

// answerWith is a scripted target's serve that reads requests and answers
// each with reply, closing the connection after it when closeAfter is set.
func answerWith(reply string, closeAfter bool) func(net.Conn, *bufio.Reader) {
	return func(conn net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if _, err := io.WriteString(conn, reply); err != nil || closeAfter {
				return
			}
		}
	}
}

// The fast path passes every framing of a target's response on intact:
// chunked with trailers, delimited by the connection's end, HTTP/1.0, no
// body, informational responses first; hop-by-hop fields are dropped, and
// a response it cannot parse is a 502.
func TestFastPathResponseFraming(t *testing.T) {
	tests := []struct {
		name, reply string
		status      int
		body        string
		header      map[string]string
		absent      []string
		trailer     map[string]string
		hints       int
	}{
		{
			name:    "chunked with trailers",
			reply:   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
			status:  200,
			body:    "hello world",
			trailer: map[string]string{"X-Sum": "42"},
		},
		{
			name:   "delimited by close",
			reply:  "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end",
			status: 200, body: "until the end", header: map[string]string{"X-A": "1"},
		},
		{
			name:   "HTTP/1.0 with length",
			reply:  "HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nok",
			status: 201, body: "ok",
		},
		{
			name:   "no content",
			reply:  "HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n",
			status: 204, header: map[string]string{"X-B": "2"},
		},
		{
			name:   "early hints first",
			reply:  "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", hints: 1,
		},
		{
			name:   "hop-by-hop fields dropped",
			reply:  "HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
			status: 200, body: "ok", header: map[string]string{"X-Kept": "yes"}, absent: []string{"X-Secret", "Keep-Alive"},
		},
		{name: "malformed status line", reply: "HTTP/1.1 2x0 OK\r\n\r\n", status: 502},
		{name: "conflicting lengths", reply: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", status: 502},
		{name: "unsupported transfer coding", reply: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", status: 502},
		{name: "switching protocols unasked", reply: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", status: 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tgt, _ := scriptedTarget(t, answerWith(tt.reply, true))
			p := newTestProxy(t, nil)
			update(t, p, oneRoute(1, []model.TargetGroup{group("a", tgt)}, to("a", 1)))
			hints := 0
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(int, textproto.MIMEHeader) error { hints++; return nil },
			})
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addrOf(p, webPort)+"/x", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading body: %v", err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 502 {
				return
			}
			if string(body) != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
			for k, v := range tt.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := resp.Header[k]; ok {
					t.Errorf("client received %s: %q", k, v)
				}
			}
			for k, v := range tt.trailer {
				if got := resp.Trailer.Get(k); got != v {
					t.Errorf("trailer %s = %q, want %q", k, got, v)
				}
			}
			if hints != tt.hints {
				t.Errorf("%d informational responses, want %d", hints, tt.hints)
			}
		})
	}
}

// A target that closes a keep-alive connection right after answering (or
// after its idle timeout) does not fail the next request sent while the
// proxy still pools that connection: a request without a body is sent
// again on a new connection; one with a body goes on a connection checked
// to be open.
func TestFastPathStaleTargetConnection(t *testing.T) {
	tgt, conns := scriptedTarget(t, answerWith("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true))
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", tgt)}, to("a", 1)))
	c := newClient(t)
	addr := addrOf(p, webPort)
	for i := range 6 {
		method := "GET"
		var body io.Reader
		if i%2 == 1 {
			method, body = "POST", strings.NewReader("payload")
		}
		req, _ := http.NewRequest(method, "http://"+addr+"/", body)
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d (%s): %d %q, want 200 ok", i, method, resp.StatusCode, b)
		}
		// Let the target's close reach the proxy for the checked case.
		time.Sleep(20 * time.Millisecond)
	}
	if n := conns.Load(); n != 6 {
		t.Errorf("target saw %d connections, want 6 (one per request)", n)
	}
}

// Requests the fast path does not take hand the connection to net/http
// midway, with the bytes already read; pipelined requests are answered in
// order; both paths serve one connection's requests in turn.
func TestFastPathHandoff(t *testing.T) {
	echo := bodyEcho(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, echo, model.TargetActive))}, to("a", 1)))
	conn := dialWeb(t, p)
	br := bufio.NewReader(conn)
	send := func(raw string) {
		t.Helper()
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what, wantBody string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), wantBody) {
			t.Fatalf("%s: %d %q (%v), want 200 %q", what, resp.StatusCode, body, err, wantBody)
		}
	}
	// Two pipelined requests in one write, the fast path's.
	send("GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	expect("pipelined first", "GET /one 0")
	expect("pipelined second", "POST /two 3 "+sha("abc"))
	// A chunked request body is net/http's: the connection moves there.
	send("POST /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n")
	expect("handed off", "POST /three 4 "+sha("wxyz"))
	if n := testutil.ToFloat64(p.metrics.handoffs); n != 1 {
		t.Errorf("trellis_http_connections_handed_off_total = %v, want 1", n)
	}
	// And stays there for what follows.
	send("GET /four HTTP/1.1\r\nHost: a\r\n\r\n")
	expect("after the handoff", "GET /four 0")
}

// bodyEcho answers "<method> <path> <body length> <body sha256>".
func bodyEcho(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if len(b) == 0 {
			fmt.Fprintf(w, "%s %s 0", r.Method, r.URL.Path)
			return
		}
		fmt.Fprintf(w, "%s %s %d %s", r.Method, r.URL.Path, len(b), sha(string(b)))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

// Bodies of every size arrive whole: those up to maxFastBody on the fast
// path, larger ones through net/http.
func TestFastPathRequestBodies(t *testing.T) {
	echo := bodyEcho(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, echo, model.TargetActive))}, to("a", 1)))
	c := newClient(t)
	for _, n := range []int{1, 4 << 10, maxFastBody, maxFastBody + 1, 1 << 20} {
		payload := strings.Repeat("x", n-1) + "y"
		req, _ := http.NewRequest("PUT", "http://"+addrOf(p, webPort)+"/b", strings.NewReader(payload))
		resp, err := c.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("PUT /b %d %s", n, sha(payload)); string(body) != want {
			t.Errorf("%d bytes: target answered %q, want %q", n, body, want)
		}
	}
}

// editRule matches paths under /edit and forwards them to group, editing
// headers both ways: request and response fields set, added and removed by
// the rule, and a request field added by the backend. The agreement tests
// send the fields it names.
func editRule(group string) model.Rule {
	return model.Rule{
		Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/edit"}}},
		Filters: []model.Filter{
			{RequestHeaders: &model.HeaderFilter{
				Set:    []model.Header{{Name: "X-Set", Value: "s"}, {Name: "Host", Value: "edited.example.com"}},
				Add:    []model.Header{{Name: "X-Multi", Value: "3"}, {Name: "x-new", Value: "n"}},
				Remove: []string{"X-Gone", "Content-Length"},
			}},
			{ResponseHeaders: &model.HeaderFilter{
				Set:    []model.Header{{Name: "Content-Type", Value: "text/edited"}},
				Add:    []model.Header{{Name: "X-Resp", Value: "r"}},
				Remove: []string{"Content-Length"},
			}},
		},
		Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{
			TargetGroup: group, Weight: 1,
			Filters: []model.Filter{{RequestHeaders: &model.HeaderFilter{Add: []model.Header{{Name: "X-Set", Value: "by-backend"}}}}},
		}}}},
	}
}

// The fast path and net/http forward the same requests the same way: what
// the target receives and what the client gets back agree, header for
// header.
func TestFastPathAgreesWithNetHTTP(t *testing.T) {
	echo := headerEcho(t)
	snap := func() *model.Snapshot {
		s := oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))}, to("echo", 1))
		s.Services[0].Rules = append(s.Services[0].Rules, editRule("echo"))
		return s
	}
	fast := newTestProxy(t, nil)
	update(t, fast, snap())
	slow := newProxyWith(t, Config{DisableFastPath: true})
	update(t, slow, snap())

	requests := append([]string{
		"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop.example.com:8080\r\nAccept: */*\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n",
		"GET /%61%2Fb HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: test/1\r\n\r\n",
		"HEAD /h HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"GET /forged HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Trellis-Identity: Type=Admin\r\nX_Trellis_Target: x\r\n" +
			"Forwarded: for=1.2.3.4\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: 1\r\n\r\n",
		"GET /close HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n",
		"GET /edit HTTP/1.1\r\nHost: shop.example.com\r\nX-Multi: 1\r\nX-Set: client\r\nX-Gone: 1\r\n\r\n",
		"POST /edit/p HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 1.1.1.1\r\nContent-Length: 4\r\n\r\nbody",
		// The body's framing is never a Connection option's to drop.
		"POST /p HTTP/1.1\r\nHost: shop.example.com\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
		"POST /edit/p HTTP/1.1\r\nHost: shop.example.com\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
	}, generatedFieldRequests()...)
	// Fields that differ by design: the request ID, and the transfer
	// details net/http adds to its own responses.
	ignore := []string{headerRequestID, "Date"}
	handoffs := func() float64 { return testutil.ToFloat64(fast.metrics.handoffs) }
	for _, raw := range requests {
		before := handoffs()
		f, fb := exchangeRaw(t, addrOf(fast, webPort), raw)
		if handoffs() != before && fastPathTakes(raw) {
			t.Errorf("%q went to net/http, not the fast path", raw)
		}
		s, sb := exchangeRaw(t, addrOf(slow, webPort), raw)
		agreeWithNetHTTP(t, raw, f, s, fb, sb, ignore)
	}
}

// agreeWithNetHTTP checks that the fast path's exchange of raw (f, fb)
// and net/http's (s, sb) agree but for the ignore fields: status, close,
// the response header and, for a 200 to other than HEAD, the request
// header the echo target received, which must hold none of the fields
// mustNotForward names nor forbidden.
func agreeWithNetHTTP(t *testing.T, raw string, f, s *http.Response, fb, sb []byte, ignore []string, forbidden ...string) {
	t.Helper()
	line := strings.SplitN(raw, "\r\n", 2)[0]
	if f.StatusCode != s.StatusCode {
		t.Errorf("%s: status fast %d, net/http %d", line, f.StatusCode, s.StatusCode)
	}
	if f.Close != s.Close {
		t.Errorf("%s: close fast %v, net/http %v", line, f.Close, s.Close)
	}
	for _, h := range []http.Header{f.Header, s.Header} {
		for _, k := range ignore {
			delete(h, k)
		}
	}
	if a, b := sortedHeader(f.Header), sortedHeader(s.Header); a != b {
		t.Errorf("%s: response header\nfast     %s\nnet/http %s", line, a, b)
	}
	if strings.HasPrefix(raw, "HEAD") || f.StatusCode != http.StatusOK {
		return
	}
	var fh, sh http.Header
	if err := json.Unmarshal(fb, &fh); err != nil {
		t.Fatalf("%s: fast: %v: %s", line, err, fb)
	}
	if err := json.Unmarshal(sb, &sh); err != nil {
		t.Fatalf("%s: net/http: %v: %s", line, err, sb)
	}
	for _, h := range []http.Header{fh, sh} {
		for _, k := range ignore {
			delete(h, k)
		}
	}
	if a, b := sortedHeader(fh), sortedHeader(sh); a != b {
		t.Errorf("%s: target received\nfast     %s\nnet/http %s", line, a, b)
	}
	for _, k := range append(mustNotForward(raw), forbidden...) {
		if v, ok := fh[http.CanonicalHeaderKey(k)]; ok {
			t.Errorf("%s: target received %s: %q", line, k, v)
		}
	}
}

// forwardingFields are the request fields whose forwarding the proxy
// decides: hop-by-hop fields, forwarding fields it sets itself, identity
// fields a client may forge, and framing. Each comes with a value to send.
var forwardingFields = []struct{ name, value string }{
	{"Connection", "keep-alive"},
	{"Keep-Alive", "timeout=5"},
	{"Proxy-Connection", "keep-alive"},
	{"Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="},
	{"Proxy-Authenticate", "Basic realm=x"},
	{"TE", "trailers"},
	{"TE", "gzip, trailers"},
	{"TE", "deflate"},
	{"Trailer", "X-Sum"},
	{"Transfer-Encoding", "chunked"},
	{"Upgrade", "websocket"},
	{"Forwarded", "for=6.6.6.6;proto=https"},
	{"X-Forwarded-For", "6.6.6.6"},
	{"X-Forwarded-Host", "evil.example.com"},
	{"X-Forwarded-Port", "1"},
	{"X-Forwarded-Proto", "https"},
	{"X-Forwarded-For-Port", "1"},
	{"X-Forwarded-For-Proto", "https"},
	{"X-Real-Ip", "6.6.6.6"},
	{"X-Trellis-Identity", "Principal=spiffe://local/ns/a/sa/admin; Type=Workload"},
	{"X-Trellis-Network", "SourceCluster=other; Network=edge"},
	{"X-Trellis-Target", "Service=admin"},
	{"X-Trellis-Request-Id", "forged"},
	{"X_Trellis_Identity", "Type=Workload"},
	{"X-Amzn-Lattice-Identity", "Principal=arn:aws:iam::1:root; Type=AWS_IAM"},
	{"X-Amzn-Lattice-Network", "SourceVpcArn=x"},
	{"X-Amzn-Lattice-Target", "ServiceArn=x"},
	{"x_amzn_lattice_identity", "Type=AWS_IAM"},
	{"X-Custom", "1"},
}

// generatedFieldRequests makes, for every forwarding field, requests that
// send it once, twice, and named by Connection, in three casings, with and
// without a rule's header edits.
func generatedFieldRequests() []string {
	casings := []func(string) string{func(s string) string { return s }, strings.ToLower, strings.ToUpper}
	var out []string
	n := 0
	for _, f := range forwardingFields {
		for _, path := range []string{"/gen", "/edit/gen"} {
			for form := range 3 {
				name := casings[n%len(casings)](f.name)
				n++
				var b strings.Builder
				b.WriteString("GET " + path + " HTTP/1.1\r\nHost: shop.example.com\r\n")
				switch form {
				case 0:
					b.WriteString(name + ": " + f.value + "\r\n")
				case 1:
					b.WriteString(name + ": " + f.value + "\r\n" + "X-Between: 1\r\n" + name + ": " + f.value + "-2\r\n")
				case 2:
					if strings.EqualFold(f.name, "Connection") {
						continue
					}
					b.WriteString("Connection: keep-alive, " + name + "\r\n" + name + ": " + f.value + "\r\n")
				}
				b.WriteString("X-Kept: 1\r\n\r\n")
				if strings.EqualFold(f.name, "Transfer-Encoding") {
					b.WriteString("0\r\n\r\n")
				}
				out = append(out, b.String())
			}
		}
	}
	return out
}

// fastPathTakes reports whether the fast path serves raw itself rather
// than handing it to net/http.
func fastPathTakes(raw string) bool {
	head := strings.ToLower(raw)
	return !strings.Contains(head, "\nupgrade:") && !strings.Contains(head, "\ntransfer-encoding:") && !strings.Contains(head, "\nexpect:")
}

// mustNotForward lists the fields of raw that must never reach a target as
// the client sent them: hop-by-hop fields, those its Connection names, and
// identity fields (the proxy sets X-Trellis-* itself, checked apart).
func mustNotForward(raw string) []string {
	names := []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate",
		"Trailer", "Transfer-Encoding", "Upgrade", "X-Amzn-Lattice-Identity", "X-Amzn-Lattice-Network",
		"X-Amzn-Lattice-Target", "X_amzn_lattice_identity", "X_trellis_identity", "Forwarded"}
	for _, line := range strings.Split(raw, "\r\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(name, "Connection") {
			continue
		}
		for _, tok := range strings.Split(value, ",") {
			tok = strings.TrimSpace(tok)
			switch {
			case strings.EqualFold(tok, "upgrade"):
				// An upgrade goes through, Upgrade and Connection with it.
				names = slices.DeleteFunc(names, func(n string) bool { return n == "Upgrade" || n == "Connection" })
			case tok == "", strings.EqualFold(tok, "keep-alive"), strings.EqualFold(tok, "close"),
				strings.EqualFold(tok, "content-length"), strings.EqualFold(tok, "TE"),
				// Set by the proxy itself whatever the client sent.
				strings.HasPrefix(strings.ToLower(tok), "x-forwarded"), isTrellisHeader(tok):
			default:
				names = append(names, tok)
			}
		}
	}
	return names
}

func sortedHeader(h http.Header) string {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(h)) {
		fmt.Fprintf(&b, "%s=%q ", k, h[k])
	}
	return b.String()
}

// exchangeRaw sends raw on a connection of its own and reads the response.
func exchangeRaw(t *testing.T, addr, raw string) (*http.Response, []byte) {
	t.Helper()
	conn := dialRaw(t, addr, raw)
	defer conn.Close()
	method, _, _ := strings.Cut(raw, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// A rule's timeout bounds the wait for a target on the fast path too: 504,
// and the client's connection serves the next request.
func TestFastPathTimeout(t *testing.T) {
	slow, _, release := slowBackend(t)
	defer release()
	p := newTestProxy(t, nil)
	snap := oneRoute(1, []model.TargetGroup{group("a", target(t, slow, model.TargetActive))}, to("a", 1))
	snap.Services[0].Rules[0].Timeouts = &model.Timeouts{Request: model.Duration(100 * time.Millisecond)}
	update(t, p, snap)
	conn := dialWeb(t, p)
	br := bufio.NewReader(conn)
	for i := range 2 {
		start := time.Now()
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("request %d: status %d, want 504", i, resp.StatusCode)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("request %d: answered after %v, before the timeout", i, d)
		}
	}
}

// On an HTTPS listener the fast path serves HTTP/1.1 after the handshake
// and hands HTTP/2 connections to net/http at once; a connection handed
// over midway keeps its TLS state, so the target hears "https" either way.
func TestFastPathTLS(t *testing.T) {
	ca := pki.NewCA(t)
	leaf := ca.Issue(t, "shop.example.com")
	echo := headerEcho(t)
	p := newTestProxy(t, nil)
	update(t, p, httpsSnapshot(leaf, target(t, echo, model.TargetActive)))
	conn, err := tls.Dial("tcp", addrOf(p, 8443), &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for _, raw := range []string{
		"GET /fast HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"POST /handed-off HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
		"GET /after HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
	} {
		io.WriteString(conn, raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		var seen http.Header
		err = json.NewDecoder(resp.Body).Decode(&seen)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if got := seen.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("%q: target got X-Forwarded-Proto %q, want https", raw, got)
		}
	}
	if n := testutil.ToFloat64(p.metrics.handoffs); n != 1 {
		t.Errorf("%v handoffs, want 1 (the chunked request's)", n)
	}

	// HTTP/2 goes to net/http straight after the handshake.
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "shop.example.com", RootCAs: ca.Pool()}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addrOf(p, 8443) + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	var seen http.Header
	json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || seen.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("HTTP/2 client: %s, target got X-Forwarded-Proto %q", resp.Proto, seen.Get("X-Forwarded-Proto"))
	}
}

// A client that leaves while the target works on its request (a long poll)
// does not hold the target: the fast path notices within its check
// interval, closes the target connection (which cancels the target's
// request) and records 499 ClientClosedRequest.
func TestFastPathClientGone(t *testing.T) {
	canceled := make(chan struct{}, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(be.Close)
	logs := &testsync.Buffer{}
	p := newProxyWith(t, Config{AccessLog: logs, test: testKnobs{clientCheck: 50 * time.Millisecond, accessLog: accesslog.Options{FlushInterval: 5 * time.Millisecond}}})
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, be, model.TargetActive))}, to("a", 1)))
	conn := dialWeb(t, p)
	io.WriteString(conn, "GET /poll HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	testsync.Receive(t, canceled, 5*time.Second, "the target's request canceled after the client left")
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := logLines(t, logs)
		if len(lines) == 1 {
			if lines[0]["responseCode"] != float64(499) || lines[0]["failureReason"] != "ClientClosedRequest" {
				t.Errorf("access log entry %v, want responseCode 499, failureReason ClientClosedRequest", lines[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log entries, want 1", len(lines))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A pipelined request that asks to close the connection is answered, and
// the connection closed, though more requests wait behind it.
func TestFastPathPipelineWithClose(t *testing.T) {
	echo := bodyEcho(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, echo, model.TargetActive))}, to("a", 1)))
	conn := dialWeb(t, p)
	io.WriteString(conn, "GET /one HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
	all, err := io.ReadAll(conn) // until the proxy closes
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(bytes.NewReader(all))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response to the first request: %v (read %q)", err, all)
	}
	body, _ := io.ReadAll(resp.Body)
	if !resp.Close || string(body) != "GET /one 0" {
		t.Errorf("first response: close %v, body %q", resp.Close, body)
	}
	if br.Buffered() > 0 {
		t.Errorf("the request after Connection: close was answered too")
	}
}

// A request whose Host belongs to another listener of the HTTPS port than
// the one its connection's server name chose is answered 421, over
// HTTP/1.1 (the fast path hands it to net/http) and HTTP/2 alike.
func TestMisdirectedRequest(t *testing.T) {
	ca := pki.NewCA(t)
	certOf := func(name string, names ...string) model.Certificate {
		l := ca.Issue(t, names...)
		return model.Certificate{Meta: model.Meta{Name: name, Owner: cluster, Revision: 1}, CertPEM: string(l.CertPEM), KeyPEM: string(l.KeyPEM)}
	}
	echo := headerEcho(t)
	svc := func(name, host string, l model.Listener) model.Service {
		return model.Service{Meta: model.Meta{Name: name, Owner: cluster}, Network: "edge", CustomDomains: []string{host},
			Listeners: []model.Listener{l}, Rules: []model.Rule{{Action: forward(to("echo", 1))}}}
	}
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		Certificates: []model.Certificate{certOf("a", "a.example.com"), certOf("any", "b.example.com")},
		Services: []model.Service{
			svc("a", "a.example.com", model.Listener{Name: "a", Port: 8443, Protocol: model.ProtocolHTTPS, Hostname: "a.example.com", Certificates: []string{"a"}}),
			svc("b", "b.example.com", model.Listener{Name: "any", Port: 8443, Protocol: model.ProtocolHTTPS, Certificates: []string{"any"}}),
		},
		TargetGroups: []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))},
	}, Revision: 1})
	for _, h2 := range []bool{false, true} {
		for _, tc := range []struct {
			sni, host string
			want      int
		}{
			{"a.example.com", "a.example.com", http.StatusOK},
			{"b.example.com", "b.example.com", http.StatusOK},
			{"a.example.com", "b.example.com", http.StatusMisdirectedRequest},
			{"b.example.com", "a.example.com", http.StatusMisdirectedRequest},
			{"a.example.com", "A.Example.COM:8443", http.StatusOK},
			{"a.example.com", "a.example.com.", http.StatusOK},
			{"A.EXAMPLE.com", "b.example.com:8443", http.StatusMisdirectedRequest},
			{"b.example.com", "A.example.com.:8443", http.StatusMisdirectedRequest},
		} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: tc.sni, RootCAs: ca.Pool()}, Protocols: new(http.Protocols)}
			tr.Protocols.SetHTTP1(!h2)
			tr.Protocols.SetHTTP2(h2)
			req, _ := http.NewRequest(http.MethodGet, "https://"+addrOf(p, 8443)+"/", nil)
			req.Host = tc.host
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatalf("h2=%v SNI %s Host %s: %v", h2, tc.sni, tc.host, err)
			}
			resp.Body.Close()
			tr.CloseIdleConnections()
			if resp.StatusCode != tc.want || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
				t.Errorf("h2=%v SNI %s Host %s: %d over %s, want %d", h2, tc.sni, tc.host, resp.StatusCode, resp.Proto, tc.want)
			}
		}
	}
}

// dialWeb connects to p's listener for webPort; the connection closes, and
// its reads and writes time out, with the test.
func dialWeb(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	return dialRaw(t, addrOf(p, webPort), "")
}

// dialRaw opens a connection to addr (testsync.Dial: closed when the test
// ends, with a 10-second deadline) and writes raw on it.
func dialRaw(t *testing.T, addr, raw string) net.Conn {
	t.Helper()
	conn := testsync.Dial(t, addr)
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	return conn
}
