package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// seen is what an echo backend received.
type seen struct {
	method, host, path, query, body string
	header                          http.Header
}

// echoBackend is a target that records every request it receives and
// answers with its name and the path it saw, plus a header set by the
// backend for response-edit tests.
type echoBackend struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []seen
	got  chan seen
}

func newEchoBackend(t *testing.T, name string) *echoBackend {
	t.Helper()
	e := &echoBackend{got: make(chan seen, 256)}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s := seen{method: r.Method, host: r.Host, path: r.URL.EscapedPath(), query: r.URL.RawQuery, body: string(body), header: r.Header.Clone()}
		e.mu.Lock()
		e.reqs = append(e.reqs, s)
		e.mu.Unlock()
		select {
		case e.got <- s:
		default:
		}
		w.Header().Set("X-Backend", name)
		w.Header().Set("Server", "echo")
		w.Header().Add("X-Multi", "one")
		io.WriteString(w, name+" "+s.path)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *echoBackend) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reqs)
}

func (e *echoBackend) last(t *testing.T) seen {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.reqs) == 0 {
		t.Fatal("backend received no request")
	}
	return e.reqs[len(e.reqs)-1]
}

// noRedirects is a client that returns redirects instead of following them.
func noRedirects(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func send(t *testing.T, c *http.Client, method, addr, host, target string, header http.Header, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+target, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func prefixMatch(v string) []model.Match {
	return []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: v}}}
}

