package health

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"trellis.dev/trellis/internal/model"
)

// userAgent is the User-Agent of every health check, so that targets can
// tell checks from traffic (and leave them out of their own logs).
const userAgent = "Trellis-HealthChecker/1.0"

// Config configures a Checker.
type Config struct {
	// Cluster is the cluster the proxy runs in. Only targets of this
	// cluster are checked: a target in another cluster's network is the
	// business of that cluster's proxy, and counts as Unavailable here.
	Cluster string
	// Logger receives health transitions and ejections; nil discards them.
	Logger *slog.Logger
	// Outlier configures passive outlier ejection; zero fields take the
	// defaults.
	Outlier Outlier
	// Second is how long one second of a health check's configuration lasts
	// (interval, timeout), and the longest delay before a new target's first
	// check. Zero means time.Second. Only tests set it, so that a model
	// interval of 5 s (the least the model allows) runs in milliseconds.
	Second time.Duration
	// MaxKeptConns bounds the check connections kept open between checks
	// (one per address and check); zero means DefaultMaxKeptConns or half
	// the open-file limit, whichever is less, and a negative value keeps
	// none. At most DefaultMaxKeptH2Conns of them are HTTP/2.
	MaxKeptConns int
	// MaxHold bounds how long a Hold keeps checks from starting;
	// DefaultMaxHold when zero.
	MaxHold time.Duration
}

// BenchMaxKeptEnv names the environment variable that, when set to an
// integer, lowers the bound of kept check connections of a checker whose
// Config.MaxKeptConns is zero (a negative value keeps none, so that every
// check dials): a knob for benchmarks (bench/scale/peer-health.sh measures
// the checks that dial against a peer's), not for production.
const BenchMaxKeptEnv = "TRELLIS_BENCH_HEALTH_MAX_KEPT_CONNS"

// benchMaxKept returns the bound BenchMaxKeptEnv sets, if it is set; a
// value that is not an integer is logged and ignored.
func benchMaxKept(log *slog.Logger) (int64, bool) {
	v, ok := os.LookupEnv(BenchMaxKeptEnv)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		log.Error("health checks: ignoring "+BenchMaxKeptEnv+": not an integer", "value", v)
		return 0, false
	}
	log.Warn("health checks: kept connections bounded for a benchmark", BenchMaxKeptEnv, n)
	return n, true
}

// Checker runs the active health checks of every target group whose health
// check is enabled, and holds the health state of every target, checked or
// not. It is safe for concurrent use.
type Checker struct {
	cluster string
	log     *slog.Logger
	outlier Outlier
	second  time.Duration
	// tlsH1 and tlsH2 are the TLS of HTTPS checks (probe.go), each with
	// its cache of sessions; h2 opens the HTTP/2 check connections
	// (probe_h2.go).
	tlsH1, tlsH2 *tls.Config
	h2           *http.Transport
	// kept counts the check connections open and counted, at most
	// maxKept; keptH2 those of them that are HTTP/2, at most maxKeptH2.
	kept, keptH2       atomic.Int64
	maxKept, maxKeptH2 int64
	// gen moves whenever a target's state or the set of targets changes.
	gen atomic.Uint64

	// ctx ends the scheduler and every check in flight on Close; loops
	// counts them.
	ctx    context.Context
	cancel context.CancelFunc
	loops  sync.WaitGroup
	// wake tells the scheduler the queue's head may have changed;
	wake chan struct{}
	// idle are the workers waiting for a check, the last to finish on
	// top; workers counts them all, at most MaxChecksInFlight; freed
	// hears of a worker finishing or leaving (schedule.go).
	idleMu  sync.Mutex
	idle    []*worker
	workers atomic.Int32
	freed   chan struct{}

	// mu guards groups, checks, queue, every Group's targets map and
	// every Target's check and sub.
	mu     sync.Mutex
	groups map[string]*Group
	// checks are the scheduled checks by what they probe; queue orders
	// them by when they are next due.
	checks map[checkKey]*check
	queue  checkQueue
	// leaving are the checks no target reads any more that were in
	// flight when their last target left, until they finish: Close ends
	// them too.
	leaving map[*check]bool
	closed  bool
	// holdEnd is when checks start again after a Hold (schedule.go):
	// at the last release of the hold's period, or MaxHold after it
	// began. hold counts the period's holds not yet released.
	// holdServed reports whether the scheduler has looked at the queue
	// since the last hold ended, which a new hold waits for.
	holdEnd    time.Time
	hold       struct{ period, n int }
	holdServed bool
	maxHold    time.Duration
	// fresh are the checks the Update under way created (spreadFirst).
	fresh []*check
	// answers reads the answers of the plain checks the scheduler sends
	// on kept connections; nil where the system has no epoll (checks
	// then all run on workers).
	answers *answerLoop
}

