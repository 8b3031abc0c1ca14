package router

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

// TestIncrementalCompileEqualsFull applies random sequences of changes
// (services added, changed and removed, with host names that collide and
// move, listeners on other ports, protocols and listener host names, target
// groups, networks, exports and imports) to a snapshot, compiling each
// step with one Compiler, and compares the table with a fresh full
// compilation's: binds, protocols, conflicts, services, and the route every
// one of a set of requests matches on every bind.
func TestIncrementalCompileEqualsFull(t *testing.T) {
	incremental, steps := 0, 0
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 15))
		g := &snapGen{r: r}
		snap := g.initial()
		var c Compiler
		for step := range 50 {
			snap = g.next(snap)
			before := c.st
			got, err := c.Compile(snap)
			if err != nil {
				t.Fatalf("seed %d step %d: incremental: %v", seed, step, err)
			}
			want, err := new(Compiler).Compile(snap)
			if err != nil {
				t.Fatalf("seed %d step %d: full: %v", seed, step, err)
			}
			if before != nil && c.st == before {
				incremental++
			}
			steps++
			if diff := compareTables(got, want, snap); diff != "" {
				t.Fatalf("seed %d step %d (%s): incremental table differs from a full compilation: %s", seed, step, g.last, diff)
			}
		}
	}
	t.Logf("%d of %d compilations incremental", incremental, steps)
	// Most steps change one service or group: they must be incremental,
	// or this test compares a full compilation with itself.
	if incremental < steps/2 {
		t.Errorf("%d of %d compilations incremental", incremental, steps)
	}
}

// snapGen makes random snapshots and changes of them.
type snapGen struct {
	r        *rand.Rand
	revision int64
	last     string
}

var (
	genHosts = []string{"a.example.com", "b.example.com", "*.example.com", "x.a.example.com", "*.a.example.com", "c.test",
		"e0.ns.svc.clusterset.local", "*.ns.svc.clusterset.local"}
	genListeners = []string{"", "", "", "a.example.com", "*.example.com"}
	genPaths     = []string{"/", "/api", "/api/v1", "/b", "/api/v1/x"}
	genPorts     = []int32{80, 80, 80, 8080}
)

func (g *snapGen) rev() int64 {
	g.revision++
	if g.r.IntN(5) == 0 {
		return 0 // compared by content
	}
	return g.revision
}

func (g *snapGen) initial() *model.Snapshot {
	snap := &model.Snapshot{Store: "s1", Objects: model.Objects{Networks: []model.ServiceNetwork{
		{Meta: model.Meta{Name: "mesh", Revision: 1}, Mode: model.ModeServiceNetwork, Domain: "mesh.trellis.internal"},
		{Meta: model.Meta{Name: "edge", Revision: 1}, Mode: model.ModeEdge},
		{Meta: model.Meta{Name: "edge2", Revision: 1}, Mode: model.ModeEdge, Addresses: []string{"10.1.0.1"}},
	}}}
	for i := range 4 {
		snap.TargetGroups = append(snap.TargetGroups, g.group(fmt.Sprintf("tg-%d", i)))
	}
	for i := range 12 {
		snap.Services = append(snap.Services, g.service(fmt.Sprintf("svc-%02d", i)))
	}
	return snap
}

func (g *snapGen) group(name string) model.TargetGroup {
	tg := model.TargetGroup{Meta: model.Meta{Name: name, Revision: g.rev()}, Protocol: model.ProtocolHTTP, Port: 8080}
	for j := range 1 + g.r.IntN(3) {
		tg.Targets = append(tg.Targets, model.Target{Address: fmt.Sprintf("10.0.%d.%d", g.r.IntN(3), j), State: model.TargetActive})
	}
	return tg
}

