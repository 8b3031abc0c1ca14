package router

import (
	"fmt"
	"strings"
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
	snap := &model.Snapshot{Objects: model.Objects{Networks: networks, Services: []model.Service{
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
	}}}
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
		if got := routeName(tab.Match(Bind{Port: tt.port}, req{host: tt.host, target: "/"}.build())); got != tt.want {
			t.Errorf("port %d host %s: matched %s, want %s", tt.port, tt.host, got, tt.want)
		}
	}
}

// TestBinds checks that edge networks with addresses are served on each
// address, routed apart from each other and from the proxy's own bind
// address, with protocols decided per bind.
func TestBinds(t *testing.T) {
	nets := []model.ServiceNetwork{
		{Meta: model.Meta{Name: "a"}, Mode: model.ModeEdge, Addresses: []string{"127.0.0.2"}},
		{Meta: model.Meta{Name: "b"}, Mode: model.ModeEdge, Addresses: []string{"127.0.0.3", "127.0.0.4"}},
		{Meta: model.Meta{Name: "file"}, Mode: model.ModeEdge},
		{Meta: model.Meta{Name: "mesh"}, Mode: model.ModeServiceNetwork, Domain: "mesh.trellis.internal"},
	}
	svc := func(name, network string, code int, proto model.Protocol) model.Service {
		return model.Service{Meta: model.Meta{Name: name}, Network: network,
			Listeners: []model.Listener{{Name: "l", Port: 80, Protocol: proto}}, Rules: []model.Rule{rule(code)}}
	}
	mesh := svc("mesh", "mesh", 250, model.ProtocolHTTP)
	mesh.DNSName = "inv.mesh.trellis.internal"
	tab := mustCompile(t, &model.Snapshot{Objects: model.Objects{Networks: nets, Services: []model.Service{
		svc("a", "a", 210, model.ProtocolHTTP),
		svc("b", "b", 220, model.ProtocolHTTP),
		svc("file", "file", 230, model.ProtocolHTTP),
		mesh,
		// Another protocol on a's bind conflicts; on b's own binds it would not.
		svc("a-tls", "a", 240, model.ProtocolTLSPassthrough),
	}}})
	if got, want := fmt.Sprint(tab.Binds()), "[:80 127.0.0.2:80 127.0.0.3:80 127.0.0.4:80]"; got != want {
		t.Errorf("Binds = %s, want %s", got, want)
	}
	if got := tab.Conflicts(); len(got) != 1 || !strings.Contains(got[0], "127.0.0.2:80 already serves HTTP") {
		t.Errorf("Conflicts = %q, want one for a-tls on 127.0.0.2:80", got)
	}
	tests := []struct {
		bind Bind
		host string
		want string
	}{
		{Bind{"127.0.0.2", 80}, "any.example", "a/0"},
		{Bind{"127.0.0.3", 80}, "any.example", "b/0"},
		{Bind{"127.0.0.4", 80}, "any.example", "b/0"},
		{Bind{"", 80}, "any.example", "file/0"},
		{Bind{"", 80}, "inv.mesh.trellis.internal", "mesh/0"},
		{Bind{"127.0.0.2", 80}, "inv.mesh.trellis.internal", "a/0"},
		{Bind{"127.0.0.2", 81}, "any.example", "-"},
	}
	for _, tt := range tests {
		if got := routeName(tab.Match(tt.bind, req{host: tt.host, target: "/"}.build())); got != tt.want {
			t.Errorf("%s host %s: matched %s, want %s", tt.bind, tt.host, got, tt.want)
		}
	}
}
