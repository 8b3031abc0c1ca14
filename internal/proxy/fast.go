package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/internal/proxy/router"
)

// The fast path serves the connections of HTTP (cleartext) listeners. It
// parses HTTP/1.1 requests itself (package h1) and forwards those whose
// route needs nothing but a weighted pick, a target and the rule's timeouts
// to HTTP/1.1 targets over pooled connections, on the connection's own
// goroutine: no http.Request, no header maps, no per-request goroutines.
// That is most of a service network's traffic, and it is what a
// general-purpose reverse proxy on net/http spends most of its time
// around.
//
// HTTP/2 connections (the h2c preface as the first bytes, or ALPN h2) go to
// the listener's HTTP/2 server (peer.HTTPServer), on this goroutine.
//
// Everything else goes to net/http, one connection at a time: the first
// request the fast path does not take (an upgrade, a body of unknown
// or large size, a malformed head, a route with filters, retries, session
// persistence or an HTTP/2, gRPC or TLS target group) hands its whole
// connection, the bytes already read included, to the listener's
// http.Server, which serves it and every later request on it. So both paths
// see exactly the bytes the client sent, and only one of them ever owns a
// connection.

// Connection states of the fast path, for draining.
const (
	connActive int32 = iota
	connIdle
	connClosed
)

// fastServer is the fast path of one HTTP listener.
type fastServer struct {
	p    *Proxy
	bind router.Bind
	// tls terminates TLS on an HTTPS listener's connections; nil on HTTP.
	tls *tls.Config
	// handoff feeds the listener's http.Server the connections the fast
	// path gives up; h2 serves the HTTP/2 ones (h2c prior knowledge,
	// ALPN h2).
	handoff *handoffListener
	h2      *peer.HTTPServer

	// idle hands a new connection to a goroutine that has served one and
	// waits for the next (work), rather than starting one: a goroutine
	// starts on a small stack, which a TLS handshake grows to 8-16 KiB,
	// copying it at each doubling. stopped ends the waits when the
	// listener closes.
	idle    chan *fastConn
	stopped chan struct{}
	// waiting counts the goroutines waiting on idle, at most maxWaiting
	// (maxIdleWorkers; tests lower it).
	waiting, maxWaiting atomic.Int32

	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	draining atomic.Bool
}

// workerIdle is how long a connection's goroutine waits for another
// connection after its own ended.
const workerIdle = 10 * time.Second

// maxIdleWorkers bounds the goroutines of a listener that wait for a
// connection, so that a burst of connections does not leave as many
// grown stacks behind it for workerIdle.
const maxIdleWorkers = 256

func newFastServer(p *Proxy, b router.Bind, addr net.Addr, tlsConfig *tls.Config, h2 *peer.HTTPServer) *fastServer {
	s := &fastServer{p: p, bind: b, tls: tlsConfig, handoff: newHandoffListener(addr), h2: h2, conns: map[*fastConn]struct{}{},
		idle: make(chan *fastConn), stopped: make(chan struct{})}
	s.maxWaiting.Store(maxIdleWorkers)
	return s
}

// serve accepts connections from ln until it is closed.
func (s *fastServer) serve(ln net.Listener) error {
	defer close(s.stopped)
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and go on, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.p.log.Warn("accept failed", "bind", s.bind, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		fc := s.newConn(newIdleConn(conn))
		if !s.track(fc) {
			conn.Close()
			continue
		}
		select {
		case s.idle <- fc:
		default:
			go s.work(fc)
		}
	}
}

// work serves fc, then the connections handed to it while it waits, until
// it has waited workerIdle for one, the listener is closed, or
// maxIdleWorkers others are waiting already.
func (s *fastServer) work(fc *fastConn) {
	wait := time.NewTimer(workerIdle)
	defer wait.Stop()
	for {
		fc.serve()
		fc = nil // not kept while waiting
		if s.waiting.Add(1) > s.maxWaiting.Load() {
			s.waiting.Add(-1)
			return
		}
		wait.Reset(workerIdle)
		select {
		case fc = <-s.idle:
		case <-wait.C:
		case <-s.stopped:
		}
		s.waiting.Add(-1)
		if fc == nil {
			return
		}
	}
}

