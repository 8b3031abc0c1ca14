package health

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// second is the checker's second in these tests: a model interval of 5 s
// (the least validation allows) runs every 50 ms.
const second = 10 * time.Millisecond

const cluster = "local"

// checkTarget is a backend on 127.0.0.1 whose health answer the test
// controls. It counts the checks and the connections they arrive on.
type checkTarget struct {
	srv   *httptest.Server
	code  atomic.Int32
	delay atomic.Int64
	// checks counts requests, conns new connections, closed the
	// connections closed.
	checks, conns, closed atomic.Int32
	mu                    sync.Mutex
	last                  *http.Request
}

func newCheckTarget(t testing.TB, tls, h2c bool) *checkTarget {
	t.Helper()
	ct := &checkTarget{}
	ct.code.Store(200)
	ct.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct.checks.Add(1)
		ct.mu.Lock()
		ct.last = r
		ct.mu.Unlock()
		if d := time.Duration(ct.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(int(ct.code.Load()))
	}))
	ct.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			ct.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			ct.closed.Add(1)
		}
	}
	if h2c {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		ct.srv.Config.Protocols = &p
	}
	if tls {
		ct.srv.EnableHTTP2 = h2c
		ct.srv.StartTLS()
	} else {
		ct.srv.Start()
	}
	t.Cleanup(ct.srv.Close)
	return ct
}

func (ct *checkTarget) lastRequest() *http.Request {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.last
}

