package peer

// An HTTP/2 server of its own, which serves the peer listener and the
// proxy's client-facing HTTP/2 (h2c with prior knowledge on HTTP binds,
// ALPN h2 on HTTPS binds). It serves an http.Handler, as net/http's server
// does, but costs a request less: one goroutine reads a connection and
// hands the streams of each read to a worker (one that served a stream
// before and waits, when there is one), which hands the rest on and runs
// the first's handler (no serve loop between them), and a handler writes
// its frames to the connection itself, under a lock, through one buffered
// writer, so that a small response (HEADERS, DATA, trailers) leaves in one
// flush when the handler returns.
//
// Its clients are other clusters' proxies or anyone on the network, so it
// bounds what a hostile one can make it do: concurrent streams (a reset
// stream counts until its handler returns), header list size, a header
// block's bytes on the wire (CONTINUATION floods), resets and control
// frames per time window, flow control windows, the time to the first
// request, idle time and (when configured) each stream's lifetime.

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
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

// The server's limits. They are fields of HTTPServer (set from these) so
// that tests can lower them.
const (
	// maxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS; streams
	// beyond it are refused (REFUSED_STREAM).
	maxConcurrentStreams = 256
	// maxHeaderListSize bounds a request's header list (HPACK's size:
	// names, values and 32 bytes a field): the proxy's own header limit
	// (64 KiB) and the peer protocol's headers, with room.
	maxHeaderListSize = 128 << 10
	// streamWindow and connWindow are the flow-control windows the server
	// grants: what a peer may send on one stream, and on the connection,
	// before the handlers read it. They bound the request bytes buffered.
	streamWindow = 1 << 20
	connWindow   = 1 << 20
	// readHeaderTimeout bounds a new connection's TLS handshake, preface
	// and first request's HEADERS.
	readHeaderTimeout = 10 * time.Second
	// idleTimeout closes a connection without streams.
	idleTimeout = 10 * time.Minute
	// writeTimeout bounds one flush to the connection.
	writeTimeout = 30 * time.Second
	// maxResets is how many streams a peer may reset in resetWindow
	// (a rapid reset attack resets streams as soon as they open).
	maxResets   = 1000
	resetWindow = 10 * time.Second
	// maxControl is how many frames that cost the server work but carry
	// no request (PING with no frame of ours sent since the last one,
	// SETTINGS, PRIORITY, empty DATA, frames on closed streams) a peer may
	// send in a second.
	maxControl = 1000
	// maxReadFrame is SETTINGS_MAX_FRAME_SIZE: larger DATA frames than
	// the default 16 KiB save the sender a write per 16 KiB (Go's client
	// writes a frame's header and payload apart).
	maxReadFrame = 64 << 10
	// readBufSize is the read buffer of a connection that is not TLS.
	readBufSize = 8 << 10
	// writeBufSize is the connection's write buffer and a response's
	// body buffer: a response up to that size leaves in one flush.
	writeBufSize = 16 << 10
	// goAwayLinger is how long a connection closed for an error goes on
	// reading (and discarding) so that the peer gets the GOAWAY.
	goAwayLinger = time.Second
	// maxIdleWorkers bounds the goroutines that, their handler done, wait
	// for the next stream to serve (workerIdle at most): one that has
	// served a request already has the stack a request needs (a new
	// goroutine starts on a small one and grows it, copying it at each
	// doubling, for every request).
	maxIdleWorkers = 256
	workerIdle     = 10 * time.Second
)

// HTTPServer is an HTTP/2 server: over TLS with ALPN h2, or HTTP/2 with
// prior knowledge on a connection that is not TLS. Its zero value is not
// usable: see NewHTTPServer.
type HTTPServer struct {
	handler     http.Handler
	log         *slog.Logger
	connContext func(context.Context, net.Conn) context.Context

	readHeaderTimeout, idleTimeout, writeTimeout time.Duration
	streamTimeout                                time.Duration
	maxStreams, maxHeaderList                    uint32
	maxResets, maxControl                        int
	resetWindow, linger                          time.Duration

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closing   bool
	connGone  chan struct{} // signalled when a connection ends

	// idle are the goroutines waiting in nextStream for a stream to
	// serve, the last to wait first (its stack the likeliest in cache);
	// idleWorkers of them, at most maxIdleWorkers. workersStopped: Shutdown
	// or Close ended their waits, and no more wait.
	idleMu                      sync.Mutex
	idle                        []*idleWorker
	workersStopped              bool
	idleWorkers, maxIdleWorkers atomic.Int32
	workerIdle                  time.Duration
	// noReuse and noYield turn off reusing workers and yielding before a
	// flush, for BenchmarkH2ServerLoad's comparison.
	noReuse, noYield bool
}

// NewHTTPServer returns the HTTP/2 server of a peer listener, serving h;
// its errors (failed handshakes, peers' protocol errors) go to log at
// level Warn.
func NewHTTPServer(h http.Handler, log *slog.Logger) *HTTPServer {
	return NewHTTPServerConfig(h, log, HTTPServerConfig{})
}

// HTTPServerConfig is what a user of the server other than the peer
// listener sets; a zero field keeps the peer listener's value.
type HTTPServerConfig struct {
	// ConnContext, as http.Server's, derives the context of a
	// connection's requests from one carrying http.LocalAddrContextKey.
	// It gets the connection ServeConn got.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS; streams
	// beyond it are refused.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header list (HPACK's size);
	// a longer one is answered 431.
	MaxHeaderListSize uint32
	// ReadHeaderTimeout bounds a connection's TLS handshake, preface and
	// first request's HEADERS; IdleTimeout closes a connection that has
	// had no stream for that long.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// StreamTimeout, when set, bounds each stream, from its HEADERS to the
	// end of its response: past it the stream is reset (INTERNAL_ERROR),
	// its request body and response writes fail, as net/http's server
	// does for its ReadTimeout and WriteTimeout.
	StreamTimeout time.Duration
}

// NewHTTPServerConfig returns an HTTP/2 server serving h with cfg; its
// errors (failed handshakes, clients' protocol errors) go to log at level
// Warn.
func NewHTTPServerConfig(h http.Handler, log *slog.Logger, cfg HTTPServerConfig) *HTTPServer {
	s := &HTTPServer{
		handler:           h,
		log:               log,
		connContext:       cfg.ConnContext,
		readHeaderTimeout: cmp.Or(cfg.ReadHeaderTimeout, readHeaderTimeout),
		idleTimeout:       cmp.Or(cfg.IdleTimeout, idleTimeout),
		writeTimeout:      writeTimeout,
		streamTimeout:     cfg.StreamTimeout,
		maxStreams:        cmp.Or(cfg.MaxConcurrentStreams, maxConcurrentStreams),
		maxHeaderList:     cmp.Or(cfg.MaxHeaderListSize, maxHeaderListSize),
		maxResets:         maxResets,
		resetWindow:       resetWindow,
		maxControl:        maxControl,
		linger:            goAwayLinger,
		listeners:         map[net.Listener]struct{}{},
		conns:             map[*serverConn]struct{}{},
		connGone:          make(chan struct{}, 1),
		workerIdle:        workerIdle,
	}
	s.maxIdleWorkers.Store(maxIdleWorkers)
	return s
}

// Serve accepts connections on ln and serves them until Shutdown or
// Close, when it returns http.ErrServerClosed.
func (s *HTTPServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			s.mu.Lock()
			delete(s.listeners, ln)
			s.mu.Unlock()
			return err
		}
		backoff = 0
		go s.ServeConn(nc)
	}
}

// ServeConn serves one connection until it ends; the handlers of its
// streams may still run when it returns.
func (s *HTTPServer) ServeConn(nc net.Conn) {
	c := s.newConn(nc)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if err := c.start(); err != nil {
		if !errors.Is(err, io.EOF) {
			s.log.Warn("HTTP/2 connection refused", "remote", c.remote, "err", err)
		}
		c.close(err)
		c.release()
		return
	}
	c.readFrames()
}

// Shutdown stops accepting connections, sends every connection a GOAWAY,
// and waits until their open streams are done or ctx ends, when it closes
// what is left.
func (s *HTTPServer) Shutdown(ctx context.Context) error {
	conns := s.stopAccepting()
	for _, c := range conns {
		c.shutdown()
	}
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-s.connGone:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		}
	}
}

