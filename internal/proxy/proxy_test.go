package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/testsync"
)

// Model ports used by the tests. The proxies under test never bind them:
// newTestProxy makes every listener bind an ephemeral port on 127.0.0.1, and
// Addrs says where each model port really listens. That keeps the tests
// free of port races with anything else running on the machine.
const (
	webPort int32 = 8080
	apiPort int32 = 9090
)

const cluster = "local"

// newTestProxy returns a proxy whose listeners bind ephemeral ports on
// their bind's address (127.0.0.1 by default), shut down when the test ends.
func newTestProxy(t *testing.T, log *slog.Logger) *Proxy {
	t.Helper()
	return newTestProxyWith(t, Config{Cluster: cluster, BindAddress: "127.0.0.1", Logger: log})
}

// newTestProxyWith is newTestProxy with a configuration of the test's.
func newTestProxyWith(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	p := New(cfg)
	p.listen = func(b router.Bind) (net.Listener, error) {
		return net.Listen("tcp", net.JoinHostPort(cmp.Or(b.Addr, "127.0.0.1"), "0"))
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return p
}

// addrOf returns where p really listens for model port on its default bind
// address, or "" when it does not.
func addrOf(p *Proxy, port int32) string { return p.Addrs()[router.Bind{Port: port}] }

func update(t testing.TB, p *Proxy, snap *model.Snapshot) {
	t.Helper()
	if err := p.Update(snap); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// backend starts a target on 127.0.0.1 that answers with its name as the
// body and reports the Host and X-Forwarded-For it received.
func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Forwarded-For", r.Header.Get("X-Forwarded-For"))
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// slowBackend is a target whose requests wait for release; started receives
// one value per request that has arrived.
func slowBackend(t *testing.T) (srv *httptest.Server, started <-chan struct{}, release func()) {
	t.Helper()
	arrived := make(chan struct{}, 16)
	gate := make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		io.WriteString(w, "slow")
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(srv.Close)
	t.Cleanup(release) // runs before srv.Close, which waits for handlers
	return srv, arrived, release
}

func target(t testing.TB, srv *httptest.Server, state model.TargetState) model.Target {
	t.Helper()
	host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return model.Target{Address: host, Port: int32(n), Cluster: cluster, State: state}
}

// group is a target group with health checks off, so that routing tests
// see every target from the start (health_test.go turns them on).
func group(name string, targets ...model.Target) model.TargetGroup {
	off := false
	return model.TargetGroup{Meta: model.Meta{Name: name, Owner: cluster}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
		HealthCheck: model.HealthCheck{Enabled: &off}, Targets: targets}
}

func forward(backends ...model.WeightedTargetGroup) model.Action {
	return model.Action{Forward: &model.ForwardAction{Backends: backends}}
}

func to(tg string, weight int32) model.WeightedTargetGroup {
	return model.WeightedTargetGroup{TargetGroup: tg, Weight: weight}
}

func listeners(ports ...int32) []model.Listener {
	var ls []model.Listener
	for _, p := range ports {
		ls = append(ls, model.Listener{Name: fmt.Sprint("http-", p), Port: p, Protocol: model.ProtocolHTTP})
	}
	return ls
}

// testNetworks allow every cluster: the peer-hop tests' services of other
// clusters join them.
var testNetworks = []model.ServiceNetwork{
	{Meta: model.Meta{Name: "mesh", Owner: cluster}, Mode: model.ModeServiceNetwork, Domain: "mesh.trellis.internal", AllowedClusters: []string{model.AnyCluster}},
	{Meta: model.Meta{Name: "edge", Owner: cluster}, Mode: model.ModeEdge, AllowedClusters: []string{model.AnyCluster}},
}

// edgeService is a service of the edge network answering to hosts (or to
// any host when there are none) on webPort.
func edgeService(name string, hosts []string, rules ...model.Rule) model.Service {
	return model.Service{
		Meta: model.Meta{Name: name, Owner: cluster}, Network: "edge",
		CustomDomains: hosts, Listeners: listeners(webPort), Rules: rules,
	}
}

// oneRoute is a snapshot of one edge service, answering any host on
// webPort, that forwards everything to backends.
func oneRoute(rev int64, groups []model.TargetGroup, backends ...model.WeightedTargetGroup) *model.Snapshot {
	return &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, TargetGroups: groups,
		Services: []model.Service{edgeService("svc", nil, model.Rule{Action: forward(backends...)})},
	}, Revision: rev}
}