// New returns a checker with no target groups. Checks start on Update.
func New(cfg Config) *Checker {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Checker{
		cluster: cfg.Cluster,
		log:     log,
		outlier: cfg.Outlier.withDefaults(),
		second:  cmp.Or(cfg.Second, time.Second),
		groups:  map[string]*Group{},
		checks:  map[checkKey]*check{},
		leaving: map[*check]bool{},
		wake:    make(chan struct{}, 1),
		freed:   make(chan struct{}, 1),
		maxHold: cmp.Or(cfg.MaxHold, DefaultMaxHold),
		// No hold has ended that the scheduler has not seen.
		holdServed: true,
	}
	c.tlsH1, c.tlsH2 = newTLSConfig(), newTLSConfig("h2")
	c.h2 = c.newH2Transport()
	c.maxKept = int64(cfg.MaxKeptConns)
	if cfg.MaxKeptConns == 0 {
		c.maxKept = DefaultMaxKeptConns
		if l := openFileLimit(); l > 0 {
			c.maxKept = min(c.maxKept, int64(l/2))
		}
		if n, ok := benchMaxKept(log); ok {
			c.maxKept = min(c.maxKept, n)
		}
	}
	c.maxKeptH2 = min(c.maxKept, DefaultMaxKeptH2Conns)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.answers = newAnswerLoop(c); c.answers != nil {
		c.loops.Go(c.answers.run)
	}
	c.loops.Go(c.schedule)
	return c
}

// Update makes the checker follow tgs, the target groups of a new snapshot.
//
// A target keeps its state (status, ejection) as long as its group, address
// and port are unchanged. A new target of a group with checks enabled is
// Initial until its first check, which runs after a random delay of up to a
// second (or the interval, if shorter) so that checks of many new targets
// spread out; when an Update adds more than FirstCheckRate, over as many
// seconds as that rate needs (at most the interval). Targets of several groups with the same address and check
// (path, protocol, port, interval, timeout, matcher) share one probe, each
// applying its own thresholds to the outcome. Checks of targets and groups that are gone stop. A target
// that turns Draining, or whose group disables checks, stops being checked
// and becomes Draining or Unavailable; one that comes back is Initial again.
func (c *Checker) Update(tgs []model.TargetGroup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	defer c.gen.Add(1)
	defer c.spreadFirst()
	seen := make(map[string]bool, len(tgs))
	// addrs is reused by every group, to spare an allocation per group.
	addrs := map[string]bool{}
	for i := range tgs {
		tg := &tgs[i]
		if seen[tg.Name] {
			continue
		}
		seen[tg.Name] = true
		g := c.groups[tg.Name]
		if g == nil {
			g = &Group{name: tg.Name, checker: c}
			c.groups[tg.Name] = g
		}
		if g.last != nil && g.last.same(tg) {
			continue // what updateGroup would do is done
		}
		clear(addrs)
		c.updateGroup(g, tg, addrs)
		g.last = inputOf(tg)
	}
	for name, g := range c.groups {
		if seen[name] {
			continue
		}
		for _, t := range g.targets {
			c.remove(t)
		}
		delete(c.groups, name)
	}
}

// Group returns the health of the target group name, or nil when the last
// Update had no such group.
func (c *Checker) Group(name string) *Group {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groups[name]
}

