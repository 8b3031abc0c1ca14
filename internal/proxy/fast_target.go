package proxy

// The fast path's round trip with a target: the pick, the pooled
// connection, the request and the response relayed back.

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"syscall"
	"time"

	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/internal/proxy/router"
)

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
	// The request arrived moments ago: its time stands for the send's,
	// unless it went to the peer hop first.
	sent := x.start
	// An attempt the peer hop delivered to no target goes to another pick
	// (of any cluster), as the net/http path's retry step does.
	for unsent := 0; t.Cluster != p.cluster; unsent++ {
		sent = time.Time{}
		keep, aborted, again := fc.forwardPeer(t, ruleDeadline, keep, unsent < maxUnsent)
		if !again {
			return keep, aborted
		}
		t = b.Group().Pick()
		if code := p.forwardStep(x, b, t, fc.req.Host, fc.req.Path); code != 0 {
			return fc.answer(code, keep, true), false
		}
	}
	if sent.IsZero() {
		sent = time.Now()
	}
	tc, err := fc.roundTrip(t, ruleDeadline, sent)
	if err != nil {
		ruleExpired := isTimeout(err) && !ruleDeadline.IsZero() && !time.Now().Before(ruleDeadline)
		var code int
		code, x.failure = forwardFailure(err, ruleExpired, errors.Is(err, errClientGone))
		if code == statusClientClosed {
			// Nobody reads a response.
			x.rec.status = code
			p.log.Debug("client went away before the target answered", "target", t.Addr, "host", fc.req.Host, "path", fc.req.Path, "err", err)
			return false, false
		}
		if targetFault(x.failure) {
			t.Health.Observe(false)
			p.log.Warn("upstream request failed", "target", t.Addr, "host", fc.req.Host, "path", fc.req.Path, "err", err)
		} else {
			p.log.Debug("request failed by the client", "target", t.Addr, "host", fc.req.Host, "path", fc.req.Path, "err", err)
		}
		// The body may be partly sent: the connection cannot go on.
		return fc.answer(code, keep && fc.req.ContentLength == 0, false), false
	}
	resp := &fc.resp
	t.Health.Observe(resp.Code < 500)
	if bodyBuffered(resp, tc.br) && len(fc.respEdits) == 0 && fc.respHead+int(resp.ContentLength)+headSlack <= fc.bw.Available() {
		// The whole response goes from memory to the write buffer: it
		// ends when it was answered, as far as a clock can tell.
		fc.ended = x.answered
	} else if !bodyBuffered(resp, tc.br) {
		// A body still to come has the rule's timeouts or the request's
		// overall limit, not responseHeaderTimeout, and each wait for
		// more of it the response idle timeout.
		now := time.Now()
		if ruleDeadline.IsZero() {
			tc.deadlines.read(tc.conn, now, maxRequestDuration)
			tc.deadlines.write(tc.conn, now, maxRequestDuration)
		}
		if idle := p.limits.responseIdle; idle > 0 {
			tc.idle, tc.limit = idle, tc.deadlines.r
		}
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
	if tc.idle > 0 {
		// targetReader moved the read deadline: the next request sets
		// its own.
		tc.idle, tc.deadlines.r = 0, time.Time{}
	}
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

// headSlack bounds what writeResponseHead adds to a response head without
// edits: a status text for an empty reason, and "Connection: close".
const headSlack = 64

// bodyBuffered reports whether the whole body of resp is in br already.
func bodyBuffered(resp *h1.Response, br *bufio.Reader) bool {
	return resp.ContentLength >= 0 && int64(br.Buffered()) >= resp.ContentLength
}

// noTimeout stands for a rule without a timeout in min.
const noTimeout = time.Duration(1<<63 - 1)

func nonZero(d time.Duration) time.Duration {
	if d <= 0 {
		return noTimeout
	}
	return d
}

// roundTrip sends the request to t, body included, at now (the first
// attempt's time), and reads the final response head into fc.resp
// (passing 1xx responses on to the client). It
// notes the attempt in the exchange. A request without a body that fails on
// a pooled connection before any response byte (the target had closed it)
// is sent once more on a new connection.
func (fc *fastConn) roundTrip(t *router.Target, ruleDeadline, now time.Time) (*targetConn, error) {
	p, x := fc.s.p, &fc.x
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			now = time.Now()
		}
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
			err = fc.readResponse(tc, deadline)
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

// flushRequest sends the request written to c.bw, whose answer is read
// next: its last bytes go out with that read, which then waits for the
// answer without first trying to read (rawSocket.holdNextWrite). Only a
// Flush that writes is held: with nothing buffered (a body that ended on
// the buffer's end went out already), the hold would fall on the next
// request's first write.
func (c *targetConn) flushRequest() error {
	if c.raw != nil && c.bw.Buffered() > 0 && c.br.Buffered() == 0 {
		c.raw.holdNextWrite()
	}
	return c.bw.Flush()
}

// errClientGone is the error of an exchange whose client went away while
// the target had not answered yet.
var errClientGone = errors.New("client closed the connection before the target answered")

// awaitResponse waits until the target's response starts, or deadline.
// Unlike net/http, the fast path does not read from the client while the
// target works on its request, so while it waits it checks every
// clientCheck (the first time between half a clientCheck and one after
// the request: deadlines.check) that the client is still there, and gives up
// (errClientGone) when it is not: a long poll whose client left does not
// hold a target connection until the target answers. A TLS client that
// sends close_notify before closing is noticed when its response is
// written instead.
func (fc *fastConn) awaitResponse(tc *targetConn, deadline time.Time) error {
	interval := fc.s.p.clientCheck
	// The request was just sent: its time stands for now on the first
	// look, as the deadlines allow.
	for now := fc.x.sent; tc.br.Buffered() == 0; {
		if deadline.Sub(now) <= interval {
			tc.deadlines.exactRead(tc.conn, deadline)
			_, err := tc.br.Peek(1)
			return err
		}
		tc.deadlines.check(tc.conn, now, interval)
		if _, err := tc.br.Peek(1); err == nil || !isTimeout(err) {
			return err
		}
		if _, closed := peek(fc.conn); closed {
			return errClientGone
		}
		now = time.Now()
	}
	return nil
}

// readResponse reads the target's response head into fc.resp, by
// deadline. Informational responses (1xx but 101) go on to the client as
// they come.
func (fc *fastConn) readResponse(tc *targetConn, deadline time.Time) error {
	for {
		if err := fc.readResponseHead(tc, deadline); err != nil {
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

// readResponseHead reads a response head from tc into fc.resp: parsed
// where it lies in the read buffer when it is whole there (the common
// case), else read first, by deadline.
func (fc *fastConn) readResponseHead(tc *targetConn, deadline time.Time) error {
	br := tc.br
	buf, _ := br.Peek(br.Buffered())
	if n, ok := h1.ParseBufferedResponse(buf, &fc.resp); ok {
		_, _ = br.Discard(n)
		fc.respHead = n
		return nil
	}
	if !h1.HeadBuffered(br) {
		tc.deadlines.exactRead(tc.conn, deadline)
	}
	head, err := h1.ReadResponseHead(br, nil, maxHeaderBytes)
	if err != nil {
		return err
	}
	fc.respHead = len(head)
	return h1.ParseResponse(head, &fc.resp)
}

// stale reports whether err is how a request fails on a connection the
// target closed while it was idle.
func stale(err error) bool {
	return errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
