package router

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

// Helpers that keep the test snapshots short.

func prefix(v string) *model.PathMatch { return &model.PathMatch{Type: model.PathPrefix, Value: v} }
func exact(v string) *model.PathMatch  { return &model.PathMatch{Type: model.PathExact, Value: v} }
func regex(v string) *model.PathMatch {
	return &model.PathMatch{Type: model.PathRegularExpression, Value: v}
}

func fixed(code int) model.Action {
	return model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: code}}
}

func rule(code int, matches ...model.Match) model.Rule {
	return model.Rule{Matches: matches, Action: fixed(code)}
}

func http80(ports ...int32) []model.Listener {
	if len(ports) == 0 {
		ports = []int32{80}
	}
	var ls []model.Listener
	for _, p := range ports {
		ls = append(ls, model.Listener{Name: fmt.Sprint("l", p), Port: p, Protocol: model.ProtocolHTTP})
	}
	return ls
}

var networks = []model.ServiceNetwork{
	{Meta: model.Meta{Name: "mesh"}, Mode: model.ModeServiceNetwork, Domain: "mesh.trellis.internal"},
	{Meta: model.Meta{Name: "edge"}, Mode: model.ModeEdge},
}

func mustCompile(t testing.TB, snap *model.Snapshot) *Table {
	t.Helper()
	tab, err := new(Compiler).Compile(snap)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tab
}

// routeName names a matched route "service/rule", or "-" for no match.
func routeName(r *Rule) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%s/%d", r.Service, r.Index)
}

type req struct {
	port    int32
	method  string
	host    string
	target  string // path and query
	headers map[string]string
}

func (q req) build() *http.Request {
	method := q.method
	if method == "" {
		method = http.MethodGet
	}
	r := httptest.NewRequest(method, q.target, nil)
	r.Host = q.host
	for k, v := range q.headers {
		r.Header.Set(k, v)
	}
	return r
}

func matchSnapshot() *model.Snapshot {
	return &model.Snapshot{Objects: model.Objects{
		Networks: networks,
		Services: []model.Service{
			{
				Meta: model.Meta{Name: "inv"}, Network: "mesh",
				DNSName:       "inv-default.mesh.trellis.internal",
				CustomDomains: []string{"shop.example.com"},
				Listeners:     http80(80),
				Rules: []model.Rule{
					rule(200, model.Match{Path: exact("/exact")}),
					rule(201, model.Match{Path: prefix("/api/")}),
					rule(202, model.Match{Path: regex(`/items/[0-9]+`)}),
					rule(203, model.Match{Path: prefix("/m"), Method: http.MethodPost}),
					rule(204, model.Match{Path: prefix("/h"), Headers: []model.ValueMatch{
						{Type: model.ValueExact, Name: "x-env", Value: "canary"},
						{Type: model.ValueRegularExpression, Name: "X-Ver", Value: `v[0-9]+`},
					}}),
					rule(205, model.Match{Path: prefix("/q"), QueryParams: []model.ValueMatch{
						{Type: model.ValueExact, Name: "v", Value: "2"},
						{Type: model.ValueRegularExpression, Name: "re", Value: `a+`},
					}}),
					rule(206, model.Match{Path: exact("/or-a")}, model.Match{Path: exact("/or-b")}),
					rule(299),
				},
			},
			{Meta: model.Meta{Name: "wild"}, Network: "edge", CustomDomains: []string{"*.example.com"}, Listeners: http80(80), Rules: []model.Rule{rule(210)}},
			{Meta: model.Meta{Name: "deep"}, Network: "edge", CustomDomains: []string{"*.b.example.com"}, Listeners: http80(80), Rules: []model.Rule{rule(211)}},
			{Meta: model.Meta{Name: "any"}, Network: "edge", Listeners: http80(80), Rules: []model.Rule{rule(220)}},
			{Meta: model.Meta{Name: "other-port"}, Network: "mesh", DNSName: "inv-default.mesh.trellis.internal", Listeners: http80(81), Rules: []model.Rule{rule(230)}},
			// No host names outside edge mode: serves nothing, but its
			// listener's port is still opened.
			{Meta: model.Meta{Name: "nameless"}, Network: "mesh", Listeners: http80(82), Rules: []model.Rule{rule(240)}},
			{Meta: model.Meta{Name: "tls"}, Network: "edge", CustomDomains: []string{"tls.example.com"},
				Listeners: []model.Listener{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS}}, Rules: []model.Rule{rule(250)}},
		},
	}, Revision: 7}
}

