package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"trellis.dev/trellis/internal/proxy/h1"
)

// The plain HTTP/1.1 check, the common one, runs as a production proxy's
// checks do: on a connection kept from one check of its address to the
// next, with the check's deadline on the connection (no context, timer or
// goroutine of its own), and read with a buffer that checks in flight
// share from a pool (the proxy's own fuzzed response parser; no per-check
// reader). At thousands of checks a second, a new connection, a transport
// or http.ReadResponse per check cost more than the check. An HTTPS check
// of HTTP/1.1 runs the same way over TLS on the kept TCP connection: a
// TLS handshake per check would cost some 40 times the check.

const (
	// DefaultMaxKeptConns bounds the check connections kept between checks
	// when Config.MaxKeptConns is zero; it is also at most half the
	// process's open-file limit, so that checks never take the descriptors
	// traffic needs. A check past the bound opens a connection of its own
	// and closes it afterwards.
	DefaultMaxKeptConns = 200_000
	// DefaultMaxKeptH2Conns bounds, within DefaultMaxKeptConns, the
	// HTTP/2 check connections kept between checks: each holds a read
	// loop (a goroutine) and its framer's buffers, some 20 KB in all,
	// where a kept HTTP/1.1 connection holds a socket and its few hundred
	// bytes.
	DefaultMaxKeptH2Conns = 10_000
	// maxCheckHead bounds a check response's head.
	maxCheckHead = 16 << 10
	// maxCheckBody bounds the body a check reads so as to keep its
	// connection. The status alone decides a check: a longer body, one
	// that ends with the connection, or one that does not arrive by the
	// check's deadline closes the connection instead.
	maxCheckBody = 64 << 10
	// maxInformational bounds the 1xx answers a check skips before the
	// final one.
	maxInformational = 4
	// checkBuffer is the size of the reader a check in flight reads with.
	checkBuffer = 1024
)

// keptConn is a check's connection to its target: plain TCP, TLS over
// it (tls, for HTTPS checks of HTTP/1.1), or an HTTP/2 client connection
// over either (cc, probe_h2.go).
type keptConn struct {
	// Conn is what an HTTP/1.1 check writes and reads: tcp, or tls.
	net.Conn
	// tcp is the connection under everything, closed with a reset.
	tcp *net.TCPConn
	// wire, under tls or cc, sees every byte read from tcp.
	wire *wireConn
	tls  *tls.Conn
	cc   *http.ClientConn
	// counted reports whether the connection counts toward the checker's
	// bound of kept connections; one that does not is closed after its
	// check.
	counted bool
	// token is the connection's in the answer loop's epoll instance,
	// 0 before it is registered there (answers_linux.go); only the
	// scheduler sets it.
	token uint64
	// stray, guarded by the answer loop's mu, marks a connection of
	// which the loop saw an event with no check pending: the next check
	// peeks it (answers_linux.go).
	stray bool
	// mu guards detached, sock, closed and tmp, and every use of sock:
	// a socket closed (and its number reused) under a system call made on
	// it would read or write another connection.
	mu sync.Mutex
	// detached is set once the answer loop watches the connection
	// (kept_linux.go): the connection is then sock, a non-blocking socket
	// outside Go's poller, and tcp is closed (Conn with it). closed is
	// set when the connection closed. tmp is a net.Conn over a duplicate
	// of sock while a worker reads an answer on it (readOn).
	detached bool
	sock     int
	closed   bool
	tmp      net.Conn
	// raw, peekFn, peekBuf and peekErr serve idle.
	raw     syscall.RawConn
	peekFn  func(fd uintptr) bool
	peekBuf [1]byte
	peekErr error
	// peeks counts the peeks made (tests); one check at a time makes
	// them.
	peeks int
}

// probeBuf is what one check in flight writes and reads with.
type probeBuf struct {
	req  []byte
	src  countingReader
	br   *bufio.Reader
	head []byte
	resp h1.Response
	// sink takes a chunked body being discarded, through bw.
	sink bodySink
	bw   *bufio.Writer
	// got is what the answer loop read of an answer (answers_linux.go).
	got []byte
}

var probeBufs = sync.Pool{New: func() any {
	pb := &probeBuf{}
	pb.br = bufio.NewReaderSize(&pb.src, checkBuffer)
	pb.bw = bufio.NewWriterSize(&pb.sink, 512)
	return pb
}}

