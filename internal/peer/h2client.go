package peer

// The hop's HTTP/2 client: a pool of connections per peer, on
// golang.org/x/net/http2's Framer and hpack, built for what the hop needs
// and nothing more.
//
// Where net/http's transport starts a goroutine per request to write it and
// hands every response from its read loop to the caller, here the caller
// writes its request's HEADERS itself under the connection's write lock, in
// one flush; only a request with a body starts a goroutine (to send DATA as
// the peer's flow-control windows allow, then trailers). One read loop per
// connection dispatches frames to streams: a response head wakes its caller
// once, and the caller reads the body from the stream's buffer, which gives
// the peer credit (WINDOW_UPDATE) as it is consumed, so a stream never
// buffers more than its window.
//
// Everything read comes from another cluster and is bounded: header lists
// (headerReader's bound, which also ends CONTINUATION floods),
// frame sizes, windows (a peer sending beyond one, or overflowing one by
// its updates, is an error), informational heads, pushes (refused with
// SETTINGS_ENABLE_PUSH=0; one sent anyway ends the connection), and frames
// for streams never opened.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// h2StreamWindow is the receive window of each stream: the most a
	// stream's response buffers before its reader consumes it.
	h2StreamWindow = 1 << 20
	// h2ConnWindow is the connection's receive window. Streams bound the
	// buffering; this only has to exceed their sum in use.
	h2ConnWindow = 1 << 30
	// h2MaxFrame is the largest frame read (the protocol's default, which
	// this client does not raise).
	h2MaxFrame = 16 << 10
	// h2MaxHeaderList bounds a response's header list, and its trailers',
	// as HPACK decodes them (SETTINGS_MAX_HEADER_LIST_SIZE).
	h2MaxHeaderList = 1 << 20
	// h2MaxStreams bounds the streams of one connection, whatever the
	// peer allows; h2DefaultStreams is what is assumed before the peer's
	// SETTINGS say.
	h2MaxStreams     = 1000
	h2DefaultStreams = 100
	// h2MaxInformational bounds the 1xx heads before a response's own.
	h2MaxInformational = 8
	// h2Initial is the protocol's initial window.
	h2Initial = 65535
)

// Timers of a connection (h2Pool's defaults).
const (
	// h2ReadIdle is how long a connection may read nothing before it is
	// sent a PING, and h2PingTimeout how long the PING's answer (or any
	// frame) may take before the connection is taken for dead.
	h2ReadIdle    = 15 * time.Second
	h2PingTimeout = 5 * time.Second
	// h2WriteTimeout bounds one write: a peer that stops reading ends its
	// connection.
	h2WriteTimeout = 10 * time.Second
	// h2IdleTimeout closes a connection without streams for that long.
	h2IdleTimeout = 5 * time.Minute
)

// unsentError is a request the peer refused before processing it
// (REFUSED_STREAM, or a stream above a GOAWAY's last stream id): nothing of
// it reached a target. Unsent reports it.
type unsentError struct{ reason string }

func (e *unsentError) Error() string { return "peer did not process the request: " + e.reason }

// connError is a connection that broke under a request: brokenConn reports
// it, so the peer is probed before it is used again.
type connError struct{ err error }