func TestMatch(t *testing.T) {
	tab := mustCompile(t, matchSnapshot())
	const inv = "inv-default.mesh.trellis.internal"
	tests := []struct {
		name string
		req  req
		want string
	}{
		{"exact host, exact path", req{host: inv, target: "/exact"}, "inv/0"},
		{"host with port and upper case", req{host: "INV-Default.mesh.trellis.internal:80", target: "/exact"}, "inv/0"},
		{"host with trailing dot", req{host: inv + ".", target: "/exact"}, "inv/0"},
		{"exact path is not a prefix", req{host: inv, target: "/exact/"}, "inv/7"},
		{"prefix itself", req{host: inv, target: "/api"}, "inv/1"},
		{"prefix with slash", req{host: inv, target: "/api/"}, "inv/1"},
		{"prefix segment", req{host: inv, target: "/api/v1/x"}, "inv/1"},
		{"prefix is segment-aware", req{host: inv, target: "/apix"}, "inv/7"},
		{"regex full match", req{host: inv, target: "/items/42"}, "inv/2"},
		{"regex must match whole path", req{host: inv, target: "/items/42/x"}, "inv/7"},
		{"regex no match", req{host: inv, target: "/items/abc"}, "inv/7"},
		{"method match", req{host: inv, method: http.MethodPost, target: "/m"}, "inv/3"},
		{"method mismatch", req{host: inv, target: "/m"}, "inv/7"},
		{"headers match", req{host: inv, target: "/h", headers: map[string]string{"X-Env": "canary", "x-ver": "v12"}}, "inv/4"},
		{"header regex is a full match", req{host: inv, target: "/h", headers: map[string]string{"X-Env": "canary", "X-Ver": "xv12"}}, "inv/7"},
		{"header value is case-sensitive", req{host: inv, target: "/h", headers: map[string]string{"X-Env": "Canary", "X-Ver": "v1"}}, "inv/7"},
		{"one header missing", req{host: inv, target: "/h", headers: map[string]string{"X-Env": "canary"}}, "inv/7"},
		{"query match", req{host: inv, target: "/q?v=2&re=aaa"}, "inv/5"},
		{"query escaped", req{host: inv, target: "/q?%76=%32&re=a"}, "inv/5"},
		{"query first value counts", req{host: inv, target: "/q?v=3&v=2&re=a"}, "inv/7"},
		{"query missing", req{host: inv, target: "/q?v=2"}, "inv/7"},
		{"query name is case-sensitive", req{host: inv, target: "/q?V=2&re=a"}, "inv/7"},
		{"any of a rule's matches", req{host: inv, target: "/or-b"}, "inv/6"},
		{"rule without matches", req{host: inv, target: "/anything"}, "inv/7"},
		{"custom domain exact beats wildcard", req{host: "shop.example.com", target: "/exact"}, "inv/0"},
		{"wildcard one label", req{host: "a.example.com", target: "/"}, "wild/0"},
		{"wildcard many labels", req{host: "x.y.example.com", target: "/"}, "wild/0"},
		{"longest wildcard suffix wins", req{host: "x.b.example.com", target: "/"}, "deep/0"},
		{"wildcard needs a label", req{host: "b.example.com", target: "/"}, "wild/0"},
		{"wildcard does not match its suffix", req{host: "example.com", target: "/"}, "any/0"},
		{"edge catch-all", req{host: "unknown.org", target: "/"}, "any/0"},
		{"edge catch-all, IP host", req{host: "[::1]:80", target: "/"}, "any/0"},
		{"same host, other port", req{port: 81, host: inv, target: "/exact"}, "other-port/0"},
		{"no host on port without catch-all", req{port: 81, host: "unknown.org", target: "/"}, "-"},
		{"service-network service without names", req{port: 82, host: "unknown.org", target: "/"}, "-"},
		{"port not served", req{port: 83, host: inv, target: "/"}, "-"},
		{"HTTPS listener routes like HTTP once TLS is terminated", req{port: 443, host: "tls.example.com", target: "/"}, "tls/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := tt.req.port
			if port == 0 {
				port = 80
			}
			if got := routeName(tab.Match(Bind{Port: port}, tt.req.build())); got != tt.want {
				t.Errorf("Match = %s, want %s", got, tt.want)
			}
		})
	}
	if got := tab.Revision(); got != 7 {
		t.Errorf("Revision = %d, want 7", got)
	}
	if got := fmt.Sprint(tab.Binds()); got != "[:80 :81 :82 :443]" {
		t.Errorf("Binds = %s, want [:80 :81 :82 :443]", got)
	}
	if tab.Protocol(Bind{Port: 80}) != model.ProtocolHTTP || tab.Protocol(Bind{Port: 443}) != model.ProtocolHTTPS {
		t.Errorf("protocols: 80 %s, 443 %s", tab.Protocol(Bind{Port: 80}), tab.Protocol(Bind{Port: 443}))
	}
}