// Generation returns a number that moves whenever the health of a target
// changes or targets come and go, so that a reader of Report can tell
// when it has nothing new to read.
func (c *Checker) Generation() uint64 { return c.gen.Load() }

// Close stops every check loop and waits for them to return, closing
// every check connection. The state stays readable; Update does nothing
// after Close.
func (c *Checker) Close() {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	// Checks in flight end at once; one that stores a connection after
	// this closes it itself (dial).
	for _, ch := range c.checks {
		if kc := ch.conn.Load(); kc != nil {
			kc.closeNow()
		}
	}
	for ch := range c.leaving {
		if kc := ch.conn.Load(); kc != nil {
			kc.closeNow()
		}
	}
	c.mu.Unlock()
	c.loops.Wait()
	if c.answers != nil {
		c.answers.close()
	}
}

// groupInput is what is kept of the target group a group was last
// updated from, to tell whether the next is the same (same): the control
// plane's revision, or for a group without one (made by hand) what
// updateGroup reads of it.
type groupInput struct {
	meta      model.Meta
	byContent *groupContent
}

// groupContent is what updateGroup reads of a target group.
type groupContent struct {
	protocol model.Protocol
	version  model.ProtocolVersion
	port     int32
	hc       model.HealthCheck
	enabled  int8 // hc.Enabled: -1 nil, 0 false, 1 true
	targets  []model.Target
}

func enabledOf(hc *model.HealthCheck) int8 {
	switch {
	case hc.Enabled == nil:
		return -1
	case *hc.Enabled:
		return 1
	}
	return 0
}

func inputOf(tg *model.TargetGroup) *groupInput {
	in := &groupInput{meta: tg.Meta}
	if tg.Revision == 0 {
		// A group of the control plane is known by its revision; only
		// one without is compared by its content.
		in.byContent = &groupContent{protocol: tg.Protocol, version: tg.ProtocolVersion, port: tg.Port, hc: tg.HealthCheck,
			enabled: enabledOf(&tg.HealthCheck), targets: slices.Clone(tg.Targets)}
		in.byContent.hc.Enabled = nil
	}
	return in
}

// same reports whether tg is what in was made from, so that an Update
// leaves its group as it is: with thousands of groups, a snapshot changes
// few.
func (in *groupInput) same(tg *model.TargetGroup) bool {
	if in.meta.Revision != 0 {
		return in.meta == tg.Meta // the control plane's revision says whether it changed
	}
	c := in.byContent
	hc := tg.HealthCheck
	hc.Enabled = nil
	return tg.Revision == 0 && c.protocol == tg.Protocol && c.version == tg.ProtocolVersion && c.port == tg.Port && c.hc == hc &&
		c.enabled == enabledOf(&tg.HealthCheck) && slices.Equal(c.targets, tg.Targets)
}

// updateGroup makes g follow tg. seen is empty; it collects the addresses
// of tg's targets.
func (c *Checker) updateGroup(g *Group, tg *model.TargetGroup, seen map[string]bool) {
	sp, err := newSpec(tg, c.second)
	if err != nil {
		// Validation rejects what newSpec cannot use; a proxy fed an
		// unvalidated snapshot leaves the group unchecked and says why.
		c.log.Error("health checks disabled: invalid health check", "targetGroup", tg.Name, "err", err)
	}
	if old := g.spec.Load(); old != nil && sp != nil && old.equal(sp) {
		sp = old // so that unchanged targets are seen unchanged at once
	}
	g.spec.Store(sp)
	var active int32
	// The group's targets, sorted by address, are made again: a slice
	// holds them in an eighth of a map's memory.
	next := make([]*Target, 0, len(tg.Targets))
	for _, mt := range tg.Targets {
		addr := net.JoinHostPort(mt.Address, strconv.Itoa(int(mt.EffectivePort(tg))))
		if seen[addr] {
			continue
		}
		seen[addr] = true
		mode := Initial
		switch {
		case mt.State == model.TargetDraining:
			mode = Draining
		case sp == nil || mt.Cluster != c.cluster:
			mode = Unavailable
		}
		if mode != Draining {
			active++
		}
		t := g.find(addr)
		if t == nil {
			t = &Target{group: g, addr: addr}
		}
		next = append(next, t)
		c.setMode(t, mode, sp)
	}
	g.active.Store(active)
	for _, t := range g.targets {
		if !seen[t.addr] {
			c.remove(t)
		}
	}
	slices.SortFunc(next, func(a, b *Target) int { return strings.Compare(a.addr, b.addr) })
	g.targets = next
}