func (e *connError) Error() string { return "peer connection lost: " + e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// streamError is a stream the peer reset, or one this client reset because
// of what the peer sent on it.
type streamError struct {
	code   http2.ErrCode
	reason string
}

func (e *streamError) Error() string {
	if e.reason != "" {
		return "peer stream error " + e.code.String() + ": " + e.reason
	}
	return "peer reset the stream: " + e.code.String()
}

var (
	errBodyClosed = errors.New("peer response body closed")
	errGoneAway   = &unsentError{"the connection is going away"}
	// errConnFull is a stream not opened: the connection had as many as
	// the peer allows.
	errConnFull = &unsentError{"the connection is full"}
	// errStreamEnded stops a request body the peer no longer wants: it
	// sent its whole response and RST_STREAM(NO_ERROR).
	errStreamEnded = errors.New("peer ended the stream")
)

// h2Pool keeps the connections to each peer.
type h2Pool struct {
	readIdle, pingTimeout, writeTimeout, idleTimeout time.Duration
	// dialer opens a connection to addr presenting cert; certificate is
	// the certificate new connections present (nil: none, a target's).
	dialer      func(ctx context.Context, addr string, cert *tls.Certificate) (net.Conn, error)
	certificate func() *tls.Certificate
	// scheme is the requests' :scheme.
	scheme string
	// spread is how many connections to an address requests spread over
	// while each is busy; maxConns how many there may be while every one
	// is full (its peer's SETTINGS_MAX_CONCURRENT_STREAMS).
	spread, maxConns int
	// headerTimeout bounds the wait for a response's head (0: none).
	headerTimeout time.Duration
	// awaitSettings waits for a new connection's first SETTINGS before
	// it takes streams: a peer allowing fewer than h2DefaultStreams
	// would refuse the streams above its limit.
	awaitSettings bool
	// replay sends a request whose stream was refused unprocessed again,
	// on another connection, even after its body was read, when the
	// body was small enough to keep (replayBody).
	replay bool

	mu    sync.Mutex
	peers map[string]*h2Peer
}

// h2Peer is the connections to one peer address.
type h2Peer struct {
	conns   []*h2Conn
	dialing int
	// dial is the latest dial, for requests waiting for its connection;
	// freed is closed when a stream ends, made by a request waiting for
	// one (every connection full).
	dial  *h2Dial
	freed chan struct{}
}

type h2Dial struct {
	done chan struct{}
	err  error
}

func newH2Pool(c *Client) *h2Pool {
	return &h2Pool{readIdle: h2ReadIdle, pingTimeout: h2PingTimeout, writeTimeout: h2WriteTimeout,
		idleTimeout: h2IdleTimeout, peers: map[string]*h2Peer{},
		dialer: func(ctx context.Context, addr string, cert *tls.Certificate) (net.Conn, error) {
			return c.dial(ctx, "tcp", addr, cert)
		},
		certificate: c.id.Certificate, scheme: "https", spread: connsPerPeer, maxConns: connsPerPeer}
}

// get reserves a stream on a connection to addr: the least busy one that
// presents the current certificate, a new one while every connection is
// busy and there are fewer than spread, else the least busy with a stream
// free, else a new one while there are fewer than maxConns, else it waits
// for a stream to end.
func (p *h2Pool) get(ctx context.Context, addr string) (*h2Conn, error) {
	var cert *tls.Certificate
	if p.certificate != nil {
		cert = p.certificate()
	}
	for {
		p.mu.Lock()
		pp := p.peers[addr]
		if pp == nil {
			pp = &h2Peer{}
			p.peers[addr] = pp
		}
		var best *h2Conn
		n := 0
		for _, cc := range pp.conns {
			if cc.cert != cert && !cc.unusable.Load() {
				// The certificate was renewed: the connection serves the
				// streams it has and closes.
				cc.unusable.Store(true)
				if cc.active.Load() == 0 {
					go cc.close(errors.New("certificate renewed"))
				}
			}
			if cc.unusable.Load() {
				continue
			}
			n++
			if cc.active.Load() < int32(cc.maxStreams.Load()) && (best == nil || cc.active.Load() < best.active.Load()) {
				best = cc
			}
		}
		if best != nil && (best.active.Load() == 0 || n+pp.dialing >= p.spread) {
			best.active.Add(1)
			p.mu.Unlock()
			return best, nil
		}
		if n+pp.dialing < p.maxConns {
			pp.dialing++
			d := &h2Dial{done: make(chan struct{})}
			pp.dial = d
			p.mu.Unlock()
			cc, err := p.dial(ctx, addr, cert)
			p.mu.Lock()
			pp.dialing--
			if err == nil {
				cc.active.Add(1)
				pp.conns = append(pp.conns, cc)
			} else if len(pp.conns) == 0 && pp.dialing == 0 && p.peers[addr] == pp {
				delete(p.peers, addr)
			}
			d.err = err
			close(d.done)
			p.mu.Unlock()
			return cc, err
		}
		// Every connection is full or being dialed: wait for a dial or a
		// stream to end.
		var d *h2Dial
		var wait chan struct{}
		if pp.dialing > 0 {
			d, wait = pp.dial, pp.dial.done
		} else {
			if pp.freed == nil {
				pp.freed = make(chan struct{})
			}
			wait = pp.freed
		}
		p.mu.Unlock()
		select {
		case <-wait:
			if d != nil && d.err != nil && !errors.Is(d.err, context.Canceled) && !errors.Is(d.err, context.DeadlineExceeded) {
				return nil, d.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// dial opens a connection to addr presenting cert.
func (p *h2Pool) dial(ctx context.Context, addr string, cert *tls.Certificate) (*h2Conn, error) {
	nc, err := p.dialer(ctx, addr, cert)
	if err != nil {
		return nil, err
	}
	cc, err := p.newConn(nc, addr, cert)
	if err != nil || !p.awaitSettings {
		return cc, err
	}
	timer := time.NewTimer(p.writeTimeout)
	defer timer.Stop()
	select {
	case <-cc.settings:
		return cc, nil
	case <-cc.done:
		err = fmt.Errorf("%s: connection ended before its SETTINGS: %w", addr, cc.err)
	case <-timer.C:
		err = fmt.Errorf("%s: no SETTINGS within %v", addr, p.writeTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	cc.close(err)
	return nil, err
}

// newConn starts HTTP/2 on nc, a connection to addr presenting cert.
func (p *h2Pool) newConn(nc net.Conn, addr string, cert *tls.Certificate) (*h2Conn, error) {
	cc := &h2Conn{pool: p, addr: addr, nc: nc, cert: cert, streams: map[uint32]*h2Stream{}, nextID: 1,
		sendWindow: h2Initial, initialSendWindow: h2Initial, maxFrame: 16 << 10, recvWindow: h2ConnWindow,
		done: make(chan struct{}), settings: make(chan struct{}), lower: map[string]string{}, canonical: map[string]string{}}
	cc.cond.L = &cc.mu
	cc.maxStreams.Store(h2DefaultStreams)
	cc.bw = bufio.NewWriterSize(nc, 32<<10)
	cc.fr = http2.NewFramer(cc.bw, bufio.NewReaderSize(nc, 32<<10))
	cc.hr = newHeaderReader(cc.fr, h2MaxHeaderList)
	cc.fr.SetMaxReadFrameSize(h2MaxFrame)
	cc.fr.SetReuseFrames()
	cc.henc = hpack.NewEncoder(&cc.hbuf)
	cc.idleSince.Store(time.Now().UnixNano())
	cc.wmu.Lock()
	cc.startWrite()
	err := cc.endWrite(cc.writePreface())
	cc.wmu.Unlock()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	go cc.readLoop()
	go cc.keep()
	return cc, nil
}

// writePreface writes the client's preface: push disabled, the windows,
// the header list bound (wmu held).
func (cc *h2Conn) writePreface() error {
	if _, err := cc.bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	err := cc.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: h2MaxHeaderList},
	)
	if err != nil {
		return err
	}
	return cc.fr.WriteWindowUpdate(0, h2ConnWindow-h2Initial)
}

// remove takes cc out of the pool.
func (p *h2Pool) remove(cc *h2Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.peers[cc.addr]
	if pp == nil {
		return
	}
	if i := slices.Index(pp.conns, cc); i >= 0 {
		pp.conns = slices.Delete(pp.conns, i, i+1)
	}
	if len(pp.conns) == 0 && pp.dialing == 0 {
		delete(p.peers, cc.addr)
	}
	pp.wake()
}

// wake tells requests waiting for a stream that one may be free.
func (pp *h2Peer) wake() {
	if pp.freed != nil {
		close(pp.freed)
		pp.freed = nil
	}
}

// released is told that one of cc's streams ended (removeLocked counted
// it out).
func (p *h2Pool) released(cc *h2Conn) {
	left := cc.active.Load()
	if left > 0 && left+1 < int32(cc.maxStreams.Load()) {
		// The connection was not full: no request waits for it.
		return
	}
	p.mu.Lock()
	if pp := p.peers[cc.addr]; pp != nil {
		pp.wake()
	}
	// Again under the lock, which get holds to reserve a stream: a
	// connection just given a stream is not closed under it.
	left = cc.active.Load()
	closeNow := left == 0 && cc.unusable.Load()
	if left == 0 {
		cc.idleSince.Store(time.Now().UnixNano())
	}
	p.mu.Unlock()
	if closeNow {
		cc.close(nil)
	}
}

// closeIdle closes the connections without streams (all of them when
// idleFor is 0, else those idle for that long).
func (p *h2Pool) closeIdle(idleFor time.Duration) {
	var idle []*h2Conn
	now := time.Now().UnixNano()
	p.mu.Lock()
	for _, pp := range p.peers {
		for _, cc := range pp.conns {
			if cc.active.Load() == 0 && now-cc.idleSince.Load() >= int64(idleFor) {
				cc.unusable.Store(true)
				idle = append(idle, cc)
			}
		}
	}
	p.mu.Unlock()
	for _, cc := range idle {
		cc.close(nil)
	}
}

// h2Conn is one connection to a peer.
type h2Conn struct {
	pool *h2Pool
	addr string
	nc   net.Conn
	// cert is the certificate the connection presented.
	cert *tls.Certificate
	// active counts the streams reserved or open; unusable is set once
	// the connection takes no new stream (GOAWAY, a renewed certificate,
	// closed, idle), and maxStreams is the peer's limit.
	active     atomic.Int32
	unusable   atomic.Bool
	maxStreams atomic.Uint32
	idleSince  atomic.Int64
	// framesRead counts what the read loop read; writeSince is when the
	// write under way started (0: none), both for keep.
	framesRead atomic.Uint64
	writeSince atomic.Int64
	pingData   atomic.Uint64
	pinged     atomic.Bool

	// wmu orders the writes: frames, and the HPACK encoder, whose blocks
	// must reach the peer in the order they were encoded. Taken before mu
	// when both are.
	wmu sync.Mutex
	bw  *bufio.Writer
	fr  *http2.Framer
	// hr reads the framer's frames (the read loop's).
	hr    *headerReader
	henc  *hpack.Encoder
	hbuf  bytes.Buffer
	lower map[string]string // header names lowercased, a cache
	werr  error

	// canonical is the read loop's cache of canonical header names.
	canonical map[string]string

	mu   sync.Mutex
	cond sync.Cond // windows opened, streams ended: for body writers
	// streams are the open streams, by id; nextID is the next to open.
	streams map[uint32]*h2Stream
	nextID  uint32
	// sendWindow is the connection's send window; initialSendWindow and
	// maxFrame are the peer's settings.
	sendWindow        int32
	initialSendWindow int32
	maxFrame          uint32
	// recvWindow is what the peer may still send on the connection, and
	// recvUnacked what was consumed and not yet given back.
	recvWindow, recvUnacked int32
	goAway                  bool
	err                     error
	done                    chan struct{}
	closeOnce               sync.Once
	// settings is closed when the peer's first SETTINGS came.
	settings     chan struct{}
	seenSettings bool
}

// startWrite and endWrite frame a write under wmu: endWrite flushes,
// and a failed write breaks the connection.
func (cc *h2Conn) startWrite() { cc.writeSince.Store(time.Now().UnixNano()) }

func (cc *h2Conn) endWrite(err error) error {
	if err == nil {
		err = cc.bw.Flush()
	}
	cc.writeSince.Store(0)
	if err != nil {
		if cc.werr == nil {
			cc.werr = err
		}
		cc.nc.Close()
	}
	return err
}

// h2Stream is one request and its response.
type h2Stream struct {
	cc   *h2Conn
	id   uint32
	req  *http.Request
	wake chan struct{} // a single waiter: the caller
	stop func() bool   // ends the watch of the request's context

	// Guarded by cc.mu.
	head          *http.Response
	informational int
	chunks        []*[]byte
	off, buffered int
	// recvWindow is what the peer may still send, unacked what the
	// reader consumed and was not given back yet; sendWindow what may
	// still be sent.
	recvWindow, unacked int32
	sendWindow          int32
	recvEnd, sentEnd    bool
	// expect is the body's length the head declared (-1: none), and
	// received what came of it: a body longer or shorter is an error, for
	// a proxy writes the declared length ahead of the body.
	expect, received int64
	reset            bool // RST_STREAM sent or received
	removed          bool // out of cc.streams
	bodyClosed, eof  bool
	// writing is set while a goroutine sends the request body.
	writing bool
	err     error
	trailer http.Header
	// headerTimer bounds the wait for the response head (guarded by
	// cc.mu).
	headerTimer *time.Timer
	// reqBodyClosed guards closing the request body, which ending the
	// stream does to stop its writer's read.
	reqBodyClosed atomic.Bool
}

// closeReqBody closes the request body once.
func (s *h2Stream) closeReqBody() {
	if s.reqBodyClosed.CompareAndSwap(false, true) {
		s.req.Body.Close()
	}
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, h2MaxFrame); return &b }}

func (s *h2Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// freeLocked drops the buffered body and returns how many bytes it held.
func (s *h2Stream) freeLocked() int {
	n := s.buffered
	for i, c := range s.chunks {
		*c = (*c)[:0]
		chunkPool.Put(c)
		s.chunks[i] = nil
	}
	s.chunks, s.off, s.buffered = s.chunks[:0], 0, 0
	return n
}

// abortLocked ends s with err (the first error stays), dropping what it
// buffered; it returns how many bytes that was, for the connection's
// window.
func (s *h2Stream) abortLocked(err error) int {
	n := s.freeLocked()
	s.endLocked(err)
	return n
}

// endLocked ends s with err, the first error staying; what it buffered
// is still read before the error.
func (s *h2Stream) endLocked(err error) {
	if s.err == nil {
		s.err = err
	}
	s.reset = true
	s.signal()
	s.cc.cond.Broadcast()
	if s.writing && !s.sentEnd {
		// The writer may wait for the body.
		go s.closeReqBody()
	}
}

// removeLocked takes s out of the connection's streams once both ways are
// done or it was reset, and out of its count at once (before its caller
// is woken, whose next request must find the connection free); it reports
// whether it did, and the caller then tells the pool, after unlocking.
func (cc *h2Conn) removeLocked(s *h2Stream) bool {
	if s.removed || !(s.reset || s.recvEnd && s.sentEnd) {
		return false
	}
	s.removed = true
	delete(cc.streams, s.id)
	cc.active.Add(-1)
	return true
}

// removeAndUnlock removes s from its connection, whose lock it releases, and
// then resets s if it was open and returns the freed window to the peer.
func (s *h2Stream) removeAndUnlock(open bool, freed int) {
	cc := s.cc
	removed := cc.removeLocked(s)
	inc := cc.consumedLocked(freed)
	cc.mu.Unlock()
	if open || inc > 0 {
		cc.writeControl(s.id, open, 0, inc)
	}
	if removed {
		cc.pool.released(cc)
	}
}

// cancel ends s for err: a RST_STREAM(CANCEL) if it is still open.
func (s *h2Stream) cancel(err error) {
	cc := s.cc
	cc.mu.Lock()
	open := !s.removed && !s.reset
	freed := s.abortLocked(err)
	s.removeAndUnlock(open, freed)
}

// startHeaderTimer gives the response head the pool's headerTimeout, once
// the whole request was sent (as net/http's transport does), if it has
// not come yet.
func (s *h2Stream) startHeaderTimer() {
	d := s.cc.pool.headerTimeout
	if d <= 0 {
		return
	}
	s.cc.mu.Lock()
	if s.head == nil && s.err == nil {
		s.headerTimer = time.AfterFunc(d, func() { s.cancelUnanswered(errHeaderTimeout) })
	}
	s.cc.mu.Unlock()
}

// cancelUnanswered cancels s for err if its response head has not come.
func (s *h2Stream) cancelUnanswered(err error) {
	cc := s.cc
	cc.mu.Lock()
	if s.head != nil || s.err != nil {
		cc.mu.Unlock()
		return
	}
	open := !s.removed && !s.reset
	freed := s.abortLocked(err)
	s.removeAndUnlock(open, freed)
}

// consumedLocked counts n bytes given back on the connection and returns
// the WINDOW_UPDATE increment due, if any.
func (cc *h2Conn) consumedLocked(n int) uint32 {
	cc.recvUnacked += int32(n)
	if cc.recvUnacked < h2StreamWindow {
		return 0
	}
	inc := cc.recvUnacked
	cc.recvWindow += inc
	cc.recvUnacked = 0
	return uint32(inc)
}

// writeControl writes a RST_STREAM(CANCEL) for id when rst, and
// WINDOW_UPDATEs for the stream (streamInc) and the connection (connInc)
// when not 0, in one flush.
func (cc *h2Conn) writeControl(id uint32, rst bool, streamInc, connInc uint32) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return
	}
	cc.startWrite()
	var err error
	if rst {
		err = cc.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	if err == nil && streamInc > 0 {
		err = cc.fr.WriteWindowUpdate(id, streamInc)
	}
	if err == nil && connInc > 0 {
		err = cc.fr.WriteWindowUpdate(0, connInc)
	}
	cc.endWrite(err)
}

// roundTrip sends r to the peer at addr, with the peer protocol's fields
// (lowercase names) instead of any Trellis-Peer- header of r's, and
// returns the response once its head arrived.
func (p *h2Pool) roundTrip(r *http.Request, addr string, peerFields []hpack.HeaderField) (*http.Response, error) {
	ctx := r.Context()
	bodyless := r.Body == nil || r.Body == http.NoBody
	if err := checkRequest(r); err != nil {
		closeBody(r, bodyless)
		return nil, err
	}
	var rb *replaySource
	if p.replay && !bodyless {
		// A copy of r whose body keeps what it read, to send again.
		rb = newReplaySource(r.Body)
		defer rb.done()
		r2 := *r
		r2.Body = rb.cur
		r = &r2
	}
	full := 0 // attempts on connections found full
	for attempt := 0; ; attempt++ {
		cc, err := p.get(ctx, addr)
		if err != nil {
			closeBody(r, bodyless)
			return nil, err
		}
		resp, err, untouched := cc.roundTrip(ctx, r, addr, peerFields, bodyless)
		if err == errConnFull && full < 100 {
			full++
			attempt--
			if rb != nil {
				r2 := *r
				r2.Body = rb.again()
				r = &r2
			}
			continue
		}
		var unsent *unsentError
		if err != nil && attempt < 3 && ctx.Err() == nil && !untouched && errors.As(err, &unsent) && rb != nil {
			// Refused before processing, after (some of) the body was
			// sent: again on another connection, if the whole body was
			// kept.
			if body := rb.replay(ctx); body != nil {
				r2 := *r
				r2.Body = body
				r = &r2
				continue
			}
		}
		if err != nil && attempt < 3 && ctx.Err() == nil && (untouched || bodyless && errors.As(err, &unsent)) {
			// Refused before processing on this connection (it is going
			// away), the body not read yet: again, on another.
			if untouched && rb != nil {
				// A body of its own: the stream may still close the
				// last one's.
				r2 := *r
				r2.Body = rb.again()
				r = &r2
			}
			continue
		}
		if err != nil && untouched {
			closeBody(r, bodyless)
		}
		return resp, err
	}
}

// closeBody closes a request's body that was not sent.
func closeBody(r *http.Request, bodyless bool) {
	if !bodyless {
		r.Body.Close()
	}
}

// checkRequest refuses a request that cannot be sent as it is, before any
// of it is: its fields must be valid HTTP/2 fields.
func checkRequest(r *http.Request) error {
	for k, vs := range r.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("peer request: invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("peer request: invalid value of header field %q", k)
			}
		}
	}
	for k := range r.Trailer {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("peer request: invalid trailer name %q", k)
		}
	}
	if host := r.Host; host != "" && !httpguts.ValidHostHeader(host) {
		return fmt.Errorf("peer request: invalid host %q", host)
	}
	return nil
}