func TestRedirect(t *testing.T) {
	redirect := func(r model.RedirectFilter) []model.Filter {
		if r.StatusCode == 0 {
			r.StatusCode = 302
		}
		return []model.Filter{{Redirect: &r}}
	}
	full := func(v string) *model.PathModifier { return &model.PathModifier{Type: model.ReplaceFullPath, Value: v} }
	pfx := func(v string) *model.PathModifier {
		return &model.PathModifier{Type: model.ReplacePrefixMatch, Value: v}
	}
	tests := []struct {
		name    string
		filter  model.RedirectFilter
		match   string // path prefix of the rule
		target  string
		code    int
		locaton string
	}{
		{"defaults keep scheme, host, listener port, path and query", model.RedirectFilter{}, "/", "/a/b?x=1", 302, "http://shop.example.com:8080/a/b?x=1"},
		{"hostname", model.RedirectFilter{Hostname: "other.example.com"}, "/", "/a", 302, "http://other.example.com:8080/a"},
		{"https scheme takes port 443, left out", model.RedirectFilter{Scheme: "https", StatusCode: 301}, "/", "/a", 301, "https://shop.example.com/a"},
		{"http scheme takes port 80, left out", model.RedirectFilter{Scheme: "http"}, "/", "/a", 302, "http://shop.example.com/a"},
		{"explicit port kept", model.RedirectFilter{Scheme: "https", Port: 8443, StatusCode: 308}, "/", "/a", 308, "https://shop.example.com:8443/a"},
		{"explicit port 80 with listener scheme left out", model.RedirectFilter{Port: 80}, "/", "/a", 302, "http://shop.example.com/a"},
		{"303", model.RedirectFilter{StatusCode: 303}, "/", "/", 303, "http://shop.example.com:8080/"},
		{"307", model.RedirectFilter{StatusCode: 307}, "/", "/", 307, "http://shop.example.com:8080/"},
		{"full path", model.RedirectFilter{Path: full("/new")}, "/old", "/old/deep?q=2", 302, "http://shop.example.com:8080/new?q=2"},
		{"prefix", model.RedirectFilter{Path: pfx("/xyz")}, "/foo", "/foo/bar", 302, "http://shop.example.com:8080/xyz/bar"},
		{"prefix with trailing slash", model.RedirectFilter{Path: pfx("/xyz/")}, "/foo/", "/foo/bar", 302, "http://shop.example.com:8080/xyz/bar"},
		{"prefix itself keeps slash", model.RedirectFilter{Path: pfx("/xyz")}, "/foo", "/foo/", 302, "http://shop.example.com:8080/xyz/"},
		{"prefix removed", model.RedirectFilter{Path: pfx("")}, "/foo", "/foo", 302, "http://shop.example.com:8080/"},
		{"prefix to root", model.RedirectFilter{Path: pfx("/")}, "/foo", "/foo/bar", 302, "http://shop.example.com:8080/bar"},
	}
	p := newTestProxy(t, nil)
	c := noRedirects(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, Services: []model.Service{
				edgeService("svc", []string{"shop.example.com"}, model.Rule{Matches: prefixMatch(tt.match), Filters: redirect(tt.filter)}),
			}}, Revision: int64(i + 1)})
			resp, _ := send(t, c, http.MethodGet, addrOf(p, webPort), "shop.example.com:8080", tt.target, nil, "")
			if resp.StatusCode != tt.code || resp.Header.Get("Location") != tt.locaton {
				t.Errorf("got %d Location %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tt.code, tt.locaton)
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	be := newEchoBackend(t, "be")
	groups := []model.TargetGroup{group("be", target(t, be.srv, model.TargetActive))}
	pfx := func(v string) *model.PathModifier {
		return &model.PathModifier{Type: model.ReplacePrefixMatch, Value: v}
	}
	tests := []struct {
		name     string
		rewrite  model.RewriteFilter
		match    string
		target   string
		wantPath string
		wantHost string
	}{
		// The Gateway API's ReplacePrefixMatch table, row by row.
		{"/foo/bar /foo /xyz", model.RewriteFilter{Path: pfx("/xyz")}, "/foo", "/foo/bar", "/xyz/bar", "shop.example.com"},
		{"/foo/bar /foo /xyz/", model.RewriteFilter{Path: pfx("/xyz/")}, "/foo", "/foo/bar", "/xyz/bar", "shop.example.com"},
		{"/foo/bar /foo/ /xyz", model.RewriteFilter{Path: pfx("/xyz")}, "/foo/", "/foo/bar", "/xyz/bar", "shop.example.com"},
		{"/foo/bar /foo/ /xyz/", model.RewriteFilter{Path: pfx("/xyz/")}, "/foo/", "/foo/bar", "/xyz/bar", "shop.example.com"},
		{"/foo /foo /xyz", model.RewriteFilter{Path: pfx("/xyz")}, "/foo", "/foo", "/xyz", "shop.example.com"},
		{"/foo/ /foo /xyz", model.RewriteFilter{Path: pfx("/xyz")}, "/foo", "/foo/", "/xyz/", "shop.example.com"},
		{"/foo/bar /foo empty", model.RewriteFilter{Path: pfx("")}, "/foo", "/foo/bar", "/bar", "shop.example.com"},
		{"/foo/ /foo empty", model.RewriteFilter{Path: pfx("")}, "/foo", "/foo/", "/", "shop.example.com"},
		{"/foo /foo empty", model.RewriteFilter{Path: pfx("")}, "/foo", "/foo", "/", "shop.example.com"},
		{"/foo/ /foo /", model.RewriteFilter{Path: pfx("/")}, "/foo", "/foo/", "/", "shop.example.com"},
		{"/foo /foo /", model.RewriteFilter{Path: pfx("/")}, "/foo", "/foo", "/", "shop.example.com"},
		{"full path and host", model.RewriteFilter{Hostname: "internal.example.com", Path: &model.PathModifier{Type: model.ReplaceFullPath, Value: "/v2/x"}},
			"/api", "/api/a/b", "/v2/x", "internal.example.com"},
	}
	p := newTestProxy(t, nil)
	cl := newClient(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rw := tt.rewrite
			update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: groups, Services: []model.Service{
				edgeService("svc", []string{"shop.example.com"}, model.Rule{
					Matches: prefixMatch(tt.match), Filters: []model.Filter{{Rewrite: &rw}}, Action: forward(to("be", 1))}),
			}}, Revision: int64(i + 1)})
			r := cl.get(addrOf(p, webPort), "shop.example.com", tt.target+"?keep=1")
			got := be.last(t)
			if r.status != 200 || got.path != tt.wantPath || got.host != tt.wantHost || got.query != "keep=1" {
				t.Errorf("backend saw %s %s?%s (status %d), want %s %s?keep=1", got.host, got.path, got.query, r.status, tt.wantHost, tt.wantPath)
			}
		})
	}
}