// TLS passthrough ports route by server name only; a listener whose port
// already serves another protocol is left out and reported.
func TestMatchSNIAndProtocolConflicts(t *testing.T) {
	passthrough := func(name string, created time.Time, hosts ...string) model.Service {
		return model.Service{
			Meta: model.Meta{Name: name}, Network: "edge", CustomDomains: hosts, CreatedAt: created,
			Listeners: []model.Listener{{Name: "tls", Port: 443, Protocol: model.ProtocolTLSPassthrough}},
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{
				Backends: []model.WeightedTargetGroup{{TargetGroup: name, Weight: 1}},
			}}}},
		}
	}
	tg := func(name string) model.TargetGroup {
		return model.TargetGroup{Meta: model.Meta{Name: name}, Protocol: model.ProtocolTCP, ProtocolVersion: model.HTTP1,
			Targets: []model.Target{{Address: "127.0.0.1", Port: 9443, Cluster: "c", State: model.TargetActive}}}
	}
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "edge"}, Mode: model.ModeEdge}},
		Services: []model.Service{
			passthrough("exact", old.Add(time.Hour), "db.example.com"),
			passthrough("wild", old, "*.example.com"),
			{
				Meta: model.Meta{Name: "clash"}, Network: "edge", CustomDomains: []string{"db.example.com"},
				Listeners: []model.Listener{{Name: "web", Port: 443, Protocol: model.ProtocolHTTP}},
				Rules:     []model.Rule{{Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 200}}}},
			},
		},
		TargetGroups: []model.TargetGroup{tg("exact"), tg("wild")},
	}}
	var c Compiler
	tab, err := c.Compile(snap)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Protocol(Bind{Port: 443}) != model.ProtocolTLSPassthrough {
		t.Errorf("port 443 serves %s", tab.Protocol(Bind{Port: 443}))
	}
	for sni, want := range map[string]string{"db.example.com": "exact", "DB.example.com": "exact", "web.example.com": "wild", "other.test": ""} {
		got := ""
		if rt := tab.MatchSNI(Bind{Port: 443}, sni); rt != nil {
			got = rt.Service
		}
		if got != want {
			t.Errorf("MatchSNI(%q) = %q, want %q", sni, got, want)
		}
	}
	if cs := tab.Conflicts(); len(cs) != 1 || !strings.Contains(cs[0], "clash") {
		t.Errorf("Conflicts = %q, want the HTTP listener of clash", cs)
	}
	if tab.Match(Bind{Port: 443}, httptest.NewRequest("GET", "http://db.example.com/", nil)) != nil {
		t.Error("the conflicting HTTP listener was served")
	}
}

// precedenceCase is services on p.example.com and the rule
// ("service/index") a request there must match.
type precedenceCase struct {
	name     string
	services []model.Service
	req      req
	want     string
}

