package proxy

import (
	"bufio"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/health"
)

func TestMetrics(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	p := newProxyWith(t, Config{AdminAddress: "127.0.0.1:0"})

	if code, _ := adminGet(t, p.adminURL("/healthz")); code != http.StatusOK {
		t.Errorf("/healthz before any config: %d, want 200", code)
	}
	if code, _ := adminGet(t, p.adminURL("/readyz")); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any config: %d, want 503", code)
	}

	aTarget, bTarget := target(t, a, model.TargetActive), target(t, b, model.TargetActive)
	snap := func(rev int64, rules ...model.Rule) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{
			Networks:     testNetworks,
			TargetGroups: []model.TargetGroup{group("a", aTarget), group("b", bTarget)},
			Services:     []model.Service{edgeService("svc", []string{"shop.example.com"}, rules...)},
		}, Revision: rev}
	}
	split := model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/split"}}}, Action: forward(to("a", 1), to("b", 1))}
	teapot := model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: "/teapot"}}}, Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 418}}}
	update(t, p, snap(7, split, teapot))
	c := newClient(t)
	addr := addrOf(p, webPort)
	for range 4 {
		c.get(addr, "shop.example.com", "/split/anything?q=1")
	}
	for range 3 {
		c.get(addr, "shop.example.com", "/teapot")
	}
	c.get(addr, "unknown.example.com", "/")

	m := scrape(t, p)
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"trellis_requests_total", []string{"service", "svc", "rule", "0", "target_group", "a", "code", "200"}, 2},
		{"trellis_requests_total", []string{"service", "svc", "rule", "0", "target_group", "b", "code", "200"}, 2},
		{"trellis_requests_total", []string{"service", "svc", "rule", "1", "target_group", "", "code", "418"}, 3},
		{"trellis_requests_total", []string{"service", "", "rule", "", "target_group", "", "code", "404"}, 1},
		{"trellis_request_duration_seconds", []string{"service", "svc", "rule", "0", "target_group", "a"}, 2},
		{"trellis_request_duration_seconds", []string{"service", "svc", "rule", "1", "target_group", ""}, 3},
		{"trellis_config_revision", nil, 7},
		{"trellis_config_apply_seconds", nil, 1},
		{"trellis_config_update_failures_total", nil, 0},
		{"trellis_target_group_healthy_targets", []string{"target_group", "a"}, 0},
		{"trellis_target_group_unhealthy_targets", []string{"target_group", "a"}, 0},
		{"trellis_target_health", nil, -1}, // per target only when asked
		{"trellis_target_ejected", nil, -1},
		{"trellis_outlier_ejections_total", []string{"target_group", "a"}, 0},
		{"trellis_access_log_dropped_total", nil, 0},
	} {
		if got := metricValue(m, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if ts := metricValue(m, "trellis_config_last_programmed_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("trellis_config_last_programmed_timestamp_seconds = %v, not recent", ts)
	}
	// No label carries anything a client chose.
	for name, f := range m {
		for _, metric := range f.Metric {
			for _, lp := range metric.Label {
				if v := lp.GetValue(); v == "/split/anything" || v == "unknown.example.com" || v == "q=1" {
					t.Errorf("%s has a label %s=%q from the request", name, lp.GetName(), v)
				}
			}
		}
	}
	if code, body := adminGet(t, p.adminURL("/readyz")); code != http.StatusOK || body != "ready: revision 7" {
		t.Errorf("/readyz after an update: %d %q", code, body)
	}

	// The split rule leaves: its series go with it; counts of the rule that
	// stays (now rule 0) start over under its new index.
	update(t, p, snap(8, teapot))
	m = scrape(t, p)
	if got := labelValues(m, "trellis_requests_total", "target_group"); slices.Contains(got, "a") || slices.Contains(got, "b") {
		t.Errorf("series of a removed rule remain: target groups %v", got)
	}
	if got := metricValue(m, "trellis_request_duration_seconds", "service", "svc", "rule", "0", "target_group", "a"); got != -1 {
		t.Errorf("duration series of a removed rule remains: %v", got)
	}
	if got := metricValue(m, "trellis_config_revision"); got != 8 {
		t.Errorf("trellis_config_revision = %v, want 8", got)
	}
	if got := metricValue(m, "trellis_config_apply_seconds"); got != 2 {
		t.Errorf("trellis_config_apply_seconds count = %v, want 2", got)
	}

	// A snapshot that fails to compile is counted, and the revision stays.
	bad := snap(9, teapot)
	bad.Services[0].Rules[0].Matches = []model.Match{{Path: &model.PathMatch{Type: model.PathRegularExpression, Value: "(unclosed"}}}
	if err := p.Update(bad); err == nil {
		t.Fatal("bad snapshot applied")
	}
	m = scrape(t, p)
	if got := metricValue(m, "trellis_config_update_failures_total"); got != 1 {
		t.Errorf("trellis_config_update_failures_total = %v, want 1", got)
	}
	if got := metricValue(m, "trellis_config_revision"); got != 8 {
		t.Errorf("trellis_config_revision after a failed update = %v, want 8", got)
	}

	// Shutdown makes the proxy unready first.
	p.ready.Store(false)
	if code, _ := adminGet(t, p.adminURL("/readyz")); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while shutting down: %d, want 503", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(p.adminURL("/healthz")); err == nil {
		t.Error("admin listener still serving after Shutdown")
	}
}