func (s *fastServer) track(fc *fastConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	s.conns[fc] = struct{}{}
	return true
}

func (s *fastServer) untrack(fc *fastConn) {
	s.mu.Lock()
	delete(s.conns, fc)
	s.mu.Unlock()
}

// drain closes idle connections as they become idle, answers requests in
// flight with "Connection: close", and returns when no connection is left.
// If ctx ends first, it closes the rest and returns ctx's error.
func (s *fastServer) drain(ctx context.Context) error {
	s.draining.Store(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for fc := range s.conns {
			if fc.state.CompareAndSwap(connIdle, connClosed) {
				fc.conn.Close()
			}
		}
		left := len(s.conns)
		s.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for fc := range s.conns {
				fc.conn.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// fastConn is one client connection on the fast path. Its goroutine owns
// everything here but state.
type fastConn struct {
	s *fastServer
	// conn is the accepted connection, rw what requests are read from and
	// responses written to: conn itself, or the TLS connection over it.
	conn, rw net.Conn
	br       *bufio.Reader
	// bw is the response buffer while a request is served (getWriter),
	// nil between requests.
	bw *bufio.Writer
	// serverName is the server name (SNI) of a TLS connection.
	serverName string
	// proto is the X-Forwarded-Proto of the connection's requests;
	// fixedFields the header lines every request forwarded from the
	// connection carries (proto, port, identity), made with the workload
	// identities of fixedFrom (remade when the proxy's change: a pod's
	// identity may be published after its first connection).
	proto, fixedFields string
	fixedFrom          *served
	// sv is what serves the current request.
	sv *served
	// state is connActive while a request is read or served, connIdle
	// between requests; drain closes idle connections.
	state atomic.Int32
	// remote is the client's "ip:port", ip its IP; local the address it
	// connected to, localIP that address's IP on a wildcard socket (for
	// routeBind); port the listener's port in decimal.
	remote, ip, localIP, port string
	local                     net.Addr
	deadlines                 deadlines
	req                       h1.Request
	// edited is the request's header after the rule's header edits, nil
	// when it has none, and host its Host then; respEdits are the edits
	// of the response's header.
	edited    http.Header
	host      string
	respEdits []*router.HeaderEdit
	resp      h1.Response
	// respHead is the length of resp's head as received.
	respHead int
	x        exchange
	// ended is when the exchange ended, when forward knows it without
	// reading the clock; zero otherwise.
	ended time.Time
	// body is the text answer writes next: a refused request's message.
	body string
	ids  requestIDs
	// watch checks on the client while the peer hop works on its
	// request (forwardPeer).
	watch clientWatch
}

func (s *fastServer) newConn(conn net.Conn) *fastConn {
	fc := &fastConn{
		s:      s,
		conn:   conn,
		rw:     conn,
		proto:  "http",
		br:     bufio.NewReaderSize(conn, fastReadBuffer),
		remote: conn.RemoteAddr().String(),
		local:  conn.LocalAddr(),
		port:   strconv.Itoa(int(s.bind.Port)),
	}
	fc.ip, _, _ = net.SplitHostPort(fc.remote)
	if s.bind.Addr == "" && s.p.wildcard {
		fc.localIP = localIP(fc.local)
	}
	return fc
}

// setFixedFields makes the header lines that are the same for every request
// on the connection while the workload identities stay the same.
func (fc *fastConn) setFixedFields() {
	fc.fixedFrom = fc.sv
	var b strings.Builder
	addConnFields((*textFields)(&b), fc.proto, fc.port, fc.sv.identityHeader(remoteIP(fc.remote)))
	fc.fixedFields = b.String()
}

// serve serves requests until the connection ends or is handed to
// net/http.
func (fc *fastConn) serve() {
	s, p := fc.s, fc.s.p
	handedOff := false
	defer func() {
		s.untrack(fc)
		if !handedOff {
			fc.conn.Close()
		}
	}()
	if s.tls != nil {
		tc := tls.Server(fc.conn, s.tls)
		_ = tc.SetDeadline(time.Now().Add(p.limits.readHeader))
		if err := tc.Handshake(); err != nil {
			p.log.Debug("TLS handshake failed", "bind", s.bind, "remote", fc.remote, "err", err)
			return
		}
		fc.rw, fc.proto = tc, "https"
		st := tc.ConnectionState()
		fc.serverName = st.ServerName
		fc.br.Reset(tc)
		if st.NegotiatedProtocol == "h2" {
			handedOff = true
			fc.serveHTTP2("")
			return
		}
	}
	// last is when the connection's previous exchange ended: close enough
	// to now for the idle deadline, which is kept within 1 % anyway.
	last := time.Now()
	for first := true; ; first = false {
		fc.state.Store(connIdle)
		if s.draining.Load() {
			return
		}
		fc.deadlines.read(fc.rw, last, idleTimeout)
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		if !fc.state.CompareAndSwap(connIdle, connActive) {
			return
		}
		head, parsed := h1.ReadBufferedRequest(fc.br, &fc.req)
		if !parsed {
			if !h1.HeadBuffered(fc.br) {
				fc.deadlines.read(fc.rw, time.Now(), p.limits.readHeader)
			}
			var err error
			head, err = h1.ReadHead(fc.br)
			if errors.Is(err, h1.ErrUnsupported) {
				handedOff = fc.handoff("")
				return
			}
			if err != nil {
				return
			}
			if first && head == h2PrefaceHead {
				handedOff = true
				fc.serveHTTP2(head)
				return
			}
			if err := h1.ParseRequest(head, &fc.req); err != nil {
				handedOff = fc.handoff(head)
				return
			}
		}
		if fc.req.ContentLength > maxFastBody {
			handedOff = fc.handoff(head)
			return
		}
		fc.sv = p.served.Load()
		table := fc.sv.table
		bind := s.bind
		if fc.localIP != "" {
			bind = p.routeBind(table, bind, fc.localIP)
		}
		r := &fc.req
		if ambiguousPath(r.Path) || table.Misdirected(bind, fc.serverName, r.Host) {
			// net/http answers them: 400 for a path targets read in
			// different ways, 421 as on HTTP/2 connections.
			handedOff = fc.handoff(head)
			return
		}
		route := table.MatchRequest(bind, &router.Request{
			Host: r.Host, Method: r.Method, Path: r.Path, RawQuery: r.RawQuery, Header: (*requestFields)(r),
		})
		if route != nil && !plainRoute(route) {
			handedOff = fc.handoff(head)
			return
		}
		now := time.Now()
		if r.ContentLength > 0 {
			fc.deadlines.read(fc.rw, now, maxRequestDuration)
		}
		fc.deadlines.write(fc.rw, now, maxRequestDuration)
		if fc.bw == nil {
			fc.bw = getWriter(fc.rw)
		}
		keep := fc.exchange(bind, route, now)
		if fc.bw.Buffered() == 0 {
			// Idle connections hold no write buffer; a pipelined
			// response still in it waits for the next one.
			putWriter(fc.bw)
			fc.bw = nil
		}
		if !keep {
			return
		}
		last = fc.x.end
	}
}

// exchange serves the request just parsed, matched to route (nil when none
// matched), which arrived at start, and records it. It reports whether the
// connection can carry another request.
func (fc *fastConn) exchange(b router.Bind, route *router.Rule, start time.Time) (keep bool) {
	p := fc.s.p
	r := &fc.req
	x := &fc.x
	*x = exchange{
		start: start, id: fc.ids.next(), port: b.Port,
		method: r.Method, path: escapedPath(r.Target), proto: "HTTP/1.1", host: r.Host, userAgent: r.UserAgent,
		remote: fc.remote, local: fc.local, route: route, served: fc.sv,
	}
	keep = !r.Close
	fc.edited, fc.respEdits, fc.ended = nil, fc.respEdits[:0], time.Time{}
	aborted := false
	switch {
	case p.limits.maxBody > 0 && r.ContentLength > p.limits.maxBody:
		x.failure = accesslog.RequestBodyTooLarge
		keep = fc.answer(http.StatusRequestEntityTooLarge, false, false)
	case route == nil:
		keep = fc.answer(http.StatusNotFound, keep, true)
	case route.Auth != nil && !fc.authorize(route, b):
		keep = fc.answer(http.StatusForbidden, keep, true)
	case route.Status != 0:
		keep = fc.answer(route.Status, keep, true)
	default:
		keep, aborted = fc.forward(route, keep)
	}
	// Recorded before the last write, as on the net/http path: a client
	// that has the whole response finds it in the metrics.
	end := fc.ended
	if end.IsZero() {
		end = time.Now()
	}
	p.finishAt(x, aborted, end)
	if !keep || fc.s.draining.Load() {
		// The connection ends here: out with everything, pipelined
		// requests behind this one notwithstanding.
		fc.bw.Flush()
		return false
	}
	return fc.flush()
}

// authorize evaluates the auth policies of route for the request, which
// arrived on bind b, as the net/http path's authorize does. On a denial it
// records why and leaves the message for answer's body.
func (fc *fastConn) authorize(route *router.Rule, b router.Bind) bool {
	r := &fc.req
	req := fc.s.p.authRequest(fc.sv, route, r.Method, r.Path, r.RawQuery, (*requestFields)(r).Values, remoteIP(fc.remote), b.Port)
	res := route.Auth.Authorize(req)
	if res.Allowed {
		return true
	}
	fc.x.failure, fc.x.authDenied = accesslog.ClientAccessDenied, res.DeniedBy
	fc.body = res.Message(req) + "\n"
	return false
}

// escapedPath is the path of an origin-form target, as sent.
func escapedPath(target string) string {
	if i := strings.IndexByte(target, '?'); i >= 0 {
		return target[:i]
	}
	return target
}

// plainRoute reports whether the fast path can serve route: its filters
// and its backends' only edit headers, it has no retries or session
// persistence, and its target groups are spoken to in HTTP/1.1 without
// TLS (targets of other clusters through the peer hop: forwardPeer).
func plainRoute(route *router.Rule) bool {
	if route.Retry != nil || route.Session != nil || !headerEditsOnly(route.Filters) {
		return false
	}
	bs := route.Backends()
	for i := range bs {
		if !headerEditsOnly(bs[i].Filters) {
			return false
		}
		if g := bs[i].Group(); g != nil && (g.Protocol == model.ProtocolHTTPS || g.Version == model.HTTP2 || g.Version == model.GRPC) {
			return false
		}
	}
	return true
}

func headerEditsOnly(filters []router.Filter) bool {
	for i := range filters {
		if f := &filters[i]; f.RequestHeaders == nil && f.ResponseHeaders == nil {
			return false
		}
	}
	return true
}

// applyEdits applies the request header edits of filters to the request
// (fc.edited, made from its fields on the first edit) and collects the
// response header edits in fc.respEdits, as applyFilters does on the
// net/http path.
func (fc *fastConn) applyEdits(filters []router.Filter) {
	for i := range filters {
		f := &filters[i]
		if f.ResponseHeaders != nil {
			fc.respEdits = append(fc.respEdits, f.ResponseHeaders)
		}
		if f.RequestHeaders == nil {
			continue
		}
		if fc.edited == nil {
			fc.edited = make(http.Header, len(fc.req.Fields))
			for _, fl := range fc.req.Fields {
				if k := http.CanonicalHeaderKey(fl.Name); k != "Host" {
					fc.edited[k] = append(fc.edited[k], fl.Value)
				}
			}
			fc.host = fc.req.Host
		}
		f.RequestHeaders.Apply(fc.edited, &fc.host)
	}
}

// requestFields adapts a parsed request to router.Header.
type requestFields h1.Request

// Values returns every value of the fields named name, as
// http.Header.Values does.
func (r *requestFields) Values(name string) []string {
	var vs []string
	for _, f := range r.Fields {
		if equalFoldASCII(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

func (r *requestFields) Value(name string, i int) (string, bool) {
	for _, f := range r.Fields {
		if equalFoldASCII(f.Name, name) {
			if i == 0 {
				return f.Value, true
			}
			i--
		}
	}
	return "", false
}
