package peer

// The HTTP/2 client of h2client.go for a proxy's own targets (HTTP2 and
// GRPC target groups): h2c with prior knowledge, or TLS with ALPN h2, the
// target's certificate not verified (as Lattice does: the control plane
// named the target by its address) and no client certificate. Requests go
// out as net/http's transport would send them, with the caller writing
// its HEADERS and one read loop per connection (see h2client.go).

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// TargetOptions configure a TargetTransport.
type TargetOptions struct {
	// TLS dials the targets with TLS (ALPN h2), else over plain TCP (h2c).
	TLS bool
	// DialTimeout bounds a new connection, TLS handshake included, and
	// KeepAlive is its TCP keep-alive period.
	DialTimeout, KeepAlive time.Duration
	// IdleTimeout closes a connection without streams for that long (0:
	// h2client's default).
	IdleTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response's head once
	// the request's head was sent (0: none).
	ResponseHeaderTimeout time.Duration
	// MaxConns bounds the connections to one target; more than one is
	// dialed while requests run concurrently (up to connsPerPeer) and
	// while every connection has as many streams as the target allows
	// (0: targetMaxConns).
	MaxConns int
}

// targetMaxConns is the default bound of the connections to one target:
// a target allowing one stream per connection serves that many requests
// at once, the others wait for a stream.
const targetMaxConns = 64

// TargetTransport is an http.RoundTripper to HTTP/2 targets, the request
// URL's host being the target's address. It is safe for concurrent use.
type TargetTransport struct {
	pool *h2Pool
}

// NewTargetTransport returns a transport to HTTP/2 targets.
func NewTargetTransport(o TargetOptions) *TargetTransport {
	p := &h2Pool{readIdle: h2ReadIdle, pingTimeout: h2PingTimeout, writeTimeout: h2WriteTimeout,
		idleTimeout: h2IdleTimeout, peers: map[string]*h2Peer{}, scheme: "http",
		spread: connsPerPeer, maxConns: targetMaxConns, headerTimeout: o.ResponseHeaderTimeout, replay: true, awaitSettings: true}
	if o.IdleTimeout > 0 {
		p.idleTimeout = o.IdleTimeout
	}
	if o.MaxConns > 0 {
		p.maxConns = o.MaxConns
		p.spread = min(p.spread, o.MaxConns)
	}
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: o.KeepAlive}
	p.dialer = func(ctx context.Context, addr string, _ *tls.Certificate) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
	if o.TLS {
		p.scheme = "https"
		p.dialer = func(ctx context.Context, addr string, _ *tls.Certificate) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
			if net.ParseIP(host) == nil {
				cfg.ServerName = host
			}
			td := &tls.Dialer{NetDialer: d, Config: cfg}
			conn, err := td.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
				conn.Close()
				return nil, fmt.Errorf("target %s: negotiated %q, not h2", addr, p)
			}
			return conn, nil
		}
	}
	return &TargetTransport{pool: p}
}

// RoundTrip sends r to the target its URL names and returns the response
// once its head arrived. A request the target refused unprocessed (a
// GOAWAY below its stream, REFUSED_STREAM) is sent again on another
// connection when its body was small enough to keep; else the error says
// so (Unsent).
func (t *TargetTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL == nil || r.URL.Host == "" {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("target request: no host in the URL")
	}
	addr := r.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		port := "80"
		if t.pool.scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(addr, port)
	}
	resp, err := t.pool.roundTrip(r, addr, nil)
	if resp != nil {
		resp.Request = r
	}
	return resp, err
}

// CloseIdleConnections closes the connections without streams.
func (t *TargetTransport) CloseIdleConnections() { t.pool.closeIdle(0) }

// errHeaderTimeout ends a request whose response head did not come in time.
var errHeaderTimeout error = headerTimeoutError{}

type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// maxReplay is the largest request body kept to send again.
const maxReplay = 64 << 10

var replayPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// replaySource is a request body that keeps what it read, up to
// maxReplay bytes, so that a request refused unprocessed can be sent
// again: each attempt reads it through its own replayBody, which reads
// what was kept, then the rest of the body. Closing an attempt's body
// leaves the body open for the next attempt (the read under way, if
// any, is left to end, as the client's body arrives or its request
// ends) until done says no attempt comes.
type replaySource struct {
	rc io.ReadCloser

	mu      sync.Mutex
	kept    *[]byte // nil once given up, or freed
	eof     bool
	reading bool // a read of rc is under way
	final   bool // done: no other attempt comes
	broken  bool // rc was closed
	cur     *replayBody
	changed chan struct{} // closed when an attempt's body closes or a read ends
}

// replayBody is one attempt's view of a replaySource.
type replayBody struct {
	src    *replaySource
	pos    int // in kept
	closed bool
}

func newReplaySource(rc io.ReadCloser) *replaySource {
	src := &replaySource{rc: rc, kept: replayPool.Get().(*[]byte), changed: make(chan struct{})}
	src.cur = &replayBody{src: src}
	return src
}

// signalLocked wakes replay.
func (src *replaySource) signalLocked() {
	close(src.changed)
	src.changed = make(chan struct{})
}

func (b *replayBody) Read(p []byte) (int, error) {
	src := b.src
	src.mu.Lock()
	if b.closed {
		src.mu.Unlock()
		return 0, errBodyClosed
	}
	if src.kept != nil && b.pos < len(*src.kept) {
		n := copy(p, (*src.kept)[b.pos:])
		b.pos += n
		if src.final && b.pos == len(*src.kept) {
			src.releaseLocked()
		}
		src.mu.Unlock()
		return n, nil
	}
	if src.eof {
		src.mu.Unlock()
		return 0, io.EOF
	}
	src.reading = true
	src.mu.Unlock()
	n, err := src.rc.Read(p)
	src.mu.Lock()
	src.reading = false
	if src.kept != nil {
		if len(*src.kept)+n > maxReplay || src.final {
			src.releaseLocked()
		} else {
			*src.kept = append(*src.kept, p[:n]...)
			b.pos = len(*src.kept)
		}
	}
	if err == io.EOF {
		src.eof = true
	}
	src.signalLocked()
	src.mu.Unlock()
	return n, err
}

func (b *replayBody) Close() error {
	src := b.src
	src.mu.Lock()
	if b.closed {
		src.mu.Unlock()
		return nil
	}
	b.closed = true
	src.signalLocked()
	closeNow := src.final && !src.broken
	if closeNow {
		src.broken = true
	}
	src.mu.Unlock()
	if closeNow {
		return src.rc.Close()
	}
	return nil
}

func (src *replaySource) releaseLocked() {
	if src.kept != nil {
		*src.kept = (*src.kept)[:0]
		replayPool.Put(src.kept)
		src.kept = nil
	}
}

// done says no other attempt comes: what was kept is freed once the
// attempt read it, and the body closes with the attempt's.
func (src *replaySource) done() {
	src.mu.Lock()
	src.final = true
	if src.kept != nil && src.cur.pos == len(*src.kept) {
		src.releaseLocked()
	}
	closeNow := src.cur.closed && !src.broken
	if closeNow {
		src.broken = true
	}
	src.mu.Unlock()
	if closeNow {
		src.rc.Close()
	}
}

// again returns the body of another attempt after one whose stream never
// started its body: the last attempt's body is left, closed (its Close
// does nothing).
func (src *replaySource) again() *replayBody {
	src.mu.Lock()
	defer src.mu.Unlock()
	src.cur.closed = true
	src.cur = &replayBody{src: src, pos: src.cur.pos}
	return src.cur
}

// replay returns the body of another attempt, once the last attempt's
// body was closed and its read ended, or nil when there can be none: more
// than maxReplay bytes read, or ctx ended.
func (src *replaySource) replay(ctx context.Context) *replayBody {
	src.mu.Lock()
	defer src.mu.Unlock()
	for !src.cur.closed || src.reading {
		ch := src.changed
		src.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			src.mu.Lock()
			return nil
		}
		src.mu.Lock()
	}
	if src.broken || src.kept == nil {
		return nil
	}
	src.cur = &replayBody{src: src}
	return src.cur
}