func (ct *checkTarget) model(t *testing.T, state model.TargetState) model.Target {
	t.Helper()
	host, port, err := net.SplitHostPort(ct.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return model.Target{Address: host, Port: int32(n), Cluster: cluster, State: state}
}

func (ct *checkTarget) addr() string { return ct.srv.Listener.Addr().String() }

func newChecker(t *testing.T) *Checker {
	t.Helper()
	c := New(Config{Cluster: cluster, Second: second})
	t.Cleanup(c.Close)
	return c
}

// fastCheck is a health check at the least interval the model allows.
func fastCheck() model.HealthCheck {
	return model.HealthCheck{IntervalSeconds: 5, TimeoutSeconds: 5}
}

func tg(name string, hc model.HealthCheck, targets ...model.Target) model.TargetGroup {
	return model.TargetGroup{Meta: model.Meta{Name: name}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1, HealthCheck: hc, Targets: targets}
}

// status returns the status of the target at addr in group, failing the
// test if it is missing.
func status(t *testing.T, c *Checker, group, addr string) Status {
	t.Helper()
	g := c.Group(group)
	if g == nil {
		t.Fatalf("no group %s", group)
	}
	tt := g.Target(addr)
	if tt == nil {
		t.Fatalf("no target %s in group %s", addr, group)
	}
	return tt.Status()
}

// waitStatus polls until the target has status want, for at most 5 s.
func waitStatus(t *testing.T, c *Checker, group, addr string, want Status) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := status(t, c, group, addr)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("target %s of %s: status %s, want %s", addr, group, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInitialToHealthyOnFirstPass(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	c := newChecker(t)
	// A long interval: only the first check (within one "second") runs.
	hc := model.HealthCheck{IntervalSeconds: 300, TimeoutSeconds: 5}
	c.Update([]model.TargetGroup{tg("g", hc, ct.model(t, model.TargetActive))})
	if got := status(t, c, "g", ct.addr()); got != Initial {
		t.Fatalf("new target: %s, want INITIAL", got)
	}
	if !c.Group("g").FailOpen() {
		t.Error("group of one INITIAL target does not fail open")
	}
	waitStatus(t, c, "g", ct.addr(), Healthy)
	if n := ct.checks.Load(); n != 1 {
		t.Errorf("%d checks, want exactly 1: one pass makes a new target healthy", n)
	}
	if c.Group("g").FailOpen() {
		t.Error("group with a healthy target fails open")
	}
	r := ct.lastRequest()
	if r.Method != http.MethodGet || r.URL.Path != "/" || r.Host != ct.addr() || r.UserAgent() != userAgent || r.Close {
		t.Errorf("check was %s %s Host %q UA %q close=%v; want GET / to %s with %q, kept alive", r.Method, r.URL, r.Host, r.UserAgent(), r.Close, ct.addr(), userAgent)
	}
}

func TestThresholds(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	// A check that times out closes its connection, which the end of this
	// test counts: a timeout of 200 ms rather than 50, so that a loaded
	// machine does not make one.
	c := New(Config{Cluster: cluster, Second: 4 * second})
	t.Cleanup(c.Close)
	hc := fastCheck()
	hc.HealthyThresholdCount = 3
	hc.UnhealthyThresholdCount = 2
	c.Update([]model.TargetGroup{tg("g", hc, ct.model(t, model.TargetActive))})
	waitStatus(t, c, "g", ct.addr(), Healthy)

	ct.code.Store(503)
	before := ct.checks.Load()
	waitStatus(t, c, "g", ct.addr(), Unhealthy)
	if n := ct.checks.Load() - before; n < 2 {
		t.Errorf("unhealthy after %d failed checks, want at least 2", n)
	}
	if !c.Group("g").FailOpen() {
		t.Error("group whose only target is unhealthy does not fail open")
	}

	ct.code.Store(200)
	before = ct.checks.Load()
	waitStatus(t, c, "g", ct.addr(), Healthy)
	if n := ct.checks.Load() - before; n < 3 {
		t.Errorf("healthy again after %d passes, want at least 3", n)
	}
	// Every check, passed or failed, came on the one kept connection.
	if checks, conns := ct.checks.Load(), ct.conns.Load(); conns != 1 {
		t.Errorf("%d checks on %d connections, want all on one kept connection", checks, conns)
	}
}

func TestCheckConfig(t *testing.T) {
	tests := []struct {
		name      string
		tls, h2c  bool
		hc        func(hc *model.HealthCheck, other *checkTarget)
		code      int
		delay     time.Duration
		want      Status
		wantProto int
		wantPath  string
	}{
		{name: "default matcher 200", code: 200, want: Healthy, wantProto: 1, wantPath: "/"},
		{name: "204 fails the default matcher", code: 204, want: Unhealthy},
		{name: "range matcher", code: 204, want: Healthy, hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.Matcher = "200-299" }},
		{name: "list matcher", code: 302, want: Healthy, hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.Matcher = "200,302" }},
		{name: "404 outside a list", code: 404, want: Unhealthy, hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.Matcher = "200,302" }},
		{name: "path and query", code: 200, want: Healthy, wantPath: "/healthz?deep=1", hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.Path = "/healthz?deep=1" }},
		{name: "timeout", code: 200, delay: 500 * time.Millisecond, want: Unhealthy, hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.TimeoutSeconds = 2 }},
		{name: "h2c prior knowledge", h2c: true, code: 200, want: Healthy, wantProto: 2, hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.ProtocolVersion = model.HTTP2 }},
		{name: "https, certificate not validated", tls: true, code: 200, want: Healthy, wantProto: 1, hc: func(hc *model.HealthCheck, _ *checkTarget) { hc.Protocol = model.ProtocolHTTPS }},
		{name: "https and HTTP2", tls: true, h2c: true, code: 200, want: Healthy, wantProto: 2, hc: func(hc *model.HealthCheck, _ *checkTarget) {
			hc.Protocol, hc.ProtocolVersion = model.ProtocolHTTPS, model.HTTP2
		}},
		// The traffic port refuses connections; the check port answers.
		{name: "health check port", code: 200, want: Healthy, hc: func(hc *model.HealthCheck, other *checkTarget) {
			_, p, _ := net.SplitHostPort(other.addr())
			n, _ := strconv.Atoi(p)
			hc.Port = int32(n)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ct := newCheckTarget(t, tt.tls, tt.h2c)
			ct.code.Store(int32(tt.code))
			ct.delay.Store(int64(tt.delay))
			mt := ct.model(t, model.TargetActive)
			hc := fastCheck()
			if tt.hc != nil {
				tt.hc(&hc, ct)
			}
			if hc.Port != 0 {
				// Point the traffic port at a closed port.
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				mt.Port = int32(ln.Addr().(*net.TCPAddr).Port)
				ln.Close()
			}
			c := newChecker(t)
			c.Update([]model.TargetGroup{tg("g", hc, mt)})
			addr := net.JoinHostPort(mt.Address, strconv.Itoa(int(mt.Port)))
			waitStatus(t, c, "g", addr, tt.want)
			r := ct.lastRequest()
			if tt.wantProto != 0 && (r == nil || r.ProtoMajor != tt.wantProto) {
				t.Errorf("check protocol %v, want HTTP/%d", r, tt.wantProto)
			}
			if tt.wantPath != "" && r.URL.RequestURI() != tt.wantPath {
				t.Errorf("check path %q, want %q", r.URL.RequestURI(), tt.wantPath)
			}
		})
	}
}

