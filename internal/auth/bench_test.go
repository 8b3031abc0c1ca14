package auth

import (
	"net/http"
	"net/netip"
	"testing"
)

// benchPolicy is a typical service policy: two guard Denys, an Allow for a
// namespace's workloads and an Allow for read-only API calls from inside.
const benchPolicy = `{"Version":"2012-10-17","Statement":[
	{"Sid":"AdminFromOfficeOnly","Effect":"Deny","Principal":"*","Action":"trellis:Invoke","Resource":"*/admin/*",
	 "Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","fd00::/8"]}}},
	{"Sid":"NoDelete","Effect":"Deny","Principal":"*","Action":"trellis:Invoke","Resource":"*",
	 "Condition":{"StringEquals":{"trellis:RequestMethod":"DELETE"}}},
	{"Sid":"ShopWorkloads","Effect":"Allow","Principal":{"Trellis":"spiffe://east/ns/shop/*"},"Action":"*","Resource":"*"},
	{"Sid":"ReadOnlyAPI","Effect":"Allow","Principal":"*","Action":"trellis:Invoke","Resource":"inventory-default.my-hotel/api/*",
	 "Condition":{
		"StringEquals":{"trellis:RequestMethod":["GET","HEAD"],"trellis:RequestHeader/x-tenant":"acme"},
		"IpAddress":{"trellis:SourceIp":"10.0.0.0/8"},
		"NumericEquals":{"trellis:Port":443},
		"StringNotLike":{"trellis:RequestPath":"*/internal/*"}}}]}`

// benchRequest is an anonymous GET that benchPolicy allows by its last
// statement, with the headers of an http.Request.
func benchRequest() *Request {
	h := http.Header{"X-Tenant": {"acme"}, "Accept": {"*/*"}, "User-Agent": {"curl/8"}}
	return &Request{
		Action:        ActionInvoke,
		Principal:     Principal{Type: PrincipalAnonymous},
		Network:       "my-hotel",
		Service:       "inventory-default.my-hotel",
		Port:          443,
		Method:        "GET",
		Path:          "/api/items/42",
		Header:        h.Values,
		SourceIP:      netip.MustParseAddr("10.1.2.3"),
		SourceCluster: "east",
	}
}

func BenchmarkEvaluate(b *testing.B) {
	p := mustParse(b, benchPolicy)
	r := benchRequest()
	if d, i := p.Evaluate(r); d != Allow || i != 3 {
		b.Fatalf("Evaluate = %v, %d; want Allow, 3", d, i)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(r)
	}
}

func BenchmarkAuthorize(b *testing.B) {
	p := mustParse(b, benchPolicy)
	network := mustParse(b, `{"Statement":{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*",
		"Condition":{"StringEquals":{"trellis:SourceCluster":["east","west"]}}}}`)
	r := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		Authorize(network, p, r)
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	p := mustParse(t, benchPolicy)
	requests := map[string]*Request{"allowed": benchRequest()}
	r := benchRequest()
	r.Path = "/admin/x"
	r.SourceIP = netip.MustParseAddr("2001:db8::1")
	requests["denied"] = r
	r = benchRequest()
	r.Action, r.Method, r.Path = ActionConnect, "", ""
	requests["connect"] = r
	r = benchRequest()
	r.Principal = Principal{Type: PrincipalWorkload, ID: "spiffe://east/ns/shop/sa/web"}
	requests["workload"] = r
	for name, r := range requests {
		if n := testing.AllocsPerRun(100, func() { p.Evaluate(r) }); n != 0 {
			t.Errorf("%s: %v allocations per Evaluate, want 0", name, n)
		}
	}
}