type client struct {
	t *testing.T
	c *http.Client
}

func newClient(t *testing.T) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// tally sends n GETs for shop.example to addr and counts the replies by
// the body's first word and the status: "east-cart/200".
func (c *client) tally(addr string, n int) map[string]int {
	out := map[string]int{}
	for range n {
		r := c.get(addr, "shop.example", "/")
		out[strings.Fields(r.body + " ?")[0]+"/"+itoa(int32(r.status))]++
	}
	return out
}

type reply struct {
	status int
	body   string
	header http.Header
}

// inFlight sends a GET for target to addr, host x, in the background and
// returns once a slowBackend has it (started); the reply arrives on the
// channel once the backend is released.
func (c *client) inFlight(t *testing.T, addr, target string, started <-chan struct{}) <-chan reply {
	t.Helper()
	replies := make(chan reply, 1)
	go func() {
		r, err := c.do(addr, http.MethodGet, "x", target, nil)
		if err != nil {
			t.Errorf("in-flight request to %s%s: %v", addr, target, err)
		}
		replies <- r
	}()
	<-started
	return replies
}

// do sends one request to addr with the given Host header. It reports a
// transport error with t.Errorf, so that it may run in any goroutine.
func (c *client) do(addr, method, host, target string, header http.Header) (reply, error) {
	req, err := http.NewRequest(method, "http://"+addr+target, nil)
	if err != nil {
		return reply{}, err
	}
	req.Host = host
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(body), header: resp.Header}, err
}

func (c *client) get(addr, host, target string) reply {
	c.t.Helper()
	r, err := c.do(addr, http.MethodGet, host, target, nil)
	if err != nil {
		c.t.Fatalf("GET %s%s: %v", host, target, err)
	}
	return r
}

func TestRouting(t *testing.T) {
	a, b, c, d := backend(t, "a"), backend(t, "b"), backend(t, "c"), backend(t, "d")
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks,
		TargetGroups: []model.TargetGroup{
			group("a", target(t, a, model.TargetActive)), group("b", target(t, b, model.TargetActive)),
			group("c", target(t, c, model.TargetActive)), group("d", target(t, d, model.TargetActive)),
		},
		Services: []model.Service{
			{
				Meta: model.Meta{Name: "inv", Owner: cluster}, Network: "mesh",
				DNSName: "inv-default.mesh.trellis.internal", Listeners: listeners(webPort),
				Rules: []model.Rule{
					{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: "/exact"}}}, Action: forward(to("a", 1))},
					{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/api/"}}}, Action: forward(to("b", 1))},
					{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathRegularExpression, Value: `/items/[0-9]+`}}}, Action: forward(to("c", 1))},
					{Matches: []model.Match{{Method: http.MethodPost, Path: &model.PathMatch{Type: model.PathPrefix, Value: "/m"}}}, Action: forward(to("a", 1))},
					{Matches: []model.Match{{Headers: []model.ValueMatch{{Type: model.ValueExact, Name: "x-canary", Value: "yes"}}}}, Action: forward(to("b", 1))},
					{Matches: []model.Match{{QueryParams: []model.ValueMatch{{Type: model.ValueRegularExpression, Name: "v", Value: "2|3"}}}}, Action: forward(to("c", 1))},
					{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: "/teapot"}}}, Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 418}}},
					{Action: forward(to("d", 1))},
				},
			},
			edgeService("shop", []string{"shop.example.com"}, model.Rule{Action: forward(to("a", 1))}),
			edgeService("wild", []string{"*.example.com"}, model.Rule{Action: forward(to("b", 1))}),
			edgeService("deep", []string{"*.eu.example.com"}, model.Rule{Action: forward(to("c", 1))}),
			// Another port with no catch-all, for 404 on unknown hosts.
			{Meta: model.Meta{Name: "api", Owner: cluster}, Network: "edge", CustomDomains: []string{"api.example.com"},
				Listeners: listeners(apiPort), Rules: []model.Rule{{Action: forward(to("d", 1))}}},
			edgeService("default", nil, model.Rule{Action: forward(to("d", 1))}),
		},
	}, Revision: 1}
	p := newTestProxy(t, nil)
	update(t, p, snap)
	addrs := p.Addrs()
	cl := newClient(t)
	const inv = "inv-default.mesh.trellis.internal"
	tests := []struct {
		name         string
		port         int32
		method       string
		host, target string
		header       http.Header
		status       int
		body         string
	}{
		{"exact host, exact path", webPort, "GET", inv, "/exact", nil, 200, "a"},
		{"host is case-insensitive, port ignored", webPort, "GET", "INV-default.Mesh.trellis.internal:8080", "/exact", nil, 200, "a"},
		{"exact path only", webPort, "GET", inv, "/exact/more", nil, 200, "d"},
		{"prefix", webPort, "GET", inv, "/api", nil, 200, "b"},
		{"prefix subpath", webPort, "GET", inv, "/api/v1/orders", nil, 200, "b"},
		{"prefix is segment-aware", webPort, "GET", inv, "/apiary", nil, 200, "d"},
		{"regex", webPort, "GET", inv, "/items/42", nil, 200, "c"},
		{"regex is anchored", webPort, "GET", inv, "/items/42x", nil, 200, "d"},
		{"method", webPort, "POST", inv, "/m/x", nil, 200, "a"},
		{"method mismatch", webPort, "GET", inv, "/m/x", nil, 200, "d"},
		{"header", webPort, "GET", inv, "/h", http.Header{"X-Canary": {"yes"}}, 200, "b"},
		{"header mismatch", webPort, "GET", inv, "/h", http.Header{"X-Canary": {"no"}}, 200, "d"},
		{"query regex", webPort, "GET", inv, "/q?v=3", nil, 200, "c"},
		{"query mismatch", webPort, "GET", inv, "/q?v=23", nil, 200, "d"},
		{"fixed response", webPort, "GET", inv, "/teapot", nil, 418, ""},
		{"exact custom domain", webPort, "GET", "shop.example.com", "/", nil, 200, "a"},
		{"wildcard", webPort, "GET", "www.example.com", "/", nil, 200, "b"},
		{"longest wildcard wins", webPort, "GET", "www.eu.example.com", "/", nil, 200, "c"},
		{"edge catch-all", webPort, "GET", "elsewhere.org", "/", nil, 200, "d"},
		{"other port", apiPort, "GET", "api.example.com", "/", nil, 200, "d"},
		{"no host match", apiPort, "GET", "shop.example.com", "/", nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cl.do(addrs[router.Bind{Port: tt.port}], tt.method, tt.host, tt.target, tt.header)
			if err != nil {
				t.Fatal(err)
			}
			if got.status != tt.status || got.body != tt.body {
				t.Errorf("got %d %q, want %d %q", got.status, got.body, tt.status, tt.body)
			}
		})
	}
}

