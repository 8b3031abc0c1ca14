package router

import (
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

// TestReplacePrefix runs the Gateway API's ReplacePrefixMatch table.
func TestReplacePrefix(t *testing.T) {
	tests := []struct{ path, prefix, replacement, want string }{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
		// Prefix "/" (normalized to ""), and a path the prefix does not
		// cover, which is left alone.
		{"/a/b", "", "/xyz", "/xyz/a/b"},
		{"/foobar", "/foo", "/xyz", "/foobar"},
	}
	for _, tt := range tests {
		if got := ReplacePrefix(tt.path, tt.prefix, tt.replacement); got != tt.want {
			t.Errorf("ReplacePrefix(%q, %q, %q) = %q, want %q", tt.path, tt.prefix, tt.replacement, got, tt.want)
		}
	}
}

// TestRouteFilters checks that compiled routes carry their filters, the
// prefix of the match that selected them, timeouts, retries and sessions.
func TestRouteFilters(t *testing.T) {
	redirect := model.Filter{Redirect: &model.RedirectFilter{StatusCode: 301, Path: &model.PathModifier{Type: model.ReplacePrefixMatch, Value: "/new"}}}
	snap := &model.Snapshot{Objects: model.Objects{Networks: networks, TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "g"}, Targets: []model.Target{
		{Address: "10.0.0.1", Port: 80, Cluster: "c", State: model.TargetActive}}}},
		Services: []model.Service{{Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(),
			Rules: []model.Rule{
				{Matches: []model.Match{{Path: prefix("/old/")}, {Path: prefix("/legacy")}}, Filters: []model.Filter{redirect}},
				{Matches: []model.Match{{Path: prefix("/api")}},
					Timeouts: &model.Timeouts{Request: model.Duration(5e9)}, Retry: &model.Retry{Codes: []int{503}, Attempts: 2},
					SessionPersistence: &model.SessionPersistence{Type: model.SessionCookie, Name: "s"},
					Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: "g", Weight: 1,
						Filters: []model.Filter{{RequestHeaders: &model.HeaderFilter{Set: []model.Header{{Name: "x-a", Value: "1"}}}}}}}}}},
			}}}}}
	tab := mustCompile(t, snap)
	for _, tt := range []struct{ path, prefix, location string }{
		{"/old/x", "/old", "http://h/new/x"},
		{"/legacy", "/legacy", "http://h/new"},
	} {
		r := req{host: "h", target: tt.path}.build()
		rt := tab.Match(Bind{Port: 80}, r)
		if rt == nil || rt.MatchedPrefix != tt.prefix || len(rt.Filters) != 1 || rt.Filters[0].Redirect == nil {
			t.Fatalf("%s: route %+v, want the redirect rule matched at %q", tt.path, rt, tt.prefix)
		}
		// The listener's port 80 with the request's scheme http is left out.
		if got := rt.Filters[0].Redirect.Location(r, rt.MatchedPrefix, 80); got != tt.location {
			t.Errorf("%s: Location %q, want %q", tt.path, got, tt.location)
		}
	}
	rt := tab.Match(Bind{Port: 80}, req{host: "h", target: "/api/x"}.build())
	if rt.RequestTimeout != 5e9 || rt.Retry == nil || rt.Retry.Attempts != 2 || !rt.Retry.RetriesStatus(503) || rt.Retry.RetriesStatus(500) ||
		rt.Retry.Backoff != DefaultRetryBackoff || rt.Session == nil || !rt.Session.Cookie {
		t.Errorf("api route: %+v", rt)
	}
	b := rt.Pick()
	if len(b.Filters) != 1 || b.Filters[0].RequestHeaders == nil {
		t.Errorf("backend filters not compiled: %+v", b)
	}
	tgt := b.Group().Pick()
	tok := rt.Session.Token(tgt, time.Unix(1700000000, 0))
	if gotB, gotT := rt.Session.Lookup(tok, time.Unix(1700000000, 0)); gotB != b || gotT != tgt {
		t.Errorf("session token %q does not find its target", tok)
	}
	if strings.Contains(tok, "10.0.0.1") {
		t.Errorf("token %q shows the address", tok)
	}
}

