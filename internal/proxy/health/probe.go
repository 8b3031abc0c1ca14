package health

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
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
// or http.ReadResponse per check cost more than the check.

const (
	// DefaultMaxKeptConns bounds the check connections kept between checks
	// when Config.MaxKeptConns is zero; it is also at most half the
	// process's open-file limit, so that checks never take the descriptors
	// traffic needs. A check past the bound opens a connection of its own
	// and closes it afterwards.
	DefaultMaxKeptConns = 200_000
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

// keptConn is a check's connection to its target.
type keptConn struct {
	net.Conn
	// counted reports whether the connection counts toward the checker's
	// bound of kept connections; one that does not is closed after its
	// check.
	counted bool
	// raw, peekFn, peekBuf and peekErr serve idle.
	raw     syscall.RawConn
	peekFn  func(fd uintptr) bool
	peekBuf [1]byte
	peekErr error
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
}

var probeBufs = sync.Pool{New: func() any {
	pb := &probeBuf{}
	pb.br = bufio.NewReaderSize(&pb.src, checkBuffer)
	pb.bw = bufio.NewWriterSize(&pb.sink, 512)
	return pb
}}

// countingReader counts what it reads, so that a check tells a kept
// connection the target had closed (nothing read) from a broken answer.
type countingReader struct {
	conn net.Conn
	n    int
}

func (r *countingReader) Read(p []byte) (int, error) {
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

// probePlain runs one plain HTTP/1.1 check of ch: a GET of the check path
// on ch's kept connection, or on a new one. A kept connection with
// something to read before the request (an answer nobody asked for, or the
// target's close) is not used; one that ends before any byte of the answer
// arrives (the target closed it meanwhile) is replaced once within the
// same check, so that a restarted target does not fail a check. It
// returns nil when the target answered in time with a healthy status code.
func (c *Checker) probePlain(ch *check) error {
	sp := ch.sp
	if sp.requestURI == "" {
		return fmt.Errorf("healthCheck.path: %q is not a request target", sp.pathQuery)
	}
	deadline := time.Now().Add(sp.timeout)
	pb := probeBufs.Get().(*probeBuf)
	defer probeBufs.Put(pb)
	kc := ch.conn.Load()
	if kc != nil && !kc.idle() {
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
}

// dial opens a connection for ch's checks and makes it ch's.
func (c *Checker) dial(ch *check, deadline time.Time) (*keptConn, error) {
	// No TCP keep-alive probes: the checks themselves probe the
	// connection, and an idle one costs nothing.
	d := net.Dialer{Deadline: deadline, KeepAlive: -1}
	conn, err := d.DialContext(c.ctx, "tcp", ch.key.addr)
	if err != nil {
		return nil, err
	}
	kc := &keptConn{Conn: conn, counted: c.kept.Add(1) <= c.maxKept}
	if !kc.counted {
		c.kept.Add(-1)
	}
	if sc, ok := conn.(syscall.Conn); ok {
		kc.raw, _ = sc.SyscallConn()
	}
	ch.conn.Store(kc)
	// Close closes every check's connection after ending c.ctx: one
	// stored after that is closed here.
	if c.ctx.Err() != nil {
		c.drop(ch, kc)
		return nil, c.ctx.Err()
	}
	return kc, nil
}

// drop closes kc, ch's connection.
func (c *Checker) drop(ch *check, kc *keptConn) {
	ch.conn.CompareAndSwap(kc, nil)
	kc.abort()
	if kc.counted {
		c.kept.Add(-1)
	}
}

// abort closes kc with a reset rather than a FIN, as HAProxy closes its
// checks' connections: nothing is left to deliver, and the connection
// leaves no TIME_WAIT behind (at thousands of checks a second, tens of
// thousands of sockets, each a kernel timer).
func (kc *keptConn) abort() {
	if tc, ok := kc.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	kc.Close()
}

// KeptConns returns how many check connections the checker holds open.
func (c *Checker) KeptConns() int { return int(c.kept.Load()) }

// exchange writes the check's request to kc and reads the answer: its
// status code, whether kc can carry the next check, and whether any byte
// of an answer arrived.
func (pb *probeBuf) exchange(kc *keptConn, requestURI, addr string) (code int, keep, answered bool, err error) {
	pb.req = append(pb.req[:0], "GET "...)
	pb.req = append(pb.req, requestURI...)
	pb.req = append(pb.req, " HTTP/1.1\r\nHost: "...)
	pb.req = append(pb.req, addr...)
	pb.req = append(pb.req, "\r\nUser-Agent: "+userAgent+"\r\n\r\n"...)
	if _, err := kc.Write(pb.req); err != nil {
		return 0, false, false, err
	}
	pb.src = countingReader{conn: kc.Conn}
	pb.br.Reset(&pb.src)
	defer func() { pb.src.conn = nil }()
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
			return code, pb.discardBody() && pb.br.Buffered() == 0, true, nil
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
