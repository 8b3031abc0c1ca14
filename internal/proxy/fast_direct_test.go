package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

// HTTP/2 requests to an HTTP/1.1 target go over the fast path's pooled
// target connections (forwardDirect) where the fast path is on, and the
// target receives, and the client gets back, the same fields as through
// the reverse proxy (the fast path off): forwarding and identity fields,
// the rule's and the backend's header edits, bodies, HEAD.
func TestHTTP2DirectAgreesWithReverseProxy(t *testing.T) {
	echo := headerEcho(t)
	snap := oneRoute(1, []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))}, to("echo", 1))
	snap.Services[0].Rules = append(snap.Services[0].Rules, model.Rule{
		Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/edit"}}},
		Filters: []model.Filter{
			{RequestHeaders: &model.HeaderFilter{
				Set:    []model.Header{{Name: "X-Set", Value: "s"}, {Name: "Host", Value: "edited.example.com"}},
				Add:    []model.Header{{Name: "X-Multi", Value: "3"}},
				Remove: []string{"X-Gone"},
			}},
			{ResponseHeaders: &model.HeaderFilter{Add: []model.Header{{Name: "X-Resp", Value: "r"}}}},
		},
		Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{
			TargetGroup: "echo", Weight: 1,
			Filters: []model.Filter{{RequestHeaders: &model.HeaderFilter{Add: []model.Header{{Name: "X-Set", Value: "by-backend"}}}}},
		}}}},
	})
	fast := newTestProxy(t, nil)
	update(t, fast, snap)
	slow := newProxyWith(t, Config{DisableFastPath: true})
	update(t, slow, snap)

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
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