// countingReader counts what it reads, so that a check tells a kept
// connection the target had closed (nothing read) from a broken answer.
// It reads prefix first (what the answer loop read of the answer), then
// conn; without conn, errIncomplete past prefix.
type countingReader struct {
	prefix []byte
	conn   net.Conn
	n      int
	// short reports that a read went past prefix without conn.
	short bool
}

// errIncomplete is the answer loop's answer that goes on past what it read.
var errIncomplete = errors.New("health check answer incomplete")

func (r *countingReader) Read(p []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(p, r.prefix)
		r.prefix = r.prefix[n:]
		r.n += n
		return n, nil
	}
	if r.conn == nil {
		r.short = true
		return 0, errIncomplete
	}
	n, err := r.conn.Read(p)
	r.n += n
	return n, err
}

// bodySink discards what it is given, up to maxCheckBody bytes.
type bodySink struct{ n int }

var errBodyTooLong = fmt.Errorf("health check response body longer than %d bytes", maxCheckBody)

func (s *bodySink) Write(p []byte) (int, error) {
	if s.n += len(p); s.n > maxCheckBody {
		return 0, errBodyTooLong
	}
	return len(p), nil
}

// noFlush is the Flusher of a body copy whose destination waits for
// nothing.
type noFlush struct{}

func (noFlush) Flush() error { return nil }

// probeH1 runs one HTTP/1.1 check of ch, plain or HTTPS: a GET of the
// check path on ch's kept connection, or on a new one. A kept connection with
// something to read before the request (an answer nobody asked for, or the
// target's close) is not used; one that ends before any byte of the answer
// arrives (the target closed it meanwhile) is replaced once within the
// same check, so that a restarted target does not fail a check. It
// returns nil when the target answered in time with a healthy status code.
func (c *Checker) probeH1(ch *check) error {
	sp := ch.sp
	if sp.requestURI == "" {
		return fmt.Errorf("healthCheck.path: %q is not a request target", sp.pathQuery)
	}
	deadline := time.Now().Add(sp.timeout)
	pb := probeBufs.Get().(*probeBuf)
	defer probeBufs.Put(pb)
	kc := ch.conn.Load()
	// A connection the answer loop watches has no Conn to write and
	// read: it meets a worker only when sendFast did not take its check
	// (the checker closing), and is not reused.
	if kc != nil && (kc.isDetached() || !kc.idle()) {
		c.drop(ch, kc)
		kc = nil
	}
	for reused := kc != nil; ; reused = false {
		if kc == nil {
			var err error
			if kc, err = c.dial(ch, deadline); err != nil {
				return err
			}
		}
		kc.SetDeadline(deadline)
		code, keep, answered, err := pb.exchange(kc, sp.requestURI, ch.key.addr)
		if err != nil && reused && !answered && !isTimeout(err) && c.ctx.Err() == nil {
			c.drop(ch, kc)
			kc = nil
			continue
		}
		if keep && kc.counted {
			kc.SetDeadline(time.Time{})
		} else {
			c.drop(ch, kc)
		}
		return c.outcome(sp, code, err)
	}
}

// readOn reads on the answer to ch's check on kc of which the answer
// loop read prefix (pb.got), with blocking reads until deadline, and ends
// the check as probeH1 does.
// A connection the answer loop watches is read through a net.Conn over a
// duplicate of its socket, closed before the check ends.
func (c *Checker) readOn(ch *check, kc *keptConn, pb *probeBuf, prefix []byte, deadline time.Time) error {
	conn := kc.Conn
	if kc.isDetached() {
		var err error
		if conn, err = kc.borrow(); err != nil {
			c.drop(ch, kc)
			return c.outcome(ch.sp, 0, err)
		}
		defer kc.giveBack(conn)
	}
	conn.SetDeadline(deadline)
	pb.src = countingReader{prefix: prefix, conn: conn}
	pb.br.Reset(&pb.src)
	code, keep, _, err := pb.readAnswer()
	pb.src = countingReader{}
	if keep {
		conn.SetDeadline(time.Time{})
	} else {
		c.drop(ch, kc)
	}
	return c.outcome(ch.sp, code, err)
}

// outcome is a check's result from what its exchange gave: the
// checker's end, the exchange's error, or a status outside the matcher.
func (c *Checker) outcome(sp *spec, code int, err error) error {
	switch {
	case c.ctx.Err() != nil:
		return c.ctx.Err()
	case err != nil:
		return err
	case !sp.healthyCode(code):
		return &statusError{code: code}
	}
	return nil
}

