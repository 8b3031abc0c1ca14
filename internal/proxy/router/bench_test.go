package router

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"trellis.dev/trellis/internal/model"
)

const benchServices = 10_000

// services is a snapshot of n services svc-<i> in network, each with an
// HTTP listener on port 80, completed by fill.
func services(n int, network string, fill func(i int, s *model.Service)) *model.Snapshot {
	snap := &model.Snapshot{Objects: model.Objects{Networks: networks}}
	for i := range n {
		s := model.Service{Meta: model.Meta{Name: fmt.Sprintf("svc-%d", i)}, Network: network, Listeners: http80()}
		fill(i, &s)
		snap.Services = append(snap.Services, s)
	}
	return snap
}

// manyHosts is a service network of n services, each with its own DNS name
// and the rules of a typical API: a health check, a header-gated canary, the
// API prefix, a regular expression (a different one per service, so that
// none is shared) and a default.
func manyHosts(n int) *model.Snapshot {
	return services(n, "mesh", func(i int, s *model.Service) {
		s.DNSName = fmt.Sprintf("svc-%d-default.mesh.trellis.internal", i)
		s.Rules = []model.Rule{
			rule(200, model.Match{Path: exact("/healthz")}),
			rule(201, model.Match{Path: prefix("/api"), Headers: []model.ValueMatch{{Type: model.ValueExact, Name: "x-canary", Value: "1"}}}),
			rule(202, model.Match{Path: prefix("/api")}),
			rule(203, model.Match{Path: regex(fmt.Sprintf(`/v[0-9]+/items(-%d)?`, i))}),
			rule(204),
		}
	})
}

// oneHost is an edge listener with n services on one host, each owning a
// path prefix.
func oneHost(n int) *model.Snapshot {
	return services(n, "edge", func(i int, s *model.Service) {
		s.CustomDomains = []string{"api.example.com"}
		s.Rules = []model.Rule{
			rule(200, model.Match{Path: exact(fmt.Sprintf("/svc-%d/healthz", i))}),
			rule(201, model.Match{Path: prefix(fmt.Sprintf("/svc-%d", i)), Method: http.MethodPost}),
			rule(202, model.Match{Path: prefix(fmt.Sprintf("/svc-%d", i))}),
		}
	})
}

// wildcards is an edge listener with n wildcard host names.
func wildcards(n int) *model.Snapshot {
	return services(n, "edge", func(i int, s *model.Service) {
		s.CustomDomains = []string{fmt.Sprintf("*.t%d.example.com", i)}
		s.Rules = []model.Rule{rule(200, model.Match{Path: prefix("/api")}), rule(204)}
	})
}

func BenchmarkMatch(b *testing.B) {
	request := func(host, path, query string, header http.Header) *http.Request {
		return &http.Request{Method: http.MethodGet, Host: host, URL: &url.URL{Path: path, RawQuery: query}, Header: header}
	}
	benches := []struct {
		name string
		snap *model.Snapshot
		// reqs cycles through hosts so that lookups are not all cache hits.
		reqs func(i int) *http.Request
		want int
	}{
		{"hosts", manyHosts(benchServices), func(i int) *http.Request {
			return request(fmt.Sprintf("svc-%d-default.mesh.trellis.internal:80", i*7919%benchServices), "/api/v1/orders/42", "page=2", http.Header{"X-Canary": {"1"}, "Accept": {"*/*"}})
		}, 201},
		{"hosts-regex", manyHosts(benchServices), func(i int) *http.Request {
			return request(fmt.Sprintf("svc-%d-default.mesh.trellis.internal", i*7919%benchServices), "/v2/items", "", http.Header{})
		}, 203},
		{"one-host-prefixes", oneHost(benchServices), func(i int) *http.Request {
			return request("api.example.com", fmt.Sprintf("/svc-%d/orders/42", i*7919%benchServices), "", http.Header{})
		}, 202},
		{"wildcard-hosts", wildcards(benchServices), func(i int) *http.Request {
			return request(fmt.Sprintf("a.b.t%d.example.com", i*7919%benchServices), "/api/x", "", http.Header{})
		}, 200},
	}
	for _, bb := range benches {
		b.Run(fmt.Sprintf("%s-%d", bb.name, benchServices), func(b *testing.B) {
			tab := mustCompile(b, bb.snap)
			reqs := make([]*http.Request, 1024)
			for i := range reqs {
				reqs[i] = bb.reqs(i)
				if rt := tab.Match(Bind{Port: 80}, reqs[i]); rt == nil || rt.Status != bb.want {
					b.Fatalf("request %d matched %s, want status %d", i, routeName(rt), bb.want)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				tab.Match(Bind{Port: 80}, reqs[i%len(reqs)])
			}
		})
	}
}

// BenchmarkCompile10k compiles manyHosts(10k): "cold" with a new Compiler
// each time, as on a proxy's first snapshot; "warm" with one Compiler, as on
// every later snapshot, which reuses the compiled regular expressions.
func BenchmarkCompile10k(b *testing.B) {
	snap := manyHosts(benchServices)
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := new(Compiler).Compile(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("warm", func(b *testing.B) {
		var c Compiler
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Compile(snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
