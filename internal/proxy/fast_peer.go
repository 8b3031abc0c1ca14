package proxy

// The fast path's peer hop: a request for a target of another cluster goes
// to the peer client from the fast path itself, as the net/http path sends
// it (the same header, the same transport chain), rather than handing the
// connection to net/http.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/internal/proxy/router"
)

// forwardPeer exchanges the request with t, a target of another cluster,
// through the peer hop, and relays the response. It
// reports whether the client connection can carry another request, and
// whether the response was cut off midway. With mayRepick, a request
// without a body that the hop delivered to no target is not answered:
// again reports that it may go to another pick.
func (fc *fastConn) forwardPeer(t *router.Target, ruleDeadline time.Time, keep, mayRepick bool) (_, aborted, again bool) {
	p, x, r := fc.s.p, &fc.x, &fc.req
	deadline := ruleDeadline
	if deadline.IsZero() {
		deadline = x.start.Add(maxRequestDuration)
	}
	// One context bounds the exchange: its deadline, and the client
	// leaving or the response idling (each noted where it is seen).
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	// Nothing reads from the client while the peer works on the request:
	// check every clientCheck that it is still there, as awaitResponse
	// does, so that a long poll whose client left does not hold a stream.
	watch := &fc.watch
	watch.start(fc.conn, p.clientCheck, cancel)
	req := (&http.Request{
		Method: r.Method,
		URL:    &url.URL{Scheme: "http", Host: t.Addr, Path: r.Path, RawPath: escapedPath(r.Target), RawQuery: r.RawQuery},
		Proto:  "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: fc.peerHeader(), Host: r.Host, RemoteAddr: fc.remote,
	}).WithContext(ctx)
	if fc.edited != nil {
		req.Host = fc.host
	}
	var body *peerBody
	if r.ContentLength > 0 {
		body = &peerBody{br: fc.br, conn: fc.rw, x: x, idle: p.limits.bodyIdle, left: r.ContentLength}
		req.Body, req.ContentLength = body, r.ContentLength
	}
	// The attempt as observeAttempts sees those of the net/http path:
	// timed for the access log, its outcome told to the target's health.
	sent := time.Now()
	resp, err := p.peerSend(req, t, x)
	x.attemptAddr, x.sent, x.answered = t.Addr, sent, time.Now()
	watch.stop()
	if err != nil {
		if _, reason := forwardFailure(err, false, ctx.Err() == context.Canceled); targetFault(reason) {
			t.Health.Observe(false)
		}
	} else {
		t.Health.Observe(resp.StatusCode < 500)
	}
	if body != nil {
		if !body.done.Load() {
			// The transport may still read the client's connection: it
			// is not read again.
			keep = false
		} else {
			// Its reads moved the read deadline.
			fc.deadlines.r = time.Time{}
		}
	}
	if err != nil && mayRepick && body == nil && ctx.Err() == nil && unsentByHop(err) {
		p.log.Debug("peer hop delivered to no target: another pick", "cluster", t.Cluster, "target", t.Addr, "err", err)
		return keep, false, true
	}
	if err != nil {
		clientGone := watch.gone.Load()
		ruleExpired := !ruleDeadline.IsZero() && !time.Now().Before(ruleDeadline)
		var code int
		code, x.failure = forwardFailure(err, ruleExpired, clientGone)
		if code == statusClientClosed {
			x.rec.status = code
			p.log.Debug("client went away before the target answered", "target", t.Addr, "host", r.Host, "path", r.Path, "err", err)
			return false, false, false
		}
		p.log.Warn("upstream request failed", "target", t.Addr, "host", r.Host, "path", r.Path, "err", err)
		return fc.answer(code, keep, false), false, false
	}
	if idle := p.limits.responseIdle; idle > 0 && !peer.Buffered(resp.Body) {
		// Each read of the body has the response idle timeout, as
		// idleResponses gives it on the net/http path (a body already
		// whole in memory waits for nothing).
		resp.Body = newIdleBody(resp.Body, idle, func(error) { cancel() })
	}
	defer resp.Body.Close()
	bodyless := h1.Bodyless(r.Method, resp.StatusCode)
	chunked := !bodyless && (resp.ContentLength < 0 || len(resp.Trailer) > 0)
	keep = keep && !fc.s.draining.Load()
	x.rec.status = resp.StatusCode
	fc.writePeerResponseHead(resp, bodyless, chunked, keep)
	var n int64
	switch {
	case bodyless:
	case chunked:
		n, err = fc.copyChunked(resp)
	default:
		n, err = fc.bw.ReadFrom(resp.Body)
	}
	x.rec.bytes = n
	if err != nil {
		p.log.Debug("response cut off", "target", t.Addr, "host", r.Host, "path", r.Path, "err", err)
		return false, true, false
	}
	return keep, false, false
}

// peerBody is the body of a request sent through the hop, which the
// HTTP/2 transport reads in a goroutine of its own: the ContentLength bytes
// after the head on the client's connection, each wait for them bounded by
// the body idle timeout, their failures the client's (clientBodyError).
// done is set once all were read; until then the connection's reader is
// the transport's.
type peerBody struct {
	br   *bufio.Reader
	conn net.Conn
	x    *exchange
	idle time.Duration
	left int64
	done atomic.Bool
}

func (b *peerBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if b.idle > 0 && b.br.Buffered() == 0 {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.idle))
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	b.x.body.n.Add(int64(n))
	if b.left == 0 {
		b.done.Store(true)
		return n, nil
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, &clientBodyError{err}
	}
	return n, nil
}

func (b *peerBody) Close() error { return nil }

