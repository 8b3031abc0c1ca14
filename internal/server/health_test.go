package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/server"
)

func healthOf(group string, targets ...string) api.GroupHealth {
	g := api.GroupHealth{TargetGroup: group}
	for i := 0; i+1 < len(targets); i += 2 {
		g.Targets = append(g.Targets, api.TargetHealth{Address: targets[i], Status: targets[i+1]})
	}
	return g
}

// A cluster's proxies report its targets' health, by token as by
// certificate; the server keeps each holder's latest report, and
// TargetHealth gives the status most of them report, a tie going to the
// worse.
func TestHealthReportsMerged(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	_, west := p.Join(t, "west")
	reports := map[string][]api.GroupHealth{
		"a": {healthOf("tg-1", "10.0.0.1:80", "HEALTHY", "10.0.0.2:80", "UNHEALTHY", "10.0.0.3:80", "HEALTHY")},
		"b": {healthOf("tg-1", "10.0.0.1:80", "HEALTHY", "10.0.0.2:80", "HEALTHY", "10.0.0.3:80", "INITIAL")},
		"c": {healthOf("tg-1", "10.0.0.1:80", "UNHEALTHY", "[::1]:80", "INITIAL"), healthOf("tg-2", "10.0.0.9:8080", "UNAVAILABLE")},
	}
	for holder, groups := range reports {
		if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: holder, Groups: groups}); err != nil {
			t.Fatalf("holder %s: %v", holder, err)
		}
	}
	if err := west.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: []api.GroupHealth{healthOf("tg-1", "10.0.0.1:80", "UNHEALTHY")}}); err != nil {
		t.Fatalf("by certificate: %v", err)
	}
	got, err := server.New(p.Store, server.Config{}).TargetHealth(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"tg-1": {"10.0.0.1:80": "HEALTHY", "10.0.0.2:80": "UNHEALTHY", "10.0.0.3:80": "INITIAL", "[::1]:80": "INITIAL"},
		"tg-2": {"10.0.0.9:8080": "UNAVAILABLE"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("TargetHealth(east) = %v, want %v", got, want)
	}
	// Another cluster's reports are its own.
	if got, _ := server.New(p.Store, server.Config{}).TargetHealth(ctx, "west"); got["tg-1"]["10.0.0.1:80"] != "UNHEALTHY" || len(got) != 1 {
		t.Errorf("TargetHealth(west) = %v", got)
	}
	// A holder reporting again within a second is refused, not kept.
	err = p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: []api.GroupHealth{}})
	if apiStatus(err) != http.StatusTooManyRequests {
		t.Errorf("a second report at once: %v", err)
	}
	// Removing the cluster removes its reports.
	if _, err := p.admin.RemoveCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	if kvs, _, err := p.Store.List(ctx, "health/west/"); err != nil || len(kvs) != 0 {
		t.Errorf("west's reports after its removal: %d (%v)", len(kvs), err)
	}
}

// The worst reporter: every bad field named, and sizes and holders bounded.
func TestHealthReportsBounded(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "Bad Holder", Groups: []api.GroupHealth{
		healthOf("tg/1", "10.0.0.1", "HEALTHY", "10.0.0.2:80", "SICK"),
	}})
	for _, field := range []string{"holder", "groups[0].targetGroup", "groups[0].targets[0].address", "groups[0].targets[1].status"} {
		if apiStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), field) {
			t.Errorf("a bad report: want 422 naming %s, got %v", field, err)
		}
	}
	big := api.GroupHealth{TargetGroup: "tg-big"}
	for i := range 20001 {
		big.Targets = append(big.Targets, api.TargetHealth{Address: fmt.Sprintf("10.%d.%d.%d:80", i>>16, i>>8&255, i&255), Status: "HEALTHY"})
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: []api.GroupHealth{big}}); apiStatus(err) != http.StatusUnprocessableEntity ||
		!strings.Contains(err.Error(), "at most 20000 targets") {
		t.Errorf("20,001 targets: %v", err)
	}
	many := make([]api.GroupHealth, 1001)
	for i := range many {
		many[i] = healthOf(fmt.Sprintf("tg-%d", i))
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "a", Groups: many}); apiStatus(err) != http.StatusUnprocessableEntity {
		t.Errorf("1,001 groups: %v", err)
	}
	for i := range 64 {
		if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: fmt.Sprintf("proxy-%d", i)}); err != nil {
			t.Fatalf("holder %d: %v", i, err)
		}
	}
	if err := p.east.ReportHealth(ctx, api.HealthReport{Holder: "proxy-64"}); apiStatus(err) != http.StatusTooManyRequests {
		t.Errorf("the 65th holder: %v", err)
	}
	if kvs, _, err := p.Store.List(ctx, "health/east/"); err != nil || len(kvs) != 64 {
		t.Errorf("%d reports kept, want 64 (%v)", len(kvs), err)
	}
}