func (g *snapGen) service(name string) model.Service {
	r := g.r
	s := model.Service{Meta: model.Meta{Name: name, Revision: g.rev()}, Network: []string{"mesh", "edge", "edge", "edge2"}[r.IntN(4)],
		CreatedAt: time.Unix(int64(r.IntN(3)), 0)}
	if s.Network == "mesh" {
		s.DNSName = name + ".mesh.trellis.internal"
	}
	for range r.IntN(3) {
		s.CustomDomains = append(s.CustomDomains, genHosts[r.IntN(len(genHosts))])
	}
	for i := range 1 + r.IntN(2) {
		l := model.Listener{Name: fmt.Sprint("l", i), Port: genPorts[r.IntN(len(genPorts))], Protocol: model.ProtocolHTTP, Hostname: genListeners[r.IntN(len(genListeners))]}
		// Mostly on ports of their own; now and then on an HTTP one, a
		// conflict.
		switch r.IntN(12) {
		case 0:
			l.Protocol, l.Port = model.ProtocolHTTPS, 443
		case 1:
			l.Protocol, l.Port = model.ProtocolTLSPassthrough, 8443
		case 2:
			l.Protocol = "TCP"
		}
		if l.Protocol != model.ProtocolHTTP && r.IntN(8) == 0 {
			l.Port = []int32{80, 8080}[r.IntN(2)]
		}
		if r.IntN(4) == 0 {
			l.Hostnames = []string{genHosts[r.IntN(len(genHosts))]}
		}
		s.Listeners = append(s.Listeners, l)
	}
	for range r.IntN(4) {
		var m model.Match
		switch r.IntN(4) {
		case 0:
			m.Path = exact(genPaths[r.IntN(len(genPaths))])
		case 1:
			m.Path = regex(genPaths[r.IntN(len(genPaths))] + ".*")
		case 2:
			m.Path = prefix(genPaths[r.IntN(len(genPaths))])
		}
		if r.IntN(3) == 0 {
			m.Headers = []model.ValueMatch{{Type: model.ValueExact, Name: "x-canary", Value: "1"}}
		}
		if r.IntN(4) == 0 {
			m.Method = http.MethodPost
		}
		rl := model.Rule{Matches: []model.Match{m}, Action: fixed(200 + r.IntN(5))}
		switch r.IntN(4) {
		case 0, 1:
			rl.Action = model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: fmt.Sprintf("tg-%d", r.IntN(5)), Weight: 1}}}}
		case 2:
			if r.IntN(6) == 0 {
				rl.Action = model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1,
					Import: &model.ImportRef{Namespace: "ns", Name: fmt.Sprint("e", r.IntN(2)), Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}}}}}
			}
		}
		s.Rules = append(s.Rules, rl)
	}
	return s
}

func (g *snapGen) export(name, owner string) model.ServiceExport {
	return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(owner, "ns", name), Owner: owner, Revision: g.rev()}, Namespace: "ns", Service: name,
		Type: model.ExportClusterSetIP, Ports: []model.ExportPort{{Protocol: "TCP", AppProtocol: "http", Port: genPorts[g.r.IntN(len(genPorts))],
			Targets: []model.Target{{Address: "10.9.0.1", Port: 80, State: model.TargetActive, Cluster: owner}}}}}
}