// roundTrip runs one stream on cc (reserved by get). untouched reports a
// stream refused before anything of it was sent or read.
func (cc *h2Conn) roundTrip(ctx context.Context, r *http.Request, addr string, peerFields []hpack.HeaderField, bodyless bool) (_ *http.Response, _ error, untouched bool) {
	s := &h2Stream{cc: cc, req: r, wake: make(chan struct{}, 1), recvWindow: h2StreamWindow, sentEnd: bodyless, writing: !bodyless}
	cl := r.ContentLength
	if bodyless {
		cl = 0
	} else if cl == 0 {
		cl = -1
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	authority := r.Host
	if authority == "" {
		authority = addr
	}

	cc.wmu.Lock()
	cc.mu.Lock()
	if cc.goAway || cc.err != nil || cc.werr != nil || cc.nextID > 1<<31-1 {
		cc.unusable.Store(true)
		cc.mu.Unlock()
		cc.wmu.Unlock()
		cc.active.Add(-1)
		cc.pool.released(cc)
		return nil, errGoneAway, true
	}
	if uint32(len(cc.streams)) >= cc.maxStreams.Load() {
		// The peer's SETTINGS lowered its limit after get reserved
		// this stream: its ACK went out, so a stream above the limit
		// would be an error now. Another connection, or a wait.
		cc.mu.Unlock()
		cc.wmu.Unlock()
		cc.active.Add(-1)
		cc.pool.released(cc)
		return nil, errConnFull, true
	}
	s.id = cc.nextID
	cc.nextID += 2
	s.sendWindow = cc.initialSendWindow
	cc.streams[s.id] = s
	maxFrame := cc.maxFrame
	cc.mu.Unlock()

	cc.hbuf.Reset()
	cc.encode(":method", r.Method)
	cc.encode(":scheme", cc.pool.scheme)
	cc.encode(":authority", authority)
	cc.encode(":path", path)
	cc.encodeHeader(r.Header, peerFields != nil)
	for _, f := range peerFields {
		cc.encode(f.Name, f.Value)
	}
	if len(r.Trailer) > 0 {
		keys := make([]string, 0, len(r.Trailer))
		for k := range r.Trailer {
			keys = append(keys, http.CanonicalHeaderKey(k))
		}
		slices.Sort(keys)
		cc.encode("trailer", strings.Join(keys, ","))
	}
	if cl > 0 || cl == 0 && (r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch) {
		cc.encode("content-length", strconv.FormatInt(cl, 10))
	}
	blockLen := cc.hbuf.Len()
	err := cc.writeBlock(s.id, bodyless, maxFrame)
	cc.wmu.Unlock()
	if err != nil && errors.Is(err, net.ErrClosed) && blockLen < h2MaxFrame {
		// This side closed the connection (a GOAWAY, idle) before the
		// one write of the request's head: none of it left. (Its body
		// is not closed: it goes on another connection.)
		cc.mu.Lock()
		s.writing = false
		cc.mu.Unlock()
		s.cancel(errGoneAway)
		return nil, errGoneAway, true
	}
	if err != nil {
		// The connection broke: whether the peer read the request is
		// unknown.
		err = &connError{err}
		s.cancel(err)
		if !bodyless {
			s.closeReqBody()
		}
		return nil, err, false
	}
	if ctx.Done() != nil {
		s.stop = context.AfterFunc(ctx, func() { s.cancel(ctx.Err()) })
	} else {
		s.stop = func() bool { return false }
	}
	if !bodyless {
		go cc.writeBody(s, r, cl)
	}

	if bodyless {
		s.startHeaderTimer()
	}
	cc.mu.Lock()
	for s.head == nil && s.err == nil {
		cc.mu.Unlock()
		<-s.wake
		cc.mu.Lock()
	}
	resp, err := s.head, s.err
	if s.headerTimer != nil {
		s.headerTimer.Stop()
	}
	cc.mu.Unlock()
	if resp == nil {
		s.stop()
		return nil, err, false
	}
	return resp, nil, false
}

// encode appends one field to the header block under way (wmu held).
func (cc *h2Conn) encode(name, value string) {
	cc.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

// hopByHop are the fields HTTP/2 does not carry.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Transfer-Encoding": true,
	"Upgrade": true, "Host": true, "Content-Length": true,
}

// encodeHeader encodes h's fields but hop-by-hop ones (and, with
// dropPeer, the peer protocol's), names in lower case.
func (cc *h2Conn) encodeHeader(h http.Header, dropPeer bool) {
	for k, vs := range h {
		if hopByHop[k] {
			continue
		}
		if dropPeer && len(k) >= len(HeaderPrefix) && strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			continue
		}
		name, ok := cc.lower[k]
		if !ok {
			name = strings.ToLower(k)
			if len(cc.lower) < 512 {
				cc.lower[k] = name
			}
		}
		switch name {
		case "te":
			// Only "trailers" may go in HTTP/2.
			for _, v := range vs {
				if strings.EqualFold(v, "trailers") {
					cc.encode("te", "trailers")
					break
				}
			}
			continue
		case "user-agent":
			// An empty User-Agent asks for none.
			if len(vs) > 0 && vs[0] != "" {
				cc.encode(name, vs[0])
			}
			continue
		}
		if name == "x-trellis-request-id" {
			// New with every request: indexed, each would evict a
			// field that repeats.
			for _, v := range vs {
				cc.henc.WriteField(hpack.HeaderField{Name: name, Value: v, Sensitive: true})
			}
			continue
		}
		for _, v := range vs {
			cc.encode(name, v)
		}
	}
}