func TestHeaderFilters(t *testing.T) {
	a, b := newEchoBackend(t, "a"), newEchoBackend(t, "b")
	groups := []model.TargetGroup{group("a", target(t, a.srv, model.TargetActive)), group("b", target(t, b.srv, model.TargetActive))}
	rule := model.Rule{
		Filters: []model.Filter{
			{RequestHeaders: &model.HeaderFilter{
				Set:    []model.Header{{Name: "X-Set", Value: "set"}},
				Add:    []model.Header{{Name: "x-add", Value: "added"}},
				Remove: []string{"X-Secret"},
			}},
			{ResponseHeaders: &model.HeaderFilter{
				Set:    []model.Header{{Name: "X-Backend", Value: "hidden"}},
				Add:    []model.Header{{Name: "X-Multi", Value: "two"}},
				Remove: []string{"server"},
			}},
		},
		Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{
			{TargetGroup: "a", Weight: 1},
			{TargetGroup: "b", Weight: 1, Filters: []model.Filter{{RequestHeaders: &model.HeaderFilter{Set: []model.Header{{Name: "X-Only-B", Value: "yes"}}}}}},
		}}},
	}
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: groups, Services: []model.Service{edgeService("svc", nil, rule)}}, Revision: 1})
	cl := newClient(t)
	for range 2 { // one request to each backend
		r, err := cl.do(addrOf(p, webPort), http.MethodGet, "x", "/", http.Header{"X-Set": {"old1", "old2"}, "X-Add": {"orig"}, "X-Secret": {"s"}})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.header.Get("X-Backend"); got != "hidden" {
			t.Errorf("response X-Backend = %q, want set to hidden", got)
		}
		if got := r.header.Values("X-Multi"); fmt.Sprint(got) != "[one two]" {
			t.Errorf("response X-Multi = %q, want one added", got)
		}
		if got := r.header.Get("Server"); got != "" {
			t.Errorf("response Server = %q, want removed", got)
		}
	}
	for _, be := range []*echoBackend{a, b} {
		got := be.last(t)
		if v := got.header.Values("X-Set"); fmt.Sprint(v) != "[set]" {
			t.Errorf("backend saw X-Set %q, want [set]", v)
		}
		if v := got.header.Values("X-Add"); fmt.Sprint(v) != "[orig added]" {
			t.Errorf("backend saw X-Add %q, want [orig added]", v)
		}
		if v := got.header.Get("X-Secret"); v != "" {
			t.Errorf("backend saw X-Secret %q, want removed", v)
		}
	}
	if v := a.last(t).header.Get("X-Only-B"); v != "" {
		t.Errorf("backend a saw b's backend filter: X-Only-B %q", v)
	}
	if v := b.last(t).header.Get("X-Only-B"); v != "yes" {
		t.Errorf("backend b saw X-Only-B %q, want its backend filter applied", v)
	}
}

