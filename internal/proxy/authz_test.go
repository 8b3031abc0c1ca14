package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/test/testsync"
)

// Auth policies at both levels, enforced on a real listener with a real
// client, on both request paths: what each allows and denies, the 403 and
// its message and the access log's authDeniedReason (paths spelled to step
// around a policy: TestAmbiguousPathsRefused).
func TestAuthPolicies(t *testing.T) {
	for _, path := range []struct {
		name    string
		disable bool
	}{{"fast-path", false}, {"net-http", true}} {
		t.Run(path.name, func(t *testing.T) { testAuthPolicies(t, path.disable) })
	}
}

func testAuthPolicies(t *testing.T, disableFastPath bool) {
	echo := headerEcho(t)
	var out testsync.Buffer
	p := newProxyWith(t, Config{AccessLog: &out, DisableFastPath: disableFastPath,
		test: testKnobs{accessLog: accesslog.Options{FlushInterval: 5 * time.Millisecond}}})
	networks := []model.ServiceNetwork{
		testNetworks[0],
		{Meta: model.Meta{Name: "edge", Owner: cluster}, Mode: model.ModeEdge, Auth: &model.Auth{Policy: json.RawMessage(`{
			"Statement": [
				{"Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*"},
				{"Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*",
				 "Condition": {"StringEquals": {"trellis:RequestHeader/x-blocked": "yes"}}}]}`)}},
	}
	open := edgeService("open", []string{"open.example.com"}, model.Rule{Action: forward(to("echo", 1))})
	guarded := edgeService("guarded", []string{"guarded.example.com"}, model.Rule{Action: forward(to("echo", 1))})
	guarded.Auth = &model.Auth{Policy: json.RawMessage(`{
		"Statement": [
			{"Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "guarded/public/*",
			 "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}},
			{"Effect": "Deny", "Principal": "*", "Action": "trellis:Invoke", "Resource": "guarded/public/secret*"}]}`)}
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: networks, Services: []model.Service{open, guarded},
		TargetGroups: []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))},
	}, Revision: 1})
	addr := addrOf(p, webPort)
	c := noRedirects(t)

	tests := []struct {
		name, method, host, path string
		header                   http.Header
		want                     int
		// level is the access log's authDeniedReason; body a part of the
		// 403's message.
		level, body string
	}{
		{"network allows, service has no policy", "GET", "open.example.com", "/anything", nil, 200, "", ""},
		{"network denies by header", "GET", "open.example.com", "/anything", http.Header{"X-Blocked": {"yes"}}, 403,
			"Network", "with an explicit deny in a network-based policy"},
		{"service allows GET on /public", "GET", "guarded.example.com", "/public/page", nil, 200, "", ""},
		{"service allows no POST", "POST", "guarded.example.com", "/public/page", nil, 403,
			"Service", "because no service-based policy allows"},
		{"service allows nothing outside /public", "GET", "guarded.example.com", "/private", nil, 403, "Service", "no service-based policy allows"},
		{"service denies /public/secret", "GET", "guarded.example.com", "/public/secret.txt", nil, 403, "Service", "explicit deny in a service-based policy"},
		{"an explicit network deny wins over the service's allow", "GET", "guarded.example.com", "/public/page", http.Header{"X-Blocked": {"yes"}}, 403,
			"Network", "explicit deny in a network-based policy"},
	}
	handoffs := testutil.ToFloat64(p.metrics.handoffs)
	for _, tc := range tests {
		resp, body := send(t, c, tc.method, addr, tc.host, tc.path, tc.header, "")
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %s %s%s answered %d %q, want %d", tc.name, tc.method, tc.host, tc.path, resp.StatusCode, body, tc.want)
			continue
		}
		if tc.want == 403 && (!strings.HasPrefix(body, "AccessDeniedException: User: anonymous is not authorized to perform: trellis:Invoke") ||
			!strings.Contains(body, tc.body)) {
			t.Errorf("%s: 403 body %q, want Lattice's wording with %q", tc.name, body, tc.body)
		}
	}

	if n := testutil.ToFloat64(p.metrics.handoffs) - handoffs; !disableFastPath && n != 0 {
		t.Errorf("%v connections were handed to net/http; the fast path should have served every request", n)
	}
	var lines []map[string]any
	testsync.WaitFor(t, 5*time.Second, "an access log line per request", func() bool { lines = logLines(t, &out); return len(lines) == len(tests) })
	for i, tc := range tests {
		l := lines[i]
		wantLevel, wantFailure := "-", "-"
		if tc.level != "" {
			wantLevel, wantFailure = tc.level, "ClientAccessDenied"
		}
		if l["authDeniedReason"] != wantLevel || l["failureReason"] != wantFailure {
			t.Errorf("%s: access log authDeniedReason %v, failureReason %v; want %s, %s", tc.name, l["authDeniedReason"], l["failureReason"], wantLevel, wantFailure)
		}
	}
}