func TestConnectionRefusedIsUnhealthy(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	c := newChecker(t)
	c.Update([]model.TargetGroup{tg("g", fastCheck(), ct.model(t, model.TargetActive))})
	waitStatus(t, c, "g", ct.addr(), Healthy)
	ct.srv.Close()
	waitStatus(t, c, "g", ct.addr(), Unhealthy)
}

func TestModes(t *testing.T) {
	checked, draining, remote, off := newCheckTarget(t, false, false), newCheckTarget(t, false, false), newCheckTarget(t, false, false), newCheckTarget(t, false, false)
	rt := remote.model(t, model.TargetActive)
	rt.Cluster = "cluster-b"
	disabled := false
	c := newChecker(t)
	c.Update([]model.TargetGroup{
		tg("g", fastCheck(), checked.model(t, model.TargetActive), draining.model(t, model.TargetDraining), rt),
		tg("off", model.HealthCheck{Enabled: &disabled}, off.model(t, model.TargetActive)),
		// HTTP2 target groups have checks off by default, as in Lattice.
		{Meta: model.Meta{Name: "h2"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP2, Targets: []model.Target{off.model(t, model.TargetActive)}},
	})
	waitStatus(t, c, "g", checked.addr(), Healthy)
	time.Sleep(20 * second)
	for _, tt := range []struct {
		group, addr string
		want        Status
	}{
		{"g", draining.addr(), Draining},
		{"g", remote.addr(), Unavailable},
		{"off", off.addr(), Unavailable},
		{"h2", off.addr(), Unavailable},
	} {
		if got := status(t, c, tt.group, tt.addr); got != tt.want {
			t.Errorf("%s %s: %s, want %s", tt.group, tt.addr, got, tt.want)
		}
	}
	for name, ct := range map[string]*checkTarget{"draining": draining, "remote": remote, "disabled": off} {
		if n := ct.checks.Load(); n != 0 {
			t.Errorf("%s target checked %d times", name, n)
		}
	}
	if got := c.Group("off").routable.Load(); got != 1 {
		t.Errorf("routable count of a group with checks off = %d, want 1", got)
	}
}

func TestStateAcrossUpdates(t *testing.T) {
	a, b := newCheckTarget(t, false, false), newCheckTarget(t, false, false)
	c := newChecker(t)
	hc := fastCheck()
	c.Update([]model.TargetGroup{tg("g", hc, a.model(t, model.TargetActive), b.model(t, model.TargetActive))})
	waitStatus(t, c, "g", a.addr(), Healthy)
	waitStatus(t, c, "g", b.addr(), Healthy)
	ta := c.Group("g").Target(a.addr())

	// b fails its checks until unhealthy; an unchanged update keeps both
	// states and the same state objects.
	b.code.Store(500)
	waitStatus(t, c, "g", b.addr(), Unhealthy)
	hc.Path = "/other" // a changed check keeps the states too
	c.Update([]model.TargetGroup{tg("g", hc, a.model(t, model.TargetActive), b.model(t, model.TargetActive))})
	if got := c.Group("g").Target(a.addr()); got != ta {
		t.Error("an unchanged target got a new state object")
	}
	if got := status(t, c, "g", b.addr()); got != Unhealthy {
		t.Errorf("unhealthy target after an update: %s, want UNHEALTHY kept", got)
	}
	if got := c.Group("g").routable.Load(); got != 1 {
		t.Errorf("routable count %d, want 1", got)
	}
	testsync.WaitFor(t, 5*time.Second, "a check of the new path", func() bool { return a.lastRequest().URL.Path == "/other" })

	// Removing b stops its checks.
	c.Update([]model.TargetGroup{tg("g", hc, a.model(t, model.TargetActive))})
	if tb := c.Group("g").Target(b.addr()); tb != nil {
		t.Error("removed target still in the group")
	}
	n := b.checks.Load()
	time.Sleep(15 * second)
	if got := b.checks.Load(); got > n+1 { // one check may have been in flight
		t.Errorf("removed target checked %d more times", got-n)
	}

	// Draining, then active again: INITIAL until its first check passes.
	c.Update([]model.TargetGroup{tg("g", hc, a.model(t, model.TargetDraining))})
	if got := status(t, c, "g", a.addr()); got != Draining {
		t.Errorf("draining: %s", got)
	}
	if !c.Group("g").FailOpen() {
		t.Error("group with only a draining target does not fail open")
	}
	c.Update([]model.TargetGroup{tg("g", hc, a.model(t, model.TargetActive))})
	if got := status(t, c, "g", a.addr()); got != Initial {
		t.Errorf("active again: %s, want INITIAL", got)
	}
	waitStatus(t, c, "g", a.addr(), Healthy)

	// Removing the group stops everything.
	c.Update(nil)
	if c.Group("g") != nil {
		t.Error("removed group still there")
	}
	if r := c.Report(); len(r) != 0 {
		t.Errorf("Report after removing every group: %v", r)
	}
}

// passive returns a checker with checks disabled and the given outlier
// settings, and a group of n targets (addresses 10.0.0.i:80; nothing is
// dialed).
func passive(t testing.TB, n int, o Outlier) (*Checker, *Group, []*Target) {
	t.Helper()
	c := New(Config{Cluster: cluster, Outlier: o})
	t.Cleanup(c.Close)
	off := false
	var targets []model.Target
	for i := range n {
		targets = append(targets, model.Target{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 80, Cluster: cluster, State: model.TargetActive})
	}
	c.Update([]model.TargetGroup{tg("g", model.HealthCheck{Enabled: &off}, targets...)})
	g := c.Group("g")
	var ts []*Target
	for i := range n {
		ts = append(ts, g.Target(fmt.Sprintf("10.0.0.%d:80", i+1)))
	}
	return c, g, ts
}

func TestOutlierEjection(t *testing.T) {
	const base = 100 * time.Millisecond
	tests := []struct {
		name    string
		targets int
		// fail lists, per target, how many failures in a row it sees.
		fail        []int
		wantEjected []bool
	}{
		{"five in a row eject", 4, []int{5, 0, 0, 0}, []bool{true, false, false, false}},
		{"four do not", 4, []int{4, 0, 0, 0}, []bool{false, false, false, false}},
		{"at most half of a group", 4, []int{5, 5, 5, 0}, []bool{true, true, false, false}},
		{"a group of one is never ejected", 1, []int{50}, []bool{false}},
		{"a group of three ejects one", 3, []int{5, 5, 5}, []bool{true, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, g, ts := passive(t, tt.targets, Outlier{BaseEjection: time.Hour})
			for i, n := range tt.fail {
				for range n {
					ts[i].Observe(false)
				}
			}
			var ejected int32
			for i, want := range tt.wantEjected {
				if got := ts[i].Ejected(); got != want {
					t.Errorf("target %d ejected = %v, want %v", i, got, want)
				}
				if want {
					ejected++
				}
			}
			if got := g.routable.Load(); got != int32(tt.targets)-ejected {
				t.Errorf("routable = %d, want %d", got, int32(tt.targets)-ejected)
			}
			if got := g.ejections.Load(); got != uint64(ejected) {
				t.Errorf("ejections = %d, want %d", got, ejected)
			}
		})
	}

	t.Run("a success resets the run", func(t *testing.T) {
		_, _, ts := passive(t, 2, Outlier{BaseEjection: time.Hour})
		for range 4 {
			ts[0].Observe(false)
		}
		ts[0].Observe(true)
		for range 4 {
			ts[0].Observe(false)
		}
		if ts[0].Ejected() {
			t.Error("ejected after 4 failures, a success and 4 more")
		}
	})

	t.Run("readmitted after the base time, longer the second time", func(t *testing.T) {
		_, g, ts := passive(t, 2, Outlier{BaseEjection: base, MaxEjection: 10 * base})
		ejectFor := func() time.Duration {
			for range DefaultConsecutiveFailures {
				ts[0].Observe(false)
			}
			if !ts[0].Ejected() {
				t.Fatal("not ejected")
			}
			start := time.Now()
			testsync.WaitFor(t, 5*time.Second, "readmission", func() bool { return !ts[0].Ejected() })
			return time.Since(start)
		}
		first := ejectFor()
		second := ejectFor() // within one base time of its return: longer
		if first < base || second < 2*base {
			t.Errorf("ejections lasted %v then %v, want at least %v then %v", first, second, base, 2*base)
		}
		if got := g.routable.Load(); got != 2 || g.ejected.Load() != 0 {
			t.Errorf("after readmission: routable %d, ejected %d; want 2, 0", got, g.ejected.Load())
		}
	})

	t.Run("removing an ejected target frees its slot", func(t *testing.T) {
		c, g, ts := passive(t, 2, Outlier{BaseEjection: time.Hour})
		for range DefaultConsecutiveFailures {
			ts[0].Observe(false)
		}
		off := false
		c.Update([]model.TargetGroup{tg("g", model.HealthCheck{Enabled: &off},
			model.Target{Address: "10.0.0.2", Port: 80, Cluster: cluster, State: model.TargetActive},
			model.Target{Address: "10.0.0.3", Port: 80, Cluster: cluster, State: model.TargetActive})})
		if g.ejected.Load() != 0 || g.routable.Load() != 2 {
			t.Errorf("ejected %d routable %d, want 0 and 2", g.ejected.Load(), g.routable.Load())
		}
	})
}

func TestObserveNil(t *testing.T) {
	var tt *Target
	tt.Observe(false)
	if !tt.Routable() {
		t.Error("nil target not routable")
	}
	var g *Group
	if g.FailOpen() {
		t.Error("nil group fails open")
	}
}

func TestReport(t *testing.T) {
	_, _, ts := passive(t, 2, Outlier{BaseEjection: time.Hour})
	for range DefaultConsecutiveFailures {
		ts[1].Observe(false)
	}
	r := ts[0].group.checker.Report()
	want := []GroupReport{{Name: "g", Ejections: 1, Targets: []TargetReport{
		{Addr: "10.0.0.1:80", Status: Unavailable}, {Addr: "10.0.0.2:80", Status: Unavailable, Ejected: true},
	}}}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Errorf("Report = %v, want %v", r, want)
	}
}