// writeBlock writes the header block in cc.hbuf for stream id, as
// HEADERS and CONTINUATION frames of at most maxFrame bytes, and flushes
// (wmu held).
func (cc *h2Conn) writeBlock(id uint32, endStream bool, maxFrame uint32) error {
	if cc.werr != nil {
		return cc.werr
	}
	cc.startWrite()
	return cc.endWrite(writeHeaderBlock(cc.fr, id, cc.hbuf.Bytes(), endStream, int(maxFrame)))
}

// writeBody sends r's body on s as the windows allow, then its trailers,
// and closes it.
func (cc *h2Conn) writeBody(s *h2Stream, r *http.Request, cl int64) {
	defer s.closeReqBody()
	bufp := chunkPool.Get().(*[]byte)
	buf := (*bufp)[:h2MaxFrame]
	defer chunkPool.Put(bufp)
	var sent int64
	var err error
	ended := false
	for !ended {
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if cl >= 0 && sent > cl {
				err = fmt.Errorf("peer request: the body is longer than its Content-Length %d", cl)
				break
			}
			// The last bytes of a body of known length without trailers
			// end the stream themselves: no empty DATA frame, no flush
			// more.
			ended = sent == cl && len(r.Trailer) == 0
			if err = cc.writeData(s, buf[:n], ended); err != nil {
				break
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = fmt.Errorf("peer request: reading the body: %w", rerr)
			break
		}
	}
	if err == nil && cl >= 0 && sent != cl {
		err = fmt.Errorf("peer request: the body ended after %d of its Content-Length %d bytes", sent, cl)
	}
	if err == nil && !ended {
		err = cc.writeEnd(s, r.Trailer)
	}
	if err == nil {
		s.startHeaderTimer()
	}
	if err != nil {
		cc.mu.Lock()
		ended := s.reset
		cc.mu.Unlock()
		if !ended {
			s.cancel(err)
		}
	}
}

