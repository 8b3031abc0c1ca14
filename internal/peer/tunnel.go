package peer

// Tunnels: a byte stream, rather than one request, carried through the hop.
// TLS passthrough (the client's TLS reaches the target untouched) and HTTP/1.1
// upgrades (WebSocket) need one.
//
// A tunnel is one HTTP/2 stream of the pooled peer connection: a POST with
// the peer protocol's headers and HeaderTunnel, whose request body carries
// the bytes toward the target and whose response body (after a 200 head)
// carries the target's bytes back. The hop's client (h2client.go) and Go's
// HTTP/2 server run both bodies at once, so this needs neither extended
// CONNECT (RFC 8441) nor a connection of its own; the stream is
// multiplexed with the hop's requests and shares their checks: the receiver
// gets a Delivery with Tunnel set only after ServeHTTP admitted the peer and
// its identity.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HeaderTunnel asks the receiver for a tunnel to the target instead of one
// request: TunnelTCP or TunnelUpgrade.
const HeaderTunnel = "Trellis-Peer-Tunnel"

// Tunnel kinds.
const (
	// TunnelTCP carries a TLS passthrough connection: the receiver
	// splices the bytes to the target as they come.
	TunnelTCP = "tcp"
	// TunnelUpgrade carries an HTTP/1.1 request asking for an upgrade
	// (WebSocket); the receiver reads its head, sends it to the target
	// with the identity it vouches for, and splices only after the
	// target agreed (101).
	TunnelUpgrade = "upgrade"
)

// RefusedError is a request the peer refused (HeaderRefused), or a tunnel
// it answered with a status other than 200.
type RefusedError struct {
	Status int
	// Reason is the receiver's reason (HeaderRefused), "" when the
	// receiver did not refuse but could not reach the target.
	Reason string
	Body   string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("peer refused: %d %s %s", e.Status, e.Reason, strings.TrimSpace(e.Body))
}

// Tunnel opens a tunnel of kind through the peer p names to p's target:
// first and then rest are what goes to the target, rest read until it
// ends (the receiver then half-closes the target's connection); the
// returned reader is what comes back. The tunnel lives until the reader is
// closed or ctx ends.
//
// The receiver answers only after it has read what it needs (the TLS
// ClientHello, the upgrade's head), which must be in first, and has
// reached the target. rest is not read before that answer, so that when
// Tunnel fails (the peer cannot be reached, or refuses: RefusedError) the
// caller may send first and rest elsewhere.
func (c *Client) Tunnel(ctx context.Context, p Request, kind string, first []byte, rest io.Reader) (io.ReadCloser, error) {
	c.mu.RLock()
	cluster, ok := c.peers[p.Addr]
	c.mu.RUnlock()
	if !ok || cluster != p.Cluster {
		return nil, fmt.Errorf("peer %s is not a proxy of cluster %s", p.Addr, p.Cluster)
	}
	ctx, cancel := context.WithCancel(ctx)
	// The transport reads the body through a pipe, so that ending the
	// stream (a refusal, Close) frees it even while a read of rest waits.
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, (&url.URL{Scheme: "https", Host: p.Addr, Path: "/"}).String(), pr)
	if err != nil {
		cancel()
		return nil, err
	}
	accepted := make(chan bool, 1)
	go func() {
		var err error
		if len(first) > 0 {
			_, err = pw.Write(first)
		}
		if err == nil && <-accepted {
			_, err = io.Copy(pw, rest)
		}
		pw.CloseWithError(err)
	}()
	req.ContentLength = -1
	resp, err := c.pool.roundTrip(req, p.Addr, p.fields(nil, kind))
	accepted <- err == nil && resp.StatusCode == http.StatusOK
	if err != nil {
		pr.CloseWithError(err)
		cancel()
		if ctx.Err() == nil && brokenConn(err) {
			c.markDown(p.Addr)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		pr.Close()
		cancel()
		return nil, &RefusedError{Status: resp.StatusCode, Reason: resp.Header.Get(HeaderRefused), Body: string(b)}
	}
	return &tunnelReader{ReadCloser: resp.Body, body: pr, cancel: cancel}, nil
}

// tunnelReader ends its tunnel's stream when closed.
type tunnelReader struct {
	io.ReadCloser
	body   *io.PipeReader
	cancel context.CancelFunc
}

func (t *tunnelReader) Close() error {
	err := t.ReadCloser.Close()
	t.body.Close()
	t.cancel()
	return err
}

// Stream is the receiving end of a tunnel (AcceptTunnel): reads return the
// sender's bytes, writes go to it. It is a net.Conn, so that a tunnel goes
// where a connection does; it has no addresses, and bounds reads only.
// Closing it ends the sender's bytes; the bytes back end when the handler
// returns.
type Stream struct {
	r        io.ReadCloser
	w        io.Writer
	deadline func(time.Time) error
}

func (s *Stream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *Stream) Write(p []byte) (int, error) { return s.w.Write(p) }

// Close ends the reads.
func (s *Stream) Close() error { return s.r.Close() }

// LocalAddr and RemoteAddr are nil: a tunnel's ends are peers, not
// addresses.
func (s *Stream) LocalAddr() net.Addr  { return nil }
func (s *Stream) RemoteAddr() net.Addr { return nil }

// SetDeadline sets the read deadline; writes are not bounded.
func (s *Stream) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline bounds reads.
func (s *Stream) SetReadDeadline(t time.Time) error { return s.deadline(t) }

// SetWriteDeadline is not supported.
func (s *Stream) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }

// ReceivingStream is the receiving end of the tunnel r asks for, before it
// is answered: its reads return the sender's bytes, so that the receiver
// can check them and reach the target first; writes must wait for
// AcceptTunnel.
func ReceivingStream(w http.ResponseWriter, r *http.Request) *Stream {
	rc := http.NewResponseController(w)
	return &Stream{r: r.Body, w: flushWriter{w, rc}, deadline: rc.SetReadDeadline}
}

// AcceptTunnel answers a tunnel request with 200. It must be called
// within the handler, before its ReceivingStream is written to; the tunnel
// ends, both ways, when the handler returns.
func AcceptTunnel(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w).Flush()
}

// flushWriter sends every write at once: a tunnel's bytes must not wait in
// a buffer for more.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}