func BenchmarkRoutable(b *testing.B) {
	_, _, ts := passive(b, 1, Outlier{})
	for b.Loop() {
		ts[0].Routable()
		ts[0].Observe(true)
	}
}

// Groups checking one target alike share its probes: the target is checked
// as often as one checked by a single group, and both groups see it healthy.
func TestSharedCheck(t *testing.T) {
	shared, alone := newCheckTarget(t, false, false), newCheckTarget(t, false, false)
	c := newChecker(t)
	hc := fastCheck()
	other := hc
	other.UnhealthyThresholdCount = 5 // thresholds are each group's own
	c.Update([]model.TargetGroup{
		tg("a", hc, shared.model(t, model.TargetActive)),
		tg("b", other, shared.model(t, model.TargetActive)),
		tg("c", hc, alone.model(t, model.TargetActive)),
	})
	for _, g := range []string{"a", "b"} {
		waitStatus(t, c, g, shared.addr(), Healthy)
	}
	waitStatus(t, c, "c", alone.addr(), Healthy)
	time.Sleep(50 * second) // about ten intervals
	s, a := shared.checks.Load(), alone.checks.Load()
	if s > a*3/2+2 {
		t.Errorf("a target of two groups was checked %d times while one of one group was checked %d times: not shared", s, a)
	}
	// A group leaving the check leaves it running for the other.
	c.Update([]model.TargetGroup{tg("b", other, shared.model(t, model.TargetActive))})
	n := shared.checks.Load()
	testsync.WaitFor(t, 5*time.Second, "a check after group a left", func() bool { return shared.checks.Load() > n+1 })
}