// Conns returns how many connections the server is serving.
func (s *HTTPServer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// stopAccepting marks s closing, closes its listeners and returns the
// connections open now.
func (s *HTTPServer) stopAccepting() []*serverConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closing {
		s.stopWorkers()
	}
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Close closes the listeners and every connection at once.
func (s *HTTPServer) Close() error {
	conns := s.stopAccepting()
	for _, c := range conns {
		c.close(http.ErrServerClosed)
	}
	return nil
}

func (s *HTTPServer) forget(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	select {
	case s.connGone <- struct{}{}:
	default:
	}
}

// serverConn is one client connection.
type serverConn struct {
	s      *HTTPServer
	nc     net.Conn
	remote string
	tls    *tls.ConnectionState
	ctx    context.Context // carries the local address
	in     limitedReader
	fr     *http2.Framer
	hr     *headerReader // reads fr's frames (the reading goroutine's)
	// refs counts the goroutines using the connection: the one reading
	// it and the handlers; the last one out forgets it.
	refs atomic.Int32
	// serving counts the handlers running or queued.
	serving atomic.Int32

	// qmu guards the list of streams the reader opened since it last
	// handed streams to a worker that has not taken them yet: qhead to
	// qtail, linked by stream.next, qlen of them (queue, claim).
	qmu          sync.Mutex
	qhead, qtail *stream
	qlen         int

	// Reader-owned: only the goroutine reading the connection uses them.
	sawSettings, sawHeaders bool
	resetStart, ctrlStart   time.Time
	resets, ctrl            int

	// sentSincePing is set when a HEADERS or DATA frame of a response
	// is written, and cleared by the next PING the client sends.
	sentSincePing atomic.Bool

	// wmu serializes writes: the framer's write side, the buffered
	// writer, the HPACK encoder. Order: wmu before mu.
	wmu sync.Mutex
	bw  *connWriter
	// writeWaiters counts the goroutines in lockWrite; flushOwed is set
	// when a writer left its flush to one of them (under wmu).
	writeWaiters atomic.Int32
	flushOwed    bool
	// yielding is set while a writer that owes a flush yields
	// (unlockWriteYield); it flushes when it is back.
	yielding bool
	// enc writes nothing but a header block's first field after the
	// peer changed its SETTINGS_HEADER_TABLE_SIZE (tableChanged), for the
	// dynamic table size update it may owe; every field goes out as a
	// literal the peer does not index (appendLiteralField), and no field
	// refers to the dynamic table.
	enc          *hpack.Encoder
	tableChanged bool
	hbuf         headerBuf
	werr         error
	wdeadline    time.Time

	mu         sync.Mutex
	sendCond   sync.Cond // windows opened, a stream reset, the connection closed
	streams    map[uint32]*stream
	closedIDs  [64]closedID // recently closed streams
	closedNext int
	maxID      uint32 // the highest stream a peer opened
	sendWindow int64  // what the server may send on the connection
	recvWindow int64  // what the peer may send on the connection
	unacked    int64  // bytes consumed, not yet given back to the peer
	initWindow int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   int    // the peer's SETTINGS_MAX_FRAME_SIZE
	goingAway  bool
	closed     bool
	idle       *time.Timer
	// streamTimer resets the streams past their deadline (StreamTimeout):
	// one timer for the connection, armed for the earliest deadline, not
	// one per stream (a timer started and stopped per request costs its
	// allocations and two trips through the timer heap).
	streamTimer *time.Timer
	timerArmed  bool
}

type closedID struct {
	id uint32
	// byUs: the server reset it (a handler done before the request
	// body), so the peer's frames in flight are ignored.
	byUs bool
}

func (s *HTTPServer) newConn(nc net.Conn) *serverConn {
	c := &serverConn{s: s, nc: nc, remote: nc.RemoteAddr().String(), streams: map[uint32]*stream{},
		sendWindow: 65535, recvWindow: 65535, initWindow: 65535, maxFrame: 16384}
	c.refs.Store(1)
	c.sendCond.L = &c.mu
	c.ctx = context.WithValue(context.Background(), http.LocalAddrContextKey, nc.LocalAddr())
	if s.connContext != nil {
		c.ctx = s.connContext(c.ctx, nc)
	}
	c.in = limitedReader{r: nc}
	if _, ok := nc.(*tls.Conn); !ok {
		// A TLS connection reads a record at a time; a TCP connection
		// would cost the framer a read for a frame's header and another
		// for its payload.
		c.in.r = bufio.NewReaderSize(nc, readBufSize)
	}
	c.bw = &connWriter{c: c}
	c.bw.buf = make([]byte, 0, 2*writeBufSize+1024)
	c.fr = http2.NewFramer(c.bw, &c.in)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(maxReadFrame)
	c.hr = newHeaderReader(c.fr, s.maxHeaderList)
	c.enc = hpack.NewEncoder(&c.hbuf)
	return c
}

// start does the TLS handshake, reads the client preface and sends the
// server's SETTINGS, all within the read-header timeout (which lasts
// until the first HEADERS).
func (c *serverConn) start() error {
	c.nc.SetDeadline(time.Now().Add(c.s.readHeaderTimeout))
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		cs := tc.ConnectionState()
		if cs.NegotiatedProtocol != "h2" {
			return fmt.Errorf("negotiated %q, not h2", cs.NegotiatedProtocol)
		}
		c.tls = &cs
	}
	c.nc.SetWriteDeadline(time.Time{})
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c.in.r, preface); err != nil {
		return fmt.Errorf("reading the preface: %w", err)
	}
	if string(preface) != http2.ClientPreface {
		return errors.New("not the HTTP/2 client preface")
	}
	c.mu.Lock()
	c.recvWindow = connWindow
	c.idle = time.AfterFunc(c.s.idleTimeout, c.onIdle)
	c.mu.Unlock()
	c.wmu.Lock()
	c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.s.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.s.maxHeaderList},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxReadFrame},
	)
	c.fr.WriteWindowUpdate(0, connWindow-65535)
	c.flushLocked()
	err := c.werr
	c.wmu.Unlock()
	return err
}

// connWriter is the connection's write buffer: frames gather in it and
// leave in one write when flushed, or when it is full. wmu is held. A
// write error is kept (werr) and closes the connection.
type connWriter struct {
	c   *serverConn
	buf []byte
}

