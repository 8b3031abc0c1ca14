// Package proxy is the data plane: it serves a service network's HTTP
// traffic as the latest snapshot from the control plane says.
//
// It owns the listeners, the request path (match a route, pick a backend and
// a target, forward) and the atomic swap of compiled route tables. Compiling
// and matching live in proxy/router, the selection arithmetic in
// proxy/balancer, target health (active checks, outlier ejection) in
// proxy/health, the access log's format and writer in proxy/accesslog; the
// identity headers, metrics and the admin listener are here. It must not
// talk to the control plane or the store (its caller feeds it snapshots
// through Update) and must not modify the snapshots it is given.
//
// The request path takes no locks: each request loads the current table
// from an atomic pointer and works on that immutable table to the end, so an
// Update never waits for requests and requests never wait for an Update.
package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
)

// Proxy serves the listeners and routes of the last snapshot given to
// Update. It is safe for concurrent use.
type Proxy struct {
	cluster string
	log     *slog.Logger
	// served is what the listeners serve now: Update swaps it whole.
	served    atomic.Pointer[served]
	transport *upstream
	// pool holds the fast path's idle connections to targets; fast is
	// false when Config.DisableFastPath is set.
	pool *connPool
	fast bool
	// clientCheck is how often the fast path checks, while it waits for
	// a target, that the client is still there.
	clientCheck time.Duration
	// local forwards to targets in this proxy's cluster (the net/http
	// path's reverse proxy).
	local *localForwarder
	// peer, when set, carries requests for other clusters' targets to
	// their proxies; peerNext picks among a cluster's proxies in turn.
	peer     *peer.Client
	peerNext atomic.Uint64
	// lapsed holds the clusters whose leases the control plane last said
	// had lapsed (SetLapsed); their targets leave the pick.
	lapsed atomic.Pointer[map[string]bool]
	// delivery forwards requests peers hand over (PeerHandler).
	delivery *localForwarder
	// mirrors holds a slot per mirrored request in flight.
	mirrors chan struct{}
	// listen opens the socket of a bind (Addr "" is Config.BindAddress);
	// tests replace it to listen on ephemeral ports.
	listen func(b router.Bind) (net.Listener, error)
	// wildcard is set when Config.BindAddress is every interface. Then a
	// network address cannot be bound on a port the default bind also
	// serves: the default socket serves it, by the connection's local IP.
	wildcard bool

	// mu serializes Update, Addrs and Shutdown. The request path never
	// takes it.
	mu        sync.Mutex
	compiler  router.Compiler
	listeners map[router.Bind]portServer
	// certCache keeps parsed certificates between Updates.
	certCache certCache
	// keyExchange is Config.TLSKeyExchange.
	keyExchange []tls.CurveID
	shutdown    bool
	// drains counts listeners draining in the background after their bind
	// left the config; stopDrains cuts their drain short.
	drains     sync.WaitGroup
	drainCtx   context.Context
	stopDrains context.CancelFunc

	observability
}

// New returns a proxy with no listeners and an empty route table, at
// revision 0. It starts serving on the first Update.
func New(cfg Config) *Proxy {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	transport := newUpstream(cfg.Cluster)
	p := &Proxy{
		peer:        cfg.Peer,
		cluster:     cfg.Cluster,
		log:         log,
		transport:   transport,
		pool:        newConnPool(),
		fast:        !cfg.DisableFastPath,
		clientCheck: cmp.Or(cfg.test.clientCheck, clientCheckInterval),
		local:       newLocalForwarder(idleResponses{observeAttempts{transport}, newLimits(cfg).responseIdle}, log),
		mirrors:     make(chan struct{}, maxMirrorsInFlight),
		listen: func(b router.Bind) (net.Listener, error) {
			return net.Listen("tcp", net.JoinHostPort(cmp.Or(b.Addr, cfg.BindAddress), strconv.Itoa(int(b.Port))))
		},
		wildcard:    isWildcard(cfg.BindAddress),
		listeners:   map[router.Bind]portServer{},
		certCache:   certCache{},
		keyExchange: slices.Clone(cfg.TLSKeyExchange),
	}
	p.delivery = newDeliveryForwarder(idleResponses{observeAttempts{transport}, newLimits(cfg).responseIdle}, log)
	p.delivery.direct = p.deliverDirect
	p.local.direct = p.forwardDirect
	if p.peer != nil {
		transport.peer = p.peerRoundTrip
	}
	p.served.Store(&served{table: &router.Table{}})
	p.drainCtx, p.stopDrains = context.WithCancel(context.Background())
	p.initObservability(cfg)
	return p
}