func TestPrecedenceAcrossServices(t *testing.T) {
	older, newer := backend(t, "older"), backend(t, "newer")
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	prefix := func(v string) []model.Match {
		return []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: v}}}
	}
	exact := func(v string) []model.Match {
		return []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: v}}}
	}
	oldSvc := edgeService("old", []string{"shop.example.com"},
		model.Rule{Matches: prefix("/cart"), Action: forward(to("older", 1))},
		model.Rule{Matches: prefix("/items"), Action: forward(to("older", 1))},
		model.Rule{Matches: prefix("/same"), Action: forward(to("older", 1))},
	)
	oldSvc.CreatedAt = t0
	newSvc := edgeService("new", []string{"shop.example.com"},
		model.Rule{Matches: prefix("/same"), Action: forward(to("newer", 1))},
		model.Rule{Matches: exact("/cart"), Action: forward(to("newer", 1))},
		model.Rule{Matches: prefix("/items/special"), Action: forward(to("newer", 1))},
	)
	newSvc.CreatedAt = t0.Add(time.Minute)
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		TargetGroups: []model.TargetGroup{group("older", target(t, older, model.TargetActive)), group("newer", target(t, newer, model.TargetActive))},
		// The newer service comes first: order in the snapshot must not matter.
		Services: []model.Service{newSvc, oldSvc},
	}, Revision: 1})
	cl := newClient(t)
	for _, tt := range []struct{ path, want string }{
		{"/cart", "newer"},             // exact beats prefix
		{"/cart/checkout", "older"},    // exact does not match below itself
		{"/items/special/1", "newer"},  // longer prefix beats shorter
		{"/items/other", "older"},      // the shorter prefix still serves the rest
		{"/same", "older"},             // equal matches: the older service wins
		{"/same/deeper/path", "older"}, // on every path below
	} {
		if got := cl.get(addrOf(p, webPort), "shop.example.com", tt.path); got.body != tt.want {
			t.Errorf("%s: served by %q (%d), want %q", tt.path, got.body, got.status, tt.want)
		}
	}
}