// writeData sends p on s in DATA frames as the windows allow; with end,
// its last frame ends the request.
func (cc *h2Conn) writeData(s *h2Stream, p []byte, end bool) error {
	for len(p) > 0 {
		cc.mu.Lock()
		for s.err == nil && !s.reset && cc.err == nil && (s.sendWindow <= 0 || cc.sendWindow <= 0) {
			cc.cond.Wait()
		}
		if s.reset || cc.err != nil {
			err := streamOrConnErr(s.err, cc.err)
			cc.mu.Unlock()
			return firstErr(err, errStreamEnded)
		}
		n := min(int32(len(p)), s.sendWindow, cc.sendWindow, int32(cc.maxFrame))
		s.sendWindow -= n
		cc.sendWindow -= n
		cc.mu.Unlock()
		last := end && int(n) == len(p)
		cc.wmu.Lock()
		err := cc.werr
		removed := false
		if err == nil {
			if last {
				// As in writeEnd: over as of now.
				cc.mu.Lock()
				s.sentEnd = true
				removed = cc.removeLocked(s)
				cc.mu.Unlock()
			}
			cc.startWrite()
			err = cc.endWrite(cc.fr.WriteData(s.id, last, p[:n]))
		}
		cc.wmu.Unlock()
		if removed {
			cc.pool.released(cc)
		}
		if err != nil {
			return &connError{err}
		}
		p = p[n:]
	}
	return nil
}

// streamOrConnErr is what ended a stream: its own error, else its
// connection's.
func streamOrConnErr(stream, conn error) error {
	if stream != nil {
		return stream
	}
	if conn != nil {
		return &connError{conn}
	}
	return nil
}

