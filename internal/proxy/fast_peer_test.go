package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/testsync"
)

// peerEchoSnapshot routes every request to group "echo", of west, with
// targets; rules under /edit edit headers both ways (editRule), and
// /timeout has a request timeout of 200 ms.
func peerEchoSnapshot(targets ...model.Target) *model.Snapshot {
	tg := group("echo", targets...)
	tg.Owner = "west"
	s := oneRoute(1, []model.TargetGroup{tg}, to("echo", 1))
	s.Services[0].Rules = append([]model.Rule{
		editRule("echo"),
		{
			Matches:  []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/timeout"}}},
			Timeouts: &model.Timeouts{Request: model.Duration(200 * time.Millisecond)},
			Action:   forward(to("echo", 1)),
		},
	}, s.Services[0].Rules...)
	return s
}

// The fast path sends a request without a body for another cluster's
// target through the hop itself, and forwards it as net/http does: what
// the target receives and what the client gets back agree, header for
// header, with east on the fast path and east on net/http alone.
func TestFastPathPeerHopAgreesWithNetHTTP(t *testing.T) {
	echo := headerEcho(t)
	fast, slow := newHopWorld(t), newHopWorld(t, func(c *Config) { c.DisableFastPath = true })
	for _, w := range []*hopWorld{fast, slow} {
		w.update(t, peerEchoSnapshot(clusterTarget(t, echo, "west")))
	}
	requests := append([]string{
		"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop.example.com:8080\r\nAccept: */*\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n",
		"GET /%61%2Fb HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: test/1\r\n\r\n",
		"HEAD /h HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"DELETE /d HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 0\r\n\r\n",
		"POST /empty HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS /o HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: shop.example.com\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"PUT /big HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("x", 20000),
		"POST /edit/p HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 1.1.1.1\r\nContent-Length: 4\r\n\r\nbody",
		"GET /forged HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Trellis-Identity: Type=Admin\r\nX_Trellis_Target: x\r\n" +
			"Trellis-Peer-Target: 10.0.0.1:80\r\nTrellis-Peer-Identity: spiffe://west/ns/a/sa/b\r\n" +
			"Forwarded: for=1.2.3.4\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: 1\r\n\r\n",
		"GET /close HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n",
		"GET /edit HTTP/1.1\r\nHost: shop.example.com\r\nX-Multi: 1\r\nX-Set: client\r\nX-Gone: 1\r\n\r\n",
	}, generatedFieldRequests()...)
	ignore := []string{headerRequestID, "Date"}
	handoffs := func() float64 { return testutil.ToFloat64(fast.east.metrics.handoffs) }
	for _, raw := range requests {
		before := handoffs()
		f, fb := exchangeRaw(t, addrOf(fast.east, webPort), raw)
		line := strings.SplitN(raw, "\r\n", 2)[0]
		if tookFast := handoffs() == before; tookFast != fastPathTakes(raw) {
			t.Errorf("%s: on the fast path %v", line, tookFast)
		}
		s, sb := exchangeRaw(t, addrOf(slow.east, webPort), raw)
		agreeWithNetHTTP(t, raw, f, s, fb, sb, ignore, "Trellis-Peer-Target", "Trellis-Peer-Identity")
	}
	// West delivered on its handlers' goroutines (deliverDirect), over the
	// fast path's pool, where the fast path is on.
	target := echo.Listener.Addr().String()
	if f, s := fast.west.pool.idleConns(target), slow.west.pool.idleConns(target); f == 0 || s != 0 {
		t.Errorf("west's pooled connections to the target: %d with the fast path, %d without", f, s)
	}
}

