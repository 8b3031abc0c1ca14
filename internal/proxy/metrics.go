package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"trellis.dev/trellis/internal/model"
)

// requestBuckets are the request-duration histogram's buckets, in seconds:
// from half a millisecond (a proxy hop on loopback) to the 10-minute cap.
var requestBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 600}

// applyBuckets are the config-apply histogram's buckets, in seconds, around
// the 250 ms budget for a change to reach traffic.
var applyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics holds the proxy's Prometheus metrics, in a registry of its own.
//
// Request metrics are labelled by service, rule (its index in the service)
// and target group, never by anything a client chooses. The compiler
// annotates each rule and backend of a route table with a *ruleInfo that
// caches its label-bound histogram and the counter of each common status
// code, each bound on first use (the cache too is made on the rule's first
// request), so that a request only increments them.
// Series of rules and target groups that leave the config are deleted.
type metrics struct {
	cluster string
	reg     *prometheus.Registry

	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	revision       prometheus.Gauge
	applySeconds   prometheus.Histogram
	programmed     prometheus.Gauge
	updateFailures prometheus.Counter
	// handoffs counts connections the fast path handed to net/http.
	handoffs prometheus.Counter
	// peerRequests counts requests other clusters' proxies handed over, by
	// their cluster and outcome.
	peerRequests *prometheus.CounterVec
	// hops counts requests over the peer hop on both ends, by direction,
	// source and destination cluster and status code; hopCounters caches
	// its series.
	hops        *prometheus.CounterVec
	hopCounters sync.Map // hopKey → prometheus.Counter

	// rules holds the rule data of the table serving, by service name;
	// next holds what the compilation in progress changed (the services
	// it annotated, and nil for those it forgot), cur is the service being
	// annotated and prev its data in rules. Update's lock guards them all.
	rules, next map[string]*serviceRules
	curName     string
	cur, prev   *serviceRules
	// unmatched counts requests that matched no route.
	unmatched *ruleInfo
}

func newMetrics(p *Proxy) *metrics {
	m := &metrics{
		cluster: p.cluster,
		reg:     prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_requests_total",
			Help: "Requests served, by service, route rule (index in the service), target group and status code. Empty labels: no route matched, or the rule answered without a target group.",
		}, []string{"service", "rule", "target_group", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_request_duration_seconds",
			Help:    "Time from receiving a request to the last byte of its response, by service, route rule and target group.",
			Buckets: requestBuckets,
		}, []string{"service", "rule", "target_group"}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_config_revision",
			Help: "Snapshot revision of the route table serving.",
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "trellis_config_apply_seconds",
			Help:    "Time from receiving a configuration revision to serving it (compiled, swapped in, listeners reconciled).",
			Buckets: applyBuckets,
		}),
		programmed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_config_last_programmed_timestamp_seconds",
			Help: "Unix time at which the route table serving was programmed; time() minus this is the config's age.",
		}),
		updateFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_config_update_failures_total",
			Help: "Configuration revisions that failed to compile; the previous route table kept serving.",
		}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_http_connections_handed_off_total",
			Help: "HTTP connections the fast path (plain HTTP/1.1 forwarding) handed to the general request path: HTTP/2 ones (h2c, ALPN h2) at once, the others at their first request it does not take: an upgrade, a chunked or large body, a rule with filters other than header edits, retries or sessions, an HTTP/2, gRPC or TLS target group.",
		}),
		peerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_peer_requests_total",
			Help: "Requests other clusters' proxies handed over, by the sending proxy's cluster (as its certificate names it) and outcome: Delivered, or the reason it was refused (ForeignIdentity: an identity of another cluster asserted; NotAdmitted: the sending cluster is not, or no longer, admitted; NotDeliverable: not a target of this cluster; NotRouted: the service named does not route to the target group on the network and port named, here; PolicyDenied: that service's or its network's auth policy refused it; NoTarget).",
		}, []string{"peer_cluster", "outcome"}),
		hops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_peer_hop_requests_total",
			Help: "Requests over the peer hop, on both ends: direction sent (by the proxy that picked a target of another cluster) or received (by that cluster's proxy, which delivered it or refused it NotDeliverable), the source cluster (the client's proxy's) and destination cluster (the target's), and the status code (0: no response over the hop).",
		}, []string{"direction", "source_cluster", "destination_cluster", "code"}),
		rules: map[string]*serviceRules{},
	}
	m.unmatched = m.newRuleInfo(ruleKey{rule: -1})
	logQueue := func(count func(*Proxy) uint64) func() float64 {
		return func() float64 {
			if p.accessLog == nil {
				return 0
			}
			return float64(count(p))
		}
	}
	m.reg.MustRegister(
		m.requests, m.duration, m.revision, m.applySeconds, m.programmed, m.updateFailures, m.handoffs, m.peerRequests, m.hops,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "trellis_access_log_dropped_total",
			Help: "Access log entries dropped because the writer fell behind.",
		}, logQueue(func(p *Proxy) uint64 { return p.accessLog.Dropped() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "trellis_access_log_write_errors_total",
			Help: "Failed writes to the access log destination; the entries buffered at the time were lost.",
		}, logQueue(func(p *Proxy) uint64 { return p.accessLog.WriteErrors() })),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ruleKey identifies a rule's (or a backend's) data across compilations.