// setMode puts t into mode: Initial means checked with sp (a target
// already being checked keeps its status and counts), Unavailable and
// Draining mean not checked. c.mu must be held.
func (c *Checker) setMode(t *Target, mode Status, sp *spec) {
	if mode == Initial && t.sub != nil {
		if t.sub.sp != sp {
			c.subscribe(t, t.sub, sp)
		}
		return
	}
	c.unsubscribe(t)
	if mode != Initial && t.Status() == mode {
		return
	}
	_, w := t.transition(func(w uint32) uint32 { return withStatus(w+genStep, mode) })
	if mode == Initial {
		c.subscribe(t, &subscription{gen: w >> genShift}, sp)
	}
}

// remove stops t's checks and ejection timer and takes it out of its
// group's counts. Its last status stays readable by route tables still
// holding it. c.mu must be held.
func (c *Checker) remove(t *Target) {
	c.unsubscribe(t)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ej != nil && t.ej.timer != nil {
		t.ej.timer.Stop()
	}
	old, _ := t.transition(func(w uint32) uint32 { return w | removedBit })
	if old&ejectedBit != 0 && old&removedBit == 0 {
		t.group.ejected.Add(-1)
	}
}

// record moves t's status after a check, as Lattice does: one pass makes an
// Initial target Healthy; HealthyThresholdCount passes in a row make an
// Unhealthy one Healthy; UnhealthyThresholdCount failures in a row make an
// Initial or Healthy one Unhealthy.
func (c *Checker) record(t *Target, gen uint32, sp *spec, passes, fails int, err error) {
	from := t.Status()
	to := from
	switch {
	case err == nil && (from == Initial || from == Unhealthy && passes >= sp.healthy):
		to = Healthy
	case err != nil && (from == Initial || from == Healthy) && fails >= sp.unhealthy:
		to = Unhealthy
	}
	if to == from {
		return
	}
	old, new := t.transition(func(w uint32) uint32 {
		if w>>genShift != gen || statusOf(w) != from {
			return w
		}
		return withStatus(w, to)
	})
	if old == new {
		return
	}
	args := []any{"targetGroup", t.group.name, "target", t.addr, "from", from.String(), "to", to.String()}
	switch {
	case to == Unhealthy:
		c.log.Warn("target unhealthy", append(args, "err", err)...)
	case from == Unhealthy:
		c.log.Info("target healthy again", args...)
	default:
		c.log.Debug("target healthy", args...)
	}
}

// jitter returns a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// spec is a target group's active check, defaulted and parsed.
type spec struct {
	https, http2 bool
	// pathQuery is the request target, such as "/healthz?full=1", and
	// requestURI the same as written on the wire (escaped as net/http
	// would); "" when it does not parse.
	pathQuery, requestURI string
	// port is the check port; 0 means each target's traffic port.
	port              int32
	interval, timeout time.Duration
	healthy           int
	unhealthy         int
	// codes are the inclusive ranges of healthy status codes; matcher
	// is what they were parsed from.
	codes   [][2]int
	matcher string
	// probe is the interned form of what the check does at an address.
	probe unique.Handle[probeKey]
}

// equal reports whether sp and o check alike.
func (sp *spec) equal(o *spec) bool {
	return sp.https == o.https && sp.http2 == o.http2 && sp.pathQuery == o.pathQuery && sp.port == o.port &&
		sp.interval == o.interval && sp.timeout == o.timeout && sp.healthy == o.healthy &&
		sp.unhealthy == o.unhealthy && sp.matcher == o.matcher
}