func TestWeights(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	groups := []model.TargetGroup{group("a", target(t, a, model.TargetActive)), group("b", target(t, b, model.TargetActive))}
	tests := []struct {
		name     string
		backends []model.WeightedTargetGroup
		// window is a number of consecutive requests in which want must
		// hold exactly, from the first request after the Update.
		window int
		want   map[string]int // by body, or by status for empty bodies
	}{
		{"50/50", []model.WeightedTargetGroup{to("a", 50), to("b", 50)}, 2, map[string]int{"a": 1, "b": 1}},
		{"90/10", []model.WeightedTargetGroup{to("a", 90), to("b", 10)}, 10, map[string]int{"a": 9, "b": 1}},
		{"zero weight never picked", []model.WeightedTargetGroup{to("a", 0), to("b", 3)}, 1, map[string]int{"b": 1}},
		{"all zero is 500", []model.WeightedTargetGroup{to("a", 0), to("b", 0)}, 1, map[string]int{"500": 1}},
		{"missing target group takes its share as 500", []model.WeightedTargetGroup{to("a", 1), to("gone", 1)}, 2, map[string]int{"a": 1, "500": 1}},
		{"invalid reference takes its share as 500", []model.WeightedTargetGroup{to("", 1), to("b", 3)}, 4, map[string]int{"b": 3, "500": 1}},
	}
	p := newTestProxy(t, nil)
	cl := newClient(t)
	const requests = 400
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			update(t, p, oneRoute(int64(i+1), groups, tt.backends...))
			addr := addrOf(p, webPort)
			total := map[string]int{}
			window := map[string]int{}
			for n := 1; n <= requests; n++ {
				r := cl.get(addr, "any.example.com", "/")
				key := r.body
				if key == "" {
					key = strconv.Itoa(r.status)
				}
				window[key]++
				total[key]++
				if n%tt.window == 0 {
					if fmt.Sprint(window) != fmt.Sprint(tt.want) {
						t.Fatalf("requests %d-%d: got %v, want %v", n-tt.window+1, n, window, tt.want)
					}
					clear(window)
				}
			}
			t.Logf("%d requests: %v", requests, total)
		})
	}
}

func TestTargets(t *testing.T) {
	active1, active2, draining := backend(t, "active1"), backend(t, "active2"), backend(t, "draining")
	p := newTestProxy(t, nil)
	cl := newClient(t)

	update(t, p, oneRoute(1, []model.TargetGroup{group("g",
		target(t, active1, model.TargetActive), target(t, draining, model.TargetDraining), target(t, active2, model.TargetActive),
	)}, to("g", 1)))
	got := map[string]int{}
	for range 40 {
		got[cl.get(addrOf(p, webPort), "x", "/").body]++
	}
	if want := map[string]int{"active1": 20, "active2": 20}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("round robin with a draining target: got %v, want %v", got, want)
	}

	update(t, p, oneRoute(2, []model.TargetGroup{group("g", target(t, draining, model.TargetDraining))}, to("g", 1)))
	if r := cl.get(addrOf(p, webPort), "x", "/"); r.status != http.StatusServiceUnavailable {
		t.Errorf("no active target: status %d, want 503", r.status)
	}
}

