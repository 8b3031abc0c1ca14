package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"trellis.dev/trellis/internal/model"
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
// Everything else goes to net/http, one connection at a time: the first
// request the fast path does not take (an upgrade, h2c, a body of unknown
// or large size, a malformed head, a route with filters, retries, session
// persistence or an HTTP/2, gRPC or TLS target group) hands its whole
// connection, the bytes already read included, to the listener's
// http.Server, which serves it and every later request on it. So both paths
// see exactly the bytes the client sent, and only one of them ever owns a
// connection.

// clientCheckInterval is how often the fast path checks, while it waits for
// a target's response, that the client is still there (awaitResponse).
const clientCheckInterval = 2 * time.Second

// maxFastBody is the largest request body the fast path forwards. It sends
// a body before it reads the response, so a larger one, which a target may
// answer before reading, goes to net/http, which does both at once.
const maxFastBody = 64 << 10

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
	// path gives up.
	handoff *handoffListener

	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	draining atomic.Bool
}

func newFastServer(p *Proxy, b router.Bind, addr net.Addr, tlsConfig *tls.Config) *fastServer {
	return &fastServer{p: p, bind: b, tls: tlsConfig, handoff: newHandoffListener(addr), conns: map[*fastConn]struct{}{}}
}

// serve accepts connections from ln until it is closed.
func (s *fastServer) serve(ln net.Listener) error {
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
		fc := s.newConn(conn)
		if !s.track(fc) {
			conn.Close()
			continue
		}
		go fc.serve()
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
	x         exchange
	// body is the text answer writes next: a refused request's message.
	body string
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
		fc.serverName = tc.ConnectionState().ServerName
		fc.br.Reset(tc)
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			handedOff = fc.handoff("")
			return
		}
	}
	// last is when the connection's previous exchange ended: close enough
	// to now for the idle deadline, which is kept within 1 % anyway.
	last := time.Now()
	for {
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
		if !h1.HeadBuffered(fc.br) {
			fc.deadlines.read(fc.rw, time.Now(), p.limits.readHeader)
		}
		head, err := h1.ReadHead(fc.br)
		if errors.Is(err, h1.ErrUnsupported) {
			handedOff = fc.handoff("")
			return
		}
		if err != nil {
			return
		}
		if err := h1.ParseRequest(head, &fc.req); err != nil || fc.req.ContentLength > maxFastBody {
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
		if table.Misdirected(bind, fc.serverName, r.Host) {
			// net/http answers it, as it does on HTTP/2 connections.
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

// writers recycles the fast path's response buffers: a connection holds
// one only while it serves a request (or has responses of a pipeline
// unwritten), so idle keep-alive connections cost their read buffer alone.
var writers sync.Pool

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, fastWriteBuffer)
}

func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writers.Put(bw)
}

// handoff gives the connection to the listener's http.Server, which reads
// head (the request head the fast path read, if any) and then the rest as
// if it had read it all itself. It reports whether the server took it.
func (fc *fastConn) handoff(head string) bool {
	fc.s.p.metrics.handoffs.Inc()
	if fc.bw != nil {
		err := fc.bw.Flush()
		putWriter(fc.bw)
		fc.bw = nil
		if err != nil {
			return false
		}
	}
	_ = fc.rw.SetDeadline(time.Time{})
	fc.deadlines = deadlines{}
	if tc, ok := fc.rw.(*tls.Conn); ok && head == "" && fc.br.Buffered() == 0 {
		// Nothing read yet (an HTTP/2 client): net/http gets the TLS
		// connection itself.
		return fc.s.handoff.hand(tc)
	}
	var r io.Reader = fc.br
	if head != "" {
		r = io.MultiReader(strings.NewReader(head), fc.br)
	}
	rc := &replayConn{Conn: fc.rw, r: r}
	if tc, ok := fc.rw.(*tls.Conn); ok {
		st := tc.ConnectionState()
		rc.tls = &st
	}
	return fc.s.handoff.hand(rc)
}

