package peer

// The HTTP/2 client of h2client.go for a proxy's own targets (HTTP2 and
// GRPC target groups): h2c with prior knowledge, or TLS with ALPN h2, the
// target's certificate not verified (as Lattice does: the control plane
// named the target by its address) and no client certificate. Requests go
// out as net/http's transport would send them, with the caller writing
// its HEADERS and one read loop per connection (see h2client.go).

import (
	"bytes"
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
		spread: connsPerPeer, maxConns: targetMaxConns, headerTimeout: o.ResponseHeaderTimeout, replay: true}
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

// replayBody is a request body that keeps what it read, up to maxReplay
// bytes, so that a request refused unprocessed can be sent again.
type replayBody struct {
	rc io.ReadCloser
	cl int64 // the declared length, -1 unknown

	mu   sync.Mutex
	kept *[]byte // nil once given up
	n    int64   // bytes read
	eof  bool
}

func newReplayBody(rc io.ReadCloser, cl int64) *replayBody {
	if cl == 0 {
		cl = -1
	}
	b := &replayBody{rc: rc, cl: cl}
	if cl <= maxReplay {
		b.kept = replayPool.Get().(*[]byte)
	}
	return b
}

func (b *replayBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	if b.kept != nil {
		if len(*b.kept)+n > maxReplay {
			b.releaseLocked()
		} else {
			*b.kept = append(*b.kept, p[:n]...)
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	b.mu.Unlock()
	return n, err
}

func (b *replayBody) Close() error { return b.rc.Close() }

func (b *replayBody) releaseLocked() {
	if b.kept != nil {
		*b.kept = (*b.kept)[:0]
		replayPool.Put(b.kept)
		b.kept = nil
	}
}

// done frees what b kept: the request will not be sent again.
func (b *replayBody) done() {
	b.mu.Lock()
	b.releaseLocked()
	b.mu.Unlock()
}

// replay returns a body to send again, reading what b kept, or nil when b
// did not keep its whole body.
func (b *replayBody) replay() *replayBody {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.kept == nil || !(b.eof || b.cl >= 0 && b.n == b.cl) {
		return nil
	}
	// What was kept stays with the new body's reader (not pooled again).
	saved := *b.kept
	b.kept = nil
	return newReplayBody(io.NopCloser(bytes.NewReader(saved)), b.cl)
}