// next returns a copy of snap with one random change, as the client's
// follow hands a proxy the next revision.
func (g *snapGen) next(snap *model.Snapshot) *model.Snapshot {
	// Lists that do not change are shared with snap, as the client's
	// follow shares them.
	n := *snap
	r := g.r
	k := r.IntN(20)
	switch {
	case k < 12:
		n.Services = slices.Clone(snap.Services)
	case k < 15:
		n.TargetGroups = slices.Clone(snap.TargetGroups)
	case k < 17:
		n.Exports = slices.Clone(snap.Exports)
	case k < 18:
		n.Networks = slices.Clone(snap.Networks)
	}
	switch {
	case k < 8 && len(n.Services) > 0:
		i := r.IntN(len(n.Services))
		g.last = "change service " + n.Services[i].Name
		n.Services[i] = g.service(n.Services[i].Name)
	case k < 10 && len(n.Services) > 0:
		i := r.IntN(len(n.Services))
		g.last = "change host names of " + n.Services[i].Name
		s := &n.Services[i]
		s.CustomDomains = []string{genHosts[r.IntN(len(genHosts))]}
		s.Revision = g.rev()
	case k < 12:
		name := fmt.Sprintf("svc-%02d", r.IntN(30))
		if i := slices.IndexFunc(n.Services, func(s model.Service) bool { return s.Name == name }); i >= 0 {
			g.last = "delete service " + name
			n.Services = slices.Delete(n.Services, i, i+1)
		} else {
			g.last = "add service " + name
			n.Services = append(n.Services, g.service(name))
			slices.SortFunc(n.Services, func(a, b model.Service) int { return strings.Compare(a.Name, b.Name) })
		}
	case k < 15:
		name := fmt.Sprintf("tg-%d", r.IntN(5))
		i := slices.IndexFunc(n.TargetGroups, func(tg model.TargetGroup) bool { return tg.Name == name })
		switch {
		case i < 0:
			g.last = "add target group " + name
			n.TargetGroups = append(n.TargetGroups, g.group(name))
		case r.IntN(3) == 0:
			g.last = "delete target group " + name
			n.TargetGroups = slices.Delete(n.TargetGroups, i, i+1)
		default:
			g.last = "change target group " + name
			n.TargetGroups[i] = g.group(name)
		}
	case k < 17:
		name, owner := fmt.Sprint("e", r.IntN(2)), []string{"c1", "c2"}[r.IntN(2)]
		if i := slices.IndexFunc(n.Exports, func(e model.ServiceExport) bool { return e.Service == name && e.Owner == owner }); i >= 0 && r.IntN(2) == 0 {
			g.last = "delete export " + name + " of " + owner
			n.Exports = slices.Delete(n.Exports, i, i+1)
		} else if i >= 0 {
			g.last = "change export " + name + " of " + owner
			n.Exports[i] = g.export(name, owner)
		} else {
			g.last = "add export " + name + " of " + owner
			n.Exports = append(n.Exports, g.export(name, owner))
		}
	case k < 18:
		g.last = "change network edge2's addresses"
		e := &n.Networks[2]
		e.Revision = g.rev()
		e.Addresses = [][]string{{"10.1.0.1"}, {"10.1.0.2"}, {"10.1.0.1", "10.1.0.2"}, nil}[r.IntN(4)]
	case k < 19:
		g.last = "new store"
		n.Store = fmt.Sprint("s", r.IntN(3))
	default:
		g.last = "nothing changed"
	}
	g.revision++
	n.Revision = g.revision
	return &n
}