// FuzzFilters checks the redirect and rewrite path arithmetic on arbitrary
// paths, prefixes and replacements: no panics, a result that is a path, and
// what follows the prefix kept.
func FuzzFilters(f *testing.F) {
	f.Add("/foo/bar", "/foo", "/xyz", "a=1")
	f.Add("/foo/", "/foo/", "", "")
	f.Add("/", "/", "/", "")
	f.Add("/a%2Fb/c", "/a", "/x y", "q=%20")
	f.Fuzz(func(t *testing.T, path, prefix, replacement, query string) {
		if !strings.HasPrefix(path, "/") || !strings.HasPrefix(prefix, "/") ||
			strings.Contains(prefix, "//") || strings.Contains(replacement, "//") {
			return // the Gateway API forbids these prefixes and replacements
		}
		if replacement != "" && !strings.HasPrefix(replacement, "/") {
			return
		}
		if _, err := url.ParseRequestURI("/?" + query); err != nil {
			return // the server never hands the proxy such a query
		}
		np := normalizePrefix(prefix)
		covered := strings.HasPrefix(path, np) && (len(path) == len(np) || path[len(np)] == '/')
		got := ReplacePrefix(path, np, replacement)
		switch {
		case !covered && got != path:
			t.Fatalf("ReplacePrefix(%q, %q, %q) = %q changed a path the prefix does not cover", path, np, replacement, got)
		case covered && !strings.HasPrefix(got, "/"):
			t.Fatalf("ReplacePrefix(%q, %q, %q) = %q is not a path", path, np, replacement, got)
		case covered && path[len(np):] != "" && !strings.HasSuffix(got, path[len(np):]):
			t.Fatalf("ReplacePrefix(%q, %q, %q) = %q lost the rest of the path", path, np, replacement, got)
		}
		rd, err := compileRedirect(&model.RedirectFilter{StatusCode: 302, Scheme: "https", Hostname: "example.com",
			Path: &model.PathModifier{Type: model.ReplacePrefixMatch, Value: replacement}})
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "http://h/", nil)
		r.URL.Path, r.URL.RawQuery = path, query
		loc := rd.Location(r, np, 8080)
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("Location %q does not parse: %v", loc, err)
		}
		if u.Scheme != "https" || u.Host != "example.com" || covered && u.Path != got {
			t.Fatalf("Location %q: scheme %q host %q path %q, want https example.com %q", loc, u.Scheme, u.Host, u.Path, got)
		}
		rw := &Rewrite{path: &pathEdit{value: replacement}}
		rw.Apply(r, np)
		if r.URL.Path != ReplacePrefix(path, np, replacement) {
			t.Fatalf("rewrite gave %q", r.URL.Path)
		}
	})
}