func TestListenAdminErrors(t *testing.T) {
	p := newProxyWith(t, Config{})
	if _, err := p.ListenAdmin(); err == nil {
		t.Error("ListenAdmin without an address succeeded")
	}
	taken := newProxyWith(t, Config{AdminAddress: "127.0.0.1:0"})
	p2 := newProxyWith(t, Config{})
	p2.adminAddress = taken.admin.addr
	if _, err := p2.ListenAdmin(); err == nil {
		t.Error("ListenAdmin on a taken address succeeded")
	}
}

// The health series: per target group, the counts of healthy and unhealthy
// targets; with TargetMetrics, also one series per target whose value is
// its status, and one of its ejection.
func TestHealthMetrics(t *testing.T) {
	for _, perTarget := range []bool{false, true} {
		good, bad := newHealthBackend(t, "good"), newHealthBackend(t, "bad")
		bad.code.Store(http.StatusInternalServerError)
		p := newProxyWith(t, Config{AdminAddress: "127.0.0.1:0", TargetMetrics: perTarget, test: testKnobs{healthSecond: healthSecond}})
		g := group("g", target(t, good.Server, model.TargetActive), target(t, bad.Server, model.TargetActive))
		g.HealthCheck = model.HealthCheck{Path: "/healthz", IntervalSeconds: 5, TimeoutSeconds: 5, HealthyThresholdCount: 2, UnhealthyThresholdCount: 2}
		update(t, p, oneRoute(1, []model.TargetGroup{g}, to("g", 1)))
		goodAddr, badAddr := good.Listener.Addr().String(), bad.Listener.Addr().String()
		waitStatus(t, p, "g", goodAddr, health.Healthy)
		waitStatus(t, p, "g", badAddr, health.Unhealthy)
		m := scrape(t, p)
		want := []struct {
			name   string
			labels []string
			value  float64
		}{
			{"trellis_target_group_healthy_targets", []string{"target_group", "g"}, 1},
			{"trellis_target_group_unhealthy_targets", []string{"target_group", "g"}, 1},
			{"trellis_outlier_ejections_total", []string{"target_group", "g"}, 0},
			{"trellis_target_health", []string{"target_group", "g", "target", goodAddr}, float64(health.Healthy)},
			{"trellis_target_health", []string{"target_group", "g", "target", badAddr}, float64(health.Unhealthy)},
			{"trellis_target_ejected", []string{"target_group", "g", "target", badAddr}, 0},
		}
		for _, w := range want {
			if !perTarget && strings.HasPrefix(w.name, "trellis_target_") && !strings.HasPrefix(w.name, "trellis_target_group_") {
				w.value = -1 // absent
			}
			if got := metricValue(m, w.name, w.labels...); got != w.value {
				t.Errorf("perTarget %v: %s%v = %v, want %v", perTarget, w.name, w.labels, got, w.value)
			}
		}
		if f := m["trellis_target_health"]; perTarget && len(f.GetMetric()) != 2 {
			t.Errorf("%d trellis_target_health series for two targets, want one each", len(f.GetMetric()))
		}
	}
}

