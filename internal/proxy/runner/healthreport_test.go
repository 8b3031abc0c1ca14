package runner

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
	"trellis.dev/trellis/test/testsync"
)

// reports is n target groups of m targets each, sorted by name.
func reports(n, m int) []health.GroupReport {
	out := make([]health.GroupReport, n)
	for i := range out {
		out[i].Name = fmt.Sprintf("tg-%05d", i)
		for j := range m {
			out[i].Targets = append(out[i].Targets, health.TargetReport{Addr: fmt.Sprintf("10.%d.%d.1:%d", i/256, i%256, 1+j)})
		}
	}
	return out
}

// A proxy with more target groups or targets than one report holds
// reports them in parts, each within one report's bounds, and the
// control plane accepts every part; past api.MaxHealthParts parts, the
// first groups that fit. One report of the whole, it refuses.
func TestHealthReportWithinTheServersBounds(t *testing.T) {
	p := plane.Start(t, server.Config{})
	_, c := p.Join(t, "east")
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		groups    []health.GroupReport
		wantParts []int // groups in each part
	}{
		{"more groups than a report holds", reports(api.MaxHealthGroups+500, 3), []int{api.MaxHealthGroups, 500}},
		{"more targets than a report holds", reports(5, api.MaxHealthTargets/4+1), []int{3, 2}},
		{"within the bounds", reports(10, 10), []int{10}},
		{"none", nil, []int{0}},
		{"more than the parts hold", reports(api.MaxHealthParts*api.MaxHealthGroups+1, 1), slices.Repeat([]int{api.MaxHealthGroups}, api.MaxHealthParts)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := splitHealth(tc.groups)
			var sizes []int
			var got []api.GroupHealth
			for _, part := range parts {
				sizes = append(sizes, len(part))
				got = append(got, part...)
			}
			if !slices.Equal(sizes, tc.wantParts) {
				t.Fatalf("parts of %v groups, want %v", sizes, tc.wantParts)
			}
			for i, g := range got {
				if g.TargetGroup != tc.groups[i].Name || len(g.Targets) != len(tc.groups[i].Targets) {
					t.Fatalf("group %d: %s with %d targets, want %s with %d", i, g.TargetGroup, len(g.Targets), tc.groups[i].Name, len(tc.groups[i].Targets))
				}
			}
			holder := strings.ReplaceAll(tc.name, " ", "-")
			for i, part := range parts {
				r := api.HealthReport{Holder: holder, Groups: part}
				if len(parts) > 1 {
					r.Part, r.Parts = i, len(parts)
				}
				if err := c.ReportHealth(ctx, r); err != nil {
					t.Errorf("part %d of %d refused: %v", i, len(parts), err)
				}
			}
			if len(parts) == 1 {
				return
			}
			if err := c.ReportHealth(ctx, api.HealthReport{Holder: "whole-" + holder, Groups: got}); err == nil {
				t.Errorf("the whole report (%d groups) was accepted: the bounds differ from the server's", len(got))
			}
		})
	}
	// A group with more targets than a report holds is left out, not the
	// groups after it.
	groups := append(reports(1, api.MaxHealthTargets+1), reports(2, 1)[1])
	if parts := splitHealth(groups); len(parts) != 1 || len(parts[0]) != 1 || parts[0][0].TargetGroup != groups[1].Name {
		t.Errorf("a group over a report's targets, then one more: %d parts, want only %s", len(parts), groups[1].Name)
	}
}

// The report a proxy polls every second is built only when the health
// moved (a target's status changed, targets came or went): at 100,000
// targets, building it is a copy of them all. Between changes the poll
// gets the last report back, and a change shows in the next poll.
func TestHealthReportBuiltOnChange(t *testing.T) {
	px := proxy.New(proxy.Config{Cluster: "east", BindAddress: "127.0.0.1"})
	t.Cleanup(func() { px.Shutdown(context.Background()) })
	off := false
	snap := func(rev int64, addrs ...string) *model.Snapshot {
		g := model.TargetGroup{Meta: model.Meta{Name: "tg-a", Revision: rev}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, Port: 80,
			HealthCheck: model.HealthCheck{Enabled: &off}}
		for _, a := range addrs {
			g.Targets = append(g.Targets, model.Target{Address: a, Cluster: "east", State: model.TargetActive})
		}
		return &model.Snapshot{Revision: rev, Objects: model.Objects{TargetGroups: []model.TargetGroup{g}}}
	}
	if err := px.Update(snap(1, "10.0.0.1", "10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	r := &healthReports{px: px}
	firstParts, all, fresh := r.report()
	first := firstParts[0]
	if !fresh || all != 1 || len(first) != 1 || len(first[0].Targets) != 2 || first[0].Targets[0].Status != "UNAVAILABLE" {
		t.Fatalf("first report %+v (of %d groups, fresh %v), want tg-a's two UNAVAILABLE targets", first, all, fresh)
	}
	for range 5 {
		again, _, fresh := r.report()
		if fresh || &again[0][0] != &first[0] {
			t.Fatal("a report built again with nothing changed")
		}
	}
	if err := px.Update(snap(2, "10.0.0.1", "10.0.0.2", "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	nextParts, _, fresh := r.report()
	next := nextParts[0]
	if !fresh || len(next[0].Targets) != 3 {
		t.Fatalf("report after a target came: %+v (fresh %v), want 3 targets", next, fresh)
	}
	// A status change alone moves it too: a checked target's first
	// check (within a second) makes it HEALTHY.
	// The target answers once the test has seen it INITIAL.
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	var once sync.Once
	answer := func() { once.Do(func() { close(release) }) }
	t.Cleanup(answer) // before srv.Close, should the test end early
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	checked := snap(3)
	checked.TargetGroups[0].HealthCheck = model.HealthCheck{}
	checked.TargetGroups[0].Targets = []model.Target{{Address: host, Port: int32(p), Cluster: "east", State: model.TargetActive}}
	if err := px.Update(checked); err != nil {
		t.Fatal(err)
	}
	if got, _, fresh := r.report(); !fresh || got[0][0].Targets[0].Status != "INITIAL" {
		t.Fatalf("report after the check was enabled: %+v (fresh %v), want the target INITIAL", got, fresh)
	}
	builds := r.builds
	answer()
	testsync.WaitFor(t, 5*time.Second, "the target reported HEALTHY", func() bool {
		got, _, _ := r.report()
		return got[0][0].Targets[0].Status == "HEALTHY"
	})
	if r.builds != builds+1 {
		t.Errorf("%d reports built while waiting for one status change, want 1", r.builds-builds)
	}
}