// Session tokens are keyed by the control-plane store's identity: the same
// for every compile of one store's snapshots, different for another store,
// and an expiry cannot be changed without the key.
func TestSessionTokensAreKeyed(t *testing.T) {
	snapOf := func(store string, timeout time.Duration) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{Networks: networks, TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "g"}, Targets: []model.Target{
			{Address: "10.0.0.1", Port: 80, Cluster: "c", State: model.TargetActive}}}},
			Services: []model.Service{{Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(),
				Rules: []model.Rule{{
					SessionPersistence: &model.SessionPersistence{Type: model.SessionCookie, Name: "s", AbsoluteTimeout: model.Duration(timeout)},
					Action:             model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: "g", Weight: 1}}}},
				}}}}}, Store: store}
	}
	now := time.Unix(1700000000, 0)
	token := func(snap *model.Snapshot) (*Session, string) {
		rt := mustCompile(t, snap).Match(Bind{Port: 80}, req{host: "h", target: "/"}.build())
		return rt.Session, rt.Session.Token(rt.Pick().Group().Pick(), now)
	}
	_, a1 := token(snapOf("store-a", 0))
	sa, a2 := token(snapOf("store-a", 0))
	_, b := token(snapOf("store-b", 0))
	if a1 != a2 || a1 == b {
		t.Errorf("tokens: store a %q and %q, store b %q; want a's equal and b's different", a1, a2, b)
	}
	if tb, _ := sa.Lookup(b, now); tb != nil {
		t.Error("a token of another store's key was taken")
	}

	s, tok := token(snapOf("store-a", time.Hour))
	if _, tgt := s.Lookup(tok, now); tgt == nil {
		t.Fatalf("token %q with an expiry does not find its target", tok)
	}
	key, rest, _ := strings.Cut(tok, ".")
	_, sig, _ := strings.Cut(rest, ".")
	for _, forged := range []string{
		key + "." + "9999999999" + "." + sig, // expiry pushed out, old signature
		key + "." + "9999999999",             // no signature
		key,                                  // no expiry on a route that needs one
	} {
		if _, tgt := s.Lookup(forged, now); tgt != nil {
			t.Errorf("forged token %q was taken", forged)
		}
	}
}

// FuzzSessionLookup feeds Lookup session tokens as clients may send them:
// it never panics, and takes a token only if it is exactly one the proxy
// issues for the target it returns (with the expiry the token names), so no
// client can name a target or stretch a session.
func FuzzSessionLookup(f *testing.F) {
	now := time.Unix(1700000000, 0)
	compile := func(timeout time.Duration) *Rule {
		snap := &model.Snapshot{Objects: model.Objects{Networks: networks, TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "g"}, Targets: []model.Target{
			{Address: "10.0.0.1", Port: 80, Cluster: "c", State: model.TargetActive},
			{Address: "10.0.0.2", Port: 80, Cluster: "c", State: model.TargetActive}}}},
			Services: []model.Service{{Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(),
				Rules: []model.Rule{{
					SessionPersistence: &model.SessionPersistence{Type: model.SessionHeader, Name: "s", AbsoluteTimeout: model.Duration(timeout)},
					Action:             model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: "g", Weight: 1}}}},
				}}}}}, Store: "store"}
		return mustCompile(f, snap).Match(Bind{Port: 80}, req{host: "h", target: "/"}.build())
	}
	plain, expiring := compile(0), compile(time.Hour)
	for _, rt := range []*Rule{plain, expiring} {
		tok := rt.Session.Token(rt.Pick().Group().Pick(), now)
		f.Add(tok)
		f.Add(tok + "x")
		f.Add(strings.Replace(tok, ".", "..", 1))
	}
	f.Add("")
	f.Add("..")
	f.Add("a.-1.b")
	// issued is the token the proxy issues for tgt on the expiring route
	// with the expiry token names, or "" when it names none.
	issued := func(token string, tgt *Target) string {
		_, rest, ok := strings.Cut(token, ".")
		expiry, _, _ := strings.Cut(rest, ".")
		sec, err := strconv.ParseInt(expiry, 10, 64)
		if !ok || err != nil {
			return ""
		}
		return expiring.Session.Token(tgt, time.Unix(sec, 0).Add(-time.Hour))
	}
	f.Fuzz(func(t *testing.T, token string) {
		// Both routes' tokens come from one store's key, and a route
		// without a timeout also takes a signed, unexpired token with one.
		if _, tgt := plain.Session.Lookup(token, now); tgt != nil && token != plain.Session.Token(tgt, now) && token != issued(token, tgt) {
			t.Fatalf("took %q for %s, a token the proxy never issued", token, tgt.Addr)
		}
		if _, tgt := expiring.Session.Lookup(token, now); tgt != nil && token != issued(token, tgt) {
			t.Fatalf("took %q for %s, a token the proxy never issued", token, tgt.Addr)
		}
	})
}