func TestForwarding(t *testing.T) {
	up := backend(t, "up")
	down := backend(t, "down")
	down.Close() // its address now refuses connections
	var logs testsync.Buffer
	p := newTestProxy(t, slog.New(slog.NewTextHandler(&logs, nil)))
	remote := target(t, up, model.TargetActive)
	remote.Cluster = "cluster-b"
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks,
		TargetGroups: []model.TargetGroup{
			group("up", target(t, up, model.TargetActive)),
			group("down", target(t, down, model.TargetActive)),
			group("remote", remote),
		},
		Services: []model.Service{
			edgeService("up", []string{"up.example.com"}, model.Rule{Action: forward(to("up", 1))}),
			edgeService("down", []string{"down.example.com"}, model.Rule{Action: forward(to("down", 1))}),
			edgeService("remote", []string{"remote.example.com"}, model.Rule{Action: forward(to("remote", 1))}),
		},
	}, Revision: 1})
	cl := newClient(t)
	addr := addrOf(p, webPort)

	r, err := cl.do(addr, http.MethodGet, "Up.Example.com:8080", "/x", http.Header{"X-Forwarded-For": {"6.6.6.6"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.status != 200 || r.body != "up" {
		t.Fatalf("forward: got %d %q", r.status, r.body)
	}
	if got := r.header.Get("X-Seen-Host"); got != "Up.Example.com:8080" {
		t.Errorf("target saw Host %q, want the client's Host header", got)
	}
	if got := r.header.Get("X-Seen-Forwarded-For"); got != "6.6.6.6, 127.0.0.1" {
		t.Errorf("target saw X-Forwarded-For %q, want the client's list with its address appended", got)
	}

	if r := cl.get(addr, "down.example.com", "/"); r.status != http.StatusBadGateway {
		t.Errorf("unreachable target: status %d, want 502", r.status)
	}
	if r := cl.get(addr, "remote.example.com", "/"); r.status != http.StatusBadGateway {
		t.Errorf("target in another cluster: status %d, want 502", r.status)
	}
	if !strings.Contains(logs.String(), "target in cluster cluster-b needs the peer hop, which this proxy is not configured for") {
		t.Errorf("no peer hop log line in:\n%s", logs.String())
	}
}

func TestListenerReconcile(t *testing.T) {
	a := backend(t, "a")
	slow, started, release := slowBackend(t)
	groups := []model.TargetGroup{group("a", target(t, a, model.TargetActive)), group("slow", target(t, slow, model.TargetActive))}
	snap := func(rev int64, ports ...int32) *model.Snapshot {
		svc := edgeService("svc", nil,
			model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/slow"}}}, Action: forward(to("slow", 1))},
			model.Rule{Action: forward(to("a", 1))})
		svc.Listeners = listeners(ports...)
		return &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: groups, Services: []model.Service{svc}}, Revision: rev}
	}
	p := newTestProxy(t, nil)
	cl := newClient(t)

	update(t, p, snap(1, webPort))
	web := addrOf(p, webPort)
	if r := cl.get(web, "x", "/"); r.body != "a" {
		t.Fatalf("port %d: got %d %q", webPort, r.status, r.body)
	}

	update(t, p, snap(2, webPort, apiPort))
	addrs := p.Addrs()
	if len(addrs) != 2 || addrs[router.Bind{Port: webPort}] != web {
		t.Fatalf("Addrs after adding a port = %v; want %d kept at %s and %d added", addrs, webPort, web, apiPort)
	}
	if r := cl.get(addrs[router.Bind{Port: apiPort}], "x", "/"); r.body != "a" {
		t.Fatalf("new port %d: got %d %q", apiPort, r.status, r.body)
	}

	// A request in flight on a port that leaves the config finishes.
	inflight := cl.inFlight(t, web, "/slow", started)
	update(t, p, snap(3, apiPort))
	if addrOf(p, webPort) != "" {
		t.Errorf("port %d still listed after removal: %v", webPort, p.Addrs())
	}
	if _, err := net.DialTimeout("tcp", web, time.Second); err == nil {
		t.Errorf("removed port %d still accepts connections at %s", webPort, web)
	}
	release()
	if r := <-inflight; r.status != 200 || r.body != "slow" {
		t.Errorf("in-flight request on a removed port: got %d %q, want 200 \"slow\"", r.status, r.body)
	}
	if r := cl.get(addrOf(p, apiPort), "x", "/"); r.body != "a" {
		t.Errorf("remaining port %d: got %d %q", apiPort, r.status, r.body)
	}
}

func TestBindFailure(t *testing.T) {
	a := backend(t, "a")
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	p := newTestProxy(t, nil)
	const busyPort int32 = 7070
	p.listen = func(b router.Bind) (net.Listener, error) {
		if b.Port == busyPort {
			return net.Listen("tcp", taken.Addr().String())
		}
		return net.Listen("tcp", "127.0.0.1:0")
	}
	svc := edgeService("svc", nil, model.Rule{Action: forward(to("a", 1))})
	svc.Listeners = listeners(busyPort, webPort)
	snap := &model.Snapshot{Objects: model.Objects{Networks: testNetworks, TargetGroups: []model.TargetGroup{group("a", target(t, a, model.TargetActive))}, Services: []model.Service{svc}}, Revision: 5}

	err = p.Update(snap)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("listener :%d", busyPort)) {
		t.Fatalf("Update error = %v, want one naming port %d", err, busyPort)
	}
	if p.Revision() != 5 {
		t.Errorf("Revision = %d, want 5: the rest of the config applies", p.Revision())
	}
	if r := newClient(t).get(addrOf(p, webPort), "x", "/"); r.body != "a" {
		t.Errorf("port %d: got %d %q", webPort, r.status, r.body)
	}

	// Once the port is free, the next Update binds it.
	taken.Close()
	snap.Revision = 6
	update(t, p, snap)
	if addrOf(p, busyPort) == "" {
		t.Errorf("port %d not opened once free: %v", busyPort, p.Addrs())
	}
}

