package runner

import (
	"context"
	"fmt"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
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
// reports the first ones that fit, and the control plane accepts that
// report; the whole of it, it refuses. Before, such a proxy sent the
// whole report every second and was refused every time.
func TestHealthReportWithinTheServersBounds(t *testing.T) {
	p := plane.Start(t, server.Config{})
	_, c := p.Join(t, "east")
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		groups    []health.GroupReport
		wantFirst int
	}{
		{"more groups than a report holds", reports(api.MaxHealthGroups+500, 3), api.MaxHealthGroups},
		{"more targets than a report holds", reports(5, api.MaxHealthTargets/4+1), 3},
		{"within the bounds", reports(10, 10), 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := boundHealth(tc.groups)
			if len(got) != tc.wantFirst {
				t.Fatalf("%d groups reported, want the first %d", len(got), tc.wantFirst)
			}
			for i, g := range got {
				if g.TargetGroup != tc.groups[i].Name || len(g.Targets) != len(tc.groups[i].Targets) {
					t.Fatalf("group %d: %s with %d targets, want %s with %d", i, g.TargetGroup, len(g.Targets), tc.groups[i].Name, len(tc.groups[i].Targets))
				}
			}
			if err := c.ReportHealth(ctx, api.HealthReport{Holder: "proxy-" + fmt.Sprint(len(got)), Groups: got}); err != nil {
				t.Errorf("the bounded report refused: %v", err)
			}
			if len(got) == len(tc.groups) {
				return
			}
			whole := boundHealth(nil)
			for _, g := range tc.groups {
				whole = append(whole, boundHealth([]health.GroupReport{g})...)
			}
			if err := c.ReportHealth(ctx, api.HealthReport{Holder: "whole-" + fmt.Sprint(len(got)), Groups: whole}); err == nil {
				t.Errorf("the whole report (%d groups) was accepted: the bounds differ from the server's", len(whole))
			}
		})
	}
}
