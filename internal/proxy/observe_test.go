package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/testsync"
)

// healthSecond is the health checker's second in these tests: a model
// interval of 5 s (the least validation allows) runs every 50 ms.
const healthSecond = 10 * time.Millisecond

// newProxyWith returns a proxy configured by cfg (cluster, bind address and
// ephemeral listeners filled in), shut down when the test ends. With an
// AdminAddress it also opens the admin listener.
func newProxyWith(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	cfg.Cluster, cfg.BindAddress = cluster, "127.0.0.1"
	p := New(cfg)
	p.listen = func(router.Bind) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	if cfg.AdminAddress != "" {
		if _, err := p.ListenAdmin(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *Proxy) adminURL(path string) string { return "http://" + p.admin.addr + path }

// healthBackend is a target whose GET /healthz answers with code; every
// other path answers 200 with the target's name.
type healthBackend struct {
	*httptest.Server
	code atomic.Int32
}

func newHealthBackend(t *testing.T, name string) *healthBackend {
	t.Helper()
	b := &healthBackend{}
	b.code.Store(http.StatusOK)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(int(b.code.Load()))
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(b.Close)
	return b
}

// fixedBackend answers every request with code.
func fixedBackend(t *testing.T, code int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// refusingTarget is a target whose address refuses connections.
func refusingTarget(t *testing.T) model.Target {
	t.Helper()
	srv := fixedBackend(t, 200)
	tg := target(t, srv, model.TargetActive)
	srv.Close()
	return tg
}

// targetStatus returns the health of the target at addr in group g.
func targetStatus(p *Proxy, g, addr string) (health.Status, bool) {
	for _, gr := range p.health.Report() {
		if gr.Name != g {
			continue
		}
		for _, t := range gr.Targets {
			if t.Addr == addr {
				return t.Status, t.Ejected
			}
		}
	}
	return 0, false
}

func waitStatus(t *testing.T, p *Proxy, g, addr string, want health.Status) {
	t.Helper()
	testsync.WaitFor(t, 5*time.Second, fmt.Sprintf("target %s to be %s", addr, want), func() bool {
		s, _ := targetStatus(p, g, addr)
		return s == want
	})
}

// tally sends n requests and counts the answers by body, or by status for
// empty bodies.
func tally(c *client, addr string, n int) map[string]int {
	got := map[string]int{}
	for range n {
		r := c.get(addr, "x", "/")
		key := r.body
		if key == "" {
			key = fmt.Sprint(r.status)
		}
		got[key]++
	}
	return got
}

func TestActiveHealthChecks(t *testing.T) {
	good, bad := newHealthBackend(t, "good"), newHealthBackend(t, "bad")
	bad.code.Store(http.StatusInternalServerError)
	p := newProxyWith(t, Config{test: testKnobs{healthSecond: healthSecond}})
	g := group("g", target(t, good.Server, model.TargetActive), target(t, bad.Server, model.TargetActive))
	g.HealthCheck = model.HealthCheck{Path: "/healthz", IntervalSeconds: 5, TimeoutSeconds: 5, HealthyThresholdCount: 2, UnhealthyThresholdCount: 2}
	snap := func(rev int64) *model.Snapshot { return oneRoute(rev, []model.TargetGroup{g}, to("g", 1)) }
	update(t, p, snap(1))
	cl := newClient(t)
	addr := addrOf(p, webPort)
	goodAddr, badAddr := good.Listener.Addr().String(), bad.Listener.Addr().String()

	waitStatus(t, p, "g", goodAddr, health.Healthy)
	waitStatus(t, p, "g", badAddr, health.Unhealthy)
	if got := tally(cl, addr, 20); got["good"] != 20 {
		t.Errorf("with one target unhealthy: %v, want all 20 to good", got)
	}

	// An update that keeps the targets keeps their health: traffic goes on
	// to the healthy target only, with no INITIAL phase.
	update(t, p, snap(2))
	if got := tally(cl, addr, 20); got["good"] != 20 {
		t.Errorf("right after an update: %v, want all 20 to good", got)
	}
	if s, _ := targetStatus(p, "g", goodAddr); s != health.Healthy {
		t.Errorf("healthy target after an update: %s", s)
	}

	bad.code.Store(http.StatusOK)
	waitStatus(t, p, "g", badAddr, health.Healthy)
	if got := tally(cl, addr, 20); got["good"] != 10 || got["bad"] != 10 {
		t.Errorf("both healthy: %v, want 10/10", got)
	}

	// Every target unhealthy: the group fails open, round robin.
	good.code.Store(http.StatusServiceUnavailable)
	bad.code.Store(http.StatusServiceUnavailable)
	waitStatus(t, p, "g", goodAddr, health.Unhealthy)
	waitStatus(t, p, "g", badAddr, health.Unhealthy)
	if got := tally(cl, addr, 20); got["good"] != 10 || got["bad"] != 10 {
		t.Errorf("all unhealthy (fail open): %v, want 10/10", got)
	}
}

func TestOutlierEjection(t *testing.T) {
	// Long enough that the 30 requests below finish before the ejection ends.
	const base = time.Second
	tests := []struct {
		name    string
		failing func(t *testing.T) model.Target
		status  int
	}{
		{"5xx responses", func(t *testing.T) model.Target {
			return target(t, fixedBackend(t, http.StatusServiceUnavailable), model.TargetActive)
		}, http.StatusServiceUnavailable},
		{"connection refused", refusingTarget, http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok := backend(t, "ok")
			failing := tt.failing(t)
			failingAddr := net.JoinHostPort(failing.Address, fmt.Sprint(failing.Port))
			p := newProxyWith(t, Config{AdminAddress: "127.0.0.1:0", TargetMetrics: true, test: testKnobs{outlier: health.Outlier{BaseEjection: base}}})
			update(t, p, oneRoute(1, []model.TargetGroup{group("g", failing, target(t, ok, model.TargetActive))}, to("g", 1)))
			cl := newClient(t)
			addr := addrOf(p, webPort)

			// Round robin alternates: the failing target gets requests
			// 1, 3, 5, 7 and 9, and the fifth failure ejects it.
			got := tally(cl, addr, 30)
			want := map[string]int{"ok": 25, fmt.Sprint(tt.status): 5}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("30 requests: %v, want %v", got, want)
			}
			if _, ejected := targetStatus(p, "g", failingAddr); !ejected {
				t.Error("failing target not ejected")
			}
			m := scrape(t, p)
			if v := metricValue(m, "trellis_outlier_ejections_total", "target_group", "g"); v != 1 {
				t.Errorf("trellis_outlier_ejections_total = %v, want 1", v)
			}
			if v := metricValue(m, "trellis_target_ejected", "target_group", "g", "target", failingAddr); v != 1 {
				t.Errorf("trellis_target_ejected = %v, want 1", v)
			}

			// After the base ejection time it takes requests again.
			testsync.WaitFor(t, 5*time.Second, "readmission", func() bool { _, ej := targetStatus(p, "g", failingAddr); return !ej })
			if got := tally(cl, addr, 4); got[fmt.Sprint(tt.status)] == 0 {
				t.Errorf("after readmission: %v, want the failing target tried again", got)
			}
		})
	}
}

func TestDrainingTargetFinishesInFlight(t *testing.T) {
	slow, started, release := slowBackend(t)
	other := backend(t, "other")
	p := newTestProxy(t, nil)
	groups := func(slowState model.TargetState) []model.TargetGroup {
		return []model.TargetGroup{group("g", target(t, slow, slowState), target(t, other, model.TargetActive))}
	}
	update(t, p, oneRoute(1, groups(model.TargetActive), to("g", 1)))
	cl := newClient(t)
	addr := addrOf(p, webPort)

	// The group's first pick is its first target: the slow one.
	inflight := cl.inFlight(t, addr, "/", started)

	update(t, p, oneRoute(2, groups(model.TargetDraining), to("g", 1)))
	if s, _ := targetStatus(p, "g", slow.Listener.Addr().String()); s != health.Draining {
		t.Errorf("draining target's status: %s", s)
	}
	if got := tally(cl, addr, 10); got["other"] != 10 {
		t.Errorf("new requests while draining: %v, want all 10 to other", got)
	}
	release()
	if r := testsync.Receive(t, inflight, 5*time.Second, "the in-flight request to the draining target"); r.status != http.StatusOK || r.body != "slow" {
		t.Errorf("in-flight request to the draining target: %d %q, want 200 \"slow\"", r.status, r.body)
	}
}

// scrape fetches the proxy's /metrics over HTTP and parses it.
func scrape(t *testing.T, p *Proxy) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(p.adminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metricValue returns the value of the metric name whose labels include
// the given name/value pairs: a counter's or gauge's value, a histogram's
// sample count. It returns -1 when there is no such metric.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
metrics:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue metrics
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// labelValues lists the values label takes across the metrics of name.
func labelValues(fams map[string]*dto.MetricFamily, name, label string) []string {
	var out []string
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == label {
					out = append(out, lp.GetValue())
				}
			}
		}
	}
	return out
}

func adminGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}
