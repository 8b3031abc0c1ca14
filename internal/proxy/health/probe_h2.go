package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTP/2 checks (prior knowledge on TCP, or h2 by ALPN over TLS) run as
// streams of a connection kept per address and check, net/http's own
// HTTP/2 client connection (http.Transport.NewClientConn). What a target
// can make the checker hold is bounded: the check's timeout ends its
// stream, a response head is at most maxCheckHead, a body is read up to
// maxCheckBody, and the connection's reads are counted (wireConn): past
// h2CheckBudget bytes during a check, or h2IdleBudget between checks (a
// flood of SETTINGS or PING frames), the connection ends. A protocol
// error, a GOAWAY or a failed check drop it; the next check dials again.

const (
	// h2CheckBudget bounds the bytes a target sends on its HTTP/2 check
	// connection during one check: a head, a body up to maxCheckBody
	// and its flow control, with room for TLS and frame overhead.
	h2CheckBudget = 256 << 10
	// h2IdleBudget bounds what it sends between two checks: room for a
	// few SETTINGS, PING or GOAWAY frames.
	h2IdleBudget = 4 << 10
	// h2WriteTimeout ends a connection on which a write makes no
	// progress (a target that does not read its PING answers).
	h2WriteTimeout = 10 * time.Second
	// tlsSessions bounds each TLS session cache (one per ALPN): a
	// reconnect to one of that many targets resumes its session.
	tlsSessions = 4096
)

// newTLSConfig returns the TLS of HTTPS checks: like Lattice, no
// validation of the target's certificate (it is the target's own, often
// self-signed), and a cache of sessions so that a new connection to a
// target checked before resumes (no certificate exchange or signature).
func newTLSConfig(alpn ...string) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify: true,
		NextProtos:         alpn,
		ClientSessionCache: tls.NewLRUClientSessionCache(tlsSessions),
	}
}

// newH2Transport returns the transport whose NewClientConn opens the
// HTTP/2 check connections on connections it dials itself (dialH2Wire,
// dialH2TLS), never through an HTTP proxy.
func (c *Checker) newH2Transport() *http.Transport {
	var p http.Protocols
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{
		DialContext:            c.dialH2Wire,
		DialTLSContext:         c.dialH2TLS,
		Protocols:              &p,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxCheckHead,
		HTTP2: &http.HTTP2Config{
			MaxReadFrameSize:              16 << 10,
			MaxDecoderHeaderTableSize:     4 << 10,
			MaxReceiveBufferPerConnection: 64 << 10,
			MaxReceiveBufferPerStream:     64 << 10,
			WriteByteTimeout:              h2WriteTimeout,
		},
	}
}

// wireKey is the context key under which dialH2 hears of the wireConn
// the transport dialed.
type wireKey struct{}

// dialH2Wire dials the TCP connection of an HTTP/2 check, its reads
// counted against a budget.
func (c *Checker) dialH2Wire(ctx context.Context, _, addr string) (net.Conn, error) {
	deadline, _ := ctx.Deadline()
	tcp, err := c.dialTCP(ctx, addr, deadline)
	if err != nil {
		return nil, err
	}
	// Closed with a reset whoever closes it: the checker, or the client
	// connection on a protocol error or a read past the budget.
	tcp.SetLinger(0)
	w := &wireConn{TCPConn: tcp, limited: true}
	w.budget.Store(h2CheckBudget)
	if slot, ok := ctx.Value(wireKey{}).(**wireConn); ok {
		*slot = w
	}
	return w, nil
}

// dialH2TLS dials the TLS connection of an HTTPS HTTP/2 check: one that
// does not agree on h2 by ALPN is no HTTP/2 target.
func (c *Checker) dialH2TLS(ctx context.Context, network, addr string) (net.Conn, error) {
	nc, err := c.dialH2Wire(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	w := nc.(*wireConn)
	tc := tls.Client(w, c.tlsH2)
	if err := tc.HandshakeContext(ctx); err != nil {
		w.Close()
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		w.Close()
		return nil, fmt.Errorf("target did not agree on h2 by ALPN (it chose %q)", p)
	}
	return tc, nil
}

// dialH2 opens an HTTP/2 connection for ch's checks and makes it ch's.
func (c *Checker) dialH2(ctx context.Context, ch *check) (*keptConn, error) {
	scheme := "http"
	if ch.sp.https {
		scheme = "https"
	}
	var w *wireConn
	cc, err := c.h2.NewClientConn(context.WithValue(ctx, wireKey{}, &w), scheme, ch.key.addr)
	if err != nil {
		return nil, err
	}
	if w == nil { // cannot be: the transport dials with c's functions
		cc.Close()
		return nil, fmt.Errorf("health check connection to %s not dialed by the checker", ch.key.addr)
	}
	kc := &keptConn{Conn: w, tcp: w.TCPConn, wire: w, cc: cc, counted: c.count(true)}
	ch.conn.Store(kc)
	if c.ctx.Err() != nil {
		c.drop(ch, kc)
		return nil, c.ctx.Err()
	}
	return kc, nil
}

// usableH2 reports whether kc can carry the next check: open, not going
// away, with a stream to spare, and within its budget since the last.
func (kc *keptConn) usableH2() bool {
	return kc.wire.budget.Load() >= 0 && kc.cc.Err() == nil && kc.cc.Available() > 0
}

// probeH2 runs one HTTP/2 check of ch: a GET of the check path as a
// stream of ch's kept connection, or of a new one. A kept connection that
// fails the request before an answer (the target closed it, or went away
// meanwhile) is replaced once within the same check. It returns nil when
// the target answered in time with a healthy status code.
func (c *Checker) probeH2(ch *check) error {
	sp := ch.sp
	if sp.requestURI == "" {
		return fmt.Errorf("healthCheck.path: %q is not a request target", sp.pathQuery)
	}
	ctx, cancel := context.WithTimeout(c.ctx, sp.timeout)
	defer cancel()
	kc := ch.conn.Load()
	if kc != nil && !kc.usableH2() {
		c.drop(ch, kc)
		kc = nil
	}
	for reused := kc != nil; ; reused = false {
		if kc == nil {
			var err error
			if kc, err = c.dialH2(ctx, ch); err != nil {
				if c.ctx.Err() != nil {
					return c.ctx.Err()
				}
				return err
			}
		}
		kc.wire.budget.Store(h2CheckBudget)
		code, answered, err := kc.exchangeH2(ctx, ch)
		if err != nil && reused && !answered && ctx.Err() == nil {
			c.drop(ch, kc)
			kc = nil
			continue
		}
		if err == nil && kc.counted && kc.usableH2() {
			kc.wire.budget.Store(h2IdleBudget)
		} else {
			c.drop(ch, kc)
		}
		return c.outcome(sp, code, err)
	}
}

// exchangeH2 sends ch's request as a stream of kc and reads the answer:
// its status code, and whether an answer arrived. The body is read up to
// maxCheckBody; a longer one is reset, which leaves the connection as it
// is.
func (kc *keptConn) exchangeH2(ctx context.Context, ch *check) (code int, answered bool, err error) {
	scheme := "http://"
	if ch.sp.https {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+ch.key.addr+ch.sp.pathQuery, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := kc.cc.RoundTrip(req)
	if err != nil {
		return 0, false, err
	}
	// The status alone decides: a body that breaks off only costs the
	// stream.
	io.CopyN(io.Discard, resp.Body, maxCheckBody)
	resp.Body.Close()
	return resp.StatusCode, true, nil
}
