package proxy

// The per-request record: what the access log, the metrics and the
// forwarded headers need of one request, on either request path.

import (
	"context"
	"encoding/binary"
	"io"
	"math/bits"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
)

// exchange is the proxy's record of one request, from its arrival to its
// last response byte: what the access log, the metrics and the identity
// headers need. The request's handler goroutine owns it; the reverse proxy
// calls the transport, which fills in the attempt, on that goroutine too.
type exchange struct {
	// start is when the request arrived, end when finish recorded it.
	start, end time.Time
	id         string
	port       int32
	// served is what served the request: its table, identities and
	// certificates.
	served *served
	// ctx is the request's context as net/http made it, done when the
	// client goes; nil on the fast path.
	ctx context.Context
	// The request as the client sent it, for the access log: path is
	// escaped, remote is the client's address and port, local the address
	// it connected to.
	method, path, proto, host, userAgent, remote string
	local                                        net.Addr
	// route is the matched route, nil when none matched.
	route *router.Rule
	// target is the target picked, nil when nothing was forwarded; info
	// caches the rule data of its backend.
	target *router.Target
	info   *ruleInfo
	// attemptAddr is the address of the last attempt sent to a target,
	// sent when it was sent, answered when its response headers (or its
	// failure) came.
	attemptAddr    string
	sent, answered time.Time
	failure        accesslog.FailureReason
	// identity is the X-Trellis-Identity of a request from a known
	// workload; empty for anonymous callers.
	identity string
	// authDenied is the level whose auth policy refused the request
	// ("Network" or "Service"), or "".
	authDenied      string
	rec             recorder
	body            countingBody
	upgradeExpected bool
	// editor is serveRoute's response writer.
	editor responseEditor
}

type exchangeKey struct{}

// exchangeOf returns r's exchange, or nil for a request that did not come
// through a listener.
func exchangeOf(r *http.Request) *exchange {
	x, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return x
}

// begin starts the exchange of a request on the listener at port and
// returns the writer and request the rest of the request path uses. A
// request with too many header lines is answered 431 here, and x is nil.
func (p *Proxy) begin(sv *served, port int32, w http.ResponseWriter, r *http.Request) (x *exchange, _ http.ResponseWriter, _ *http.Request) {
	x = &exchange{
		start: time.Now(), id: newRequestID(), port: port, served: sv,
		method: r.Method, path: r.URL.EscapedPath(), proto: r.Proto, host: r.Host, remote: r.RemoteAddr,
	}
	x.local, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	x.ctx = r.Context()
	x.rec.ResponseWriter = w
	// The first values, as Header.Get finds them, without canonicalizing
	// canonical names again.
	if vs := r.Header["User-Agent"]; len(vs) > 0 {
		x.userAgent = vs[0]
	}
	if _, ok := r.Header["Upgrade"]; ok {
		x.upgradeExpected = upgradeTo(r.Header) != ""
	}
	if len(sv.ids) > 0 {
		// Parsing the client's address costs more than the rest of the
		// lookup: not when no workload has an identity.
		if w, ok := sv.identity(remoteIP(r.RemoteAddr)); ok {
			x.identity = w.header
		}
	}
	r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x))
	if r.Body != nil && r.Body != http.NoBody {
		body := r.Body
		if p.limits.maxBody > 0 {
			body = http.MaxBytesReader(w, body, p.limits.maxBody)
		}
		x.body.ReadCloser = body
		if p.limits.bodyIdle > 0 {
			x.body.idle, x.body.restore = p.limits.bodyIdle, x.start.Add(maxRequestDuration)
			if r.ProtoMajor == 1 {
				x.body.conn, _ = r.Context().Value(idleConnKey{}).(*idleConn)
			}
			if x.body.conn == nil {
				x.body.rc = http.NewResponseController(w)
			}
		}
		r.Body = &x.body
	}
	var refuse int
	switch {
	case headerLines(r.Header) > maxHeaderCount:
		x.failure, refuse = accesslog.HeaderCountExceeded, http.StatusRequestHeaderFieldsTooLarge
	case p.limits.maxBody > 0 && r.ContentLength > p.limits.maxBody:
		x.failure, refuse = accesslog.RequestBodyTooLarge, http.StatusRequestEntityTooLarge
	}
	if refuse != 0 {
		x.rec.Header().Set("Connection", "close")
		x.rec.WriteHeader(refuse)
		p.finish(x, false)
		return nil, nil, nil
	}
	return x, &x.rec, r
}