// writeEnd ends s's request: its trailers, or an empty DATA frame, with
// END_STREAM.
func (cc *h2Conn) writeEnd(s *h2Stream, trailer http.Header) error {
	for k, vs := range trailer {
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("peer request: invalid value of trailer %q", k)
			}
		}
	}
	cc.mu.Lock()
	maxFrame, err := cc.maxFrame, streamOrConnErr(s.err, cc.err)
	cc.mu.Unlock()
	if err != nil {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return &connError{cc.werr}
	}
	// The request is over as of now: no other frame can go before its
	// end, and the stream may be reused the moment its response ends,
	// without waiting for this goroutine.
	cc.mu.Lock()
	s.sentEnd = true
	if cc.removeLocked(s) {
		defer cc.pool.released(cc)
	}
	cc.mu.Unlock()
	n := 0
	for _, vs := range trailer {
		n += len(vs)
	}
	if n == 0 {
		cc.startWrite()
		if err := cc.endWrite(cc.fr.WriteData(s.id, true, nil)); err != nil {
			return &connError{err}
		}
		return nil
	}
	cc.hbuf.Reset()
	cc.encodeHeader(trailer, false)
	if err := cc.writeBlock(s.id, true, maxFrame); err != nil {
		return &connError{err}
	}
	return nil
}

// Read reads the response body from the stream's buffer, giving the peer
// credit for what it consumed.
func (s *h2Stream) Read(p []byte) (int, error) {
	cc := s.cc
	cc.mu.Lock()
	for s.buffered == 0 && s.err == nil && !s.recvEnd && !s.bodyClosed {
		cc.mu.Unlock()
		<-s.wake
		cc.mu.Lock()
	}
	if s.bodyClosed {
		cc.mu.Unlock()
		return 0, errBodyClosed
	}
	if s.buffered > 0 {
		n := 0
		for n < len(p) && len(s.chunks) > 0 {
			c := s.chunks[0]
			k := copy(p[n:], (*c)[s.off:])
			n += k
			s.off += k
			if s.off == len(*c) {
				*c = (*c)[:0]
				chunkPool.Put(c)
				s.chunks[0] = nil
				s.chunks = s.chunks[1:]
				s.off = 0
			}
		}
		if len(s.chunks) == 0 {
			s.chunks = nil
		}
		s.buffered -= n
		var streamInc uint32
		if !s.recvEnd && !s.reset {
			s.unacked += int32(n)
			if s.unacked >= h2StreamWindow/4 {
				streamInc = uint32(s.unacked)
				s.recvWindow += s.unacked
				s.unacked = 0
			}
		}
		connInc := cc.consumedLocked(n)
		cc.mu.Unlock()
		if streamInc > 0 || connInc > 0 {
			cc.writeControl(s.id, false, streamInc, connInc)
		}
		return n, nil
	}
	if s.err != nil {
		err := s.err
		cc.mu.Unlock()
		return 0, err
	}
	first := !s.eof
	s.eof = true
	trailer := s.trailer
	cc.mu.Unlock()
	if first {
		if len(trailer) > 0 {
			if s.head.Trailer == nil {
				s.head.Trailer = make(http.Header, len(trailer))
			}
			for k, vs := range trailer {
				s.head.Trailer[k] = vs
			}
		}
		s.stop()
	}
	return 0, io.EOF
}

// Buffered reports whether body, a response body of this package's
// client, is whole in memory: reading it to its end waits for nothing from
// the peer.
func Buffered(body io.Reader) bool {
	s, ok := body.(*h2Stream)
	if !ok {
		return false
	}
	s.cc.mu.Lock()
	defer s.cc.mu.Unlock()
	return s.recvEnd && s.err == nil && !s.bodyClosed
}

// Close ends the response body; a stream still open is reset.
func (s *h2Stream) Close() error {
	cc := s.cc
	cc.mu.Lock()
	if s.bodyClosed {
		cc.mu.Unlock()
		return nil
	}
	s.bodyClosed = true
	freed := s.freeLocked()
	open := !s.removed && !s.reset
	if open {
		s.abortLocked(errBodyClosed)
	}
	s.signal()
	s.removeAndUnlock(open, freed)
	s.stop()
	return nil
}

// readLoop reads the connection's frames and hands them to its streams
// until the connection ends.
func (cc *h2Conn) readLoop() {
	var err error
	for {
		var f http2.Frame
		f, err = cc.hr.readFrame()
		cc.framesRead.Add(1)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.resetStream(se.StreamID, se.Code, fmt.Sprintf("invalid frame: %v", firstErr(se.Cause, err)))
				continue
			}
			break
		}
		if err = cc.handle(f); err != nil {
			break
		}
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		cc.goAwayWith(http2.ErrCode(ce))
	}
	cc.close(err)
}

// firstErr is a unless it is nil, else b.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// goAwayWith tells the peer the connection ends for code (best effort).
func (cc *h2Conn) goAwayWith(code http2.ErrCode) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr == nil {
		cc.startWrite()
		cc.endWrite(cc.fr.WriteGoAway(0, code, nil))
	}
}

// close ends the connection and every stream on it.
func (cc *h2Conn) close(err error) {
	cc.closeOnce.Do(func() {
		cc.unusable.Store(true)
		if err == nil {
			err = net.ErrClosed
		}
		cc.mu.Lock()
		cc.err = err
		for _, s := range cc.streams {
			s.endLocked(&connError{err})
			cc.removeLocked(s)
		}
		cc.cond.Broadcast()
		cc.mu.Unlock()
		cc.nc.Close()
		close(cc.done)
		cc.pool.remove(cc)
	})
}

// resetStream resets stream id for something the peer sent on it.
func (cc *h2Conn) resetStream(id uint32, code http2.ErrCode, reason string) {
	cc.mu.Lock()
	s := cc.streams[id]
	if s == nil {
		cc.mu.Unlock()
		return
	}
	freed := s.abortLocked(&streamError{code: code, reason: reason})
	removed := cc.removeLocked(s)
	inc := cc.consumedLocked(freed)
	cc.mu.Unlock()
	cc.wmu.Lock()
	if cc.werr == nil {
		cc.startWrite()
		err := cc.fr.WriteRSTStream(id, code)
		if err == nil && inc > 0 {
			err = cc.fr.WriteWindowUpdate(0, inc)
		}
		cc.endWrite(err)
	}
	cc.wmu.Unlock()
	if removed {
		cc.pool.released(cc)
	}
}

// protocolError is a connection error: the peer broke the protocol.
func protocolError(code http2.ErrCode, format string, args ...any) error {
	return fmt.Errorf("%w: %s", http2.ConnectionError(code), fmt.Sprintf(format, args...))
}

// streamOf returns the open stream id names, or nil for one this client
// ended (whose late frames are ignored); a stream never opened is a
// connection error.
func (cc *h2Conn) streamOf(id uint32) (*h2Stream, error) {
	if s := cc.streams[id]; s != nil {
		return s, nil
	}
	if id%2 == 0 || id >= cc.nextID {
		return nil, protocolError(http2.ErrCodeProtocol, "frame for stream %d, never opened", id)
	}
	return nil, nil
}