// dial opens a connection for ch's checks and makes it ch's: TCP, and
// TLS over it for an HTTPS check (resuming a session of the checker's
// cache when it can).
func (c *Checker) dial(ch *check, deadline time.Time) (*keptConn, error) {
	tcp, err := c.dialTCP(c.ctx, ch.key.addr, deadline)
	if err != nil {
		return nil, err
	}
	kc := &keptConn{Conn: tcp, tcp: tcp, counted: c.count(false)}
	kc.raw, _ = tcp.SyscallConn()
	if ch.sp.https {
		kc.wire = &wireConn{TCPConn: tcp, records: true}
		kc.tls = tls.Client(kc.wire, c.tlsH1)
		kc.Conn = kc.tls
	}
	ch.conn.Store(kc)
	// Close closes every check's connection after ending c.ctx: one
	// stored after that is closed here.
	if c.ctx.Err() != nil {
		c.drop(ch, kc)
		return nil, c.ctx.Err()
	}
	if kc.tls != nil {
		kc.tls.SetDeadline(deadline)
		if err := kc.tls.Handshake(); err != nil {
			c.drop(ch, kc)
			return nil, err
		}
	}
	return kc, nil
}

// dialTCP opens a TCP connection for a check.
func (c *Checker) dialTCP(ctx context.Context, addr string, deadline time.Time) (*net.TCPConn, error) {
	// No TCP keep-alive probes: the checks themselves probe the
	// connection, and an idle one costs nothing.
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// count reports whether a new connection (an HTTP/2 one when h2 is set)
// counts toward the bounds of kept connections, counting it if so.
func (c *Checker) count(h2 bool) bool {
	if h2 && c.keptH2.Add(1) > c.maxKeptH2 {
		c.keptH2.Add(-1)
		return false
	}
	if c.kept.Add(1) <= c.maxKept {
		return true
	}
	c.kept.Add(-1)
	if h2 {
		c.keptH2.Add(-1)
	}
	return false
}

// drop closes kc, ch's connection.
func (c *Checker) drop(ch *check, kc *keptConn) {
	ch.conn.CompareAndSwap(kc, nil)
	kc.abort()
	if kc.token != 0 {
		c.answers.forget(kc)
	}
	if kc.counted {
		c.kept.Add(-1)
		if kc.cc != nil {
			c.keptH2.Add(-1)
		}
	}
}

// abort closes kc with a reset rather than a FIN, as HAProxy closes its
// checks' connections: nothing is left to deliver, and the connection
// leaves no TIME_WAIT behind (at thousands of checks a second, tens of
// thousands of sockets, each a kernel timer). A TLS connection ends
// without close_notify: a reset discards it anyway.
func (kc *keptConn) abort() {
	kc.tcp.SetLinger(0)
	kc.closeNow()
}

// closeNow closes kc at once, whatever is in flight on it. (abort's
// SetLinger does nothing on a detached connection, whose tcp is closed:
// its socket was set to close with a reset when it was detached.)
func (kc *keptConn) closeNow() {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	kc.closed = true
	if kc.tmp != nil {
		kc.tmp.Close()
		kc.tmp = nil
	}
	if kc.detached {
		closeSocket(kc.sock)
		kc.sock = -1
		return
	}
	kc.tcp.Close()
	if kc.cc != nil {
		kc.cc.Close()
	}
}

// idle reports whether kc has nothing to read: no answer that nobody asked
// for (a stale answer would pass for the next check's), and no close by
// the target. It costs one non-blocking peek, and for TLS a read that
// cannot wait (a record the TLS connection holds already read).
func (kc *keptConn) idle() bool {
	if !kc.socketIdle() {
		return false
	}
	if kc.tls == nil {
		return true
	}
	if !kc.wire.atRecordBoundary() {
		return false // part of a record read, the rest to come
	}
	// A read deadline already past makes the read return at once: with
	// data or an alert the connection holds, or with a timeout when it
	// holds nothing. (The one write it may make, a KeyUpdate's answer,
	// goes to a socket whose send buffer holds nothing between checks.)
	kc.tls.SetReadDeadline(longAgo)
	n, err := kc.tls.Read(kc.peekBuf[:])
	return n == 0 && errors.Is(err, os.ErrDeadlineExceeded)
}

// longAgo is a deadline already past.
var longAgo = time.Unix(1, 0)

// wireConn is the TCP connection under a TLS or HTTP/2 check connection.
// It follows TLS records (records), so that a check can tell part of a
// record waiting in the TLS connection's buffer; and it bounds what a
// target sends on a kept HTTP/2 connection (limited): a read past budget
// ends the connection.
type wireConn struct {
	*net.TCPConn
	records bool
	// hdr and nh are the header of the record being read, as far as it
	// has come; left is how much of its body is still to come.
	hdr  [5]byte
	nh   int
	left int

	limited bool
	budget  atomic.Int64
}

// errReadBudget ends a check connection on which the target sent more than
// its checks need (a flood of frames).
var errReadBudget = errors.New("health check target sent more than its checks need")

func (w *wireConn) Read(p []byte) (int, error) {
	n, err := w.TCPConn.Read(p)
	if w.records {
		w.follow(p[:n])
	}
	if w.limited && w.budget.Add(-int64(n)) < 0 {
		return 0, errReadBudget
	}
	return n, err
}

// follow moves the record boundary past p.
func (w *wireConn) follow(p []byte) {
	for len(p) > 0 {
		if w.left > 0 {
			k := min(w.left, len(p))
			w.left -= k
			p = p[k:]
			continue
		}
		k := copy(w.hdr[w.nh:], p)
		w.nh += k
		p = p[k:]
		if w.nh == len(w.hdr) {
			w.left = int(binary.BigEndian.Uint16(w.hdr[3:]))
			w.nh = 0
		}
	}
}

// atRecordBoundary reports whether every record read so far was read
// whole.
func (w *wireConn) atRecordBoundary() bool { return w.nh == 0 && w.left == 0 }

// KeptConns returns how many check connections the checker holds open.
func (c *Checker) KeptConns() int { return int(c.kept.Load()) }

// exchange writes the check's request to kc and reads the answer: its
// status code, whether kc can carry the next check, and whether any byte
// of an answer arrived.
func (pb *probeBuf) exchange(kc *keptConn, requestURI, addr string) (code int, keep, answered bool, err error) {
	pb.request(requestURI, addr)
	if _, err := kc.Write(pb.req); err != nil {
		return 0, false, false, err
	}
	pb.src = countingReader{conn: kc.Conn}
	pb.br.Reset(&pb.src)
	defer func() { pb.src = countingReader{} }()
	return pb.readAnswer()
}

// request makes pb.req the check's request.
func (pb *probeBuf) request(requestURI, addr string) {
	pb.req = appendRequest(pb.req[:0], requestURI, addr)
}

// appendRequest appends a check's request to b.
func appendRequest(b []byte, requestURI, addr string) []byte {
	b = append(b, "GET "...)
	b = append(b, requestURI...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, addr...)
	return append(b, "\r\nUser-Agent: "+userAgent+"\r\n\r\n"...)
}

// readAnswer reads the answer to the check's request from pb.br: its
// status code, whether the connection can carry the next check, and
// whether any byte of an answer arrived.
func (pb *probeBuf) readAnswer() (code int, keep, answered bool, err error) {
	for range maxInformational + 1 {
		head, err := h1.ReadResponseHead(pb.br, pb.head, maxCheckHead)
		if err != nil {
			return 0, false, pb.src.n > 0, err
		}
		if err := h1.ParseResponse(head, &pb.resp); err != nil {
			return 0, false, true, err
		}
		code = pb.resp.Code
		if code >= 200 {
			return code, pb.discardBody() && pb.br.Buffered() == 0 && len(pb.src.prefix) == 0, true, nil
		}
		if code == 101 {
			break // a switch of protocols nobody asked for
		}
	}
	return code, false, true, nil
}

// discardBody reads the body of pb.resp, up to maxCheckBody bytes, and
// reports whether the connection can carry the next check.
func (pb *probeBuf) discardBody() bool {
	r := &pb.resp
	switch {
	case r.Close:
		return false
	case h1.Bodyless("GET", r.Code):
		return true
	case r.Chunked:
		pb.sink.n = 0
		pb.bw.Reset(&pb.sink)
		_, err := h1.CopyChunked(pb.bw, pb.br, noFlush{})
		return err == nil
	case r.ContentLength < 0 || r.ContentLength > maxCheckBody:
		return false
	}
	_, err := pb.br.Discard(int(r.ContentLength))
	return err == nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
