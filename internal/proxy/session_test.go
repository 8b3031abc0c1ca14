package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

func TestSessionPersistence(t *testing.T) {
	names := []string{"t0", "t1", "t2"}
	backends := map[string]*echoBackend{}
	var targets []model.Target
	for _, n := range names {
		backends[n] = newEchoBackend(t, n)
		targets = append(targets, target(t, backends[n].srv, model.TargetActive))
	}
	snap := func(rev int64, sp model.SessionPersistence, ts ...model.Target) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: []model.TargetGroup{group("g", ts...)},
			Services: []model.Service{edgeService("svc", nil, model.Rule{SessionPersistence: &sp, Action: forward(to("g", 1))})}}, Revision: rev}
	}
	// served returns which backend answered.
	served := func(body string) string { name, _, _ := strings.Cut(body, " "); return name }
	c := noRedirects(t)

	t.Run("cookie", func(t *testing.T) {
		p := newTestProxy(t, nil)
		sp := model.SessionPersistence{Type: model.SessionCookie, Name: "sticky"}
		update(t, p, snap(1, sp, targets...))
		addr := addrOf(p, webPort)
		resp, body := send(t, c, http.MethodGet, addr, "x", "/", nil, "")
		first := served(body)
		var cookie *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == "sticky" {
				cookie = ck
			}
		}
		if cookie == nil || cookie.Value == "" || !cookie.HttpOnly || cookie.Path != "/" || cookie.MaxAge != 0 {
			t.Fatalf("first response cookies %v, want a session cookie named sticky", resp.Header["Set-Cookie"])
		}
		if strings.Contains(cookie.Value, "127.0.0.1") {
			t.Errorf("cookie %q reveals the target address", cookie.Value)
		}
		for i := range 50 {
			resp, body := send(t, c, http.MethodGet, addr, "x", "/", http.Header{"Cookie": {"sticky=" + cookie.Value}}, "")
			if got := served(body); got != first {
				t.Fatalf("request %d with the cookie went to %s, want %s", i, got, first)
			}
			if len(resp.Cookies()) != 0 {
				t.Fatalf("request %d: a live session got a new cookie %v", i, resp.Header["Set-Cookie"])
			}
		}
		// Without the cookie the proxy balances.
		got := map[string]bool{}
		for range 6 {
			_, body := send(t, c, http.MethodGet, addr, "x", "/", nil, "")
			got[served(body)] = true
		}
		if len(got) != 3 {
			t.Errorf("without a cookie requests went to %v, want all three targets", got)
		}
		// The session's target leaves: the next request balances and the
		// session moves to the new target.
		var rest []model.Target
		for i, n := range names {
			if n != first {
				rest = append(rest, targets[i])
			}
		}
		update(t, p, snap(2, sp, rest...))
		resp, body = send(t, c, http.MethodGet, addr, "x", "/", http.Header{"Cookie": {"sticky=" + cookie.Value}}, "")
		moved := served(body)
		if moved == first || resp.StatusCode != 200 {
			t.Fatalf("after its target left, the session went to %s (%d)", moved, resp.StatusCode)
		}
		var next string
		for _, ck := range resp.Cookies() {
			if ck.Name == "sticky" {
				next = ck.Value
			}
		}
		if next == "" || next == cookie.Value {
			t.Fatalf("moved session got cookie %q, want a new one", next)
		}
		for range 10 {
			if _, body := send(t, c, http.MethodGet, addr, "x", "/", http.Header{"Cookie": {"sticky=" + next}}, ""); served(body) != moved {
				t.Fatalf("moved session went to %s, want %s", served(body), moved)
			}
		}
		// A garbage token balances rather than failing.
		if resp, _ := send(t, c, http.MethodGet, addr, "x", "/", http.Header{"Cookie": {"sticky=garbage.123"}}, ""); resp.StatusCode != 200 {
			t.Errorf("garbage cookie: status %d", resp.StatusCode)
		}
	})

	t.Run("header", func(t *testing.T) {
		p := newTestProxy(t, nil)
		update(t, p, snap(1, model.SessionPersistence{Type: model.SessionHeader, Name: "X-Session"}, targets...))
		addr := addrOf(p, webPort)
		resp, body := send(t, c, http.MethodGet, addr, "x", "/", nil, "")
		token := resp.Header.Get("X-Session")
		if token == "" {
			t.Fatal("no X-Session header on the first response")
		}
		for range 20 {
			if _, b := send(t, c, http.MethodGet, addr, "x", "/", http.Header{"X-Session": {token}}, ""); served(b) != served(body) {
				t.Fatalf("header session went to %s, want %s", served(b), served(body))
			}
		}
	})

	t.Run("permanent cookie with absolute timeout", func(t *testing.T) {
		p := newTestProxy(t, nil)
		update(t, p, snap(1, model.SessionPersistence{Type: model.SessionCookie, Name: "s", Permanent: true,
			AbsoluteTimeout: model.Duration(time.Hour)}, targets...))
		resp, _ := send(t, c, http.MethodGet, addrOf(p, webPort), "x", "/", nil, "")
		cs := resp.Cookies()
		if len(cs) != 1 || cs[0].MaxAge != 3600 {
			t.Fatalf("cookies %v, want Max-Age=3600", resp.Header["Set-Cookie"])
		}
	})

	t.Run("absolute timeout ends the session", func(t *testing.T) {
		p := newTestProxy(t, nil)
		update(t, p, snap(1, model.SessionPersistence{Type: model.SessionCookie, Name: "s", AbsoluteTimeout: model.Duration(time.Second)}, targets...))
		addr := addrOf(p, webPort)
		resp, _ := send(t, c, http.MethodGet, addr, "x", "/", nil, "")
		cs := resp.Cookies()
		if len(cs) != 1 || cs[0].MaxAge != 0 {
			t.Fatalf("cookies %v, want one session cookie", resp.Header["Set-Cookie"])
		}
		// An expired token: same target key, expiry in the past.
		key, _, _ := strings.Cut(cs[0].Value, ".")
		resp, _ = send(t, c, http.MethodGet, addr, "x", "/", http.Header{"Cookie": {"s=" + key + ".1"}}, "")
		if len(resp.Cookies()) != 1 {
			t.Errorf("an expired session got no new cookie: %v", resp.Header["Set-Cookie"])
		}
	})
}