// newSpec returns the active check of tg, or nil when checks are disabled.
func newSpec(tg *model.TargetGroup, second time.Duration) (*spec, error) {
	hc := tg.HealthCheck.Defaulted(tg.Protocol, tg.ProtocolVersion)
	if !*hc.Enabled {
		return nil, nil
	}
	codes, err := model.ParseMatcher(hc.Matcher)
	if err != nil {
		return nil, fmt.Errorf("healthCheck.matcher: %w", err)
	}
	if !strings.HasPrefix(hc.Path, "/") {
		return nil, fmt.Errorf("healthCheck.path: %q must start with '/'", hc.Path)
	}
	var requestURI string
	if u, err := url.Parse("http://check" + hc.Path); err == nil && !strings.ContainsFunc(hc.Path, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		requestURI = u.RequestURI()
	}
	sp := &spec{
		requestURI: requestURI,
		https:      hc.Protocol == model.ProtocolHTTPS,
		http2:      hc.ProtocolVersion == model.HTTP2,
		pathQuery:  hc.Path,
		port:       hc.Port,
		interval:   time.Duration(hc.IntervalSeconds) * second,
		timeout:    time.Duration(hc.TimeoutSeconds) * second,
		healthy:    int(hc.HealthyThresholdCount),
		unhealthy:  int(hc.UnhealthyThresholdCount),
		codes:      codes,
		matcher:    hc.Matcher,
	}
	sp.probe = unique.Make(probeKey{https: sp.https, http2: sp.http2, pathQuery: sp.pathQuery,
		interval: sp.interval, timeout: sp.timeout, matcher: sp.matcher})
	return sp, nil
}

func (sp *spec) healthyCode(code int) bool {
	for _, r := range sp.codes {
		if code >= r[0] && code <= r[1] {
			return true
		}
	}
	return false
}

// probe runs one check of ch. It returns nil when the target answered in
// time with a healthy status code.
func (c *Checker) probe(ch *check) error {
	if ch.sp.http2 {
		return c.probeH2(ch)
	}
	return c.probeH1(ch)
}

// statusError is a check answered with a status code the matcher rejects.
type statusError struct{ code int }

func (e *statusError) Error() string { return "status " + strconv.Itoa(e.code) }

// GroupSummary counts one target group's targets by health, as Summary
// gives it.
type GroupSummary struct {
	Name string
	// Healthy and Unhealthy count the targets in those statuses.
	Healthy, Unhealthy int
	// Ejections counts the group's passive ejections since it appeared.
	Ejections uint64
}

// Summary returns every group's counts, in no particular order: what a
// scrape needs without a series per target.
func (c *Checker) Summary() []GroupSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]GroupSummary, 0, len(c.groups))
	for _, g := range c.groups {
		out = append(out, GroupSummary{Name: g.name, Healthy: int(g.healthy.Load()), Unhealthy: int(g.unhealthy.Load()), Ejections: g.ejections.Load()})
	}
	return out
}

// TargetReport is one target's health, as Report gives it.
type TargetReport struct {
	Addr    string
	Status  Status
	Ejected bool
}

// GroupReport is one target group's health, as Report gives it.
type GroupReport struct {
	Name string
	// Ejections counts the group's passive ejections since it appeared.
	Ejections uint64
	Targets   []TargetReport
}

// Report returns the health of every target of every group, sorted by group
// name and target address.
func (c *Checker) Report() []GroupReport {
	c.mu.Lock()
	out := make([]GroupReport, 0, len(c.groups))
	for _, g := range c.groups {
		gr := GroupReport{Name: g.name, Ejections: g.ejections.Load(), Targets: make([]TargetReport, 0, len(g.targets))}
		for _, t := range g.targets {
			w := t.state.Load()
			gr.Targets = append(gr.Targets, TargetReport{Addr: t.addr, Status: statusOf(w), Ejected: w&ejectedBit != 0})
		}
		out = append(out, gr)
	}
	// Sorted outside the lock, which every check takes.
	c.mu.Unlock()
	for _, gr := range out {
		slices.SortFunc(gr.Targets, func(a, b TargetReport) int { return strings.Compare(a.Addr, b.Addr) })
	}
	slices.SortFunc(out, func(a, b GroupReport) int { return strings.Compare(a.Name, b.Name) })
	return out
}