// compareTables returns what differs between got and want, "" when they
// serve alike.
func compareTables(got, want *Table, snap *model.Snapshot) string {
	if g, w := fmt.Sprint(got.Binds()), fmt.Sprint(want.Binds()); g != w {
		return "binds " + g + ", want " + w
	}
	for _, b := range want.Binds() {
		if g, w := got.Protocol(b), want.Protocol(b); g != w {
			return fmt.Sprintf("bind %s protocol %s, want %s", b, g, w)
		}
	}
	if g, w := strings.Join(got.Conflicts(), "\n"), strings.Join(want.Conflicts(), "\n"); g != w {
		return "conflicts:\n" + g + "\nwant:\n" + w
	}
	if len(got.services) != len(want.services) {
		return fmt.Sprintf("%d services, want %d", len(got.services), len(want.services))
	}
	for name, w := range want.services {
		if g := got.Service(name); fmt.Sprintf("%+v", g) != fmt.Sprintf("%+v", w) {
			return fmt.Sprintf("service %s: %+v, want %+v", name, g, w)
		}
	}
	hosts := append(slices.Clone(genHosts), "q.example.com", "y.x.a.example.com", "z.test",
		"e0.ns.svc.clusterset.local", "e1.ns.svc.clusterset.local")
	for _, s := range snap.Services {
		hosts = append(hosts, s.DNSName)
	}
	for _, b := range want.Binds() {
		for _, host := range hosts {
			host = strings.Replace(host, "*", "w", 1)
			if g, w := ruleString(got.MatchSNI(b, host)), ruleString(want.MatchSNI(b, host)); g != w {
				return fmt.Sprintf("%s SNI %s: %s, want %s", b, host, g, w)
			}
			for _, sni := range []string{"a.example.com", "q.example.com"} {
				if g, w := got.Misdirected(b, sni, host), want.Misdirected(b, sni, host); g != w {
					return fmt.Sprintf("%s misdirected(%s, %s): %v, want %v", b, sni, host, g, w)
				}
			}
			for _, path := range append(slices.Clone(genPaths), "/zz", "/api/v1/x/y") {
				for _, method := range []string{http.MethodGet, http.MethodPost} {
					for _, h := range []HTTPHeader{{}, {"X-Canary": {"1"}}} {
						req := &Request{Host: host, Method: method, Path: path, Header: h}
						if g, w := ruleString(got.MatchRequest(b, req)), ruleString(want.MatchRequest(b, req)); g != w {
							return fmt.Sprintf("%s %s %s%s %v: %s, want %s", b, method, host, path, h, g, w)
						}
					}
				}
			}
		}
	}
	return ""
}

// ruleString describes what a matched rule does: which rule it is, its
// status or prefix, and each backend's group and targets.
func ruleString(r *Rule) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("%s/%d status %d prefix %q", r.Service, r.Index, r.Status, r.MatchedPrefix)
	for _, b := range r.backends {
		s += " → " + b.TargetGroup
		if g := b.group; g != nil {
			s += " " + g.Name
			for _, t := range g.targets {
				s += " " + t.Addr + "@" + t.Cluster
			}
		}
	}
	return s
}

// The Forget hook hears of every service that leaves the table: removed in
// an incremental compilation, or gone from the table after a failed one
// (whose state is dropped). Annotate hears only of services compiled
// again.
func TestForgetHearsOfServicesThatLeave(t *testing.T) {
	var annotated, forgot []string
	c := Compiler{Hooks: CompileHooks{
		Annotate: func(svc *model.Service, rule int, _ string) any {
			if rule == 0 {
				annotated = append(annotated, svc.Name)
			}
			return nil
		},
		Forget: func(service string) { forgot = append(forgot, service) },
	}}
	svc := func(name string, rev int64, expr string) model.Service {
		return model.Service{Meta: model.Meta{Name: name, Revision: rev}, Network: "edge", Listeners: http80(),
			Rules: []model.Rule{rule(200, model.Match{Path: regex(expr)})}}
	}
	compile := func(wantErr bool, svcs ...model.Service) {
		t.Helper()
		_, err := c.Compile(&model.Snapshot{Objects: model.Objects{Networks: networks, Services: svcs}})
		if (err != nil) != wantErr {
			t.Fatalf("Compile: %v", err)
		}
	}
	compile(false, svc("a", 1, "/a"), svc("b", 1, "/b"), svc("c", 1, "/c"))
	annotated, forgot = nil, nil
	compile(false, svc("a", 1, "/a"), svc("c", 2, "/c2"))
	if !slices.Equal(annotated, []string{"c"}) || !slices.Equal(forgot, []string{"b"}) {
		t.Errorf("incremental: annotated %v, forgot %v; want [c], [b]", annotated, forgot)
	}
	compile(true, svc("a", 3, "("))
	annotated, forgot = nil, nil
	compile(false, svc("a", 4, "/a"))
	if !slices.Equal(forgot, []string{"c"}) || !slices.Contains(annotated, "a") {
		t.Errorf("after a failed compilation: annotated %v, forgot %v; want a, [c]", annotated, forgot)
	}
}