// exchange serves the request just parsed, matched to route (nil when none
// matched), which arrived at start, and records it. It reports whether the
// connection can carry another request.
func (fc *fastConn) exchange(b router.Bind, route *router.Rule, start time.Time) (keep bool) {
	p := fc.s.p
	r := &fc.req
	x := &fc.x
	*x = exchange{
		start: start, id: newRequestID(), port: b.Port,
		method: r.Method, path: escapedPath(r.Target), proto: "HTTP/1.1", host: r.Host, userAgent: r.UserAgent,
		remote: fc.remote, local: fc.local, route: route,
	}
	keep = !r.Close
	fc.edited, fc.respEdits = nil, fc.respEdits[:0]
	aborted := false
	switch {
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
	p.finish(x, aborted)
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
	req := fc.s.p.authRequest(fc.sv, r.Method, r.Path, r.RawQuery, (*requestFields)(r).Values, remoteIP(fc.remote), b.Port)
	res := route.Auth.Authorize(req)
	if res.Allowed {
		return true
	}
	fc.x.failure, fc.x.authDenied = accesslog.ClientAccessDenied, res.DeniedBy
	fc.body = res.Message(req) + "\n"
	return false
}

// answer writes a response of its own into the connection's buffer: no
// body, or fc.body as text (which it clears). unread is set when the
// request's body is still to be read: it is discarded, so that the
// connection can carry the next request. It reports whether it can.
func (fc *fastConn) answer(code int, keep, unread bool) bool {
	if unread && fc.req.ContentLength > 0 {
		n, err := fc.br.Discard(int(fc.req.ContentLength))
		fc.x.body.n.Add(int64(n))
		keep = keep && err == nil
	}
	keep = keep && !fc.s.draining.Load()
	fc.x.rec.status = code
	w := fc.bw
	w.WriteString("HTTP/1.1 ")
	writeStatus(w, code, nil)
	body := fc.body
	fc.body = ""
	if body != "" {
		w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n")
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if fc.req.Method != http.MethodHead {
		w.WriteString(body)
		fc.x.rec.bytes = int64(len(body))
	}
	return keep
}

// flush writes out the responses so far unless the client has pipelined
// another request, which will: a pipeline's responses go out together. It
// reports whether the write succeeded.
func (fc *fastConn) flush() bool {
	if fc.br.Buffered() > 0 {
		return true
	}
	return fc.bw.Flush() == nil
}

// forward picks a backend and a target for the request and exchanges it
// with the target. It reports whether the client connection can carry
// another request, and whether the response was cut off midway.
func (fc *fastConn) forward(route *router.Rule, keep bool) (_, aborted bool) {
	p, x := fc.s.p, &fc.x
	fc.applyEdits(route.Filters)
	b := route.Pick()
	if b == nil || b.Group() == nil {
		return fc.answer(p.forwardStep(x, b, nil, fc.req.Host, fc.req.Path), keep, true), false
	}
	fc.applyEdits(b.Filters)
	t := b.Group().Pick()
	if code := p.forwardStep(x, b, t, fc.req.Host, fc.req.Path); code != 0 {
		return fc.answer(code, keep, true), false
	}

	// The rule's timeouts bound the exchange with the target; without them
	// the target has responseHeaderTimeout to answer and the request's
	// overall limit to finish.
	var ruleDeadline time.Time
	if d := min(nonZero(route.RequestTimeout), nonZero(route.BackendTimeout)); d < noTimeout {
		ruleDeadline = x.start.Add(d)
	}
	tc, err := fc.roundTrip(t, ruleDeadline)
	if err != nil {
		ruleExpired := isTimeout(err) && !ruleDeadline.IsZero() && !time.Now().Before(ruleDeadline)
		var code int
		code, x.failure = forwardFailure(err, ruleExpired, errors.Is(err, errClientGone))
		if code == statusClientClosed {
			// Nobody reads a response.
			x.rec.status = code
			p.log.Debug("client went away before the target answered", "target", t.Addr, "host", fc.req.Host, "path", fc.req.Path)
			return false, false
		}
		t.Health.Observe(false)
		p.log.Warn("upstream request failed", "target", t.Addr, "host", fc.req.Host, "path", fc.req.Path, "err", err)
		// The body may be partly sent: the connection cannot go on.
		return fc.answer(code, keep && fc.req.ContentLength == 0, false), false
	}
	resp := &fc.resp
	t.Health.Observe(resp.Code < 500)
	if ruleDeadline.IsZero() && !bodyBuffered(resp, tc.br) {
		// A body still to come has the request's overall limit, not
		// responseHeaderTimeout.
		now := time.Now()
		tc.deadlines.read(tc.conn, now, maxRequestDuration)
		tc.deadlines.write(tc.conn, now, maxRequestDuration)
	}

	bodyless := h1.Bodyless(fc.req.Method, resp.Code)
	delimited := bodyless || resp.Chunked || resp.ContentLength >= 0
	keep = keep && delimited && !fc.s.draining.Load()
	fc.x.rec.status = resp.Code
	fc.writeResponseHead(resp, keep, fc.respEdits)
	var n int64
	switch {
	case bodyless:
	case resp.Chunked:
		n, err = h1.CopyChunked(fc.bw, tc.br, fc.bw)
	case resp.ContentLength >= 0:
		n, err = h1.CopyN(fc.bw, tc.br, resp.ContentLength, fc.bw)
	default:
		n, err = h1.CopyToEOF(fc.bw, tc.br, fc.bw)
	}
	fc.x.rec.bytes = n
	if err != nil {
		tc.conn.Close()
		p.log.Debug("response cut off", "target", t.Addr, "host", fc.req.Host, "path", fc.req.Path, "err", err)
		return false, true
	}
	if delimited && !resp.Close {
		p.pool.put(tc, x.answered)
	} else {
		tc.conn.Close()
	}
	return keep, false
}

// bodyBuffered reports whether the whole body of resp is in br already.
func bodyBuffered(resp *h1.Response, br *bufio.Reader) bool {
	return resp.ContentLength >= 0 && int64(br.Buffered()) >= resp.ContentLength
}

// deadlines are a connection's read and write deadlines as last set. The
// limits that apply to every request (idle, header, response header and
// whole-request timeouts) are kept within 1% of their length rather than
// exactly, so that a busy connection updates its timers about once a
// second rather than several times per request.
type deadlines struct {
	r, w time.Time
}

func (d *deadlines) read(c net.Conn, now time.Time, timeout time.Duration) {
	if want := now.Add(timeout); moved(d.r, want, timeout) {
		d.r = want
		_ = c.SetReadDeadline(want)
	}
}

func (d *deadlines) write(c net.Conn, now time.Time, timeout time.Duration) {
	if want := now.Add(timeout); moved(d.w, want, timeout) {
		d.w = want
		_ = c.SetWriteDeadline(want)
	}
}

// exactRead sets the read deadline to t.
func (d *deadlines) exactRead(c net.Conn, t time.Time) {
	if !d.r.Equal(t) {
		d.r = t
		_ = c.SetReadDeadline(t)
	}
}

// exact sets both deadlines to t: a rule's timeout.
func (d *deadlines) exact(c net.Conn, t time.Time) {
	if !d.r.Equal(t) || !d.w.Equal(t) {
		d.r, d.w = t, t
		_ = c.SetDeadline(t)
	}
}

// moved reports whether a deadline at have is off by more than 1% of
// timeout from want.
func moved(have, want time.Time, timeout time.Duration) bool {
	return want.Sub(have).Abs() > timeout/100
}

// noTimeout stands for a rule without a timeout in min.
const noTimeout = time.Duration(1<<63 - 1)

func nonZero(d time.Duration) time.Duration {
	if d <= 0 {
		return noTimeout
	}
	return d
}

// roundTrip sends the request to t, body included, and reads the final
// response head into fc.resp (passing 1xx responses on to the client). It
// notes the attempt in the exchange. A request without a body that fails on
// a pooled connection before any response byte (the target had closed it)
// is sent once more on a new connection.
func (fc *fastConn) roundTrip(t *router.Target, ruleDeadline time.Time) (*targetConn, error) {
	p, x := fc.s.p, &fc.x
	for attempt := 0; ; attempt++ {
		now := time.Now()
		deadline := now.Add(responseHeaderTimeout)
		if !ruleDeadline.IsZero() && ruleDeadline.Before(deadline) {
			deadline = ruleDeadline
		}
		tc := p.pool.get(t.Addr, now, fc.req.ContentLength > 0)
		pooled := tc != nil
		x.attemptAddr, x.sent = t.Addr, now
		var err error
		if !pooled {
			tc, err = p.pool.dial(t.Addr, deadline)
		}
		if err == nil {
			if ruleDeadline.IsZero() {
				tc.deadlines.write(tc.conn, now, responseHeaderTimeout)
			} else {
				tc.deadlines.exact(tc.conn, deadline)
			}
			err = fc.writeRequest(tc)
		}
		if err == nil {
			err = fc.awaitResponse(tc, deadline)
		}
		if err == nil {
			if !h1.HeadBuffered(tc.br) {
				tc.deadlines.exactRead(tc.conn, deadline)
			}
			err = fc.readResponse(tc)
		}
		x.answered = time.Now()
		if err == nil {
			return tc, nil
		}
		if tc != nil {
			tc.conn.Close()
		}
		if pooled && attempt == 0 && fc.req.ContentLength == 0 && stale(err) && tc.br.Buffered() == 0 && !errors.Is(err, errClientGone) {
			continue
		}
		return nil, err
	}
}

// errClientGone is the error of an exchange whose client went away while
// the target had not answered yet.
var errClientGone = errors.New("client closed the connection before the target answered")

// awaitResponse waits until the target's response starts, or deadline.
// Unlike net/http, the fast path does not read from the client while the
// target works on its request, so while it waits it checks every
// clientCheck that the client is still there, and gives up
// (errClientGone) when it is not: a long poll whose client left does not
// hold a target connection until the target answers. A TLS client that
// sends close_notify before closing is noticed when its response is
// written instead.
func (fc *fastConn) awaitResponse(tc *targetConn, deadline time.Time) error {
	interval := fc.s.p.clientCheck
	// The request was just sent: its time stands for now on the first
	// look, as the deadlines allow.
	now := fc.x.sent
	for ; tc.br.Buffered() == 0; now = time.Now() {
		if deadline.Sub(now) <= interval {
			tc.deadlines.exactRead(tc.conn, deadline)
			_, err := tc.br.Peek(1)
			return err
		}
		tc.deadlines.read(tc.conn, now, interval)
		if _, err := tc.br.Peek(1); err == nil || !isTimeout(err) {
			return err
		}
		if _, closed := peek(fc.conn); closed {
			return errClientGone
		}
	}
	return nil
}

// readResponse reads the target's response head into fc.resp. Informational
// responses (1xx but 101) go on to the client as they come.
func (fc *fastConn) readResponse(tc *targetConn) error {
	for {
		head, err := h1.ReadResponseHead(tc.br, nil, maxHeaderBytes)
		if err != nil {
			return err
		}
		if err := h1.ParseResponse(head, &fc.resp); err != nil {
			return err
		}
		switch c := fc.resp.Code; {
		case c == http.StatusSwitchingProtocols:
			return errors.New("target switched protocols unasked")
		case c < 200:
			fc.writeResponseHead(&fc.resp, true, nil)
			if err := fc.bw.Flush(); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// stale reports whether err is how a request fails on a connection the
// target closed while it was idle.
func stale(err error) bool {
	return errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// writeRequest sends the request head, with the fields the forwarding
// rules (headers.go) add, and its body.
func (fc *fastConn) writeRequest(tc *targetConn) error {
	r, x, w := &fc.req, &fc.x, tc.bw
	host := r.Host
	if fc.edited != nil {
		host = fc.host
	}
	w.WriteString(r.Method)
	w.WriteByte(' ')
	w.WriteString(r.Target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if fc.edited != nil {
		writeEditedFields(w, fc.edited, fc.ip)
	} else {
		fc.writeFields(w)
	}
	// The body's framing is the proxy's: no edit or Connection option
	// changes it.
	if _, ok := (*requestFields)(r).Value("Content-Length", 0); ok {
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(r.ContentLength, 10))
		w.WriteString("\r\n")
	}
	addRequestFields((*wireFields)(w), host, x.id, x.ruleInfo(nil))
	if fc.fixedFrom != fc.sv {
		fc.setFixedFields()
	}
	w.WriteString(fc.fixedFields)
	w.WriteString("\r\n")
	if r.ContentLength > 0 {
		n, err := h1.CopyN(w, fc.br, r.ContentLength, w)
		x.body.n.Add(n)
		if err != nil {
			return err
		}
	}
	return w.Flush()
}

// writeFields writes the client's header fields that go on to the target
// and X-Forwarded-For.
func (fc *fastConn) writeFields(w *bufio.Writer) {
	r := &fc.req
	writeField(w, "X-Forwarded-For", forwardedFor((*requestFields)(r).Values("X-Forwarded-For"), fc.ip))
	trailers := false
	for _, f := range r.Fields {
		if dropOnForward(f.Name) || namedIn(f.Name, r.ConnectionTokens) {
			trailers = trailers || len(f.Name) == 2 && strings.EqualFold(f.Name, "TE") && hasToken(f.Value, "trailers")
			continue
		}
		writeField(w, f.Name, f.Value)
	}
	if trailers {
		w.WriteString("Te: trailers\r\n")
	}
}

// writeEditedFields is writeFields for a header the rule's edits changed.
func writeEditedFields(w *bufio.Writer, h http.Header, ip string) {
	writeField(w, "X-Forwarded-For", forwardedFor(h["X-Forwarded-For"], ip))
	var tokens []string
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			tokens = append(tokens, strings.Trim(t, " \t"))
		}
	}
	for k, vs := range h {
		if dropOnForward(k) || namedIn(k, tokens) {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	if takesTrailers(h["Te"]) {
		w.WriteString("Te: trailers\r\n")
	}
}

func writeField(w *bufio.Writer, name, value string) {
	w.WriteString(name)
	w.WriteString(": ")
	w.WriteString(value)
	w.WriteString("\r\n")
}

// writeResponseHead writes resp's head to the client without its
// hop-by-hop fields, edited by edits in order, closing the connection
// after it unless keep.
func (fc *fastConn) writeResponseHead(resp *h1.Response, keep bool, edits []*router.HeaderEdit) {
	w := fc.bw
	w.WriteString("HTTP/1.1 ")
	writeStatus(w, resp.Code, resp.Reason)
	if len(edits) > 0 {
		writeEditedResponse(w, resp, edits)
	}
	for _, f := range resp.Fields {
		if len(edits) > 0 && !equalFoldBytes(f.Name, "Content-Length") {
			// Only the framing is not the edits'.
			continue
		}
		if hopByHop(f.Name) && !(resp.Chunked && equalFoldBytes(f.Name, "Trailer")) || namedInBytes(f.Name, resp.ConnectionTokens) {
			continue
		}
		w.Write(f.Name)
		w.WriteString(": ")
		w.Write(f.Value)
		w.WriteString("\r\n")
	}
	if resp.Chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

// writeEditedResponse writes the fields of resp but its framing
// (Content-Length, Transfer-Encoding) and hop-by-hop ones, after edits.
func writeEditedResponse(w *bufio.Writer, resp *h1.Response, edits []*router.HeaderEdit) {
	h := make(http.Header, len(resp.Fields))
	for _, f := range resp.Fields {
		if hopByHop(f.Name) && !(resp.Chunked && equalFoldBytes(f.Name, "Trailer")) || namedInBytes(f.Name, resp.ConnectionTokens) {
			continue
		}
		k := http.CanonicalHeaderKey(string(f.Name))
		h[k] = append(h[k], string(f.Value))
	}
	for _, e := range edits {
		e.Apply(h, nil)
	}
	for k, vs := range h {
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
}

// writeStatus writes a status line's code and reason: the given one, or
// the code's standard text.
func writeStatus(w *bufio.Writer, code int, reason []byte) {
	var b [3]byte
	w.Write(strconv.AppendInt(b[:0], int64(code), 10))
	w.WriteByte(' ')
	if len(reason) > 0 {
		w.Write(reason)
	} else {
		w.WriteString(http.StatusText(code))
	}
	w.WriteString("\r\n")
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
// TLS.
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
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

func (r *requestFields) Value(name string, i int) (string, bool) {
	for _, f := range r.Fields {
		if strings.EqualFold(f.Name, name) {
			if i == 0 {
				return f.Value, true
			}
			i--
		}
	}
	return "", false
}

// replayConn is a connection handed to net/http: its reads return the bytes
// the fast path already read first. tls is the state of the TLS connection
// it wraps, which net/http cannot see through it; the listener's
// ConnContext passes it on (tlsStateKey).
type replayConn struct {
	net.Conn
	r   io.Reader
	tls *tls.ConnectionState
}

// tlsStateKey is the context key of a handed-off TLS connection's state.
type tlsStateKey struct{}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite lets net/http half-close the connection before closing it
// after an error response, so that the client reads the response rather
// than a reset.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// handoffListener is the net.Listener an http.Server serves the fast
// path's handed-off connections from.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the server; it reports false, and closes c, when the
// server is closed.
func (l *handoffListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