func TestMirror(t *testing.T) {
	primary, mirror := newEchoBackend(t, "primary"), newEchoBackend(t, "mirror")
	slowMirror, started, release := slowBackend(t)
	groups := []model.TargetGroup{
		group("primary", target(t, primary.srv, model.TargetActive)),
		group("mirror", target(t, mirror.srv, model.TargetActive)),
		group("slow", target(t, slowMirror, model.TargetActive)),
	}
	mirrorTo := func(tg string, num, den int32) model.Filter {
		return model.Filter{Mirror: &model.MirrorFilter{TargetGroup: tg, Numerator: num, Denominator: den}}
	}
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: groups, Services: []model.Service{
		edgeService("svc", nil,
			model.Rule{Matches: prefixMatch("/all"), Filters: []model.Filter{
				{RequestHeaders: &model.HeaderFilter{Set: []model.Header{{Name: "X-Before", Value: "1"}}}},
				mirrorTo("mirror", 1, 1),
				{RequestHeaders: &model.HeaderFilter{Set: []model.Header{{Name: "X-After", Value: "1"}}}},
			}, Action: forward(to("primary", 1))},
			model.Rule{Matches: prefixMatch("/none"), Filters: []model.Filter{mirrorTo("mirror", 0, 100)}, Action: forward(to("primary", 1))},
			model.Rule{Matches: prefixMatch("/slow"), Filters: []model.Filter{mirrorTo("slow", 1, 1)}, Action: forward(to("primary", 1))},
		),
	}}, Revision: 1})
	c := noRedirects(t)
	addr := addrOf(p, webPort)

	resp, body := send(t, c, http.MethodPost, addr, "x", "/all/x", nil, "payload")
	if resp.StatusCode != 200 || body != "primary /all/x" {
		t.Fatalf("client got %d %q, want the primary's answer", resp.StatusCode, body)
	}
	got := testsync.Receive(t, mirror.got, 5*time.Second, "the mirror's copy")
	if got.method != http.MethodPost || got.path != "/all/x" || got.body != "payload" {
		t.Errorf("mirror got %s %s %q, want the client's request and body", got.method, got.path, got.body)
	}
	if got.header.Get("X-Before") != "1" || got.header.Get("X-After") != "" {
		t.Errorf("mirror got X-Before %q X-After %q: want the request as filtered up to the mirror", got.header.Get("X-Before"), got.header.Get("X-After"))
	}
	if got := primary.last(t); got.body != "payload" || got.header.Get("X-After") != "1" {
		t.Errorf("primary got body %q X-After %q", got.body, got.header.Get("X-After"))
	}

	for range 20 {
		send(t, c, http.MethodGet, addr, "x", "/none", nil, "")
	}
	if n := mirror.count(); n != 1 {
		t.Errorf("0%% mirror: mirror received %d requests in all, want only the first test's 1", n)
	}

	// A mirror that never answers delays nothing.
	start := time.Now()
	resp, body = send(t, c, http.MethodGet, addr, "x", "/slow", nil, "")
	if resp.StatusCode != 200 || body != "primary /slow" {
		t.Fatalf("with a hanging mirror: got %d %q", resp.StatusCode, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a hanging mirror delayed the response by %v", d)
	}
	testsync.Receive(t, started, 5*time.Second, "the slow mirror's copy")
	release()
}