// peerHeader is the header the request goes on with: the client's (after
// the rule's edits) without hop-by-hop fields, and the forwarding fields,
// as setForwardedHeaders makes them on the net/http path.
func (fc *fastConn) peerHeader() http.Header {
	r, x := &fc.req, &fc.x
	in, host := fc.edited, fc.host
	var out http.Header
	if in == nil {
		// Straight from the fields, each value's slice a part of one
		// array; in keeps only what forwardHeader and forwardedFor read
		// of the client's (usually nothing: no map).
		host = r.Host
		out = make(http.Header, len(r.Fields)+addedFields+1)
		vals := make([]string, len(r.Fields))
		for i, f := range r.Fields {
			k := http.CanonicalHeaderKey(f.Name)
			switch k {
			case "Host", "Content-Length":
				continue
			case "Connection", "Te", "Upgrade", "X-Forwarded-For":
				if in == nil {
					in = make(http.Header, 4)
				}
				in[k] = append(in[k], f.Value)
			}
			if vs, ok := out[k]; ok {
				out[k] = append(vs, f.Value)
				continue
			}
			vals[i] = f.Value
			out[k] = vals[i : i+1 : i+1]
		}
	} else {
		out = make(http.Header, len(in)+addedFields+1)
		for k, vs := range in {
			if k != "Content-Length" {
				out[k] = vs
			}
		}
	}
	forwardHeader(in, out)
	if v, ok := forwardedFor(forwardedForMode(x), in["X-Forwarded-For"], fc.ip); ok {
		out["X-Forwarded-For"] = []string{v}
	}
	if _, ok := out["User-Agent"]; !ok {
		// As the reverse proxy does: no User-Agent of the transport's.
		out["User-Agent"] = []string{""}
	}
	hf := &headerFields{h: out}
	addConnFields(hf, fc.proto, fc.port, fc.sv.identityHeader(remoteIP(fc.remote)))
	addRequestFields(hf, host, x.id, x.ruleInfo(nil))
	return out
}

// writePeerResponseHead writes the head of resp, an HTTP/2 response, in
// HTTP/1.1: its fields but hop-by-hop ones, after the rule's edits, framed
// by Content-Length or chunked (with its trailers declared), closing the
// connection after it unless keep.
func (fc *fastConn) writePeerResponseHead(resp *http.Response, bodyless, chunked, keep bool) {
	w := fc.bw
	w.WriteString("HTTP/1.1 ")
	writeStatus(w, resp.StatusCode, nil)
	h := resp.Header
	if len(fc.respEdits) > 0 {
		h = h.Clone()
		for _, e := range fc.respEdits {
			e.Apply(h, nil)
		}
	}
	for k, vs := range h {
		if k == "Content-Length" || k == "Transfer-Encoding" || hopByHop(k) {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	switch {
	case chunked:
		w.WriteString("Transfer-Encoding: chunked\r\n")
		if len(resp.Trailer) > 0 {
			names := make([]string, 0, len(resp.Trailer))
			for k := range resp.Trailer {
				names = append(names, k)
			}
			writeField(w, "Trailer", strings.Join(names, ", "))
		}
	case !bodyless && resp.ContentLength >= 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(resp.ContentLength, 10))
		w.WriteString("\r\n")
	case bodyless && resp.StatusCode >= 200 && resp.StatusCode != http.StatusNoContent:
		// A HEAD or 304 response tells the length of what it does not send.
		for _, v := range resp.Header["Content-Length"] {
			writeField(w, "Content-Length", v)
		}
	}
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

// copyChunked relays a response body of unknown length (or with trailers)
// in chunks, each written out as it comes, as the reverse proxy flushes
// such responses; then the trailers.
func (fc *fastConn) copyChunked(resp *http.Response) (int64, error) {
	buf := peerBuffers.Get()
	defer peerBuffers.Put(buf)
	cw := httputil.NewChunkedWriter(fc.bw)
	var n int64
	for {
		m, rerr := resp.Body.Read(buf)
		if m > 0 {
			n += int64(m)
			if _, err := cw.Write(buf[:m]); err != nil {
				return n, err
			}
			if err := fc.bw.Flush(); err != nil {
				return n, err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return n, rerr
		}
	}
	cw.Close()
	for k, vs := range resp.Trailer {
		for _, v := range vs {
			writeField(fc.bw, k, v)
		}
	}
	_, err := fc.bw.WriteString("\r\n")
	return n, err
}

// clientWatch cancels an exchange whose client went away: it peeks at the
// client's connection every interval until stopped. A connection keeps
// one for all its requests (fastConn.watch): its timer is made once.
type clientWatch struct {
	mu      sync.Mutex
	timer   *time.Timer
	conn    net.Conn
	every   time.Duration
	cancel  context.CancelFunc
	stopped bool
	// gone is set when the client was found gone, before cancel.
	gone atomic.Bool
}

// start watches conn every interval for an exchange that cancel ends.
func (w *clientWatch) start(conn net.Conn, every time.Duration, cancel context.CancelFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn, w.every, w.cancel, w.stopped = conn, every, cancel, false
	w.gone.Store(false)
	if w.timer == nil {
		w.timer = time.AfterFunc(every, w.check)
	} else {
		w.timer.Reset(every)
	}
}

// check looks at the connection once, and again after the interval while
// the watch goes on. (A look left over from an earlier exchange of the
// connection looks at the same client.)
func (w *clientWatch) check() {
	w.mu.Lock()
	conn, cancel, stopped := w.conn, w.cancel, w.stopped
	w.mu.Unlock()
	if stopped {
		return
	}
	if _, closed := peek(conn); closed {
		w.gone.Store(true)
		cancel()
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(w.every)
	}
}

func (w *clientWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.cancel = nil
	w.timer.Stop()
}

// peerBuffers recycles copyChunked's buffers.
var peerBuffers bufferPool