type ruleKey struct {
	service, network, targetGroup string
	// rule is the rule's index, -1 for requests that matched no route.
	rule int
}

// ruleInfo is what the request path needs of one rule, or of one backend
// of a rule: its identity, its identity headers, and its metrics bound to
// its labels. A proxy keeps one per rule and per backend of every service
// (40,000 at issue 15's size), most of which may never see a request, so
// the headers and the series are made on a rule's first request and the
// rest is 96 bytes.
type ruleInfo struct {
	service, network, targetGroup string
	// rule is the rule's label value.
	rule string

	m *metrics
	// headers are made on first use (identityHeaders); series are bound
	// on first use (observe): a compilation stays cheap, and rules
	// without traffic export no series.
	headers atomic.Pointer[ruleHeaders]
	series  atomic.Pointer[ruleSeries]
}

// ruleHeaders are the values of x-trellis-target and x-trellis-network of
// a rule's backend, and both as the header lines the fast path writes.
type ruleHeaders struct {
	target, network, wire string
}

// ruleSeries caches a rule's counters of the common status codes, by
// codeSlots, and its histogram, each bound to its labels on first use.
type ruleSeries struct {
	codes    [len(commonCodes)]atomic.Pointer[prometheus.Counter]
	duration atomic.Pointer[prometheus.Observer]
}

// commonCodes are the status codes whose counters a ruleInfo caches.
var commonCodes = [...]int{200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308,
	400, 401, 403, 404, 405, 408, 409, 412, 413, 415, 422, 429, 431,
	500, 501, 502, 503, 504}

// codeSlots maps a status code to its index in commonCodes, or -1.
var codeSlots = func() (s [600]int8) {
	for i := range s {
		s[i] = -1
	}
	for i, c := range commonCodes {
		s[c] = int8(i)
	}
	return s
}()

func (m *metrics) newRuleInfo(k ruleKey) *ruleInfo {
	ri := &ruleInfo{service: k.service, network: k.network, targetGroup: k.targetGroup, m: m}
	if k.rule >= 0 {
		ri.rule = strconv.Itoa(k.rule)
	}
	return ri
}

// identityHeaders returns the rule's x-trellis-network and
// x-trellis-target, made on the first call; nil for a rule that forwards
// to no target group (nor for requests that matched no route).
func (ri *ruleInfo) identityHeaders() *ruleHeaders {
	if ri.rule == "" || ri.targetGroup == "" {
		return nil
	}
	if h := ri.headers.Load(); h != nil {
		return h
	}
	h := &ruleHeaders{
		target:  "Service=" + ri.service + "; Network=" + ri.network + "; TargetGroup=" + ri.targetGroup,
		network: "SourceCluster=" + ri.m.cluster + "; Network=" + ri.network,
	}
	var b strings.Builder
	setRuleFields((*textFields)(&b), h)
	h.wire = b.String()
	if !ri.headers.CompareAndSwap(nil, h) {
		return ri.headers.Load()
	}
	return h
}

// boundSeries returns the rule's series cache, made on the first call.
func (ri *ruleInfo) boundSeries() *ruleSeries {
	if s := ri.series.Load(); s != nil {
		return s
	}
	ri.series.CompareAndSwap(nil, &ruleSeries{})
	return ri.series.Load()
}

// serviceRules holds the rule data of one service's rules, by rule index;
// each rule has a short list, one per target group of its backends plus
// the rule's own ("").
type serviceRules struct {
	network string
	rules   [][]*ruleInfo
}

// find returns the rule data of rule and targetGroup, or nil.
func (sr *serviceRules) find(rule int, targetGroup string) *ruleInfo {
	if sr == nil || rule >= len(sr.rules) {
		return nil
	}
	for _, ri := range sr.rules[rule] {
		if ri.targetGroup == targetGroup {
			return ri
		}
	}
	return nil
}