func (w *connWriter) Write(p []byte) (int, error) {
	if err := w.c.werr; err != nil {
		return 0, err
	}
	if len(w.buf)+len(p) > cap(w.buf) {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) > cap(w.buf) {
		if err := w.write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *connWriter) flush() error {
	if len(w.buf) == 0 || w.c.werr != nil {
		return w.c.werr
	}
	err := w.write(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *connWriter) write(p []byte) error {
	c := w.c
	if now := time.Now(); c.wdeadline.Sub(now) < c.s.writeTimeout/2 {
		c.wdeadline = now.Add(c.s.writeTimeout)
		c.nc.SetWriteDeadline(c.wdeadline)
	}
	if _, err := c.nc.Write(p); err != nil {
		c.werr = err
		c.nc.Close()
		return err
	}
	return nil
}

// flushLocked sends what is buffered; wmu is held.
func (c *serverConn) flushLocked() { c.bw.flush() }

// lockWrite takes wmu, counted as waiting for it until it has it.
func (c *serverConn) lockWrite() {
	c.writeWaiters.Add(1)
	c.wmu.Lock()
	c.writeWaiters.Add(-1)
}

// unlockWrite releases wmu taken with lockWrite, and returns the
// connection's write error. With flush, or when an earlier writer left its
// flush to it, it sends what is buffered first, unless another goroutine
// waits in lockWrite: then that one sends it, with its own frames, so that
// the responses of streams that finish together leave in one write (the
// last writer in line always flushes).
func (c *serverConn) unlockWrite(flush bool) error {
	if flush || c.flushOwed {
		if c.writeWaiters.Load() > 0 {
			c.flushOwed = true
		} else {
			c.flushOwed = false
			c.flushLocked()
		}
	}
	err := c.werr
	c.wmu.Unlock()
	return err
}

// unlockWriteYield is unlockWrite for a response's frames: when it is to
// flush and other handlers of the connection are running, it first lets
// the goroutines that are ready to run go (runtime.Gosched), so that the
// frames of the responses that end meanwhile (their targets answered in
// the same poll) leave in the same write, and then flushes what is still
// owed. A write costs a system call and a TLS record; a yield a trip
// through the scheduler. While one writer yields, the others leave their
// frames to its flush without yielding themselves.
func (c *serverConn) unlockWriteYield(flush bool) error {
	if !flush || c.serving.Load() <= 1 || c.s.noYield {
		return c.unlockWrite(flush)
	}
	if c.yielding {
		// The yielding writer flushes when it is back.
		c.flushOwed = true
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	c.flushOwed, c.yielding = true, true
	c.wmu.Unlock()
	runtime.Gosched()
	c.lockWrite()
	c.yielding = false
	return c.unlockWrite(false)
}

// headerBuf is the HPACK encoder's output.
type headerBuf struct{ b []byte }

func (h *headerBuf) Write(p []byte) (int, error) { h.b = append(h.b, p...); return len(p), nil }

// limitedReader reads the connection, failing a frame read (ReadFrame:
// one frame, or a HEADERS frame and its CONTINUATIONs) that takes more
// than n bytes: it bounds the work a header block can cost, empty
// CONTINUATIONs included.
type limitedReader struct {
	r io.Reader
	n int
}

var errHeaderBlockTooLong = errors.New("header block too long")

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderBlockTooLong
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

// goAwayError is an error that ends the connection with a GOAWAY.
type goAwayError struct {
	code   http2.ErrCode
	reason string
}

func (e goAwayError) Error() string { return fmt.Sprintf("%v: %s", e.code, e.reason) }

// readFrames reads the connection until it ends, on the goroutine that
// ServeConn runs on; the streams it opens are served by others (queue).
//
// The goroutine that reads is the connection's for its life, and waits
// for the client on the poller, which puts it at the end of its P's run
// queue when the client's frames come. (Until 2026-12-06 a stream's
// handler ran on the goroutine that read its HEADERS, which first handed
// the reading to another through a channel; a goroutine a channel send
// makes ready runs next on its P, ahead of the P's run queue, in the
// sender's time slice. A client that always had a connection's next
// request there before its last response was out, as h2load's -m10 does,
// then had that connection's readers hand the P to each other request
// after request, while every other goroutine the poller made ready on the
// P, other connections' readers and handlers whose targets answered,
// waited until the chain broke by chance: 10 to 200 ms, the scheduler's
// preemption of a long time slice not breaking it. docs/benchmarks.md,
// "HTTP/2's tail".) Handing streams to a worker makes the worker ready
// the same way, but a worker's chain ends with the streams the reader
// queued (at most maxChain), and a worker that ends its stream makes no
// one ready but through the network (or a lock it lets go), so no chain
// runs on from one read of the connection to the next.
func (c *serverConn) readFrames() {
	for {
		c.in.n = 2*(int(c.s.maxHeaderList)+maxReadFrame) + 9
		f, err := c.hr.readFrame()
		var st *stream
		if err == nil {
			st, err = c.process(f)
		} else {
			err = c.readError(err)
		}
		if err != nil {
			c.fail(err)
			c.release()
			return
		}
		if st != nil {
			c.queue(st)
		}
	}
}

// maxChain bounds the streams one hand-off from the reader starts (see
// queue): a chain's handlers run one after the other, each as its
// predecessor blocks, ahead of the P's run queue, so it is as long as one
// connection may keep the others' ready goroutines waiting.
const maxChain = 16

// queue has st served. The streams the reader opens while the worker it
// handed the last ones to has not run yet join that worker's list, up to
// maxChain: a read that brings ten requests costs the reader one
// hand-off, not ten. (Each hand-off makes the worker ready in the
// reader's P's runnext slot and pushes the one made ready before to the
// tail of the P's run queue, behind the other connections' readers and
// handlers: with a hand-off per stream, nine of ten requests of a read
// waited there before their handlers started, p99 4-6 ms under h2load.
// docs/benchmarks.md, "HTTP/2: one hand-off per read".) The worker takes
// the list (claim) and hands its rest to another worker before it serves
// the first stream, so that the list's handlers start in the order the
// requests came, each as soon as the one before blocks.
func (c *serverConn) queue(st *stream) {
	c.qmu.Lock()
	if c.qhead != nil && c.qlen < maxChain {
		c.qtail.next = st
		c.qtail = st
		c.qlen++
		c.qmu.Unlock()
		return
	}
	c.qhead, c.qtail, c.qlen = st, st, 1
	c.qmu.Unlock()
	c.s.goServe(st)
}

// claim takes st off the reader's list when st heads it, so that the
// reader starts a new one, and returns the streams after st: those its
// server is to hand on.
func (c *serverConn) claim(st *stream) *stream {
	c.qmu.Lock()
	if c.qhead == st {
		c.qhead, c.qtail, c.qlen = nil, nil, 0
	}
	rest := st.next
	st.next = nil
	c.qmu.Unlock()
	return rest
}

// goServe has a goroutine serve st and the streams after it: one waiting
// in nextStream, whose stack has grown to serve a request already, or a
// new one.
func (s *HTTPServer) goServe(st *stream) {
	if s.noReuse {
		go s.serveFirst(st)
		return
	}
	s.idleMu.Lock()
	if n := len(s.idle); n > 0 {
		w := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		s.idleWorkers.Add(-1)
		w.idle = false
		w.uses++
		s.idleMu.Unlock()
		w.next <- st
		return
	}
	s.idleMu.Unlock()
	go s.worker(st)
}

// serveFirst hands the streams after st to another goroutine, then
// serves st.
func (s *HTTPServer) serveFirst(st *stream) {
	if rest := st.c.claim(st); rest != nil {
		s.goServe(rest)
	}
	st.c.serve(st)
}

// worker serves st (and has the streams after it served), then the
// streams goServe hands it, until nextStream has none.
func (s *HTTPServer) worker(st *stream) {
	w := &idleWorker{next: make(chan *stream, 1)}
	for st != nil {
		s.serveFirst(st)
		st = s.nextStream(w)
	}
	s.idleMu.Lock()
	w.done = true
	s.idleMu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
}

// idleWorker is a goroutine that serves streams (worker) while it waits in
// nextStream. A wait is a receive on a channel of its own, which costs a
// hand-off less than a select of a shared channel, a timer's and the
// server's stop.
type idleWorker struct {
	// next gets the stream to serve, or nil when the wait ends: one send
	// per wait, by whoever took the worker off s.idle.
	next chan *stream
	// timer ends the wait when no stream came for a period
	// (workerExpired); it is re-armed when it fires, not for every wait
	// (that costs a request a trip through the timer heap).
	timer *time.Timer
	// Under s.idleMu: in s.idle; the goroutine ended; streams got, and
	// as many when the timer last fired.
	idle, done bool
	uses, seen int
}

// nextStream waits for a stream to serve, unless maxIdleWorkers
// goroutines wait already; nil when none came for workerIdle (to twice
// that), or the server closed.
func (s *HTTPServer) nextStream(w *idleWorker) *stream {
	s.idleMu.Lock()
	if s.workersStopped || len(s.idle) >= int(s.maxIdleWorkers.Load()) {
		s.idleMu.Unlock()
		return nil
	}
	w.idle = true
	s.idle = append(s.idle, w)
	s.idleWorkers.Add(1)
	if w.timer == nil {
		w.timer = time.AfterFunc(s.workerIdle, func() { s.workerExpired(w) })
	}
	s.idleMu.Unlock()
	return <-w.next
}

// workerExpired ends w's wait if no stream came to it since the timer last
// fired, and re-arms the timer otherwise.
func (s *HTTPServer) workerExpired(w *idleWorker) {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if w.done {
		return
	}
	if w.idle && w.uses == w.seen {
		s.idle = slices.DeleteFunc(s.idle, func(x *idleWorker) bool { return x == w })
		s.idleWorkers.Add(-1)
		w.idle = false
		w.next <- nil
		return
	}
	w.seen = w.uses
	w.timer.Reset(s.workerIdle)
}

// stopWorkers ends the idle workers' waits, and any to come.
func (s *HTTPServer) stopWorkers() {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	s.workersStopped = true
	for _, w := range s.idle {
		w.idle = false
		w.next <- nil
	}
	s.idleWorkers.Add(-int32(len(s.idle)))
	s.idle = nil
}

// readError turns the framer's error into the connection's fate: nil when
// only a stream was in error (it is reset), else what ends the connection.
func (c *serverConn) readError(err error) error {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.mu.Lock()
		if se.StreamID > c.maxID && se.StreamID%2 == 1 {
			c.maxID = se.StreamID
		}
		c.mu.Unlock()
		c.resetStream(se.StreamID, se.Code)
		return nil
	case errors.As(err, &ce):
		reason := err.Error()
		if d := c.fr.ErrorDetail(); d != nil {
			reason = d.Error()
		}
		return goAwayError{http2.ErrCode(ce), reason}
	case errors.Is(err, http2.ErrFrameTooLarge):
		return goAwayError{http2.ErrCodeFrameSize, "frame too large"}
	case errors.Is(err, errHeaderBlockTooLong):
		return goAwayError{http2.ErrCodeEnhanceYourCalm, "header block too long"}
	}
	return err
}

// fail ends the connection: with a GOAWAY for a protocol error, after
// which it reads (and drops) what the peer still sends for a moment, so
// that the peer reads the GOAWAY rather than a reset connection.
func (c *serverConn) fail(err error) {
	var ce goAwayError
	if errors.As(err, &ce) {
		c.s.log.Warn("HTTP/2 connection ended for a protocol error", "remote", c.remote, "err", err)
		c.wmu.Lock()
		c.mu.Lock()
		last := c.maxID
		c.mu.Unlock()
		c.fr.WriteGoAway(last, ce.code, nil)
		c.flushLocked()
		c.wmu.Unlock()
		c.nc.SetReadDeadline(time.Now().Add(c.s.linger))
		io.Copy(io.Discard, io.LimitReader(c.nc, 1<<20))
	}
	c.close(err)
}

// close ends the connection: its streams' contexts are cancelled, their
// bodies fail and writers waiting for a window give up.
func (c *serverConn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	streams := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.streamTimer != nil {
		c.streamTimer.Stop()
	}
	c.sendCond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	cause := fmt.Errorf("HTTP/2 connection closed: %w", err)
	for _, st := range streams {
		st.abort(cause)
	}
}

// release drops a reference; the last one forgets the connection.
func (c *serverConn) release() {
	if c.refs.Add(-1) == 0 {
		c.s.forget(c)
	}
}

// shutdown sends a GOAWAY naming the last stream the connection serves;
// it closes once they are done.
func (c *serverConn) shutdown() {
	c.mu.Lock()
	c.goingAway = true
	idle := len(c.streams) == 0
	started := c.idle != nil
	c.mu.Unlock()
	if started {
		c.goAway(http2.ErrCodeNo)
	}
	if idle || !started {
		c.close(http.ErrServerClosed)
	}
}

func (c *serverConn) goAway(code http2.ErrCode) {
	c.lockWrite()
	c.mu.Lock()
	last := c.maxID
	c.mu.Unlock()
	c.fr.WriteGoAway(last, code, nil)
	c.unlockWrite(true)
}

// onIdle closes a connection that had no stream for the idle timeout.
func (c *serverConn) onIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && !c.closed
	c.mu.Unlock()
	if idle {
		c.goAway(http2.ErrCodeNo)
		c.close(errors.New("idle"))
	}
}

// control counts a frame that costs work but carries no request.
func (c *serverConn) control() error {
	now := time.Now()
	if now.Sub(c.ctrlStart) > time.Second {
		c.ctrlStart, c.ctrl = now, 0
	}
	c.ctrl++
	if c.ctrl > c.s.maxControl {
		return goAwayError{http2.ErrCodeEnhanceYourCalm, "too many control frames"}
	}
	return nil
}

// process handles one frame; it returns a stream to serve when the frame
// opened one.
func (c *serverConn) process(f http2.Frame) (*stream, error) {
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return nil, goAwayError{http2.ErrCodeProtocol, "the client preface's first frame is not SETTINGS"}
		}
		c.sawSettings = true
	}
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.processHeaders(f)
	case *http2.DataFrame:
		return nil, c.processData(f)
	case *http2.SettingsFrame:
		return nil, c.processSettings(f)
	case *http2.WindowUpdateFrame:
		return nil, c.processWindowUpdate(f)
	case *http2.RSTStreamFrame:
		return nil, c.processReset(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil, nil
		}
		// A PING that follows frames of ours is a client measuring the
		// connection as it reads (gRPC's flow-control estimator sends one
		// per round trip while data flows): it is free. Only PINGs with
		// nothing sent in between count against the control-frame bound.
		if !c.sentSincePing.Swap(false) {
			if err := c.control(); err != nil {
				return nil, err
			}
		}
		c.lockWrite()
		c.fr.WritePing(true, f.Data)
		c.unlockWrite(true)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			c.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
		return nil, c.control()
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goingAway = true
		idle := len(c.streams) == 0
		c.mu.Unlock()
		if idle {
			return nil, io.EOF
		}
	case *http2.PushPromiseFrame:
		return nil, goAwayError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case *http2.ContinuationFrame:
		return nil, goAwayError{http2.ErrCodeProtocol, "CONTINUATION without HEADERS"}
	}
	return nil, nil
}