// end finishes x: it records the exchange in the metrics and the access
// log. It must be deferred directly, so that it also records a request
// whose handler panicked (the reverse proxy aborts a response that fails
// midway with http.ErrAbortHandler), and then lets the panic go on.
func (p *Proxy) end(x *exchange) {
	v := recover()
	p.finish(x, v != nil)
	if v != nil {
		panic(v)
	}
}

func (p *Proxy) finish(x *exchange, aborted bool) { p.finishAt(x, aborted, time.Now()) }

// finishAt is finish for an exchange that ended at now.
func (p *Proxy) finishAt(x *exchange, aborted bool, now time.Time) {
	x.end = now
	code := x.rec.status
	switch {
	case code != 0:
	case aborted && x.ctx != nil && x.ctx.Err() == context.Canceled:
		// The client went away midway; nothing is the target's fault.
		code = statusClientClosed
		if x.failure == "" {
			x.failure = accesslog.ClientClosedRequest
		}
	case aborted:
		code = http.StatusBadGateway
	case x.upgradeExpected && x.target != nil:
		// The reverse proxy writes a 101 on the hijacked connection.
		code = http.StatusSwitchingProtocols
	default:
		code = http.StatusOK
	}
	info := x.ruleInfo(p.metrics.unmatched)
	d := now.Sub(x.start)
	info.observe(code, d)
	var sinks []*accesslog.Logger
	if info != p.metrics.unmatched && x.served != nil {
		sinks = x.served.logs[info.service]
	}
	if p.accessLog == nil && len(sinks) == 0 {
		return
	}
	e := accesslog.Entry{
		StartTime:        x.start,
		Duration:         d,
		ListenerPort:     x.port,
		SourceCluster:    p.cluster,
		SourceIPPort:     x.remote,
		Destination:      x.local,
		Method:           x.method,
		Path:             x.path,
		Protocol:         x.proto,
		ResponseCode:     code,
		BytesReceived:    x.body.n.Load(),
		BytesSent:        x.rec.bytes,
		UserAgent:        x.userAgent,
		Host:             x.host,
		RequestID:        x.id,
		FailureReason:    x.failureReason(code, aborted),
		AuthDeniedReason: x.authDenied,
	}
	if info != p.metrics.unmatched {
		e.ServiceNetwork, e.Service, e.TargetGroup = info.network, info.service, info.targetGroup
	}
	if t := x.target; t != nil {
		e.DestinationCluster, e.TargetIPPort = t.Cluster, t.Addr
		if x.attemptAddr != "" {
			e.TargetIPPort = x.attemptAddr
		}
	}
	if !x.sent.IsZero() {
		e.RequestToTarget = x.answered.Sub(x.sent)
		e.ResponseFromTarget = now.Sub(x.answered)
	}
	if p.accessLog != nil {
		p.accessLog.Log(&e)
	}
	for _, l := range sinks {
		l.Log(&e)
	}
}

// failureReason names why the proxy answered a request itself, or "" when
// a target (or the route's configured response) did.
func (x *exchange) failureReason(code int, aborted bool) accesslog.FailureReason {
	switch {
	case x.failure != "":
		return x.failure
	case aborted:
		return accesslog.ResponseAborted
	case x.route == nil:
		return accesslog.NoMatchingRoute
	}
	return ""
}

// ruleInfo returns the per-rule data of the backend x was forwarded to, or
// of its route when it was not forwarded, or else fallback.
func (x *exchange) ruleInfo(fallback *ruleInfo) *ruleInfo {
	if x.info != nil {
		return x.info
	}
	if x.route == nil {
		return fallback
	}
	if x.target != nil {
		g := x.target.Group()
		bs := x.route.Backends()
		for i := range bs {
			if bs[i].Group() == g {
				if ri, ok := bs[i].Annotation.(*ruleInfo); ok {
					x.info = ri
					return ri
				}
			}
		}
	}
	if ri, ok := x.route.Annotation.(*ruleInfo); ok {
		return ri
	}
	return fallback
}

