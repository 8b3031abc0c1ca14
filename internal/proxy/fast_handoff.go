package proxy

// The fast path's handoff: a connection the fast path gives up goes to the
// listener's http.Server with the bytes already read.

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"trellis.dev/trellis/internal/proxy/h1"
)

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
	rc := &replayConn{Conn: fc.rw, r: h1.NewGuard(r, guardMaxHead)}
	if tc, ok := fc.rw.(*tls.Conn); ok {
		st := tc.ConnectionState()
		rc.tls = &st
	}
	return fc.s.handoff.hand(rc)
}

// h2PrefaceHead is the start of the HTTP/2 client preface (RFC 9113
// §3.4) up to its empty line, which the fast path reads as a request head.
const h2PrefaceHead = "PRI * HTTP/2.0\r\n\r\n"

// serveHTTP2 serves the connection with the listener's HTTP/2 server, on
// this goroutine (the server's reader of the connection) until it ends:
// head is what the fast path consumed of the preface ("" on a TLS
// connection that negotiated h2, of which nothing was read), and fc.br may
// hold what followed. The connection is no longer the fast path's: drain
// leaves it to the HTTP/2 server's GOAWAY.
func (fc *fastConn) serveHTTP2(head string) {
	fc.s.p.metrics.handoffs.Inc()
	fc.s.untrack(fc)
	_ = fc.rw.SetDeadline(time.Time{})
	var c net.Conn = fc.rw
	if n := fc.br.Buffered(); head != "" || n > 0 {
		buffered, _ := fc.br.Peek(n)
		c = &prefixConn{Conn: fc.rw, pre: append([]byte(head), buffered...)}
	}
	fc.br = nil
	fc.s.h2.ServeConn(c)
}

// prefixConn is a connection whose reads return pre first: the bytes the
// fast path read before it gave the connection away.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
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