// served is what the listeners serve, made from one snapshot: its route
// table, the workload identities of this cluster and the certificate index
// of each HTTPS bind. Update swaps in a new one whole, so a request sees
// one consistent set from its start to its end. It is never modified.
type served struct {
	table *router.Table
	// ids are this cluster's workloads by address, made from idsFrom (a
	// list the next snapshot shares needs no new ids).
	ids     identities
	idsFrom []model.WorkloadSet
	certs   map[router.Bind]*certIndex
	// certsFrom are the lists certs was made from, and certProblems what
	// it could not serve: lists the next snapshot shares need no new
	// index.
	certsFrom    certInputs
	certProblems []error
	// peers are the other clusters' proxies and what this proxy delivers
	// for them.
	peers *peerSet
	// logs are the access-log sinks of each service, by service name.
	logs map[string][]*accesslog.Logger
}

// Update compiles snap into a route table and swaps it in atomically:
// requests already in flight finish on the table they started with. If
// compilation fails, the table now serving stays and the error is returned.
// Target health follows the snapshot's target groups first: targets that
// stay keep their health, new ones start their checks.
//
// It then reconciles listeners: one per bind (address and port) in the
// table, of the bind's protocol — HTTP (HTTP/1.1 and h2c), HTTPS (TLS
// terminated with the certificate the client's SNI selects, then HTTP/1.1 or
// HTTP/2 by ALPN) or TLS passthrough (routed by SNI, not decrypted).
// Listeners whose bind is gone, or whose bind changed protocol, close
// gracefully. A listener that fails to bind is reported in the returned
// error while the rest of the config applies; the next Update tries to bind
// it again. When BindAddress is every interface, a network address on a
// port the default bind also serves is served by the default socket (see
// routeBind), which needs the two to agree on the protocol.
func (p *Proxy) Update(snap *model.Snapshot) error {
	received := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shutdown {
		return errors.New("proxy is shut down")
	}
	t, err := p.compile(snap)
	if err != nil {
		return fmt.Errorf("route table not updated: %w", err)
	}
	last := p.served.Load()
	in := certInputs{snap.Services, snap.Certificates, snap.Networks}
	certs, certProblems := last.certs, last.certProblems
	if !last.certsFrom.same(in) || certs == nil {
		certs, certProblems = p.certCache.compileCerts(snap)
	}
	peers := compilePeers(snap, p.cluster, p.served.Load().peers)
	if p.peer != nil {
		byAddr := map[string]string{}
		for cluster, addrs := range peers.byCluster {
			for _, a := range addrs {
				byAddr[a] = cluster
			}
		}
		p.peer.SetPeers(byAddr)
	}
	ids := last.ids
	if !model.SameList(last.idsFrom, snap.WorkloadSets) || last.ids == nil {
		ids = compileIdentities(snap, p.cluster)
	}
	p.served.Store(&served{table: t, ids: ids, idsFrom: snap.WorkloadSets, certs: certs, certsFrom: in, certProblems: certProblems, peers: peers, logs: p.sinks.update(snap)})
	p.log.Info("route table updated", "revision", t.Revision(), "services", len(snap.Services), "binds", t.Binds())
	for _, c := range t.Conflicts() {
		p.log.Warn("listener not served", "reason", c)
	}
	for _, e := range certProblems {
		p.log.Warn("certificate not served", "err", e)
	}
	err = p.reconcile(t)
	p.programmed(t, received)
	return err
}

// reconcile opens a listener for every socket the table needs that has
// none and closes every listener whose socket it does not need. p.mu must
// be held.
func (p *Proxy) reconcile(t *router.Table) error {
	want, errs := p.sockets(t)
	for b, l := range p.listeners {
		if want[b] == l.protocol() {
			continue
		}
		delete(p.listeners, b)
		// Free the socket now, so that a later Update can bind it again,
		// and let requests in flight finish in the background.
		l.stopAccepting()
		p.drains.Go(func() {
			ctx, cancel := context.WithTimeout(p.drainCtx, removedPortDrain)
			defer cancel()
			if err := l.drain(ctx); err != nil {
				p.log.Warn("listener closed before its requests finished", "bind", b, "err", err)
			}
		})
		p.log.Info("listener closing", "bind", b, "addr", l.address(), "protocol", l.protocol())
	}
	for _, b := range t.Binds() {
		proto, ok := want[b]
		if !ok || p.listeners[b] != nil {
			continue
		}
		l, err := p.open(b, proto)
		if err != nil {
			p.log.Error("listener failed to open", "bind", b, "err", err)
			errs = append(errs, fmt.Errorf("listener %s: %w", b, err))
			continue
		}
		p.listeners[b] = l
		p.log.Info("listener open", "bind", b, "addr", l.address(), "protocol", l.protocol())
	}
	return errors.Join(errs...)
}