// recorder notes the status and the body bytes of the response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the flusher and hijacker.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes read, and bounds the wait for
// each read by the body idle timeout. The transport reads a request body
// on a goroutine of its own, so the count is atomic.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
	// idle, when set, is the body idle timeout. Over HTTP/1 conn bounds
	// each socket read by it while the body is read (idleConn); over
	// HTTP/2 rc sets the stream's read deadline before each read. Once the
	// body has ended or failed the read deadline goes back to restore
	// (the request's own limit), so that no idle deadline lingers while
	// the target works.
	idle    time.Duration
	restore time.Time
	conn    *idleConn
	rc      *http.ResponseController
	// failed is the error of a read that failed, nil until one does.
	failed atomic.Pointer[clientBodyError]
}

// Read marks an error other than the body's end as the client's
// (clientBodyError), so that a failed forward is not held against the
// target.
func (b *countingBody) Read(p []byte) (int, error) {
	switch {
	case b.conn != nil:
		b.conn.idle.Store(int64(b.idle))
	case b.rc != nil:
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil {
		// After a timeout the deadline stays past, so that net/http does
		// not wait for the rest of the body before it answers.
		restore := b.restore
		if isTimeout(err) {
			restore = time.Now()
		}
		switch {
		case b.conn != nil:
			b.conn.idle.Store(0)
			_ = b.conn.SetReadDeadline(restore)
		case b.rc != nil:
			_ = b.rc.SetReadDeadline(restore)
		}
		if err != io.EOF {
			ce := &clientBodyError{err}
			b.failed.CompareAndSwap(nil, ce)
			err = ce
		}
	}
	return n, err
}

// newRequestID returns a random UUID (version 4), the x-trellis-request-id
// of a request and its requestId in the access log.
func newRequestID() string {
	var s [36]byte
	putRequestID(s[:])
	return string(s[:])
}

// requestIDs hands out request IDs made in batches, each batch one string,
// for a connection's requests: one allocation for up to maxIDBatch
// requests instead of one each. Batches start at one ID and double, so a
// connection that carries one request makes one.
type requestIDs struct {
	ids   string
	batch int
}

const maxIDBatch = 16

func (r *requestIDs) next() string {
	if r.ids == "" {
		r.batch = min(max(2*r.batch, 1), maxIDBatch)
		var b [maxIDBatch * 36]byte
		for i := range r.batch {
			putRequestID(b[36*i : 36*i+36])
		}
		r.ids = string(b[:36*r.batch])
	}
	id := r.ids[:36]
	r.ids = r.ids[36:]
	return id
}

// putRequestID writes a new request ID into s.
func putRequestID(s []byte) {
	hi, lo := rand.Uint64(), rand.Uint64()
	// Bytes 6 and 8 of the 16 carry the version (4) and the variant
	// (RFC 9562).
	hi = hi&^(0xf0<<48) | 0x40<<48
	lo = lo&^0xc0 | 0x80
	putUUID(s, hi, lo)
}

// putUUID writes the UUID whose 16 bytes are hi's and then lo's, each
// from its lowest byte, as text (8-4-4-4-12 hex digits) into s: eight
// digits at a time (hexDigits8), not one byte at a time.
func putUUID(s []byte, hi, lo uint64) {
	_ = s[35]
	h, l := bits.ReverseBytes64(hi), bits.ReverseBytes64(lo)
	mid := hexDigits8(uint32(h))
	last := hexDigits8(uint32(l >> 32))
	binary.BigEndian.PutUint64(s[0:], hexDigits8(uint32(h>>32)))
	binary.BigEndian.PutUint32(s[9:], uint32(mid>>32))
	binary.BigEndian.PutUint32(s[14:], uint32(mid))
	binary.BigEndian.PutUint32(s[19:], uint32(last>>32))
	binary.BigEndian.PutUint32(s[24:], uint32(last))
	binary.BigEndian.PutUint64(s[28:], hexDigits8(uint32(l)))
	s[8], s[13], s[18], s[23] = '-', '-', '-', '-'
}

// hexDigits8 returns the eight lower-case hex digits of v, the first in
// the highest byte: its nibbles spread one to a byte, then each made a
// digit at once ('0' + n, and 'a' - '0' - 10 more where n > 9, which is
// where n + 6 carries into the byte's high nibble).
func hexDigits8(v uint32) uint64 {
	x := uint64(v)
	x = (x | x<<16) & 0x0000ffff0000ffff
	x = (x | x<<8) & 0x00ff00ff00ff00ff
	x = (x | x<<4) & 0x0f0f0f0f0f0f0f0f
	letters := (x + 0x0606060606060606) >> 4 & 0x0101010101010101
	return x + 0x3030303030303030 + letters*('a'-'0'-10)
}
