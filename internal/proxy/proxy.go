// Package proxy is the data plane: it serves a service network's HTTP
// traffic as the latest snapshot from the control plane says.
//
// It owns the listeners, the request path (match a route, pick a backend and
// a target, forward) and the atomic swap of compiled route tables. Compiling
// and matching live in proxy/router, the selection arithmetic in
// proxy/balancer. It must not talk to the control plane or the store (its
// caller feeds it snapshots through Update) and must not modify the
// snapshots it is given.
//
// The request path takes no locks: each request loads the current table
// from an atomic pointer and works on that immutable table to the end, so an
// Update never waits for requests and requests never wait for an Update.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
)

// Config configures a Proxy.
type Config struct {
	// Cluster is the cluster this proxy runs in. Targets of any other
	// cluster are reached through a peer hop to that cluster's proxy.
	Cluster string
	// BindAddress is the IP every listener binds on, such as "127.0.0.1";
	// empty binds every interface.
	BindAddress string
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
}

// Limits of the listeners' HTTP servers.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	// removedPortDrain bounds how long requests in flight on a listener
	// whose port left the config may take to finish before their
	// connections are closed.
	removedPortDrain = 30 * time.Second
)

// Proxy serves the listeners and routes of the last snapshot given to
// Update. It is safe for concurrent use.
type Proxy struct {
	cluster   string
	log       *slog.Logger
	table     atomic.Pointer[router.Table]
	transport *http.Transport
	// local forwards to targets in this proxy's cluster, peer to targets
	// in any other cluster.
	local, peer forwarder
	// listen opens the listener for a port of the model; tests replace it
	// to listen on ephemeral ports.
	listen func(port int32) (net.Listener, error)

	// mu serializes Update, Addrs and Shutdown. The request path never
	// takes it.
	mu        sync.Mutex
	compiler  router.Compiler
	listeners map[int32]*listener
	shutdown  bool
	// drains counts listeners draining in the background after their port
	// left the config; stopDrains cuts their drain short.
	drains     sync.WaitGroup
	drainCtx   context.Context
	stopDrains context.CancelFunc
}

// New returns a proxy with no listeners and an empty route table, at
// revision 0. It starts serving on the first Update.
func New(cfg Config) *Proxy {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	transport := newTransport()
	p := &Proxy{
		cluster:   cfg.Cluster,
		log:       log,
		transport: transport,
		local:     newLocalForwarder(transport, log),
		peer:      peerHop{log: log},
		listen: func(port int32) (net.Listener, error) {
			return net.Listen("tcp", net.JoinHostPort(cfg.BindAddress, strconv.Itoa(int(port))))
		},
		listeners: map[int32]*listener{},
	}
	p.table.Store(&router.Table{})
	p.drainCtx, p.stopDrains = context.WithCancel(context.Background())
	return p
}

// Update compiles snap into a route table and swaps it in atomically:
// requests already in flight finish on the table they started with. If
// compilation fails, the table now serving stays and the error is returned.
//
// It then reconciles listeners: it opens one HTTP/1.1 listener for every
// port with an HTTP listener in the snapshot's services and gracefully
// closes the listeners whose port is gone. A listener that fails to bind is
// reported in the returned error while the rest of the config applies; the
// next Update tries to bind it again.
func (p *Proxy) Update(snap *model.Snapshot) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shutdown {
		return errors.New("proxy is shut down")
	}
	t, err := p.compiler.Compile(snap)
	if err != nil {
		return fmt.Errorf("route table not updated: %w", err)
	}
	p.table.Store(t)
	p.log.Info("route table updated", "revision", t.Revision(), "services", len(snap.Services), "ports", t.Ports())
	p.warnUnserved(snap)
	return p.reconcile(t.Ports())
}

// warnUnserved logs, once per protocol, the listeners that the proxy does
// not serve yet.
func (p *Proxy) warnUnserved(snap *model.Snapshot) {
	counts := map[model.Protocol]int{}
	for i := range snap.Services {
		for _, l := range snap.Services[i].Listeners {
			if l.Protocol != model.ProtocolHTTP {
				counts[l.Protocol]++
			}
		}
	}
	for proto, n := range counts {
		p.log.Warn("listeners not served: protocol not supported yet", "protocol", proto, "listeners", n)
	}
}

// reconcile opens a listener for every port in ports that has none and
// closes every listener whose port is not in ports. p.mu must be held.
func (p *Proxy) reconcile(ports []int32) error {
	want := make(map[int32]bool, len(ports))
	for _, port := range ports {
		want[port] = true
	}
	for port, l := range p.listeners {
		if want[port] {
			continue
		}
		delete(p.listeners, port)
		// Free the port now, so that a later Update can bind it again,
		// and let requests in flight finish in the background.
		l.stopAccepting()
		p.drains.Go(func() {
			ctx, cancel := context.WithTimeout(p.drainCtx, removedPortDrain)
			defer cancel()
			if err := l.drain(ctx); err != nil {
				p.log.Warn("listener closed before its requests finished", "port", port, "err", err)
			}
		})
		p.log.Info("listener closing", "port", port, "addr", l.addr)
	}
	var errs []error
	for _, port := range ports {
		if p.listeners[port] != nil {
			continue
		}
		l, err := p.open(port)
		if err != nil {
			p.log.Error("listener failed to open", "port", port, "err", err)
			errs = append(errs, fmt.Errorf("listener on port %d: %w", port, err))
			continue
		}
		p.listeners[port] = l
		p.log.Info("listener open", "port", port, "addr", l.addr)
	}
	return errors.Join(errs...)
}

// Revision returns the snapshot revision of the route table now serving, or
// 0 before the first successful Update.
func (p *Proxy) Revision() int64 { return p.table.Load().Revision() }

// Addrs returns the address each open listener actually listens on, by the
// model port it serves.
func (p *Proxy) Addrs() map[int32]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int32]string, len(p.listeners))
	for port, l := range p.listeners {
		out[port] = l.addr
	}
	return out
}

// Shutdown stops every listener accepting and waits for the requests in
// flight, including those on listeners already closing after an Update, to
// finish. If ctx ends first, it closes the remaining connections and returns
// the context's error. After Shutdown, Update fails.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.shutdown = true
	listeners := p.listeners
	p.listeners = map[int32]*listener{}
	p.mu.Unlock()

	errs := make([]error, 0, len(listeners)+1)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for port, l := range listeners {
		l.stopAccepting()
		wg.Go(func() {
			if err := l.drain(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("listener on port %d: %w", port, err))
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
	return errors.Join(errs...)
}

// serveHTTP is the request path of the listener on port.
func (p *Proxy) serveHTTP(port int32, w http.ResponseWriter, r *http.Request) {
	route := p.table.Load().Match(port, r)
	switch {
	case route == nil:
		w.WriteHeader(http.StatusNotFound)
		return
	case route.Status != 0:
		w.WriteHeader(route.Status)
		return
	}
	// A backend with no weight, an invalid reference or a missing target
	// group answers 500, as the Gateway API requires.
	b := route.Pick()
	if b == nil || b.Group() == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	t := b.Group().Pick()
	if t == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if t.Cluster == p.cluster {
		p.local.forward(w, r, t)
	} else {
		p.peer.forward(w, r, t)
	}
}