// sockets returns the sockets t needs, with their protocols: one per bind,
// except that on a wildcard BindAddress a network address on a port the
// default bind also serves cannot be bound (Linux refuses it), so the
// default socket serves it. errs lists such binds whose protocol differs
// from the default socket's and so cannot be served.
func (p *Proxy) sockets(t *router.Table) (want map[router.Bind]model.Protocol, errs []error) {
	binds := t.Binds()
	want = make(map[router.Bind]model.Protocol, len(binds))
	for _, b := range binds {
		proto := t.Protocol(b)
		if def := t.Protocol(router.Bind{Port: b.Port}); b.Addr != "" && p.wildcard && def != "" {
			if def != proto {
				errs = append(errs, fmt.Errorf("listener %s: port %d is bound on every interface for %s, so %s cannot be served there", b, b.Port, def, proto))
			}
			continue
		}
		want[b] = proto
	}
	return want, errs
}

// routeBind returns the bind a connection accepted on the socket of bind b
// is routed by: b itself, except on a wildcard default socket, which also
// serves the binds of network addresses on its port (see sockets); those it
// tells apart by the connection's local IP.
func (p *Proxy) routeBind(t *router.Table, b router.Bind, localIP string) router.Bind {
	if b.Addr != "" || !p.wildcard || localIP == "" {
		return b
	}
	if own := (router.Bind{Addr: localIP, Port: b.Port}); t.Protocol(own) == t.Protocol(b) {
		return own
	}
	return b
}

// isWildcard reports whether addr binds every interface.
func isWildcard(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return addr == "" || err == nil && ip.IsUnspecified()
}

// localIP returns the IP address of a connection's local end, in canonical
// form (an IPv4-mapped address as IPv4), or "" when it has none.
func localIP(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	return ta.AddrPort().Addr().Unmap().String()
}

// Revision returns the snapshot revision of the route table now serving, or
// 0 before the first successful Update.
func (p *Proxy) Revision() int64 { return p.served.Load().table.Revision() }

// Addrs returns the address each open listener actually listens on, by the
// bind it serves. A bind served by the wildcard default socket has no entry
// of its own.
func (p *Proxy) Addrs() map[router.Bind]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[router.Bind]string, len(p.listeners))
	for b, l := range p.listeners {
		out[b] = l.address()
	}
	return out
}

// Shutdown stops every listener accepting and waits for the requests in
// flight, including those on listeners already closing after an Update, to
// finish. If ctx ends first, it closes the remaining connections and returns
// the context's error. Last it stops the health checks, writes out the access
// log and closes the admin listener. After Shutdown, Update fails.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.ready.Store(false)
	p.mu.Lock()
	p.shutdown = true
	listeners := p.listeners
	p.listeners = map[router.Bind]portServer{}
	p.mu.Unlock()

	errs := make([]error, 0, len(listeners)+1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for b, l := range listeners {
		l.stopAccepting()
		wg.Go(func() {
			if err := l.drain(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("listener %s: %w", b, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	drained := make(chan struct{})
	go func() {
		p.drains.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		p.stopDrains()
		<-drained
		errs = append(errs, fmt.Errorf("closing listeners: %w", ctx.Err()))
	}
	p.stopDrains()
	p.transport.CloseIdleConnections()
	p.pool.closeIdle(true)
	errs = append(errs, p.closeObservability(ctx))
	return errors.Join(errs...)
}

// serveHTTP is the request path of the listener on bind b.
func (p *Proxy) serveHTTP(b router.Bind, w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		// A TLS connection the fast path handed over reaches net/http
		// wrapped, so its state comes by the context.
		if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
			r2 := *r
			r2.TLS = st
			r = &r2
		}
	}
	sv := p.served.Load()
	x, w, r := p.begin(sv, b.Port, w, r)
	if x == nil {
		return
	}
	defer p.end(x)
	if r.ProtoMajor == 2 {
		if s, ok := r.Context().Value(streamStatsKey{}).(*streamStats); ok {
			// Deferred after end, so it runs first: the stream is reset
			// when the client cancelled it before its response ended.
			defer func() { s.done(r.Context().Err() != nil, p.log) }()
		}
	}
	if !validPseudoFields(r) || ambiguousPath(r.URL.Path) {
		x.failure = accesslog.MalformedRequest
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	t := sv.table
	if ip, ok := r.Context().Value(localIPKey{}).(string); ok {
		b = p.routeBind(t, b, ip)
	}
	if r.TLS != nil && t.Misdirected(b, r.TLS.ServerName, r.Host) {
		x.failure = accesslog.MisdirectedRequest
		w.WriteHeader(http.StatusMisdirectedRequest)
		return
	}
	route := t.Match(b, r)
	x.route = route
	if route == nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	p.serveRoute(b.Port, w, r, route)
}

// localIPKey is the context key of a connection's local IP address, set on
// the connections of a wildcard default socket only.
type localIPKey struct{}
