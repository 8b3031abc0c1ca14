package proxy

import (
	"testing"

	"trellis.dev/trellis/internal/model"
)

// TestListenerHostnames serves two edge listeners on one port: a request
// goes only to the routes of the most specific listener matching its Host.
func TestListenerHostnames(t *testing.T) {
	wild, api, other := backend(t, "wild"), backend(t, "api"), backend(t, "other")
	svc := func(name, tg string, ls ...model.Listener) model.Service {
		return model.Service{Meta: model.Meta{Name: name, Owner: cluster}, Network: "edge", Listeners: ls,
			Rules: []model.Rule{{Action: forward(to(tg, 1))}}}
	}
	l := func(hostname string, hosts ...string) model.Listener {
		return model.Listener{Name: "l", Port: webPort, Protocol: model.ProtocolHTTP, Hostname: hostname, Hostnames: hosts}
	}
	p := newTestProxy(t, nil)
	update(t, p, &model.Snapshot{Objects: model.Objects{Networks: testNetworks,
		TargetGroups: []model.TargetGroup{group("wild", target(t, wild, model.TargetActive)),
			group("api", target(t, api, model.TargetActive)), group("other", target(t, other, model.TargetActive))},
		Services: []model.Service{
			svc("wild", "wild", l("*.example.com")),
			svc("api", "api", l("api.example.com", "api.example.com")),
			// Names api.example.com too, but on the listener with no
			// hostname: the api listener takes that host.
			svc("other", "other", l("", "api.example.com", "www.other.org")),
		}}, Revision: 1})
	cl := newClient(t)
	for _, tt := range []struct {
		host   string
		status int
		body   string
	}{
		{"shop.example.com", 200, "wild"},
		{"api.example.com", 200, "api"},
		{"www.other.org", 200, "other"},
		{"example.com", 404, ""},
	} {
		if r := cl.get(addrOf(p, webPort), tt.host, "/"); r.status != tt.status || r.body != tt.body {
			t.Errorf("%s: got %d %q, want %d %q", tt.host, r.status, r.body, tt.status, tt.body)
		}
	}
}