// The checker's goroutines grow with the checks in flight, not with the
// targets: thousands of checked targets add a handful of goroutines.
func TestGoroutinesDoNotGrowWithTargets(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	_, port, _ := net.SplitHostPort(ct.addr())
	p, _ := strconv.Atoi(port)
	before := runtime.NumGoroutine()
	// A second of 100 ms: the first checks run within it, the second
	// ones 15 s to 30 s later, after the test.
	c := New(Config{Cluster: cluster, Second: 100 * time.Millisecond})
	t.Cleanup(c.Close)
	hc := model.HealthCheck{IntervalSeconds: 300, TimeoutSeconds: 100}
	// 2,000 targets on addresses nothing listens at (refused at once),
	// and one that answers.
	targets := []model.Target{ct.model(t, model.TargetActive)}
	for i := range 2000 {
		targets = append(targets, model.Target{Address: fmt.Sprintf("127.77.%d.%d", i/250, 1+i%250), Port: int32(p), Cluster: cluster, State: model.TargetActive})
	}
	c.Update([]model.TargetGroup{tg("many", hc, targets...)})
	waitStatus(t, c, "many", ct.addr(), Healthy)
	// The first checks of all 2,001 run within a second (100 ms here);
	// once they are done, no goroutine is left per target: the workers
	// leave after workerIdle. A loaded machine may take a while to
	// finish them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine() - before
		if n <= 100 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines more with 2,001 checked targets, want at most 100", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A target group of the control plane is known by its revision: a new
// revision is followed (a target gone, one new), and the same revision
// again leaves the group's targets as they are.
func TestUpdateFollowsRevisedGroups(t *testing.T) {
	c := New(Config{Cluster: cluster, Second: second})
	t.Cleanup(c.Close)
	off := false
	tg := func(rev int64, addrs ...string) []model.TargetGroup {
		g := model.TargetGroup{Meta: model.Meta{Name: "g", Revision: rev}, Protocol: model.ProtocolHTTP, Port: 80, HealthCheck: model.HealthCheck{Enabled: &off}}
		for _, a := range addrs {
			g.Targets = append(g.Targets, model.Target{Address: a, State: model.TargetActive, Cluster: cluster})
		}
		return []model.TargetGroup{g}
	}
	c.Update(tg(1, "127.0.0.1"))
	a := c.Group("g").Target("127.0.0.1:80")
	if a == nil {
		t.Fatal("no target after the first update")
	}
	c.Update(tg(2, "127.0.0.2"))
	if c.Group("g").Target("127.0.0.1:80") != nil || c.Group("g").Target("127.0.0.2:80") == nil {
		t.Fatal("revision 2 not followed")
	}
	b := c.Group("g").Target("127.0.0.2:80")
	c.Update(tg(2, "127.0.0.2"))
	if c.Group("g").Target("127.0.0.2:80") != b || b.Status() != Unavailable {
		t.Errorf("the same revision changed the target: %v", b.Status())
	}
	c.Update(tg(0, "127.0.0.3"))
	if c.Group("g").Target("127.0.0.3:80") == nil || c.Group("g").Target("127.0.0.2:80") != nil {
		t.Error("a group without a revision not followed")
	}
}

// TestSummaryCountsFollowTargets: the per-group counts Summary reads
// (kept as targets move, not counted at each call) agree with the
// targets' own statuses as checks pass and fail, targets turn Draining,
// groups disable checks, and targets and groups leave.
func TestSummaryCountsFollowTargets(t *testing.T) {
	up, down := newCheckTarget(t, false, false), newCheckTarget(t, false, false)
	down.code.Store(503)
	c := newChecker(t)
	hc := fastCheck()
	hc.UnhealthyThresholdCount = 2
	// A third target's address listens nowhere: refused, unhealthy.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().(*net.TCPAddr)
	ln.Close()
	refused := model.Target{Address: "127.0.0.1", Port: int32(gone.Port), State: model.TargetActive, Cluster: cluster}
	check := func(step string) {
		t.Helper()
		want := map[string][2]int{}
		for _, g := range c.Report() {
			var n [2]int
			for _, tr := range g.Targets {
				switch tr.Status {
				case Healthy:
					n[0]++
				case Unhealthy:
					n[1]++
				}
			}
			want[g.Name] = n
		}
		got := map[string][2]int{}
		for _, s := range c.Summary() {
			got[s.Name] = [2]int{s.Healthy, s.Unhealthy}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: Summary counts %v, the targets' statuses %v", step, got, want)
		}
	}
	both := []model.TargetGroup{
		tg("a", hc, up.model(t, model.TargetActive), down.model(t, model.TargetActive), refused),
		tg("b", hc, up.model(t, model.TargetActive)),
	}
	c.Update(both)
	waitStatus(t, c, "a", up.addr(), Healthy)
	waitStatus(t, c, "a", down.addr(), Unhealthy)
	waitStatus(t, c, "a", net.JoinHostPort("127.0.0.1", strconv.Itoa(gone.Port)), Unhealthy)
	waitStatus(t, c, "b", up.addr(), Healthy)
	check("checked")
	if s := c.Summary(); len(s) != 2 {
		t.Fatalf("Summary has %d groups, want 2", len(s))
	}
	for _, s := range c.Summary() {
		if s.Name == "a" && (s.Healthy != 1 || s.Unhealthy != 2) {
			t.Errorf("group a: %d healthy, %d unhealthy; want 1 and 2", s.Healthy, s.Unhealthy)
		}
	}

	down.code.Store(200)
	waitStatus(t, c, "a", down.addr(), Healthy)
	check("recovered")

	// The refused target leaves, up drains, b stops checking.
	off := false
	noChecks := hc
	noChecks.Enabled = &off
	c.Update([]model.TargetGroup{
		tg("a", hc, up.model(t, model.TargetDraining), down.model(t, model.TargetActive)),
		tg("b", noChecks, up.model(t, model.TargetActive)),
	})
	check("drained, disabled, removed")
	for _, s := range c.Summary() {
		if s.Name == "a" && (s.Healthy != 1 || s.Unhealthy != 0) || s.Name == "b" && (s.Healthy != 0 || s.Unhealthy != 0) {
			t.Errorf("group %s: %d healthy, %d unhealthy after the update", s.Name, s.Healthy, s.Unhealthy)
		}
	}
	c.Update(both[1:])
	check("group a gone")
}