// TestRuleDataMadeOnFirstRequest: a rule's identity headers and metric
// series are made by its first request, not by the compilation, so that
// rules without traffic cost their 96 bytes alone; they leave with the
// rule.
func TestRuleDataMadeOnFirstRequest(t *testing.T) {
	a := backend(t, "a")
	p := newProxyWith(t, Config{AdminAddress: "127.0.0.1:0"})
	aTarget := target(t, a, model.TargetActive)
	prefix := func(v string) []model.Match {
		return []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: v}}}
	}
	snap := func(rev int64, rules ...model.Rule) *model.Snapshot {
		return &model.Snapshot{Objects: model.Objects{
			Networks:     testNetworks,
			TargetGroups: []model.TargetGroup{group("a", aTarget)},
			Services:     []model.Service{edgeService("svc", []string{"shop.example.com"}, rules...)},
		}, Revision: rev}
	}
	used := model.Rule{Matches: prefix("/used"), Action: forward(to("a", 1))}
	idle := model.Rule{Matches: prefix("/idle"), Action: forward(to("a", 1))}
	update(t, p, snap(1, used, idle))
	info := func(rule int) *ruleInfo {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.metrics.rules["svc"].find(rule, "a")
	}
	for rule := range 2 {
		ri := info(rule)
		if ri == nil {
			t.Fatalf("rule %d: no rule data", rule)
		}
		if ri.series.Load() != nil || ri.headers.Load() != nil {
			t.Errorf("rule %d: series or headers made before any request", rule)
		}
	}
	if got := labelValues(scrape(t, p), "trellis_requests_total", "rule"); len(got) != 0 {
		t.Errorf("request series before any request: rules %v", got)
	}

	c := newClient(t)
	if r := c.get(addrOf(p, webPort), "shop.example.com", "/used"); r.status != http.StatusOK {
		t.Fatalf("GET /used: %d", r.status)
	}
	if ri := info(0); ri.series.Load() == nil || ri.headers.Load() == nil {
		t.Error("rule 0: series or headers not made by its request")
	} else if h := ri.headers.Load(); h.target != "Service=svc; Network="+ri.network+"; TargetGroup=a" {
		t.Errorf("rule 0: x-trellis-target %q", h.target)
	}
	if ri := info(1); ri.series.Load() != nil || ri.headers.Load() != nil {
		t.Error("rule 1: series or headers made by another rule's request")
	}
	m := scrape(t, p)
	if got := metricValue(m, "trellis_requests_total", "service", "svc", "rule", "0", "target_group", "a", "code", "200"); got != 1 {
		t.Errorf("rule 0's request count = %v, want 1", got)
	}
	if got := metricValue(m, "trellis_request_duration_seconds", "service", "svc", "rule", "1", "target_group", "a"); got != -1 {
		t.Errorf("rule 1's duration series exists without a request: %v", got)
	}

	// The service leaves: its rules' series go with it.
	gone := snap(2)
	gone.Services = nil
	update(t, p, gone)
	m = scrape(t, p)
	if got := labelValues(m, "trellis_requests_total", "service"); slices.Contains(got, "svc") {
		t.Errorf("series of a removed service remain: services %v", got)
	}
	if got := metricValue(m, "trellis_request_duration_seconds", "service", "svc", "rule", "0", "target_group", "a"); got != -1 {
		t.Errorf("duration series of a removed service remains: %v", got)
	}
}

// TestHealthTextParses: the target health families, written by hand,
// parse as the text format, label values escaped (a group name with a
// quote, a backslash and a line feed), per-target series included.
func TestHealthTextParses(t *testing.T) {
	c := health.New(health.Config{Cluster: cluster})
	defer c.Close()
	off := false
	name := "we\"ird\\group\nname"
	c.Update([]model.TargetGroup{
		{Meta: model.Meta{Name: name}, Protocol: model.ProtocolHTTP, Port: 80, HealthCheck: model.HealthCheck{Enabled: &off},
			Targets: []model.Target{{Address: "10.0.0.1", State: model.TargetActive, Cluster: cluster}, {Address: "10.0.0.2", State: model.TargetDraining, Cluster: cluster}}},
		{Meta: model.Meta{Name: "plain"}, Protocol: model.ProtocolHTTP, Port: 80, HealthCheck: model.HealthCheck{Enabled: &off}},
	})
	var b strings.Builder
	w := bufio.NewWriter(&b)
	writeHealthText(w, c, true)
	w.Flush()
	parser := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("parsing %q: %v", b.String(), err)
	}
	for _, tt := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"trellis_target_group_healthy_targets", []string{"target_group", name}, 0},
		{"trellis_target_group_unhealthy_targets", []string{"target_group", "plain"}, 0},
		{"trellis_outlier_ejections_total", []string{"target_group", name}, 0},
		{"trellis_target_health", []string{"target_group", name, "target", "10.0.0.1:80"}, float64(health.Unavailable)},
		{"trellis_target_health", []string{"target_group", name, "target", "10.0.0.2:80"}, float64(health.Draining)},
		{"trellis_target_ejected", []string{"target_group", name, "target", "10.0.0.1:80"}, 0},
	} {
		if got := metricValue(fams, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%q = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if got := len(fams["trellis_target_group_healthy_targets"].GetMetric()); got != 2 {
		t.Errorf("%d healthy-count series, want 2 (one per group)", got)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{"gzip"}, true},
		{[]string{"deflate, GZIP;q=0.5"}, true},
		{[]string{"identity", "br, gzip"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0"}, false},
		{[]string{"x-gzip"}, false},
	} {
		r := &http.Request{Header: http.Header{"Accept-Encoding": tc.header}}
		if got := acceptsGzip(r); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}