// checkPrecedence compiles each case's services and checks the rule its
// request (to p.example.com) matches.
func checkPrecedence(t *testing.T, cases []precedenceCase) {
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustCompile(t, &model.Snapshot{Objects: model.Objects{Networks: networks, Services: tt.services}})
			tt.req.host = "p.example.com"
			if got := routeName(tab.Match(Bind{Port: 80}, tt.req.build())); got != tt.want {
				t.Errorf("Match = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := func(name string, created time.Time, source *model.SourceRef, rules ...model.Rule) model.Service {
		return model.Service{
			Meta: model.Meta{Name: name}, Network: "edge", CustomDomains: []string{"p.example.com"},
			Listeners: http80(), Rules: rules, CreatedAt: created, Source: source,
		}
	}
	src := func(ns, name string) *model.SourceRef {
		return &model.SourceRef{Kind: "HTTPRoute", Namespace: ns, Name: name}
	}
	hdr := func(names ...string) []model.ValueMatch {
		var out []model.ValueMatch
		for _, n := range names {
			out = append(out, model.ValueMatch{Type: model.ValueExact, Name: n, Value: "1"})
		}
		return out
	}
	qry := func(names ...string) []model.ValueMatch { return hdr(names...) }
	// oldNew is an older service "old" and an hour newer "new", one rule each.
	oldNew := func(older, newer model.Match) []model.Service {
		return []model.Service{
			svc("old", t0, nil, rule(200, older)),
			svc("new", t0.Add(time.Hour), nil, rule(200, newer)),
		}
	}

	checkPrecedence(t, []precedenceCase{
		{
			"exact beats prefix from an older service",
			oldNew(model.Match{Path: prefix("/foo")}, model.Match{Path: exact("/foo")}),
			req{target: "/foo"}, "new/0",
		},
		{
			"longer prefix beats shorter from an older service",
			oldNew(model.Match{Path: prefix("/a")}, model.Match{Path: prefix("/a/b")}),
			req{target: "/a/b/c"}, "new/0",
		},
		{
			"trailing slash does not lengthen a prefix",
			oldNew(model.Match{Path: prefix("/a")}, model.Match{Path: prefix("/a/")}),
			req{target: "/a/x"}, "old/0",
		},
		{
			"older service wins a tie, whatever the snapshot order",
			[]model.Service{
				svc("new", t0.Add(time.Hour), nil, rule(200, model.Match{Path: prefix("/same")})),
				svc("old", t0, nil, rule(200, model.Match{Path: prefix("/same")})),
			},
			req{target: "/same"}, "old/0",
		},
		{
			"source namespace/name breaks a CreatedAt tie",
			[]model.Service{
				svc("s1", t0, src("default", "zeta"), rule(200, model.Match{Path: prefix("/t")})),
				svc("s2", t0, src("default", "alpha"), rule(200, model.Match{Path: prefix("/t")})),
			},
			req{target: "/t"}, "s2/0",
		},
		{
			"service name when there is no source",
			[]model.Service{
				svc("b-svc", t0, nil, rule(200, model.Match{Path: prefix("/t")})),
				svc("a-svc", t0, nil, rule(200, model.Match{Path: prefix("/t")})),
			},
			req{target: "/t"}, "a-svc/0",
		},
		{
			"regex beats prefix",
			oldNew(model.Match{Path: prefix("/r/x")}, model.Match{Path: regex("/r/.*")}),
			req{target: "/r/x"}, "new/0",
		},
		{
			"exact beats regex",
			oldNew(model.Match{Path: regex("/r/.*")}, model.Match{Path: exact("/r/x")}),
			req{target: "/r/x"}, "new/0",
		},
		{
			"method beats more headers",
			oldNew(model.Match{Path: prefix("/m"), Headers: hdr("a", "b")}, model.Match{Path: prefix("/m"), Method: http.MethodGet}),
			req{target: "/m", headers: map[string]string{"a": "1", "b": "1"}}, "new/0",
		},
		{
			"more headers beat fewer",
			oldNew(model.Match{Path: prefix("/h"), Headers: hdr("a")}, model.Match{Path: prefix("/h"), Headers: hdr("a", "b")}),
			req{target: "/h", headers: map[string]string{"a": "1", "b": "1"}}, "new/0",
		},
		{
			"duplicate header names count once",
			oldNew(model.Match{Path: prefix("/h"), Headers: hdr("a")}, model.Match{Path: prefix("/h"), Headers: hdr("a", "A")}),
			req{target: "/h", headers: map[string]string{"a": "1"}}, "old/0",
		},
		{
			"more query params beat fewer",
			oldNew(model.Match{Path: prefix("/q"), QueryParams: qry("a")}, model.Match{Path: prefix("/q"), QueryParams: qry("a", "b")}),
			req{target: "/q?a=1&b=1"}, "new/0",
		},
		{
			"precedence is per match, not per rule",
			[]model.Service{
				svc("old", t0, nil, rule(200, model.Match{Path: prefix("/x/y")})),
				svc("new", t0.Add(time.Hour), nil, rule(200, model.Match{Path: prefix("/z")}, model.Match{Path: exact("/x/y")})),
			},
			req{target: "/x/y"}, "new/0",
		},
		{
			"first rule wins within a service",
			[]model.Service{
				svc("one", t0, nil, rule(200, model.Match{Path: prefix("/d")}), rule(201, model.Match{Path: prefix("/d")})),
			},
			req{target: "/d"}, "one/0",
		},
	})
}

func TestActions(t *testing.T) {
	snap := &model.Snapshot{Objects: model.Objects{
		Networks: networks,
		TargetGroups: []model.TargetGroup{{
			Meta: model.Meta{Name: "tg"}, Port: 8080,
			Targets: []model.Target{
				{Address: "10.0.0.1", Cluster: "c1", State: model.TargetActive},
				{Address: "10.0.0.2", Cluster: "c1", State: model.TargetDraining},
				{Address: "fd00::3", Port: 9090, Cluster: "c2", State: model.TargetActive},
			},
		}},
		Services: []model.Service{{
			Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(),
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{
				{TargetGroup: "tg", Weight: 1}, {TargetGroup: "", Weight: 1}, {TargetGroup: "missing", Weight: 1},
			}}}}},
		}},
	}}
	route := mustCompile(t, snap).Match(Bind{Port: 80}, req{host: "x", target: "/"}.build())
	var got []string
	for range 6 {
		b := route.Pick()
		if g := b.Group(); g == nil {
			got = append(got, "500:"+b.TargetGroup)
		} else {
			t := g.Pick()
			got = append(got, g.Name+":"+t.Addr+"@"+t.Cluster)
		}
	}
	want := "tg:10.0.0.1:8080@c1 500: 500:missing tg:[fd00::3]:9090@c2 500: 500:missing"
	if strings.Join(got, " ") != want {
		t.Errorf("picks = %s\nwant    %s", strings.Join(got, " "), want)
	}
	g := route.backends[0].Group()
	var addrs []string
	for range 4 {
		addrs = append(addrs, g.Pick().Addr)
	}
	if got, want := strings.Join(addrs, " "), "10.0.0.1:8080 [fd00::3]:9090 10.0.0.1:8080 [fd00::3]:9090"; got != want {
		t.Errorf("targets = %s, want %s (draining target excluded)", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	svc := func(r model.Rule) model.Snapshot {
		return model.Snapshot{Objects: model.Objects{Networks: networks, Services: []model.Service{{
			Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(), Rules: []model.Rule{rule(200), r},
		}}}}
	}
	tg := func(targets ...model.Target) model.Snapshot {
		return model.Snapshot{Objects: model.Objects{TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "tg"}, Targets: targets}}}}
	}
	tests := []struct {
		name string
		snap *model.Snapshot
		want string
	}{
		{"nil snapshot", nil, "nil snapshot"},
		{"bad path regex", ptr(svc(rule(200, model.Match{Path: regex("(")}))), "service s: rules[1].matches[0].path.value: invalid regular expression"},
		{"regex that only parses wrapped", ptr(svc(rule(200, model.Match{Path: regex("a)|(b")}))), "rules[1].matches[0].path.value: invalid regular expression"},
		{"unknown path type", ptr(svc(rule(200, model.Match{Path: &model.PathMatch{Type: "Glob", Value: "/x"}}))), `rules[1].matches[0].path.type: must be Exact, PathPrefix or RegularExpression, not "Glob"`},
		{"relative path", ptr(svc(rule(200, model.Match{Path: prefix("x")}))), `rules[1].matches[0].path.value: "x" must start with '/'`},
		{"bad header regex", ptr(svc(rule(200, model.Match{Headers: []model.ValueMatch{{Type: model.ValueRegularExpression, Name: "a", Value: "["}}}))), "rules[1].matches[0].headers[0].value: invalid regular expression"},
		{"unknown query type", ptr(svc(rule(200, model.Match{QueryParams: []model.ValueMatch{{Type: "Prefix", Name: "a"}}}))), `rules[1].matches[0].queryParams[0].type: must be Exact or RegularExpression, not "Prefix"`},
		{"no action", ptr(svc(model.Rule{})), "rules[1].action: one of forward and fixedResponse is required"},
		{"two actions", ptr(svc(model.Rule{Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 200}, Forward: &model.ForwardAction{}}})), "rules[1].action: exactly one"},
		{"bad status", ptr(svc(rule(99))), "rules[1].action.fixedResponse.statusCode: 99 is not in 200-599"},
		{"negative weight", ptr(svc(model.Rule{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: "a", Weight: -1}}}}})), "rules[1].action.forward.backends[0].weight: -1 is negative"},
		{"target without port", ptr(tg(model.Target{Address: "10.0.0.1", Cluster: "c", State: model.TargetActive})), "target group tg: targets[0].port: 0 is not in 1-65535"},
		{"unknown target state", ptr(tg(model.Target{Address: "10.0.0.1", Port: 80, Cluster: "c", State: "Gone"})), `target group tg: targets[0].state: must be Active or Draining, not "Gone"`},
		{"duplicate target group", &model.Snapshot{Objects: model.Objects{TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "tg"}}, {Meta: model.Meta{Name: "tg"}}}}}, "target group tg: duplicate name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := new(Compiler).Compile(tt.snap)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error = %v, want it to contain %q", err, tt.want)
			}
			var fe *model.FieldError
			if tt.snap != nil && !strings.Contains(tt.want, "duplicate") && !errors.As(err, &fe) {
				t.Errorf("error %v does not wrap a *model.FieldError", err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestCompilerReusesRegexps checks that a Compiler shares compiled regular
// expressions with its next compilation, forgets those no longer used (once
// they outnumber those in use), and
// keeps them across a failed compilation.
func TestCompilerReusesRegexps(t *testing.T) {
	snap := func(expr string, extra ...model.Rule) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{Networks: networks, Services: []model.Service{{
			Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(),
			Rules: append([]model.Rule{rule(200, model.Match{Path: regex(expr)})}, extra...),
		}}}}
	}
	re := func(tab *Table) any { return tab.ports[Bind{Port: 80}].any.entries[0].pathRE }
	var c Compiler
	compile := func(s *model.Snapshot) *Table {
		t.Helper()
		tab, err := c.Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	first := compile(snap("/a.*"))
	if re(compile(snap("/a.*"))) != re(first) {
		t.Error("an unchanged expression was compiled again")
	}
	if _, err := c.Compile(snap("/a.*", rule(200, model.Match{Path: regex("(")}))); err == nil {
		t.Fatal("bad expression compiled")
	}
	if re(compile(snap("/a.*"))) != re(first) {
		t.Error("a failed compilation dropped the reusable expressions")
	}
	// Incremental compilations keep what they compiled; once the
	// expressions kept are over twice those in use (and 64), a full
	// compilation keeps only those in use.
	for i := range 70 {
		compile(snap(fmt.Sprintf("/b%d.*", i)))
	}
	if n := len(c.regexps); n > 2*1+64+1 {
		t.Errorf("%d expressions kept for one in use", n)
	}
	if re(compile(snap("/a.*"))) == re(first) {
		t.Error("an expression unused by the last compilations was kept without bound")
	}
}

func TestRequestHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":       "example.com",
		"Example.COM:8080":  "example.com",
		"example.com.":      "example.com",
		"example.com.:80":   "example.com",
		"[::1]:80":          "::1",
		"[FD00::1]":         "fd00::1",
		"[broken":           "[broken",
		"10.0.0.1:80":       "10.0.0.1",
		"":                  "",
		"a.b.example.com:0": "a.b.example.com",
	} {
		if got := requestHost(in); got != want {
			t.Errorf("requestHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestQueryValue(t *testing.T) {
	tests := []struct {
		raw, name, want string
		ok              bool
	}{
		{"a=1&b=2", "b", "2", true},
		{"a=1&a=2", "a", "1", true},
		{"a", "a", "", true},
		{"a=", "a", "", true},
		{"b=1", "a", "", false},
		{"", "a", "", false},
		{"a%20b=x+y", "a b", "x y", true},
		{"a=%zz&a=2", "a", "2", true},
		{"%zz=1&a=3", "a", "3", true},
		{"&&a=1", "a", "1", true},
	}
	for _, tt := range tests {
		got, ok := queryValue(tt.raw, tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("queryValue(%q, %q) = %q, %v; want %q, %v", tt.raw, tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// TestRulesInOrder: a service with RulesInOrder (the Lattice API's, by
// priority) answers with its first matching rule, whatever Gateway API
// precedence would say, and prefixes still match whole segments.
func TestRulesInOrder(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	svc := func(name string, created time.Time, inOrder bool, rules ...model.Rule) model.Service {
		return model.Service{
			Meta: model.Meta{Name: name}, Network: "edge", CustomDomains: []string{"p.example.com"},
			Listeners: http80(), Rules: rules, CreatedAt: created, RulesInOrder: inOrder,
		}
	}
	hdr := model.ValueMatch{Type: model.ValueExact, Name: "x-a", Value: "1"}
	ordered := []model.Rule{
		rule(200, model.Match{Path: prefix("/a")}),
		rule(201, model.Match{Path: exact("/a/b")}),
		rule(202, model.Match{Path: prefix("/h")}),
		rule(203, model.Match{Path: prefix("/h"), Headers: []model.ValueMatch{hdr}}),
		rule(204, model.Match{Path: regex("/r/[0-9]+")}),
		rule(205, model.Match{Path: exact("/r/1")}),
		rule(206, model.Match{Path: prefix("/m")}),
		rule(207),
	}
	checkPrecedence(t, []precedenceCase{
		{"a prefix listed first beats an exact path", []model.Service{svc("l", t0, true, ordered...)}, req{target: "/a/b"}, "l/0"},
		{"a prefix matches whole segments", []model.Service{svc("l", t0, true, ordered...)}, req{target: "/ab"}, "l/7"},
		{"fewer headers listed first win", []model.Service{svc("l", t0, true, ordered...)},
			req{target: "/h/x", headers: map[string]string{"x-a": "1"}}, "l/2"},
		{"a regex listed first beats an exact path", []model.Service{svc("l", t0, true, ordered...)}, req{target: "/r/1"}, "l/4"},
		{"the last rule catches the rest", []model.Service{svc("l", t0, true, ordered...)}, req{target: "/zzz"}, "l/7"},
		{"reversed, the exact path is first", []model.Service{svc("l", t0, true,
			rule(201, model.Match{Path: exact("/a/b")}), rule(200, model.Match{Path: prefix("/a")}))}, req{target: "/a/b"}, "l/0"},
		{"services of one host by age, each in its own order", []model.Service{
			svc("new", t0.Add(time.Hour), true, rule(200, model.Match{Path: exact("/m/x")})),
			svc("old", t0, true, rule(200, model.Match{Path: prefix("/m")})),
		}, req{target: "/m/x"}, "old/0"},
		{"a precedence service beside an ordered one keeps precedence within itself", []model.Service{
			svc("ordered", t0.Add(time.Hour), true, rule(200, model.Match{Path: exact("/q/y")})),
			svc("gw", t0, false, rule(200, model.Match{Path: prefix("/q")}), rule(201, model.Match{Path: exact("/q/x")})),
		}, req{target: "/q/x"}, "gw/1"},
	})
}