// statusBackend answers with its name and the status that next returns.
func statusBackend(t *testing.T, name string, next func() int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(next())
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestRetries(t *testing.T) {
	always := func(code int) func() int { return func() int { return code } }
	tests := []struct {
		name       string
		retry      *model.Retry
		first      int // status of the first target
		firstDown  bool
		second     int
		body       string // request body
		wantStatus int
		wantBody   string
		wantFirst  int64 // hits on the first target
		wantSecond int64
	}{
		{"503 retried on the other target", &model.Retry{Codes: []int{503}, Attempts: 1}, 503, false, 200, "", 200, "second", 1, 1},
		{"code not listed is not retried", &model.Retry{Codes: []int{502}, Attempts: 1}, 503, false, 200, "", 503, "first", 1, 0},
		{"no retry policy", nil, 503, false, 200, "", 503, "first", 1, 0},
		{"connection error retried", &model.Retry{Attempts: 1}, 0, true, 200, "", 200, "second", 0, 1},
		{"small body replayed", &model.Retry{Codes: []int{503}, Attempts: 1}, 503, false, 200, "hello", 200, "second", 1, 1},
		{"body over the buffer is not retried", &model.Retry{Codes: []int{503}, Attempts: 3}, 503, false, 200, strings.Repeat("x", maxReplayBody+1), 503, "first", 1, 0},
		{"stops at attempts", &model.Retry{Codes: []int{500}, Attempts: 3}, 500, false, 500, "", 500, "", 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, firstHits := statusBackend(t, "first", always(tt.first))
			if tt.firstDown {
				first.Close()
			}
			second, secondHits := statusBackend(t, "second", always(tt.second))
			rule := model.Rule{Retry: tt.retry, Action: forward(to("g", 1))}
			if tt.retry != nil {
				tt.retry.Backoff = model.Duration(time.Millisecond)
			}
			p := newTestProxy(t, nil)
			update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks,
				TargetGroups: []model.TargetGroup{group("g", target(t, first, model.TargetActive), target(t, second, model.TargetActive))},
				Services:     []model.Service{edgeService("svc", nil, rule)}}, Revision: 1})
			method := http.MethodGet
			if tt.body != "" {
				method = http.MethodPost
			}
			resp, body := send(t, noRedirects(t), method, addrOf(p, webPort), "x", "/", nil, tt.body)
			if resp.StatusCode != tt.wantStatus || tt.wantBody != "" && body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if firstHits.Load() != tt.wantFirst || secondHits.Load() != tt.wantSecond {
				t.Errorf("targets hit %d and %d times, want %d and %d", firstHits.Load(), secondHits.Load(), tt.wantFirst, tt.wantSecond)
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	slow, _, release := slowBackend(t)
	defer release()
	var calls atomic.Int64
	// flaky hangs on its first request and answers the rest at once.
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-r.Context().Done()
			return
		}
		io.WriteString(w, "recovered")
	}))
	t.Cleanup(flaky.Close)
	ms := func(n int) model.Duration { return model.Duration(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name       string
		group      string
		timeouts   model.Timeouts
		retry      *model.Retry
		wantStatus int
		wantBody   string
		min, max   time.Duration
	}{
		{"request timeout", "slow", model.Timeouts{Request: ms(300)}, nil, 504, "", 300 * time.Millisecond, 3 * time.Second},
		{"backend timeout", "slow", model.Timeouts{BackendRequest: ms(200)}, nil, 504, "", 200 * time.Millisecond, 3 * time.Second},
		{"request timeout covers retries", "slow", model.Timeouts{Request: ms(500), BackendRequest: ms(200)},
			&model.Retry{Attempts: 10, Backoff: ms(1)}, 504, "", 500 * time.Millisecond, 3 * time.Second},
		{"timed out attempt retried", "flaky", model.Timeouts{BackendRequest: ms(200)}, &model.Retry{Attempts: 1, Backoff: ms(1)}, 200, "recovered",
			200 * time.Millisecond, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to := tt.timeouts
			p := newTestProxy(t, nil)
			update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks,
				TargetGroups: []model.TargetGroup{group("slow", target(t, slow, model.TargetActive)), group("flaky", target(t, flaky, model.TargetActive))},
				Services:     []model.Service{edgeService("svc", nil, model.Rule{Timeouts: &to, Retry: tt.retry, Action: forward(model.WeightedTargetGroup{TargetGroup: tt.group, Weight: 1})})}}, Revision: 1})
			start := time.Now()
			resp, body := send(t, noRedirects(t), http.MethodGet, addrOf(p, webPort), "x", "/", nil, "")
			d := time.Since(start)
			if resp.StatusCode != tt.wantStatus || tt.wantBody != "" && body != tt.wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if d < tt.min || d > tt.max {
				t.Errorf("answered after %v, want within %v-%v", d, tt.min, tt.max)
			}
		})
	}
}