// A path that targets read in different ways ("/private/../public/x" is
// "/public/x" to one that resolves dot segments and under "/private" to one
// that does not; "..;" is ".." to Tomcat; a backslash is a slash to IIS) is
// answered 400 before routing, on HTTP/1.1 on both request paths and on
// HTTP/2, and never reaches the target: a policy allowing only /public
// cannot be stepped around by judging one reading and forwarding another.
// On the old code the first four were judged as /public/... and forwarded
// as sent (200).
func TestAmbiguousPathsRefused(t *testing.T) {
	var mu sync.Mutex
	var got []string
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.RequestURI)
		mu.Unlock()
	}))
	t.Cleanup(echo.Close)
	guarded := edgeService("guarded", []string{"guarded.example.com"}, model.Rule{Action: forward(to("echo", 1))})
	guarded.Auth = &model.Auth{Policy: json.RawMessage(`{"Statement": [
		{"Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "guarded/public/*"}]}`)}
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks[:1], Services: []model.Service{guarded},
		TargetGroups: []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))},
	}, Revision: 1}

	tests := []struct {
		target string
		want   int
	}{
		{"/private/../public/page", 400},
		{"/private%2f..%2fpublic/page", 400},
		{"/public/..;/private", 400},
		{"/public/%5c..%5cprivate", 400},
		{"/public/%2e%2E/private", 400},
		{"/public/./page", 400},
		{"//public/page", 400},
		{"/public//page", 400},
		{"/public/page/..", 400},
		{"/public/page", 200},
		{"/public/page/", 200},
		{"/public/.well-known/x", 200},
		{"/public/.../x", 200},
		{"/public/a;b=..", 200},
		{"/public/page?q=/../private", 200},
		{"/private", 403},
	}
	for _, mode := range []struct {
		name    string
		disable bool
		h2      bool
	}{{"fast-path", false, false}, {"net-http", true, false}, {"h2c", false, true}} {
		t.Run(mode.name, func(t *testing.T) {
			p := newProxyWith(t, Config{DisableFastPath: mode.disable})
			update(t, p, snap)
			addr := addrOf(p, webPort)
			for _, tc := range tests {
				mu.Lock()
				got = got[:0]
				mu.Unlock()
				var code int
				if mode.h2 {
					if strings.HasPrefix(tc.target, "//") {
						continue // net/http's client cannot send it as :path
					}
					req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
					if err != nil {
						t.Fatal(err)
					}
					req.URL.Opaque = tc.target // sent as is
					req.Host = "guarded.example.com"
					resp, err := h2cClient().Do(req)
					if err != nil {
						t.Fatalf("%s: %v", tc.target, err)
					}
					resp.Body.Close()
					code = resp.StatusCode
				} else {
					resp, _ := rawRequest(t, addr, "GET "+tc.target+" HTTP/1.1\nHost: guarded.example.com\nConnection: close\n")
					code = resp.StatusCode
				}
				mu.Lock()
				reached := append([]string(nil), got...)
				mu.Unlock()
				if code != tc.want {
					t.Errorf("GET %s answered %d, want %d (the target got %q)", tc.target, code, tc.want, reached)
				}
				if tc.want != 200 && len(reached) != 0 {
					t.Errorf("GET %s reached the target as %q", tc.target, reached)
				}
			}
		})
	}
}

func TestAuthPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                "/",
		"/":               "/",
		"/a/b":            "/a/b",
		"/a/b/":           "/a/b/",
		"/a/./b":          "/a/b",
		"/a/../b":         "/b",
		"/../../etc":      "/etc",
		"//a//b//":        "/a/b/",
		"/a/b/..":         "/a",
		"/a/.hidden/file": "/a/.hidden/file",
	} {
		if got := authPath(in); got != want {
			t.Errorf("authPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// A path that is not refused as ambiguous is judged exactly as forwarded.
func FuzzAmbiguousPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b/", "/a/../b", "//a", "/a/.;x/b", "/a\\b", "/.well-known", "/a/...", "*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if strings.HasPrefix(p, "/") && !ambiguousPath(p) && authPath(p) != p {
			t.Errorf("%q is not refused but judged as %q", p, authPath(p))
		}
	})
}