// annotate is the compiler's Annotate hook: it returns the rule data of a
// rule or backend, reusing that of the previous table when the rule is
// unchanged. The compiler annotates one service's rules in a row, so the
// service is looked up once per service, not per rule.
func (m *metrics) annotate(svc *model.Service, rule int, targetGroup string) any {
	if m.cur == nil || m.curName != svc.Name {
		m.curName = svc.Name
		if m.cur = m.next[svc.Name]; m.cur == nil {
			// New in this compilation, or forgotten and back.
			m.cur = &serviceRules{network: svc.Network, rules: make([][]*ruleInfo, len(svc.Rules))}
			m.next[svc.Name] = m.cur
		}
		if m.prev = m.rules[svc.Name]; m.prev != nil && m.prev.network != svc.Network {
			m.prev = nil
		}
	}
	if ri := m.cur.find(rule, targetGroup); ri != nil {
		return ri
	}
	ri := m.prev.find(rule, targetGroup)
	if ri == nil {
		ri = m.newRuleInfo(ruleKey{service: svc.Name, network: svc.Network, targetGroup: targetGroup, rule: rule})
	}
	for len(m.cur.rules) <= rule {
		m.cur.rules = append(m.cur.rules, nil)
	}
	if m.cur.rules[rule] == nil && rule < len(svc.Rules) {
		n := 1
		if f := svc.Rules[rule].Action.Forward; f != nil {
			n += len(f.Backends)
		}
		m.cur.rules[rule] = make([]*ruleInfo, 0, n)
	}
	m.cur.rules[rule] = append(m.cur.rules[rule], ri)
	return ri
}

// beginCompile prepares for the annotations of a compilation.
func (m *metrics) beginCompile() {
	m.next = map[string]*serviceRules{}
	m.cur, m.prev = nil, nil
}

// forget is the compiler's Forget hook: the rules of service leave the
// table.
func (m *metrics) forget(service string) {
	if _, annotated := m.next[service]; !annotated {
		m.next[service] = nil
	}
	m.cur, m.prev = nil, nil
}

// compiled makes the compilation's rule data current and deletes the
// series of the rules that are gone. Only the services the compilation
// annotated or forgot changed.
func (m *metrics) compiled() {
	for name, now := range m.next {
		old := m.rules[name]
		if now == nil {
			delete(m.rules, name)
		} else {
			m.rules[name] = now
		}
		if old == nil {
			continue
		}
		same := now
		if same != nil && same.network != old.network {
			same = nil
		}
		for rule, ris := range old.rules {
			for _, ri := range ris {
				if same.find(rule, ri.targetGroup) == ri {
					continue
				}
				// A rule that moved to another network keeps its
				// labels, which have no network.
				if now.find(rule, ri.targetGroup) != nil {
					continue
				}
				l := prometheus.Labels{"service": ri.service, "rule": ri.rule, "target_group": ri.targetGroup}
				m.requests.DeletePartialMatch(l)
				m.duration.Delete(l)
			}
		}
	}
	m.next, m.cur, m.prev = nil, nil, nil
}

// compileFailed discards a failed compilation's rule data.
func (m *metrics) compileFailed() {
	m.next = nil
	m.updateFailures.Inc()
}

// observe counts one request answered with code after d.
func (ri *ruleInfo) observe(code int, d time.Duration) {
	s := ri.boundSeries()
	ri.counter(s, code).Inc()
	o := s.duration.Load()
	if o == nil {
		h := ri.m.duration.WithLabelValues(ri.service, ri.rule, ri.targetGroup)
		o = &h
		s.duration.Store(o)
	}
	(*o).Observe(d.Seconds())
}

func (ri *ruleInfo) counter(s *ruleSeries, code int) prometheus.Counter {
	if code < 0 || code >= len(codeSlots) || codeSlots[code] < 0 {
		return ri.m.requests.WithLabelValues(ri.service, ri.rule, ri.targetGroup, strconv.Itoa(code))
	}
	slot := &s.codes[codeSlots[code]]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := ri.m.requests.WithLabelValues(ri.service, ri.rule, ri.targetGroup, strconv.Itoa(code))
	slot.Store(&c)
	return c
}

// programmedTable records that the route table of revision serves, apply
// after its snapshot arrived.
func (m *metrics) programmedTable(revision int64, apply time.Duration) {
	m.revision.Set(float64(revision))
	m.applySeconds.Observe(apply.Seconds())
	m.programmed.Set(float64(time.Now().UnixNano()) / 1e9)
}

func (m *metrics) peerRefused(cluster, reason string) {
	m.peerRequests.WithLabelValues(cluster, reason).Inc()
}

// Directions of trellis_peer_hop_requests_total.
const (
	hopSent     = "sent"
	hopReceived = "received"
)

type hopKey struct {
	direction, source, destination string
	code                           int
}

// hop counts one request over the peer hop.
func (m *metrics) hop(direction, source, destination string, code int) {
	k := hopKey{direction, source, destination, code}
	c, ok := m.hopCounters.Load(k)
	if !ok {
		c, _ = m.hopCounters.LoadOrStore(k, m.hops.WithLabelValues(direction, source, destination, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
}

func (m *metrics) peerDelivered(cluster string) {
	m.peerRequests.WithLabelValues(cluster, "Delivered").Inc()
}