// A response of unknown length streams to the client in chunks, each as it
// comes, with the target's trailers; a body cut short is a 502, one that
// stalls is cut off after the response idle timeout; the
// rule's timeout answers 504; and a client that leaves while the target
// works cancels the request at the target: all on the fast path at east
// and delivered directly at west.
func TestFastPathPeerHopStreamsTimesOutAndCancels(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	next := make(chan struct{})
	backend := identityBackend(t, "unused")
	backend.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "first,")
			w.(http.Flusher).Flush()
			<-next
			io.WriteString(w, "second")
			w.Header().Set("X-Sum", "2")
		case "/short":
			conn, _, _ := w.(http.Hijacker).Hijack()
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			conn.Close()
		case "/stall":
			io.WriteString(w, "first,")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		case "/timeout", "/poll":
			select {
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		}
	})
	w := newHopWorld(t, func(c *Config) {
		c.test.clientCheck = 20 * time.Millisecond
		c.ResponseIdleTimeout = time.Second
	})
	w.update(t, peerEchoSnapshot(clusterTarget(t, backend, "west")))
	addr := addrOf(w.east, webPort)

	conn := dialRaw(t, addr, "GET /stream HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	head := string(buf[:n])
	if err != nil || !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.Contains(head, "Transfer-Encoding: chunked\r\n") ||
		!strings.Contains(head, "Trailer: X-Sum\r\n") || !strings.HasSuffix(head, "\r\n\r\n6\r\nfirst,\r\n") {
		t.Fatalf("before the target's second write: %q, %v", head, err)
	}
	close(next)
	var rest strings.Builder
	for !strings.HasSuffix(rest.String(), "\r\n\r\n") {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %q: %v", rest.String(), err)
		}
		rest.Write(buf[:n])
	}
	if want := "6\r\nsecond\r\n0\r\nX-Sum: 2\r\n\r\n"; rest.String() != want {
		t.Errorf("the body's end and trailers: %q, want %q", rest.String(), want)
	}

	// A body cut short at the target resets west's stream before its
	// head left (as the reverse proxy does): 502, never a short 200.
	if resp, body := exchangeRaw(t, addr, "GET /short HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("a body cut short: %d %q, want 502", resp.StatusCode, body)
	}

	// A body that stalls past the response idle timeout is cut off: west
	// resets the stream, east closes the client's connection mid-body.
	start := time.Now()
	conn = dialRaw(t, addr, "GET /stall HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
	got, err := io.ReadAll(conn)
	if err != nil || !strings.HasSuffix(string(got), "\r\n\r\n6\r\nfirst,\r\n") || time.Since(start) > 8*time.Second {
		t.Errorf("a stalled body: %q, %v after %v", got, err, time.Since(start))
	}
	testsync.Receive(t, cancelled, 5*time.Second, "the target's request ended by the response idle timeout")

	resp, _ := exchangeRaw(t, addr, "GET /timeout HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("past the rule's timeout: %d, want 504", resp.StatusCode)
	}
	testsync.Receive(t, cancelled, 5*time.Second, "the target's request ended by the rule's timeout")

	conn = dialRaw(t, addr, "GET /poll HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	testsync.Receive(t, cancelled, 5*time.Second, "the target's request ended when its client left")
	if n := testutil.ToFloat64(w.east.metrics.handoffs); n != 0 {
		t.Errorf("%v connections handed to net/http, want none", n)
	}
}

// What a peer sends goes on a request line only when it is what
// http.Transport would send, and a body only when its length is known and
// at most maxFastBody: anything else takes the reverse proxy.
func TestDeliverDirectTakesOnlyPlainRequests(t *testing.T) {
	p := newTestProxy(t, nil)
	tgt := router.NewTarget("127.0.0.1:1", cluster, "g", model.ProtocolHTTP, model.HTTP1)
	for _, tc := range []struct {
		method, host, uri string
		length            int64
	}{
		{"GET /", "a b", "/", 0},
		{"GET", "a\r\nb", "/", 0},
		{"GET", "a", "/", 0},
		{"GET", "a", "/", 5},
		{"GET", "a", "/", maxFastBody},
		{"GET", "a", "/", maxFastBody + 1},
		{"GET", "a", "/", -1},
		{"CONNECT", "a", "/", 0},
		{"G\nET", "a", "/", 0},
	} {
		r := httptest.NewRequest("GET", "http://a/", nil)
		r.Method, r.Host, r.ContentLength = tc.method, tc.host, tc.length
		r.URL.Path = tc.uri
		w := httptest.NewRecorder()
		taken := p.deliverDirect(w, r, tgt)
		plain := tc.method == "GET" && tc.host == "a" && tc.length >= 0 && tc.length <= maxFastBody
		if taken != plain {
			t.Errorf("%q %q %q length %d: taken %v", tc.method, tc.host, tc.uri, tc.length, taken)
		}
	}
	r := httptest.NewRequest("POST", "http://a/", strings.NewReader("x"))
	r.Header.Set("Expect", "100-continue")
	if p.deliverDirect(httptest.NewRecorder(), r, tgt) {
		t.Error("a request expecting 100-continue was taken")
	}
	r = httptest.NewRequest("GET", "http://a/", nil)
	r.URL.RawQuery = "a b"
	if p.deliverDirect(httptest.NewRecorder(), r, tgt) {
		t.Error("a query with a space was taken")
	}
	if p.deliverDirect(httptest.NewRecorder(), httptest.NewRequest("GET", "http://a/", nil),
		router.NewTarget("127.0.0.1:1", cluster, "g", model.ProtocolHTTPS, model.HTTP1)) {
		t.Error("a request for an HTTPS target was taken")
	}
}

// A request through the hop is logged alike whichever path east serves it
// on: the same target, status, bytes and failure reason.
func TestFastPathPeerHopAccessLog(t *testing.T) {
	echo, down := headerEcho(t), refusingTarget(t)
	down.Cluster = "west"
	var logs [2]testsync.Buffer
	var worlds [2]*hopWorld
	for i, fastPath := range []bool{true, false} {
		worlds[i] = newHopWorld(t, func(c *Config) {
			c.DisableFastPath = !fastPath
			if c.Cluster == "east" {
				c.AccessLog = &logs[i]
				c.test.accessLog = accesslog.Options{FlushInterval: 5 * time.Millisecond}
			}
		})
		snap := peerEchoSnapshot(clusterTarget(t, echo, "west"))
		downTG := group("down", down)
		downTG.Owner = "west"
		snap.TargetGroups = append(snap.TargetGroups, downTG)
		snap.Services[0].Rules = append([]model.Rule{{
			Matches: prefixMatch("/down"),
			Action:  forward(to("down", 1)),
		}}, snap.Services[0].Rules...)
		worlds[i].update(t, snap)
		for _, path := range []string{"/ok", "/down", "/edit/x"} {
			exchangeRaw(t, addrOf(worlds[i].east, webPort), "GET "+path+" HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: ua/1\r\n\r\n")
		}
	}
	lines := logsAgree(t, &logs, 3)
	if l := lines[0]["/ok"]; l["responseCode"] != 200.0 || l["targetIpPort"] != echo.Listener.Addr().String() || l["destinationCluster"] != "west" {
		t.Errorf("/ok: %v", l)
	}
	if l := lines[0]["/down"]; l["responseCode"] != 502.0 {
		t.Errorf("/down: %v", l)
	}
}

// A body the client cuts short through the hop is recorded as 499
// ClientClosedRequest on both paths, as for a local target.
func TestFastPathPeerHopShortBody(t *testing.T) {
	echo := headerEcho(t)
	for _, fastPath := range []bool{true, false} {
		var logs testsync.Buffer
		w := newHopWorld(t, func(c *Config) {
			c.DisableFastPath = !fastPath
			if c.Cluster == "east" { // west logs the delivery too
				c.AccessLog = &logs
				c.test.accessLog = accesslog.Options{FlushInterval: 5 * time.Millisecond}
			}
		})
		w.update(t, peerEchoSnapshot(clusterTarget(t, echo, "west")))
		conn := dialRaw(t, addrOf(w.east, webPort), "POST /p HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 10\r\n\r\nabc")
		conn.(*net.TCPConn).CloseWrite()
		io.ReadAll(conn)
		var ls []map[string]any
		testsync.WaitFor(t, 5*time.Second, "an access log line", func() bool { ls = logLines(t, &logs); return len(ls) >= 1 })
		if l := ls[0]; l["responseCode"] != float64(statusClientClosed) || l["failureReason"] != string(accesslog.ClientClosedRequest) {
			t.Errorf("fast path %v: a short body logged %v %v", fastPath, l["responseCode"], l["failureReason"])
		}
	}
}

// One client connection carries requests with and without bodies through
// the hop, one after the other, on the fast path.
func TestFastPathPeerHopKeepsTheConnection(t *testing.T) {
	backend := bodyEcho(t)
	w := newHopWorld(t)
	w.update(t, peerEchoSnapshot(clusterTarget(t, backend, "west")))
	conn := dialRaw(t, addrOf(w.east, webPort), "")
	br := bufio.NewReader(conn)
	for i, payload := range []string{"hello", "", strings.Repeat("y", 30000), ""} {
		method := "GET"
		if payload != "" {
			method = "PUT"
		}
		fmt.Fprintf(conn, "%s /k%d HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: %d\r\n\r\n%s", method, i, len(payload), payload)
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%s /k%d 0", method, i)
		if payload != "" {
			want = fmt.Sprintf("%s /k%d %d %s", method, i, len(payload), sha(payload))
		}
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("request %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	if n := testutil.ToFloat64(w.east.metrics.handoffs); n != 0 {
		t.Errorf("%v connections handed to net/http, want none", n)
	}
}