// Workload identity: a request from an address the cluster's WorkloadSets
// name carries that workload's principal to the target (X-Trellis-Identity,
// on the fast path and on net/http's alike) and to auth policies; another
// cluster's set says nothing about local addresses.
func TestWorkloadIdentity(t *testing.T) {
	echo := headerEcho(t)
	p := newTestProxy(t, nil)
	const frontend = "spiffe://local/ns/shop/sa/frontend"
	guarded := edgeService("guarded", []string{"guarded.example.com"}, model.Rule{Action: forward(to("echo", 1))})
	guarded.Auth = &model.Auth{Policy: json.RawMessage(`{"Statement": [
		{"Effect": "Allow", "Principal": {"Trellis": "spiffe://local/ns/shop/sa/*"}, "Action": "trellis:Invoke", "Resource": "*"}]}`)}
	snap := func(rev int64, sets ...model.WorkloadSet) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{
			Networks: testNetworks, WorkloadSets: sets,
			Services:     []model.Service{edgeService("open", []string{"open.example.com"}, model.Rule{Action: forward(to("echo", 1))}), guarded},
			TargetGroups: []model.TargetGroup{group("echo", target(t, echo, model.TargetActive))},
		}, Revision: rev}
	}
	set := func(owner, ns, sa string) model.WorkloadSet {
		return model.WorkloadSet{Meta: model.Meta{Name: model.WorkloadSetName(owner, ns), Owner: owner}, Namespace: ns,
			Workloads: []model.Workload{{Address: "127.0.0.1", ServiceAccount: sa}}}
	}
	var addr string
	// One keep-alive connection per service across the updates below, both
	// on the fast path: identities published after a connection opened
	// reach its later requests.
	// An h2c connection too, whose requests go to the target directly
	// (forwardDirect) with its connection's fields made once per snapshot.
	clients := map[string]*http.Client{"open.example.com": noRedirects(t), "guarded.example.com": noRedirects(t), "h2c": h2cClient()}
	identity := func(host string) (int, string) {
		t.Helper()
		c := clients[host]
		if host == "h2c" {
			host = "open.example.com"
		}
		resp, body := send(t, c, http.MethodGet, addr, host, "/", nil, "")
		var h http.Header
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &h); err != nil {
				t.Fatalf("%s: %v in %q", host, err, body)
			}
		}
		return resp.StatusCode, h.Get("X-Trellis-Identity")
	}

	// Another cluster's workloads: this proxy's callers stay anonymous.
	update(t, p, snap(1, set("elsewhere", "shop", "frontend")))
	addr = addrOf(p, webPort)
	for _, host := range []string{"open.example.com", "h2c"} {
		if code, id := identity(host); code != 200 || id != "Type=Anonymous" {
			t.Errorf("%s with only another cluster's set: %d, identity %q; want 200, anonymous", host, code, id)
		}
	}
	if code, _ := identity("guarded.example.com"); code != http.StatusForbidden {
		t.Errorf("anonymous caller on the guarded service: %d, want 403", code)
	}

	// The address becomes a workload of this cluster; the same
	// connections' next requests carry it.
	update(t, p, snap(2, set(cluster, "shop", "frontend")))
	want := "Principal=" + frontend + "; Type=Workload"
	for _, host := range []string{"open.example.com", "guarded.example.com", "h2c"} {
		if code, id := identity(host); code != 200 || id != want {
			t.Errorf("%s from the frontend workload: %d, identity %q; want 200, %q", host, code, id, want)
		}
	}

	// Another service account is not the policy's.
	update(t, p, snap(3, set(cluster, "payments", "billing")))
	resp, body := send(t, clients["guarded.example.com"], http.MethodGet, addr, "guarded.example.com", "/", nil, "")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "User: spiffe://local/ns/payments/sa/billing is not authorized") {
		t.Errorf("billing workload on the guarded service: %d %q, want 403 naming it", resp.StatusCode, body)
	}
}

// BenchmarkAmbiguousPath is the check every request's path takes on both
// request paths, on paths that pass it.
func BenchmarkAmbiguousPath(b *testing.B) {
	for _, p := range []string{"/", "/api/v1/users/12345/orders", "/static/js/app.0123456789abcdef.bundle.min.js", "/a/.well-known/x"} {
		b.Run(p, func(b *testing.B) {
			for b.Loop() {
				if ambiguousPath(p) {
					b.Fatal(p)
				}
			}
		})
	}
}