func TestCORS(t *testing.T) {
	be := newEchoBackend(t, "be")
	cors := func(c model.CORSFilter) model.Rule {
		return model.Rule{Filters: []model.Filter{{CORS: &c}}, Action: forward(to("be", 1))}
	}
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks,
		TargetGroups: []model.TargetGroup{group("be", target(t, be.srv, model.TargetActive))},
		Services: []model.Service{
			edgeService("list", []string{"list.example.com"}, cors(model.CORSFilter{
				AllowOrigins: []string{"https://app.example.com", "https://*.trusted.com", "http://local.test:3000"},
				AllowMethods: []string{"GET", "PUT"}, AllowHeaders: []string{"X-Token", "Content-Type"},
				ExposeHeaders: []string{"X-Backend"}, MaxAgeSeconds: 600, AllowCredentials: true,
			})),
			edgeService("any", []string{"any.example.com"}, cors(model.CORSFilter{
				AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, ExposeHeaders: []string{"*"},
			})),
		}}, Revision: 1})
	addr := addrOf(p, webPort)
	c := noRedirects(t)
	preflight := func(origin, method, headers string) http.Header {
		h := http.Header{"Origin": {origin}, "Access-Control-Request-Method": {method}}
		if headers != "" {
			h.Set("Access-Control-Request-Headers", headers)
		}
		return h
	}
	tests := []struct {
		name   string
		host   string
		method string
		header http.Header
		status int
		want   map[string]string // "" means absent
		toBE   bool              // whether the backend sees the request
	}{
		{"preflight allowed", "list.example.com", http.MethodOptions, preflight("https://app.example.com", "PUT", "x-token"), 200, map[string]string{
			"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Allow-Credentials": "true",
			"Access-Control-Allow-Methods": "GET, PUT", "Access-Control-Allow-Headers": "X-Token, Content-Type",
			"Access-Control-Max-Age": "600", "Vary": "Origin", "Access-Control-Expose-Headers": "X-Backend"}, false},
		{"preflight wildcard subdomain", "list.example.com", http.MethodOptions, preflight("https://a.b.trusted.com", "GET", ""), 200, map[string]string{
			"Access-Control-Allow-Origin": "https://a.b.trusted.com"}, false},
		{"preflight explicit port", "list.example.com", http.MethodOptions, preflight("http://local.test:3000", "GET", ""), 200, map[string]string{
			"Access-Control-Allow-Origin": "http://local.test:3000"}, false},
		{"preflight wrong port", "list.example.com", http.MethodOptions, preflight("http://local.test", "GET", ""), 200, map[string]string{
			"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""}, false},
		{"preflight wildcard needs a label", "list.example.com", http.MethodOptions, preflight("https://trusted.com", "GET", ""), 200, map[string]string{
			"Access-Control-Allow-Origin": ""}, false},
		{"preflight wrong scheme", "list.example.com", http.MethodOptions, preflight("http://app.example.com", "GET", ""), 200, map[string]string{
			"Access-Control-Allow-Origin": ""}, false},
		{"preflight any", "any.example.com", http.MethodOptions, preflight("https://whoever.org", "DELETE", "x-a, x-b"), 200, map[string]string{
			"Access-Control-Allow-Origin": "https://whoever.org", "Access-Control-Allow-Methods": "DELETE",
			"Access-Control-Allow-Headers": "x-a, x-b", "Access-Control-Max-Age": "5", "Access-Control-Allow-Credentials": "",
			"Access-Control-Expose-Headers": "*"}, false},
		{"actual request allowed", "list.example.com", http.MethodGet, http.Header{"Origin": {"https://app.example.com"}}, 200, map[string]string{
			"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Allow-Credentials": "true",
			"Access-Control-Expose-Headers": "X-Backend", "Access-Control-Max-Age": ""}, true},
		{"actual request refused origin", "list.example.com", http.MethodGet, http.Header{"Origin": {"https://evil.com"}}, 200, map[string]string{
			"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": ""}, true},
		{"actual request expose any", "any.example.com", http.MethodGet, http.Header{"Origin": {"https://x.org"}}, 200, map[string]string{
			"Access-Control-Allow-Origin": "https://x.org", "Access-Control-Expose-Headers": "*"}, true},
		{"options without request method is forwarded", "list.example.com", http.MethodOptions, http.Header{"Origin": {"https://app.example.com"}}, 200, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := be.count()
			resp, _ := send(t, c, tt.method, addr, tt.host, "/", tt.header, "")
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			for k, v := range tt.want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if reached := be.count() > before; reached != tt.toBE {
				t.Errorf("backend reached: %v, want %v", reached, tt.toBE)
			}
		})
	}
}