func (c *serverConn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := c.control(); err != nil {
		return err
	}
	var tableSize uint32
	setTable := false
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return goAwayError{http2.ErrCode(err.(http2.ConnectionError)), "invalid " + s.String()}
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - c.initWindow
			c.initWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > 1<<31-1 {
					c.mu.Unlock()
					return goAwayError{http2.ErrCodeFlowControl, "a stream's window overflows"}
				}
			}
			c.sendCond.Broadcast()
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.mu.Lock()
			c.maxFrame = int(min(s.Val, writeBufSize))
			c.mu.Unlock()
		case http2.SettingHeaderTableSize:
			tableSize, setTable = s.Val, true
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.lockWrite()
	if setTable {
		c.enc.SetMaxDynamicTableSizeLimit(tableSize)
		c.tableChanged = true
	}
	c.fr.WriteSettingsAck()
	c.unlockWrite(true)
	return nil
}

func (c *serverConn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > 1<<31-1 {
			return goAwayError{http2.ErrCodeFlowControl, "the connection's window overflows"}
		}
		c.sendCond.Broadcast()
		return nil
	}
	if f.StreamID > c.maxID {
		return goAwayError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
	}
	st := c.streams[f.StreamID]
	if st == nil || st.reset {
		return nil
	}
	st.sendWindow += int64(f.Increment)
	if st.sendWindow > 1<<31-1 {
		c.mu.Unlock()
		c.resetStream(f.StreamID, http2.ErrCodeFlowControl)
		c.mu.Lock()
		return nil
	}
	c.sendCond.Broadcast()
	return nil
}

func (c *serverConn) processReset(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	if f.StreamID > c.maxID {
		c.mu.Unlock()
		return goAwayError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
	}
	st := c.streams[f.StreamID]
	c.mu.Unlock()
	now := time.Now()
	if now.Sub(c.resetStart) > c.s.resetWindow {
		c.resetStart, c.resets = now, 0
	}
	c.resets++
	if c.resets > c.s.maxResets {
		return goAwayError{http2.ErrCodeEnhanceYourCalm, "too many streams reset"}
	}
	if st != nil {
		c.mu.Lock()
		st.reset = true
		c.sendCond.Broadcast()
		c.mu.Unlock()
		st.abort(fmt.Errorf("stream reset by the peer: %v", f.ErrCode))
	}
	return nil
}

// resetStream sends RST_STREAM for id and ends its stream.
func (c *serverConn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	st := c.streams[id]
	if st != nil {
		if st.resetByUs {
			c.mu.Unlock()
			return
		}
		st.reset, st.resetByUs = true, true
		c.sendCond.Broadcast()
	} else {
		// Refused or malformed: the peer's frames in flight for it are
		// dropped.
		c.noteClosedLocked(id, true)
	}
	c.mu.Unlock()
	c.lockWrite()
	c.fr.WriteRSTStream(id, code)
	c.unlockWrite(true)
	if st != nil {
		st.abort(fmt.Errorf("stream reset: %v", code))
	}
}

// noteClosedLocked remembers a closed stream; c.mu is held.
func (c *serverConn) noteClosedLocked(id uint32, byUs bool) {
	c.closedIDs[c.closedNext] = closedID{id: id, byUs: byUs}
	c.closedNext = (c.closedNext + 1) % len(c.closedIDs)
}

func (c *serverConn) recentlyClosed(id uint32) (closed, byUs bool) {
	for _, r := range c.closedIDs {
		if r.id == id {
			return true, r.byUs
		}
	}
	return false, false
}