// handle dispatches one frame.
func (cc *h2Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return cc.handleData(f)
	case *http2.MetaHeadersFrame:
		return cc.handleHeaders(f)
	case *http2.RSTStreamFrame:
		cc.mu.Lock()
		s, err := cc.streamOf(f.StreamID)
		if s == nil {
			cc.mu.Unlock()
			return err
		}
		if f.ErrCode == http2.ErrCodeNo && s.recvEnd {
			// The whole response came and the peer wants no more of the
			// request: its body stops, the response stays.
			s.reset = true
			cc.cond.Broadcast()
			removed := cc.removeLocked(s)
			writing := s.writing && !s.sentEnd
			cc.mu.Unlock()
			if writing {
				go s.closeReqBody()
			}
			if removed {
				cc.pool.released(cc)
			}
			return nil
		}
		var serr error = &streamError{code: f.ErrCode}
		if f.ErrCode == http2.ErrCodeRefusedStream {
			serr = &unsentError{"stream refused"}
		}
		freed := s.abortLocked(serr)
		removed := cc.removeLocked(s)
		inc := cc.consumedLocked(freed)
		cc.mu.Unlock()
		if inc > 0 {
			cc.writeControl(0, false, 0, inc)
		}
		if removed {
			cc.pool.released(cc)
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return cc.handleSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			if binary.BigEndian.Uint64(f.Data[:]) == cc.pingData.Load() && cc.pinged.CompareAndSwap(true, false) {
				cc.nc.SetReadDeadline(time.Time{})
			}
			return nil
		}
		cc.wmu.Lock()
		defer cc.wmu.Unlock()
		if cc.werr != nil {
			return cc.werr
		}
		cc.startWrite()
		return cc.endWrite(cc.fr.WritePing(true, f.Data))
	case *http2.WindowUpdateFrame:
		return cc.handleWindowUpdate(f)
	case *http2.GoAwayFrame:
		cc.unusable.Store(true)
		cc.mu.Lock()
		cc.goAway = true
		var ended []*h2Stream
		for id, s := range cc.streams {
			if id > f.LastStreamID {
				s.abortLocked(errGoneAway)
				if cc.removeLocked(s) {
					ended = append(ended, s)
				}
			}
		}
		idle := len(cc.streams) == 0
		cc.mu.Unlock()
		for range ended {
			cc.pool.released(cc)
		}
		if idle && len(ended) == 0 && cc.active.Load() == 0 {
			return net.ErrClosed
		}
	case *http2.PushPromiseFrame:
		return protocolError(http2.ErrCodeProtocol, "PUSH_PROMISE, though push is disabled")
	}
	// PRIORITY and frames of unknown types are ignored.
	return nil
}

func (cc *h2Conn) handleWindowUpdate(f *http2.WindowUpdateFrame) error {
	cc.mu.Lock()
	if f.StreamID == 0 {
		defer cc.mu.Unlock()
		if int64(cc.sendWindow)+int64(f.Increment) > 1<<31-1 {
			return protocolError(http2.ErrCodeFlowControl, "connection window overflow")
		}
		cc.sendWindow += int32(f.Increment)
		cc.cond.Broadcast()
		return nil
	}
	s, err := cc.streamOf(f.StreamID)
	if s == nil {
		cc.mu.Unlock()
		return err
	}
	if int64(s.sendWindow)+int64(f.Increment) > 1<<31-1 {
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeFlowControl, "stream window overflow")
		return nil
	}
	s.sendWindow += int32(f.Increment)
	cc.cond.Broadcast()
	cc.mu.Unlock()
	return nil
}

func (cc *h2Conn) handleSettings(f *http2.SettingsFrame) error {
	if err := f.ForeachSetting(func(st http2.Setting) error { return st.Valid() }); err != nil {
		return err
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.mu.Lock()
	err := f.ForeachSetting(func(st http2.Setting) error {
		switch st.ID {
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams.Store(min(st.Val, h2MaxStreams))
		case http2.SettingInitialWindowSize:
			delta := int64(st.Val) - int64(cc.initialSendWindow)
			for _, s := range cc.streams {
				if int64(s.sendWindow)+delta > 1<<31-1 {
					return protocolError(http2.ErrCodeFlowControl, "stream window overflow by SETTINGS_INITIAL_WINDOW_SIZE")
				}
			}
			for _, s := range cc.streams {
				s.sendWindow += int32(delta)
			}
			cc.initialSendWindow = int32(st.Val)
			cc.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			cc.maxFrame = st.Val
		case http2.SettingHeaderTableSize:
			cc.henc.SetMaxDynamicTableSizeLimit(st.Val)
		}
		return nil
	})
	if err == nil && !cc.seenSettings {
		cc.seenSettings = true
		close(cc.settings)
	}
	cc.mu.Unlock()
	if err != nil {
		return err
	}
	if cc.werr != nil {
		return cc.werr
	}
	cc.startWrite()
	return cc.endWrite(cc.fr.WriteSettingsAck())
}

func (cc *h2Conn) handleData(f *http2.DataFrame) error {
	n := int32(f.Length)
	cc.mu.Lock()
	if n > cc.recvWindow {
		cc.mu.Unlock()
		return protocolError(http2.ErrCodeFlowControl, "DATA beyond the connection's window")
	}
	cc.recvWindow -= n
	s, err := cc.streamOf(f.StreamID)
	if err != nil {
		cc.mu.Unlock()
		return err
	}
	if s == nil || s.bodyClosed || s.head == nil || s.recvEnd {
		// Late DATA of a stream ended here, or DATA no one reads: its
		// credit goes back at once. DATA before the head or after the
		// end of the stream is an error of the stream.
		bad := s != nil && !s.bodyClosed && (s.head == nil || s.recvEnd)
		inc := cc.consumedLocked(int(n))
		cc.mu.Unlock()
		if bad {
			cc.resetStream(f.StreamID, http2.ErrCodeProtocol, "DATA before the response head or after the end of the stream")
		}
		if inc > 0 {
			cc.writeControl(0, false, 0, inc)
		}
		return nil
	}
	if n > s.recvWindow {
		inc := cc.consumedLocked(int(n))
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeFlowControl, "DATA beyond the stream's window")
		if inc > 0 {
			cc.writeControl(0, false, 0, inc)
		}
		return nil
	}
	s.recvWindow -= n
	data := f.Data()
	s.received += int64(len(data))
	if s.expect >= 0 && (s.received > s.expect || f.StreamEnded() && s.received < s.expect) {
		inc := cc.consumedLocked(int(n))
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeProtocol, fmt.Sprintf("response body of %d bytes or more, not the %d its head declared", s.received, s.expect))
		if inc > 0 {
			cc.writeControl(0, false, 0, inc)
		}
		return nil
	}
	// Padding is given back at once.
	pad := int(n) - len(data)
	for len(data) > 0 {
		var c *[]byte
		if k := len(s.chunks); k > 0 && cap(*s.chunks[k-1]) > len(*s.chunks[k-1]) {
			c = s.chunks[k-1]
		} else {
			c = chunkPool.Get().(*[]byte)
			s.chunks = append(s.chunks, c)
		}
		m := min(cap(*c)-len(*c), len(data))
		*c = append(*c, data[:m]...)
		data = data[m:]
		s.buffered += m
	}
	var removed bool
	if f.StreamEnded() {
		s.recvEnd = true
		removed = cc.removeLocked(s)
	}
	var inc uint32
	if pad > 0 {
		s.recvWindow += int32(pad)
		inc = cc.consumedLocked(pad)
	}
	s.signal()
	cc.mu.Unlock()
	if pad > 0 && !f.StreamEnded() {
		cc.writeControl(f.StreamID, false, uint32(pad), inc)
	} else if inc > 0 {
		cc.writeControl(0, false, 0, inc)
	}
	if removed {
		cc.pool.released(cc)
	}
	return nil
}