func TestInvalidUpdateKeepsServing(t *testing.T) {
	a := backend(t, "a")
	groups := []model.TargetGroup{group("a", target(t, a, model.TargetActive))}
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, groups, to("a", 1)))

	// Validation rejects a bad regular expression; build one that skipped it.
	bad := oneRoute(2, groups, to("a", 1))
	bad.Services[0].Rules[0].Matches = []model.Match{{Path: &model.PathMatch{Type: model.PathRegularExpression, Value: "/(unclosed"}}}
	bad.Services[0].Listeners = listeners(apiPort)
	err := p.Update(bad)
	if err == nil || !strings.Contains(err.Error(), "rules[0].matches[0].path.value: invalid regular expression") {
		t.Fatalf("Update error = %v, want the bad field named", err)
	}
	if p.Revision() != 1 {
		t.Errorf("Revision = %d after a failed Update, want 1", p.Revision())
	}
	if addrs := p.Addrs(); len(addrs) != 1 || addrOf(p, webPort) == "" {
		t.Errorf("listeners changed by a failed Update: %v", addrs)
	}
	if r := newClient(t).get(addrOf(p, webPort), "x", "/"); r.body != "a" {
		t.Errorf("after a failed Update: got %d %q, want the old table serving", r.status, r.body)
	}
}

func TestUpdateUnderLoad(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	groups := []model.TargetGroup{group("a", target(t, a, model.TargetActive)), group("b", target(t, b, model.TargetActive))}
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, groups, to("a", 50), to("b", 50)))
	addr := addrOf(p, webPort)
	cl := newClient(t)

	const workers, each = 4, 150
	var failures, served atomic.Int64
	var load sync.WaitGroup
	for range workers {
		load.Go(func() {
			for range each {
				r, err := cl.do(addr, http.MethodGet, "x", "/", nil)
				if err != nil || r.status != 200 || (r.body != "a" && r.body != "b") {
					failures.Add(1)
					t.Errorf("under load: %d %q %v", r.status, r.body, err)
					continue
				}
				served.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		load.Wait()
		close(done)
	}()
	updates := 0
	for rev := int64(2); ; rev++ {
		select {
		case <-done:
			if updates < 10 {
				t.Errorf("only %d Updates ran during the load", updates)
			}
			if n := served.Load(); n != workers*each || failures.Load() != 0 {
				t.Errorf("served %d of %d requests, %d failures", n, workers*each, failures.Load())
			}
			t.Logf("%d requests across %d Updates", served.Load(), updates)
			return
		default:
		}
		weights := []model.WeightedTargetGroup{to("a", 50), to("b", 50)}
		if rev%2 == 0 {
			weights = []model.WeightedTargetGroup{to("a", 90), to("b", 10)}
		}
		update(t, p, oneRoute(rev, groups, weights...))
		updates++
		time.Sleep(time.Millisecond) // leave the two test CPUs mostly to the load
		if p.Revision() != rev {
			t.Fatalf("Revision = %d, want %d", p.Revision(), rev)
		}
	}
}

func TestShutdownDrains(t *testing.T) {
	slow, started, release := slowBackend(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("slow", target(t, slow, model.TargetActive))}, to("slow", 1)))
	addr := addrOf(p, webPort)
	cl := newClient(t)

	inflight := cl.inFlight(t, addr, "/", started)
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- p.Shutdown(ctx)
	}()
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("listener still accepts connections during Shutdown")
	}
	release()
	if r := <-inflight; r.status != 200 || r.body != "slow" {
		t.Errorf("in-flight request: got %d %q, want 200 \"slow\"", r.status, r.body)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := p.Update(oneRoute(2, nil)); err == nil {
		t.Error("Update after Shutdown succeeded")
	}
}

func TestShutdownDeadline(t *testing.T) {
	slow, started, _ := slowBackend(t)
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("slow", target(t, slow, model.TargetActive))}, to("slow", 1)))
	cl := newClient(t)
	inflight := make(chan error, 1)
	go func() {
		_, err := cl.do(addrOf(p, webPort), http.MethodGet, "x", "/", nil)
		inflight <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the deadline exceeded", err)
	}
	if err := <-inflight; err == nil {
		t.Error("request outlived a Shutdown past its deadline")
	}
}
