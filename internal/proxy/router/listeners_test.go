package router

import (
	"testing"

	"trellis.dev/trellis/internal/model"
)

// TestListenerHostnames checks per-listener host names and listener
// isolation: a request is served only by the most specific listener whose
// hostname matches its Host.
func TestListenerHostnames(t *testing.T) {
	edge := func(name string, code int, ls ...model.Listener) model.Service {
		return model.Service{Meta: model.Meta{Name: name}, Network: "edge", Listeners: ls, Rules: []model.Rule{rule(code)}}
	}
	l := func(port int32, hostname string, hosts ...string) model.Listener {
		return model.Listener{Name: "l", Port: port, Protocol: model.ProtocolHTTP, Hostname: hostname, Hostnames: hosts}
	}
	snap := &model.Snapshot{Networks: networks, Services: []model.Service{
		edge("wild", 210, l(80, "*.example.com", "*.example.com")),
		edge("deep", 211, l(80, "*.foo.example.com", "a.foo.example.com")),
		edge("exact", 212, l(80, "bar.example.com", "bar.example.com")),
		// No hostname on the listener: takes what no other listener does.
		edge("fallback", 220, l(80, "", "www.other.org", "bar.example.com")),
		// A route with no hostnames on a wildcard listener of another port:
		// every host under the listener's wildcard.
		edge("scoped-any", 230, l(81, "*.example.com")),
		// Per-listener names override the service's custom domains.
		{Meta: model.Meta{Name: "split"}, Network: "edge", CustomDomains: []string{"ignored.example.org"},
			Listeners: []model.Listener{l(82, "", "one.example.org"), l(83, "", "two.example.org")}, Rules: []model.Rule{rule(240)}},
		// A service-network service shares port 80: it has no listener
		// hostname, so it lives with the fallback listener's routes.
		{Meta: model.Meta{Name: "mesh"}, Network: "mesh", DNSName: "inv.mesh.trellis.internal", Listeners: http80(80), Rules: []model.Rule{rule(250)}},
	}}
	tab := mustCompile(t, snap)
	tests := []struct {
		port int32
		host string
		want string
	}{
		{80, "x.example.com", "wild/0"},
		{80, "a.b.example.com", "wild/0"},
		{80, "a.foo.example.com", "deep/0"},
		// b.foo.example.com belongs to the *.foo.example.com listener, which
		// has no route for it: 404, not the less specific wildcard's route.
		{80, "b.foo.example.com", "-"},
		// bar.example.com belongs to its exact listener, even though the
		// fallback listener's route names it too.
		{80, "bar.example.com", "exact/0"},
		{80, "www.other.org", "fallback/0"},
		{80, "inv.mesh.trellis.internal", "mesh/0"},
		{80, "example.com", "-"},
		{81, "anything.example.com", "scoped-any/0"},
		{81, "example.org", "-"},
		{82, "one.example.org", "split/0"},
		{82, "two.example.org", "-"},
		{83, "two.example.org", "split/0"},
		{82, "ignored.example.org", "-"},
	}
	for _, tt := range tests {
		if got := routeName(tab.Match(tt.port, req{host: tt.host, target: "/"}.build())); got != tt.want {
			t.Errorf("port %d host %s: matched %s, want %s", tt.port, tt.host, got, tt.want)
		}
	}
}
