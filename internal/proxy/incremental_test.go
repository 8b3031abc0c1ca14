package proxy

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
)

// An Update whose snapshot shares the last one's unchanged lists, as the
// client's follow hands them on, serves what changed: a target group
// moved to another target, a service that changed its host name, a new
// service, and a service removed, while the services that did not change
// keep serving.
func TestUpdateOfSharedListsServesWhatChanged(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	revised := func(tg model.TargetGroup, rev int64) model.TargetGroup { tg.Revision = rev; return tg }
	svc := func(name, host, tg string, rev int64) model.Service {
		s := edgeService(name, []string{host}, model.Rule{Action: forward(to(tg, 1))})
		s.Revision = rev
		return s
	}
	snap := &model.Snapshot{Revision: 3, Objects: model.Objects{
		Networks:     testNetworks,
		TargetGroups: []model.TargetGroup{revised(group("one", target(t, a, model.TargetActive)), 1), revised(group("two", target(t, a, model.TargetActive)), 2)},
		Services:     []model.Service{svc("one", "one.example.com", "one", 3), svc("two", "two.example.com", "two", 3)},
	}}
	p := newTestProxy(t, nil)
	update(t, p, snap)
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + addrOf(p, webPort) + "/"
	// serves checks that host is served by the service want and, through
	// it, by backend be ("" for neither: no route).
	serves := func(host, want, be string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		rt := p.served.Load().table.Match(router.Bind{Port: webPort}, req)
		switch {
		case want == "" && rt != nil:
			t.Errorf("%s routed to service %s, want none", host, rt.Service)
		case want != "" && (rt == nil || rt.Service != want):
			t.Errorf("%s routed to %v, want service %s", host, rt, want)
		}
		if be != "" {
			if _, got := body(t, c, url, host); got != be {
				t.Errorf("%s served by %q, want %q", host, got, be)
			}
		}
	}
	serves("one.example.com", "one", "a")
	serves("two.example.com", "two", "a")

	// Target group two moves to b; the services' list is shared.
	next := *snap
	next.Revision = 4
	next.TargetGroups = slices.Clone(snap.TargetGroups)
	next.TargetGroups[1] = revised(group("two", target(t, b, model.TargetActive)), 4)
	update(t, p, &next)
	serves("one.example.com", "one", "a")
	serves("two.example.com", "two", "b")

	// Service two moves to another host name and three comes; the
	// target groups' list is shared.
	third := next
	third.Revision = 5
	third.Services = []model.Service{next.Services[0], svc("three", "one.example.com", "two", 5), svc("two", "moved.example.com", "two", 5)}
	update(t, p, &third)
	serves("two.example.com", "", "")
	serves("moved.example.com", "two", "b")
	serves("one.example.com", "one", "a") // one's name sorts first: its rule wins

	// One is removed: three serves its host name.
	fourth := third
	fourth.Revision = 6
	fourth.Services = slices.Clone(third.Services[1:])
	update(t, p, &fourth)
	serves("one.example.com", "three", "b")
	serves("moved.example.com", "two", "b")
}
