package router

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/test/testsync"
)

// refusingPorts returns n ports on 127.0.0.1 that refuse connections, so that
// health checks of them fail.
func refusingPorts(t *testing.T, n int) []int32 {
	var ports []int32
	for _, p := range testsync.FreePorts(t, n) {
		ports = append(ports, int32(p))
	}
	return ports
}

// compileForward compiles, with c, a snapshot of tgs and one service on
// port 80 forwarding to target group g, and returns the compiled group.
func compileForward(t testing.TB, c Compiler, tgs []model.TargetGroup) *Group {
	t.Helper()
	tab, err := c.Compile(&model.Snapshot{Objects: model.Objects{
		Networks: networks, TargetGroups: tgs,
		Services: []model.Service{{Meta: model.Meta{Name: "s"}, Network: "edge", Listeners: http80(),
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: "g", Weight: 1}}}}}}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return tab.Match(Bind{Port: 80}, httptest.NewRequest("GET", "/", nil)).Pick().Group()
}

// healthGroup compiles a snapshot of one service forwarding to target group
// g with the given targets, linked to checker, and returns the compiled
// group.
func healthGroup(t *testing.T, checker *health.Checker, hc model.HealthCheck, targets []model.Target) *Group {
	t.Helper()
	tgs := []model.TargetGroup{{Meta: model.Meta{Name: "g"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, HealthCheck: hc, Targets: targets}}
	checker.Update(tgs)
	c := Compiler{Hooks: CompileHooks{Health: checker.Group}}
	g := compileForward(t, c, tgs)
	for i := range g.targets {
		if g.targets[i].Health == nil || g.targets[i].Group() != g {
			t.Fatalf("target %s not linked", g.targets[i].Addr)
		}
	}
	return g
}

func pickCounts(g *Group, n int) map[string]int {
	got := map[string]int{}
	for range n {
		got[g.Pick().Addr]++
	}
	return got
}

// activeTargets is n active targets of this cluster, at 127.0.0.1 ports
// 9001 and up.
func activeTargets(n int) []model.Target {
	var targets []model.Target
	for i := range n {
		targets = append(targets, model.Target{Address: "127.0.0.1", Port: int32(9001 + i), Cluster: "local", State: model.TargetActive})
	}
	return targets
}

func TestPickSkipsUnroutable(t *testing.T) {
	checker := health.New(health.Config{Cluster: "local"})
	defer checker.Close()
	off := false
	targets := activeTargets(4)
	g := healthGroup(t, checker, model.HealthCheck{Enabled: &off}, targets)
	// Eject two of four (the most the cap allows) by failed requests.
	for _, i := range []int{0, 2} {
		for range health.DefaultConsecutiveFailures {
			g.targets[i].Health.Observe(false)
		}
	}
	got := pickCounts(g, 100)
	want := map[string]int{"127.0.0.1:9002": 50, "127.0.0.1:9004": 50}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("picks with two of four ejected: %v, want %v (even)", got, want)
	}
}

func TestPickFailsOpen(t *testing.T) {
	checker := health.New(health.Config{Cluster: "local"})
	defer checker.Close()
	ports := refusingPorts(t, 3)
	var targets []model.Target
	for _, p := range ports {
		targets = append(targets, model.Target{Address: "127.0.0.1", Port: p, Cluster: "local", State: model.TargetActive})
	}
	// Checks enabled, none passed yet: every target is INITIAL, so the
	// group fails open to all of them, round robin.
	g := healthGroup(t, checker, model.HealthCheck{IntervalSeconds: 300}, targets)
	got := pickCounts(g, 30)
	if len(got) != 3 {
		t.Errorf("fail open: picks %v, want all 3 targets", got)
	}
	for addr, n := range got {
		if n != 10 {
			t.Errorf("fail open: %s picked %d of 30, want 10", addr, n)
		}
	}

	// One routable target (a target in another cluster is not checked
	// here, so it counts as UNAVAILABLE, which takes requests) ends the
	// fail-open: it takes every request.
	remote := model.Target{Address: "127.0.0.1", Port: 9999, Cluster: "elsewhere", State: model.TargetActive}
	g = healthGroup(t, checker, model.HealthCheck{IntervalSeconds: 300}, append(targets, remote))
	if got := pickCounts(g, 20); got["127.0.0.1:9999"] != 20 {
		t.Errorf("one routable target among INITIAL ones: picks %v, want all 20 to it", got)
	}
}

func BenchmarkPick(b *testing.B) {
	checker := health.New(health.Config{Cluster: "local"})
	defer checker.Close()
	off := false
	targets := activeTargets(8)
	tgs := []model.TargetGroup{{Meta: model.Meta{Name: "g"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, HealthCheck: model.HealthCheck{Enabled: &off}, Targets: targets}}
	checker.Update(tgs)
	for _, linked := range []bool{false, true} {
		b.Run(fmt.Sprintf("health=%v", linked), func(b *testing.B) {
			c := Compiler{}
			if linked {
				c.Hooks.Health = checker.Group
			}
			g := compileForward(b, c, tgs)
			b.ReportAllocs()
			for b.Loop() {
				g.Pick()
			}
		})
	}
}
