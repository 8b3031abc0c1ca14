package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
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
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s %s: answered over HTTP/%d", method, path, resp.ProtoMajor)
		}
		return resp, b
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
	idle := func(p *Proxy) int {
		p.pool.mu.Lock()
		defer p.pool.mu.Unlock()
		return len(p.pool.idle[echo.Listener.Addr().String()])
	}
	if f, s := idle(fast), idle(slow); f == 0 || s != 0 {
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