func (cc *h2Conn) handleHeaders(f *http2.MetaHeadersFrame) error {
	cc.mu.Lock()
	s, err := cc.streamOf(f.StreamID)
	if s == nil {
		cc.mu.Unlock()
		return err
	}
	if s.recvEnd {
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeStreamClosed, "HEADERS after the end of the stream")
		return nil
	}
	if f.Truncated {
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeProtocol, fmt.Sprintf("header list larger than %d bytes", h2MaxHeaderList))
		return nil
	}
	if s.head != nil {
		// Trailers.
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			cc.mu.Unlock()
			cc.resetStream(f.StreamID, http2.ErrCodeProtocol, "trailers without END_STREAM, or with pseudo-header fields")
			return nil
		}
		if s.expect >= 0 && s.received < s.expect {
			cc.mu.Unlock()
			cc.resetStream(f.StreamID, http2.ErrCodeProtocol, fmt.Sprintf("response body of %d bytes, not the %d its head declared", s.received, s.expect))
			return nil
		}
		t := make(http.Header, len(f.Fields))
		for _, hf := range f.Fields {
			k := cc.canonicalName(hf.Name)
			t[k] = append(t[k], hf.Value)
		}
		s.trailer = t
		s.recvEnd = true
		removed := cc.removeLocked(s)
		s.signal()
		cc.mu.Unlock()
		if removed {
			cc.pool.released(cc)
		}
		return nil
	}
	status := f.PseudoValue("status")
	code, perr := strconv.Atoi(status)
	if perr != nil || len(status) != 3 || code < 100 {
		cc.mu.Unlock()
		cc.resetStream(f.StreamID, http2.ErrCodeProtocol, fmt.Sprintf("malformed :status %q", status))
		return nil
	}
	if code < 200 {
		s.informational++
		cc.mu.Unlock()
		if code == http.StatusSwitchingProtocols || f.StreamEnded() || s.informational > h2MaxInformational {
			cc.resetStream(f.StreamID, http2.ErrCodeProtocol, fmt.Sprintf("informational response %d not allowed here", code))
		}
		return nil
	}
	regular := f.RegularFields()
	// One backing array for every field's value: a slice per field would
	// be an allocation each.
	values := make([]string, len(regular))
	resp := &http.Response{
		Status: statusLine(code, status), StatusCode: code,
		Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: make(http.Header, len(regular)), ContentLength: -1,
		Request: s.req, Body: s,
	}
	for i, hf := range regular {
		k := cc.canonicalName(hf.Name)
		if k == "Trailer" {
			if resp.Trailer == nil {
				resp.Trailer = make(http.Header)
			}
			for v := range strings.SplitSeq(hf.Value, ",") {
				if v = strings.TrimSpace(v); v != "" {
					resp.Trailer[http.CanonicalHeaderKey(v)] = nil
				}
			}
			continue
		}
		if vs := resp.Header[k]; vs != nil {
			resp.Header[k] = append(vs, hf.Value)
			continue
		}
		values[i] = hf.Value
		resp.Header[k] = values[i : i+1 : i+1]
	}
	if vs := resp.Header["Content-Length"]; len(vs) == 1 {
		if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		}
	} else if f.StreamEnded() {
		resp.ContentLength = 0
	}
	s.expect = resp.ContentLength
	if s.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		s.expect = 0
	}
	var removed bool
	if f.StreamEnded() {
		s.recvEnd = true
		removed = cc.removeLocked(s)
	}
	s.head = resp
	s.signal()
	cc.mu.Unlock()
	if removed {
		cc.pool.released(cc)
	}
	return nil
}

// statusLines are the Status of responses with a known code.
var statusLines = func() (lines [600]string) {
	for code := range lines {
		if text := http.StatusText(code); text != "" {
			lines[code] = strconv.Itoa(code) + " " + text
		}
	}
	return lines
}()

// statusLine is a response's Status: its code (status, as sent) and the
// code's text.
func statusLine(code int, status string) string {
	if code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return status + " " + http.StatusText(code)
}

// canonicalName is the canonical form of a header name the peer sent,
// through a bounded cache (the read loop's).
func (cc *h2Conn) canonicalName(name string) string {
	if k, ok := cc.canonical[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if len(cc.canonical) < 256 {
		cc.canonical[name] = k
	}
	return k
}

// keep watches the connection until it ends: a PING when it read nothing
// for readIdle, closed when the PING is not answered within pingTimeout
// (the read deadline), when a write hangs for writeTimeout, or when it had
// no stream for idleTimeout.
func (cc *h2Conn) keep() {
	p := cc.pool
	tick := time.NewTicker(min(p.readIdle, p.writeTimeout, p.idleTimeout) / 2)
	defer tick.Stop()
	lastRead, lastChange := cc.framesRead.Load(), time.Now()
	for {
		select {
		case <-cc.done:
			return
		case now := <-tick.C:
			if w := cc.writeSince.Load(); w != 0 && now.UnixNano()-w > int64(p.writeTimeout) {
				cc.close(errors.New("write timed out"))
				return
			}
			if cc.active.Load() == 0 && now.UnixNano()-cc.idleSince.Load() >= int64(p.idleTimeout) {
				p.closeIdle(p.idleTimeout)
				continue
			}
			if r := cc.framesRead.Load(); r != lastRead {
				lastRead, lastChange = r, now
				continue
			}
			if now.Sub(lastChange) < p.readIdle || cc.pinged.Load() {
				continue
			}
			cc.ping(now)
		}
	}
}

// ping sends a PING and gives its answer pingTimeout.
func (cc *h2Conn) ping(now time.Time) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return
	}
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], uint64(now.UnixNano()))
	cc.pingData.Store(uint64(now.UnixNano()))
	cc.pinged.Store(true)
	cc.nc.SetReadDeadline(now.Add(cc.pool.pingTimeout))
	cc.startWrite()
	cc.endWrite(cc.fr.WritePing(false, data))
}