func (c *serverConn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	data := f.Data()
	c.mu.Lock()
	if n > c.recvWindow {
		c.mu.Unlock()
		return goAwayError{http2.ErrCodeFlowControl, "DATA beyond the connection's window"}
	}
	c.recvWindow -= n
	if id > c.maxID {
		c.mu.Unlock()
		return goAwayError{http2.ErrCodeProtocol, "DATA on an idle stream"}
	}
	st := c.streams[id]
	if st == nil || st.reset || st.remoteClosed || st.bodyClosed {
		// Not for a handler: give the window back.
		var code http2.ErrCode
		switch {
		case st != nil && (st.remoteClosed || st.reset) && !st.resetByUs:
			code = http2.ErrCodeStreamClosed
		case st == nil:
			if closed, byUs := c.recentlyClosed(id); !closed || !byUs {
				code = http2.ErrCodeStreamClosed
			}
		}
		c.mu.Unlock()
		c.giveBack(nil, int(n))
		if err := c.control(); err != nil {
			return err
		}
		if code != 0 {
			c.resetStream(id, code)
		}
		return nil
	}
	if n > st.recvWindow {
		c.mu.Unlock()
		c.giveBack(nil, int(n))
		c.resetStream(id, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWindow -= n
	st.got += int64(len(data))
	if st.declared >= 0 && (st.got > st.declared || f.StreamEnded() && st.got != st.declared) {
		c.mu.Unlock()
		c.giveBack(nil, int(n))
		c.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	if len(data) > 0 {
		st.appendBody(data)
	}
	if f.StreamEnded() {
		st.remoteClosed = true
		st.bodyErr = io.EOF
	}
	st.readCond.Signal()
	c.mu.Unlock()
	if pad := n - int64(len(data)); pad > 0 {
		c.giveBack(st, int(pad))
	}
	if len(data) == 0 && !f.StreamEnded() {
		return c.control()
	}
	return nil
}

// giveBack returns n bytes consumed on st (nil: only the connection's
// window) to the peer, sending WINDOW_UPDATEs once a quarter of a window
// has gathered.
func (c *serverConn) giveBack(st *stream, n int) {
	var connInc, stInc uint32
	c.mu.Lock()
	c.unacked += int64(n)
	if c.unacked >= connWindow/2 {
		connInc = uint32(c.unacked)
		c.recvWindow += c.unacked
		c.unacked = 0
	}
	if st != nil && !st.remoteClosed && !st.reset {
		st.unacked += int64(n)
		if st.unacked >= streamWindow/2 {
			stInc = uint32(st.unacked)
			st.recvWindow += st.unacked
			st.unacked = 0
		}
	}
	c.mu.Unlock()
	if connInc == 0 && stInc == 0 {
		return
	}
	c.lockWrite()
	if connInc > 0 {
		c.fr.WriteWindowUpdate(0, connInc)
	}
	if stInc > 0 {
		c.fr.WriteWindowUpdate(st.id, stInc)
	}
	c.unlockWrite(true)
}

func (c *serverConn) processHeaders(f *http2.MetaHeadersFrame) (*stream, error) {
	id := f.StreamID
	if id%2 == 0 {
		return nil, goAwayError{http2.ErrCodeProtocol, "HEADERS on an even stream"}
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil {
		// Trailers.
		if st.remoteClosed && !st.reset {
			c.mu.Unlock()
			return nil, goAwayError{http2.ErrCodeStreamClosed, "HEADERS after END_STREAM"}
		}
		if st.reset {
			byUs := st.resetByUs
			c.mu.Unlock()
			if byUs {
				return nil, nil
			}
			return nil, goAwayError{http2.ErrCodeStreamClosed, "HEADERS on a stream the peer reset"}
		}
		c.mu.Unlock()
		return nil, c.processTrailers(st, f)
	}
	if id <= c.maxID {
		closed, _ := c.recentlyClosed(id)
		c.mu.Unlock()
		if closed {
			return nil, goAwayError{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
		}
		return nil, goAwayError{http2.ErrCodeProtocol, "HEADERS on a stream below the last opened"}
	}
	c.maxID = id
	refuse := c.goingAway || c.closed || uint32(len(c.streams)) >= c.s.maxStreams
	c.mu.Unlock()
	if !c.sawHeaders {
		c.sawHeaders = true
		c.nc.SetReadDeadline(time.Time{})
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.resetStream(id, http2.ErrCodeProtocol)
		return nil, c.control()
	}
	if refuse {
		// A refused stream costs the work of its headers and a reset:
		// it counts as a control frame.
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil, c.control()
	}
	if f.Truncated {
		c.lockWrite()
		c.writeHead(id, http.StatusRequestHeaderFieldsTooLarge, nil, nil, nil, "", "", true)
		c.unlockWrite(true)
		return nil, nil
	}
	st := &stream{c: c, id: id, declared: -1}
	st.readCond.L = &c.mu
	st.w.st = st
	st.w.contentLength = -1
	if err := st.buildRequest(f); err != nil {
		c.s.log.Debug("malformed HTTP/2 request", "remote", c.remote, "err", err)
		c.resetStream(id, http2.ErrCodeProtocol)
		return nil, c.control()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.ctxCancel(io.EOF)
		return nil, io.EOF
	}
	st.sendWindow = c.initWindow
	st.recvWindow = streamWindow
	if c.s.streamTimeout > 0 {
		st.deadline = time.Now().Add(c.s.streamTimeout)
		if !c.timerArmed {
			c.armStreamTimerLocked(st.deadline)
		}
	}
	if f.StreamEnded() {
		st.remoteClosed = true
		st.bodyErr = io.EOF
	}
	c.streams[id] = st
	if len(c.streams) == 1 {
		c.idle.Stop()
	}
	c.mu.Unlock()
	c.refs.Add(1)
	c.serving.Add(1)
	return st, nil
}

func (c *serverConn) processTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		c.resetStream(st.id, http2.ErrCodeProtocol)
		return nil
	}
	if len(f.PseudoFields()) > 0 {
		c.resetStream(st.id, http2.ErrCodeProtocol)
		return nil
	}
	c.mu.Lock()
	if st.declared >= 0 && st.got != st.declared {
		c.mu.Unlock()
		c.resetStream(st.id, http2.ErrCodeProtocol)
		return nil
	}
	for _, hf := range f.RegularFields() {
		k := canonicalHeader(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			c.mu.Unlock()
			c.resetStream(st.id, http2.ErrCodeProtocol)
			return nil
		}
		// As net/http's server: only the declared trailers (the map
		// is the handler's already, and must not change under it).
		if vs, declared := st.req.Trailer[k]; declared {
			st.req.Trailer[k] = append(vs, hf.Value)
		}
	}
	st.remoteClosed = true
	st.bodyErr = io.EOF
	st.readCond.Signal()
	c.mu.Unlock()
	return nil
}

// serve runs the handler for st on this goroutine, then ends the
// response and the stream.
func (c *serverConn) serve(st *stream) {
	defer c.release()
	defer c.serving.Add(-1)
	panicked := true
	defer func() {
		if panicked {
			st.endWatch()
			e := recover()
			if e != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.log.Error("panic serving an HTTP/2 request", "remote", c.remote, "panic", e, "stack", string(buf))
			}
			c.resetStream(st.id, http2.ErrCodeInternal)
			st.w.release()
		}
		c.streamDone(st)
	}()
	c.s.handler.ServeHTTP(&st.w, st.req)
	st.endWatch()
	st.w.finish()
	panicked = false
}

// armStreamTimerLocked has the stream timer fire at t; c.mu is held.
func (c *serverConn) armStreamTimerLocked(t time.Time) {
	c.timerArmed = true
	if c.streamTimer == nil {
		c.streamTimer = time.AfterFunc(time.Until(t), c.expireStreams)
		return
	}
	c.streamTimer.Reset(time.Until(t))
}

// expireStreams resets the streams past their deadline and arms the
// stream timer for the earliest deadline left.
func (c *serverConn) expireStreams() {
	now := time.Now()
	var expired []uint32
	var next time.Time
	c.mu.Lock()
	c.timerArmed = false
	if c.closed {
		c.mu.Unlock()
		return
	}
	for id, st := range c.streams {
		switch {
		case st.deadline.IsZero():
		case !now.Before(st.deadline):
			st.deadline = time.Time{}
			expired = append(expired, id)
		case next.IsZero() || st.deadline.Before(next):
			next = st.deadline
		}
	}
	if !next.IsZero() {
		c.armStreamTimerLocked(next)
	}
	c.mu.Unlock()
	for _, id := range expired {
		c.resetStream(id, http2.ErrCodeInternal)
	}
}

// streamDone forgets a stream whose handler returned.
func (c *serverConn) streamDone(st *stream) {
	st.ctxCancel(context.Canceled)
	if st.rtimer != nil {
		st.rtimer.Stop()
	}
	if st.wtimer != nil {
		st.wtimer.Stop()
	}
	c.mu.Lock()
	delete(c.streams, st.id)
	byUs := st.resetByUs
	c.noteClosedLocked(st.id, byUs)
	unread := len(st.body) - st.off
	st.body, st.off = nil, 0
	st.bodyClosed = true
	if st.buf != nil {
		putBuf(st.buf)
		st.buf = nil
	}
	left := len(c.streams)
	away := c.goingAway && left == 0
	if left == 0 && !c.closed {
		c.idle.Reset(c.s.idleTimeout)
	}
	c.mu.Unlock()
	if unread > 0 {
		c.giveBack(nil, unread)
	}
	if away {
		c.close(http.ErrServerClosed)
	}
}

// stream is one request and its response.
type stream struct {
	c  *serverConn
	id uint32
	// next is the stream after this one in the reader's list (queue).
	next *stream
	req  *http.Request
	url  url.URL // the request's URL when its :path is plainTarget
	// vals holds the values of a request of up to 8 fields.
	vals [8]string
	w    responseWriter
	// fieldArr holds the response's head fields (ResponseFields) when
	// there are up to 8.
	fieldArr [8]hpack.HeaderField

	ctxCancel context.CancelCauseFunc

	// Under c.mu.
	readCond     sync.Cond // body bytes, its end, a deadline
	sendWindow   int64
	recvWindow   int64
	unacked      int64
	declared     int64 // the request's Content-Length, or -1
	got          int64 // body bytes received
	remoteClosed bool  // END_STREAM received
	reset        bool  // RST_STREAM sent or received
	resetByUs    bool
	bodyClosed   bool
	// needsContinue: the peer waits for 100 Continue, which the first
	// read of the body sends.
	needsContinue bool
	body          []byte // received, unread: body[off:]
	off           int
	buf           *[]byte // body's pooled array
	bodyErr       error   // after the body: io.EOF, or why it failed
	rdeadline     time.Time
	rtimer        *time.Timer
	// aborted is set when abort ran, onAbort is what it closes
	// (CloseOnAbort).
	aborted bool
	onAbort io.Closer
	// deadline is when the stream timer resets the stream (StreamTimeout),
	// zero for never: a handler's SetWriteDeadline replaces it with wtimer.
	deadline time.Time
	wtimer   *time.Timer
}

// abort fails the stream's body and cancels its context. The context is
// cancelled first, so that whoever sees the stream aborted (CloseOnAbort
// closing its closer at once) sees its context done too, and takes what
// failed for the client's going, not the target's.
func (st *stream) abort(err error) {
	if st.ctxCancel != nil {
		st.ctxCancel(err)
	}
	c := st.c
	c.mu.Lock()
	if st.bodyErr == nil || st.bodyErr == io.EOF {
		st.bodyErr = err
	}
	st.readCond.Broadcast()
	st.aborted = true
	closer := st.onAbort
	st.onAbort = nil
	c.mu.Unlock()
	if closer != nil {
		closer.Close()
	}
}

// CloseOnAbort has cl closed if the stream that w (this server's
// ResponseWriter, or one wrapping it that has Unwrap) answers is aborted
// before StopCloseOnAbort: reset by the peer, or by the server (its stream
// timeout), or its connection closed, the ends that cancel the request's
// context while its handler runs. It is context.AfterFunc(r.Context(),
// cl.Close) without the allocations, for a context with no other
// cancellation. It reports false, doing nothing, when w is not this
// server's; cl is closed at once when the stream was aborted already.
func CloseOnAbort(w http.ResponseWriter, cl io.Closer) bool {
	st := streamOf(w)
	if st == nil {
		return false
	}
	c := st.c
	c.mu.Lock()
	aborted := st.aborted
	if !aborted {
		st.onAbort = cl
	}
	c.mu.Unlock()
	if aborted {
		cl.Close()
	}
	return true
}

// StopCloseOnAbort ends the watch CloseOnAbort started; it reports false
// when the stream was aborted meanwhile (the closer is closed, or being
// closed), as a stop function of context.AfterFunc does.
func StopCloseOnAbort(w http.ResponseWriter) bool {
	st := streamOf(w)
	if st == nil {
		return false
	}
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.onAbort = nil
	return !st.aborted
}

// endWatch ends a CloseOnAbort watch its handler left on: a stream reset
// after its handler returned (a response shorter than it declared, a
// panic) closes nothing of the handler's.
func (st *stream) endWatch() {
	st.c.mu.Lock()
	st.onAbort = nil
	st.c.mu.Unlock()
}

// streamOf returns the stream w answers, or nil when w is not this
// server's.
func streamOf(w http.ResponseWriter) *stream {
	for {
		switch v := w.(type) {
		case *responseWriter:
			return v.st
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}

// appendBody keeps data for the handler; c.mu is held.
func (st *stream) appendBody(data []byte) {
	if st.off == len(st.body) {
		st.body, st.off = st.body[:0], 0
	}
	if st.body == nil {
		st.buf = getBuf()
		st.body = (*st.buf)[:0]
	}
	if len(st.body)+len(data) > cap(st.body) && st.off > 0 {
		n := copy(st.body, st.body[st.off:])
		st.body, st.off = st.body[:n], 0
	}
	st.body = append(st.body, data...)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, writeBufSize); return &b }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// The headers a request or response must not carry in HTTP/2 (RFC 9113
// §8.2.2).
func connectionHeader(lower string) bool {
	switch lower {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// buildRequest makes st's request from its HEADERS, checking it as RFC
// 9113 §8 requires.
func (st *stream) buildRequest(f *http2.MetaHeadersFrame) error {
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	scheme, authority := f.PseudoValue("scheme"), f.PseudoValue("authority")
	if f.PseudoValue("protocol") != "" {
		return errors.New(":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL")
	}
	if method == "" || !httpguts.ValidHeaderFieldName(method) {
		return errors.New("missing or invalid :method")
	}
	if method == http.MethodConnect {
		if scheme != "" || path != "" || authority == "" {
			return errors.New("CONNECT needs :authority only")
		}
	} else if scheme == "" || path == "" || path[0] != '/' && !(path == "*" && method == http.MethodOptions) {
		return errors.New("missing :scheme, or missing or invalid :path")
	}
	regular := f.RegularFields()
	h := make(http.Header, len(regular))
	vals := st.vals[:0]
	if len(regular) > len(st.vals) {
		vals = make([]string, 0, len(regular))
	}
	vals = vals[:len(regular)]
	var cookies []string
	declared := int64(-1)
	for i, hf := range regular {
		if connectionHeader(hf.Name) {
			return fmt.Errorf("connection-specific header %q", hf.Name)
		}
		switch hf.Name {
		case "te":
			if hf.Value != "trailers" {
				return errors.New(`te other than "trailers"`)
			}
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		case "content-length":
			n, err := strconv.ParseUint(hf.Value, 10, 63)
			if err != nil || declared >= 0 && int64(n) != declared {
				return errors.New("invalid content-length")
			}
			declared = int64(n)
		}
		k := canonicalHeader(hf.Name)
		if vs, ok := h[k]; ok {
			h[k] = append(vs, hf.Value)
			continue
		}
		vals[i] = hf.Value
		h[k] = vals[i : i+1 : i+1]
	}
	if len(cookies) > 0 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = firstValue(h, "Host")
	}
	var u *url.URL
	switch {
	case method == http.MethodConnect:
		u = &url.URL{Host: authority}
		path = authority
	case path == "*":
		u = &url.URL{Path: "*"}
	case plainTarget(path):
		// What url.ParseRequestURI makes of it, in the stream's own URL.
		st.url = plainURL(path)
		u = &st.url
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return fmt.Errorf("invalid :path: %w", err)
		}
	}
	// A value, not a pointer: WithContext below makes the one the handler
	// gets, and this one stays on the stack.
	r := http.Request{Method: method, URL: u, RequestURI: path, Host: authority,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, RemoteAddr: st.c.remote, TLS: st.c.tls}
	for _, v := range h["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = http.CanonicalHeaderKey(textTrim(k))
			if !httpguts.ValidTrailerHeader(k) {
				return fmt.Errorf("trailer %q not allowed", k)
			}
			if r.Trailer == nil {
				r.Trailer = http.Header{}
			}
			r.Trailer[k] = nil
		}
	}
	if f.StreamEnded() {
		if declared > 0 {
			return errors.New("content-length without a body")
		}
		r.Body, r.ContentLength = http.NoBody, 0
	} else {
		r.Body, r.ContentLength = (*requestBody)(st), declared
		st.needsContinue = len(h["Expect"]) == 1 && strings.EqualFold(h["Expect"][0], "100-continue")
	}
	st.declared = declared
	ctx, cancel := context.WithCancelCause(st.c.ctx)
	st.ctxCancel = cancel
	st.req = r.WithContext(ctx)
	return nil
}

// plainTarget reports whether url.ParseRequestURI would take path for a
// URL of Path (and RawQuery) alone, path unescaped and no RawPath: it
// starts with '/', its path has only characters a path never escapes
// (letters, digits and "-._~$&+,/:;=@"), its query no control characters.
func plainTarget(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	i := 0
	for ; i < len(path); i++ {
		c := path[i]
		if c == '?' {
			break
		}
		if !pathChar[c] {
			return false
		}
	}
	for ; i < len(path); i++ {
		if c := path[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// plainURL is the URL of a path plainTarget takes.
func plainURL(path string) url.URL {
	p, q, query := strings.Cut(path, "?")
	return url.URL{Path: p, RawQuery: q, ForceQuery: query && q == ""}
}

// pathChar marks the characters url.URL.EscapedPath leaves as they are.
var pathChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~$&+,/:;=@", byte(c)) >= 0
	}
	return t
}()

// firstValue is h.Get(k) for a canonical k, without canonicalizing it again.
func firstValue(h http.Header, k string) string {
	if vs := h[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func textTrim(s string) string { return strings.Trim(s, " \t") }

// requestBody is a stream's request body, as the handler reads it.
type requestBody stream

func (b *requestBody) Read(p []byte) (int, error) {
	st := (*stream)(b)
	c := st.c
	if st.needsContinue {
		st.needsContinue = false
		c.lockWrite()
		c.mu.Lock()
		open := !st.reset && !st.remoteClosed
		c.mu.Unlock()
		if open && !st.w.committed {
			c.writeHead(st.id, http.StatusContinue, nil, nil, nil, "", "", false)
		}
		c.unlockWrite(open && !st.w.committed)
	}
	c.mu.Lock()
	for {
		if st.bodyClosed {
			c.mu.Unlock()
			return 0, errors.New("http2: request body closed")
		}
		if n := copy(p, st.body[st.off:]); n > 0 {
			st.off += n
			c.mu.Unlock()
			c.giveBack(st, n)
			return n, nil
		}
		if st.bodyErr != nil {
			err := st.bodyErr
			c.mu.Unlock()
			return 0, err
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		if !st.rdeadline.IsZero() && !time.Now().Before(st.rdeadline) {
			c.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		st.readCond.Wait()
	}
}

// Close drops what the peer sends from now on.
func (b *requestBody) Close() error {
	st := (*stream)(b)
	c := st.c
	c.mu.Lock()
	unread := len(st.body) - st.off
	st.body, st.off = st.body[:0], 0
	st.bodyClosed = true
	st.readCond.Broadcast()
	c.mu.Unlock()
	if unread > 0 {
		c.giveBack(nil, unread)
	}
	return nil
}

// responseWriter is a stream's http.ResponseWriter. It keeps the body in a
// buffer until the buffer is full, the handler flushes or returns: a
// response that fits leaves in one flush, with its Content-Length.
//
// Unlike net/http's, it does not copy the header map at WriteHeader: the
// head is encoded from the map when it is sent, so a change to a
// non-trailer field after WriteHeader (which net/http ignores) still shows
// while the head is unsent. Trailers are sent as net/http sends them.
type responseWriter struct {
	st     *stream
	header http.Header
	// fields are head fields a handler gave as they go out
	// (ResponseFields), sent before header's.
	fields        []hpack.HeaderField
	status        int
	wroteHeader   bool
	committed     bool // the head was sent
	ended         bool // END_STREAM was sent
	trailers      []string
	pending       []byte
	buf           *[]byte
	written       int64
	contentLength int64
	err           error
	// finished: the handler returned; a write now is a handler's bug
	// (net/http panics), answered with errFinished.
	finished bool
}

var errFinished = errors.New("http2: response written after the handler returned")

func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.wroteHeader {
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		c := w.st.c
		c.lockWrite()
		c.writeHead(w.st.id, code, nil, w.header, nil, "", "", false)
		c.unlockWrite(true)
		return
	}
	w.wroteHeader, w.status = true, code
	for _, v := range w.header["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			if k = http.CanonicalHeaderKey(textTrim(k)); httpguts.ValidTrailerHeader(k) {
				w.trailers = append(w.trailers, k)
			}
		}
	}
	if cl := firstValue(w.header, "Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	if cl, ok := w.field("content-length"); ok {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			w.fields = slices.DeleteFunc(w.fields, func(f hpack.HeaderField) bool { return f.Name == "content-length" })
		}
	}
}

// ResponseFields returns the head fields of the response w writes, for a
// handler to append to before WriteHeader; nil when w is not this server's
// own writer (a wrapper that may edit the header map would not see them)
// or its head is written already. They go out as they are, before the
// header map's, in the order appended: names lower-case tokens, values
// without control characters but HTAB, no connection-specific fields
// (RFC 9113 §8.2.2), no pseudo-fields; Content-Length and Content-Type
// among them count as the map's would. It spares a handler that has the
// fields at hand (a relayed HTTP/1.1 response) the map, its
// canonical names and the checks per field when they are sent.
func ResponseFields(w http.ResponseWriter) *[]hpack.HeaderField {
	rw, ok := w.(*responseWriter)
	if !ok || rw.wroteHeader || rw.finished {
		return nil
	}
	if rw.fields == nil {
		rw.fields = rw.st.fieldArr[:0]
	}
	return &rw.fields
}

// field returns the value of the first head field named name (lower-case)
// among w.fields.
func (w *responseWriter) field(name string) (string, bool) {
	for i := range w.fields {
		if w.fields[i].Name == name {
			return w.fields[i].Value, true
		}
	}
	return "", false
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.finished {
		return 0, errFinished
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.st.req.Method == http.MethodHead {
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		if len(w.pending) == 0 && len(p) >= writeBufSize {
			if err := w.emit(p, false, false); err != nil {
				return n - len(p), err
			}
			break
		}
		if w.buf == nil {
			w.buf = getBuf()
			w.pending = (*w.buf)[:0]
		}
		k := copy(w.pending[len(w.pending):cap(w.pending)], p)
		w.pending, p = w.pending[:len(w.pending)+k], p[k:]
		if len(w.pending) == cap(w.pending) {
			if err := w.emit(w.pending, false, false); err != nil {
				return n - len(p), err
			}
			w.pending = w.pending[:0]
		}
	}
	return n, nil
}

// Flush sends the head and what the body buffer holds.
func (w *responseWriter) Flush() { w.FlushError() }

// FlushError is Flush, reporting why it failed.
func (w *responseWriter) FlushError() error {
	if w.finished {
		return errFinished
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	err := w.emit(w.pending, false, true)
	w.pending = w.pending[:0]
	return err
}

// SetReadDeadline bounds the reads of the request body: past t they fail
// with os.ErrDeadlineExceeded (until the deadline is moved).
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	st, c := w.st, w.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	st.rdeadline = t
	if t.IsZero() {
		if st.rtimer != nil {
			st.rtimer.Stop()
		}
		return nil
	}
	d := time.Until(t)
	if st.rtimer == nil {
		st.rtimer = time.AfterFunc(d, func() {
			c.mu.Lock()
			st.readCond.Broadcast()
			c.mu.Unlock()
		})
	} else {
		st.rtimer.Reset(d)
	}
	st.readCond.Broadcast()
	return nil
}

// SetWriteDeadline bounds the response: past t the stream is reset and
// writes fail. It replaces the server's StreamTimeout for the stream (zero:
// no bound at all), as net/http's does its WriteTimeout.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	st := w.st
	st.c.mu.Lock()
	st.deadline = time.Time{}
	st.c.mu.Unlock()
	if t.IsZero() {
		if st.wtimer != nil {
			st.wtimer.Stop()
		}
		return nil
	}
	d := time.Until(t)
	if st.wtimer == nil {
		st.wtimer = time.AfterFunc(d, func() { st.c.resetStream(st.id, http2.ErrCodeInternal) })
	} else {
		st.wtimer.Reset(d)
	}
	return nil
}

// EnableFullDuplex is a no-op: HTTP/2 reads and writes a stream at once.
func (w *responseWriter) EnableFullDuplex() error { return nil }

// finish ends the response after the handler returned.
func (w *responseWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.contentLength >= 0 && w.written < w.contentLength && w.st.req.Method != http.MethodHead && bodyAllowed(w.status) {
		// Fewer bytes than the head promised: the peer must not take
		// the body for whole.
		w.release()
		w.st.c.resetStream(w.st.id, http2.ErrCodeInternal)
		return
	}
	if w.err == nil && !w.ended {
		w.emit(w.pending, true, true)
	}
	w.release()
}

func (w *responseWriter) release() {
	w.finished = true
	if w.buf != nil {
		putBuf(w.buf)
		w.buf, w.pending = nil, nil
	}
}

// prepareHead completes the head before it is sent, without changing the
// handler's map: the body's Content-Length when the body is all there
// (final), its Content-Type sniffed when unset.
func (w *responseWriter) prepareHead(p []byte, final bool) (ctype, clen string) {
	h := w.header
	if !bodyAllowed(w.status) {
		return "", ""
	}
	if _, ok := h["Content-Type"]; !ok && len(p) > 0 && firstValue(h, "Content-Encoding") == "" {
		_, typed := w.field("content-type")
		if enc, _ := w.field("content-encoding"); !typed && enc == "" {
			ctype = http.DetectContentType(p)
		}
	}
	if _, ok := h["Content-Length"]; !ok && final && len(w.trailers) == 0 && !w.hasPrefixTrailers() && w.st.req.Method != http.MethodHead {
		if _, ok := w.field("content-length"); !ok {
			clen = strconv.Itoa(len(p))
		}
	}
	return ctype, clen
}

func (w *responseWriter) hasPrefixTrailers() bool {
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// trailerFields are the trailers to send: the declared ones that have
// values, and those set with http.TrailerPrefix.
func (w *responseWriter) trailerFields() []hpack.HeaderField {
	var out []hpack.HeaderField
	for _, k := range w.trailers {
		for _, v := range w.header[k] {
			out = append(out, hpack.HeaderField{Name: lowerHeader(k), Value: v})
		}
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidTrailerHeader(http.CanonicalHeaderKey(name)) {
			for _, v := range vs {
				out = append(out, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
			}
		}
	}
	return out
}

// emit sends p as DATA frames, after the head when it is unsent; with end
// it ends the stream (with trailers when there are some), with flush it
// flushes the connection at the end.
func (w *responseWriter) emit(p []byte, end, flush bool) error {
	st, c := w.st, w.st.c
	var ctype, clen string
	if !w.committed {
		ctype, clen = w.prepareHead(p, end)
	}
	var trailers []hpack.HeaderField
	if end {
		trailers = w.trailerFields()
	}
	for {
		n := 0
		if len(p) > 0 {
			var err error
			if n, err = c.reserve(st, len(p)); err != nil {
				w.err = err
				return err
			}
		}
		chunk, rest := p[:n], p[n:]
		final := end && len(rest) == 0
		c.lockWrite()
		c.mu.Lock()
		reset, remoteOpen := st.reset, !st.remoteClosed
		if final && remoteOpen && !reset {
			st.reset, st.resetByUs = true, true
		}
		c.mu.Unlock()
		if reset {
			c.unlockWrite(false)
			w.err = errors.New("http2: stream closed")
			return w.err
		}
		if !w.committed {
			w.committed = true
			w.ended = final && len(chunk) == 0 && len(trailers) == 0
			c.writeHead(st.id, w.status, w.fields, w.header, w.trailers, ctype, clen, w.ended)
			if w.ended {
				w.trailers = nil
			}
		}
		if !w.ended && (len(chunk) > 0 || final && len(trailers) == 0) {
			w.ended = final && len(trailers) == 0
			c.fr.WriteData(st.id, w.ended, chunk)
			c.sentSincePing.Store(true)
		}
		if final && !w.ended {
			c.writeFields(st.id, trailers, true)
			w.ended = true
		}
		if final && remoteOpen {
			// The request's body is not needed any more (RFC 9113 §8.1).
			c.fr.WriteRSTStream(st.id, http2.ErrCodeNo)
		}
		err := c.unlockWriteYield(flush && len(rest) == 0)
		if err != nil {
			w.err = err
			return err
		}
		if len(rest) == 0 {
			return nil
		}
		p = rest
	}
}

// reserve waits until the connection's and st's send windows allow some of
// want bytes and takes up to a frame of them.
func (c *serverConn) reserve(st *stream, want int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	flushed := false
	for {
		if st.reset {
			return 0, errors.New("http2: stream closed")
		}
		if c.closed {
			return 0, errors.New("http2: connection closed")
		}
		n := min(int64(want), c.sendWindow, st.sendWindow, int64(c.maxFrame))
		if n > 0 {
			c.sendWindow -= n
			st.sendWindow -= n
			return int(n), nil
		}
		if !flushed {
			// The peer opens windows for what it received: send it
			// what is buffered before waiting.
			flushed = true
			c.mu.Unlock()
			c.lockWrite()
			c.unlockWrite(true)
			c.mu.Lock()
			continue
		}
		c.sendCond.Wait()
	}
}

// writeHead writes a response head: status, fields (ResponseFields), h but
// for the trailers, and a Content-Type and Content-Length unless "". wmu is
// held. The fields go out as literals that the client's decoder does not
// index (appendLiteralField), not through the Encoder's search of its
// tables.
func (c *serverConn) writeHead(id uint32, status int, fields []hpack.HeaderField, h http.Header, trailers []string, ctype, clen string, end bool) {
	c.hbuf.b = c.hbuf.b[:0]
	b := c.beginBlock(hpack.HeaderField{Name: ":status", Value: statusText(status)})
	if b == nil {
		b = appendStatusField(c.hbuf.b, status)
	}
	if ctype != "" {
		b = appendLiteralField(b, hpack.HeaderField{Name: "content-type", Value: ctype})
	}
	if clen != "" {
		b = appendLiteralField(b, hpack.HeaderField{Name: "content-length", Value: clen})
	}
	for _, f := range fields {
		b = appendLiteralField(b, f)
	}
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) || slices.Contains(trailers, k) {
			continue
		}
		name := lowerHeader(k)
		if connectionHeader(name) {
			continue
		}
		for _, v := range vs {
			if httpguts.ValidHeaderFieldValue(v) {
				b = appendLiteralField(b, hpack.HeaderField{Name: name, Value: v})
			}
		}
	}
	c.hbuf.b = b
	c.writeBlock(id, end)
}

// writeFields writes a header block of fields (trailers); wmu is held.
func (c *serverConn) writeFields(id uint32, fields []hpack.HeaderField, end bool) {
	c.hbuf.b = c.hbuf.b[:0]
	for _, f := range fields {
		if !httpguts.ValidHeaderFieldValue(f.Value) {
			continue
		}
		if b := c.beginBlock(f); b != nil {
			c.hbuf.b = b
		} else {
			c.hbuf.b = appendLiteralField(c.hbuf.b, f)
		}
	}
	c.writeBlock(id, end)
}

// beginBlock starts a header block: when the peer changed its
// SETTINGS_HEADER_TABLE_SIZE since the last block, the Encoder writes
// first, the dynamic table size update it owes (RFC 7541 §4.2) and then
// first, and beginBlock returns the block so far; otherwise nil, and the
// caller writes first itself. A block started, the next call returns nil.
// wmu is held.
func (c *serverConn) beginBlock(first hpack.HeaderField) []byte {
	if !c.tableChanged {
		return nil
	}
	c.tableChanged = false
	c.enc.WriteField(first)
	return c.hbuf.b
}

func (c *serverConn) writeBlock(id uint32, end bool) {
	// A write error is kept (connWriter) and closes the connection; every
	// later write fails with it, so it needs no handling here.
	_ = writeHeaderBlock(c.fr, id, c.hbuf.b, end, c.maxFrameLocked())
	c.sentSincePing.Store(true)
}

func (c *serverConn) maxFrameLocked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxFrame
}

var statusTexts [600]string

func statusText(code int) string {
	if code < len(statusTexts) {
		if s := statusTexts[code]; s != "" {
			return s
		}
	}
	return strconv.Itoa(code)
}

// commonHeaders maps the lower-case names of common fields to their
// canonical form, and back, so that neither costs an allocation.
var commonHeaders, commonLower = map[string]string{}, map[string]string{}

func init() {
	for i := 100; i < len(statusTexts); i++ {
		statusTexts[i] = strconv.Itoa(i)
	}
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Age", "Authorization",
		"Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expect", "Expires",
		"From", "Host", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since",
		"Last-Modified", "Link", "Location", "Max-Forwards", "Origin", "Proxy-Authenticate",
		"Proxy-Authorization", "Range", "Referer", "Refresh", "Retry-After", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Te", "Trailer", "User-Agent", "Vary", "Via", "Www-Authenticate",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id", "Traceparent",
		"Grpc-Status", "Grpc-Message", "Grpc-Timeout", "Grpc-Encoding", "Grpc-Accept-Encoding",
		HeaderTargetGroup, HeaderTarget, HeaderIdentity, HeaderVersion, HeaderProbe, HeaderService,
		HeaderNetwork, HeaderPort, HeaderTunnel, HeaderRefused,
	} {
		lower := strings.ToLower(k)
		commonHeaders[lower], commonLower[k] = k, lower
	}
}

func canonicalHeader(lower string) string {
	if k, ok := commonHeaders[lower]; ok {
		return k
	}
	return http.CanonicalHeaderKey(lower)
}

func lowerHeader(k string) string {
	if l, ok := commonLower[k]; ok {
		return l
	}
	return strings.ToLower(k)
}
