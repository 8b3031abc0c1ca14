package health

import (
	"bytes"
	"container/heap"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"trellis.dev/trellis/internal/proxy/h1"
)

// A plain HTTP/1.1 check that has no kept connection while the bound of
// kept connections is reached (past it, every check opens a connection
// and closes it) runs on the answer loop too, on a socket of its own
// made with raw system calls: the scheduler opens it without blocking
// and registers it with the loop's epoll instance, and the loop sends the
// request once the connection is up, reads the answer as it comes, and
// closes the socket with a reset as soon as the status is known. Such a
// check costs a socket, a connect, a send, a read and a close, with the
// loop's wake-ups shared by the checks answered together, where a worker
// dialing through net.Dialer cost a hand-off to the worker, the runtime
// poller's registration, the deadlines set and cleared, socket options
// and address look-ups, and a park and wake-up for the connect and for
// the answer each. The check's timeout bounds the connect and the answer
// together, as a worker's deadline does.

// maxDialAnswer bounds what the loop reads of the answer to a check on a
// connection it dialed before the final status is known: a head of
// maxCheckHead and a read's worth more (1xx answers before it included).
// Past it the check fails.
const maxDialAnswer = maxCheckHead + answerBuffer

// errDialAnswerTooLong fails a check whose final status did not come
// within maxDialAnswer bytes.
var errDialAnswerTooLong = fmt.Errorf("health check answer: no final status within %d bytes: %w", maxDialAnswer, h1.ErrMalformed)

// dialFast starts ch's check on a connection the answer loop dials, when
// it is a plain HTTP/1.1 check of an IP address with no kept connection
// and the bound of kept connections is reached (otherwise a worker dials,
// and keeps the connection), while the loop dials fewer checks than
// MaxChecksInFlight less the workers running. done, when set, takes the
// outcome instead of finish (tests). It reports false when it did not
// start the check: the check is then for a worker.
func (c *Checker) dialFast(ch *check, done func(error)) bool {
	l := c.answers
	sp := ch.sp
	if l == nil || sp.https || sp.http2 || sp.requestURI == "" || c.ctx.Err() != nil {
		return false
	}
	if ch.conn.Load() != nil || c.kept.Load() < c.maxKept {
		return false
	}
	ap, err := netip.ParseAddrPort(ch.key.addr)
	if err != nil || ap.Addr().Zone() != "" {
		return false // a name, or a zone: net.Dialer's business
	}
	l.mu.Lock()
	// The loop's dials and the workers running hold about
	// MaxChecksInFlight sockets of checks in flight at most.
	if l.closed || l.dials >= MaxChecksInFlight-int(c.workers.Load()) {
		l.mu.Unlock()
		return false
	}
	l.dials++
	l.next++
	token := l.next
	l.mu.Unlock()
	start := time.Now()
	fd, err := openCheckSocket(ap)
	if err != nil {
		l.mu.Lock()
		l.dials--
		l.mu.Unlock()
		return false // the worker's dial meets the same error, and says so
	}
	p := &ch.sent
	*p = pendingRead{ch: ch, token: token, pb: probeBufs.Get().(*probeBuf), start: start, deadline: start.Add(sp.timeout), done: done, fd: fd}
	// Registered once connecting: a socket not yet connecting polls as
	// hung up and writable. An error or a connection made at once comes
	// as the event registering it gives.
	if err := connectNow(fd, ap); err != nil && err != syscall.EINPROGRESS && err != syscall.EINTR {
		l.closeDial(p)
		c.endPending(p, dialError(ap, "connect", err), nil)
		return true
	}
	if !l.addDial(p) {
		l.closeDial(p)
		probeBufs.Put(p.pb)
		p.pb = nil
		return false
	}
	return true
}

// openCheckSocket opens a non-blocking TCP socket for ap, to close with a
// reset.
func openCheckSocket(ap netip.AddrPort) (int, error) {
	family := syscall.AF_INET
	if !ap.Addr().Is4() && !ap.Addr().Is4In6() {
		family = syscall.AF_INET6
	}
	// Closed with a reset: nothing is left to deliver once the status is
	// known, and no TIME_WAIT socket stays behind (as HAProxy closes its
	// checks).
	return openNow(family)
}

// dialError is err of op on a connection to ap, as net.Dialer's errors
// read.
func dialError(ap netip.AddrPort, op string, err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(op, err)}
}

// addDial makes p, a check on a connection the loop dials, pending and
// registers its socket with the loop's epoll instance, reporting false
// when it did neither (the loop has ended, or the registration failed).
// Both under the lock, so that the loop's end (closeDials) finds every
// socket registered or none.
func (l *answerLoop) addDial(p *pendingRead) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | -syscall.EPOLLET, Fd: int32(p.token), Pad: int32(p.token >> 32)}
	// Readied first: an idle loop's events are taken as strays, and
	// p's registration gives one of its own.
	l.wakeLocked()
	l.addLocked(p)
	if epollAddNow(l.ep, p.fd, &ev) != nil {
		delete(l.pending, p.token)
		heap.Remove(&l.queue, p.idx)
		return false
	}
	l.fresh = true
	return true
}

// dialed moves p's check on when its socket has news: it sends the
// request once the connection is up, and reads the answer once sent.
func (l *answerLoop) dialed(p *pendingRead) {
	if !p.sent {
		l.sendMu.Lock()
		l.req = appendRequest(l.req[:0], p.ch.sp.requestURI, p.ch.key.addr)
		n, err := sendNow(p.fd, l.req)
		whole := n == len(l.req)
		l.sendMu.Unlock()
		switch {
		case err == syscall.EAGAIN || err == syscall.EINTR:
			l.add(p) // still connecting
			return
		case err != nil:
			l.endDial(p, l.sockError(p, "connect", err))
			return
		case !whole:
			// A new connection's send buffer takes a request whole.
			l.endDial(p, fmt.Errorf("health check: request sent in part (%d of %d bytes)", n, len(l.req)))
			return
		}
		p.sent = true
		// The answer comes with an event of its own: a read now would
		// find nothing.
		l.add(p)
		return
	}
	pb := p.pb
	if cap(pb.got) < answerBuffer {
		pb.got = make([]byte, answerBuffer)
	}
	pb.got = pb.got[:cap(pb.got)]
	for {
		was := p.got
		eof, drained, err := p.read()
		if err != nil {
			l.endDial(p, l.sockError(p, "read", err))
			return
		}
		if done, code, err := pb.dialAnswer(pb.got[:p.got], was, eof); done {
			// The status alone decides; the connection closes whatever
			// follows.
			l.endDial(p, l.c.outcome(p.ch.sp, code, err))
			return
		}
		if drained {
			l.add(p) // more to come, with an event of its own
			return
		}
	}
}

// dialAnswer decides a check on a connection the loop dialed from got,
// what came of the answer so far (was bytes of it before the last reads),
// eof telling that the connection ended after it: done reports whether
// the check is decided, with the status code and error. It parses got
// once a head may have ended (a blank line among what came), when the
// connection ended, or when got reached maxDialAnswer: a target sending
// its answer a byte at a time costs a scan of each byte, not a parse of
// everything so far at each.
func (pb *probeBuf) dialAnswer(got []byte, was int, eof bool) (done bool, code int, err error) {
	full := len(got) >= maxDialAnswer
	if !eof && !full && !blankLine(got, was) {
		return false, 0, nil
	}
	pb.src = countingReader{prefix: got}
	pb.br.Reset(&pb.src)
	code, _, _, err = pb.readAnswer()
	short := pb.src.short
	pb.src = countingReader{}
	switch {
	case !short || err == nil && code >= 200:
		return true, code, err
	case full:
		return true, code, errDialAnswerTooLong
	case eof && len(got) == 0:
		return true, 0, io.EOF
	case eof:
		return true, code, io.ErrUnexpectedEOF
	}
	return false, 0, nil
}

// read reads what p's socket has into p.pb.got, up to maxDialAnswer:
// until the socket has nothing more (drained), ends (eof), or a read
// brings less than it had room for (neither: the caller reads on if what
// came does not decide the check, so that a close that came with the
// answer is seen before waiting for an event it gave already).
func (p *pendingRead) read() (eof, drained bool, err error) {
	pb := p.pb
	for p.got < maxDialAnswer {
		if p.got == len(pb.got) {
			pb.got = append(pb.got, make([]byte, min(len(pb.got), maxDialAnswer-p.got))...)
			pb.got = pb.got[:cap(pb.got)]
		}
		space := min(len(pb.got), maxDialAnswer) - p.got
		n, err := recvNow(p.fd, pb.got[p.got:p.got+space], 0)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false, true, nil
		case err != nil:
			return false, false, err
		case n == 0:
			return true, false, nil
		}
		p.got += n
		if n < space {
			return false, false, nil
		}
	}
	return false, false, nil
}

// blankLine reports whether got has a blank line ending past was, where
// what is new starts.
func blankLine(got []byte, was int) bool {
	return bytes.Contains(got[max(0, was-2):], []byte("\n\n")) || bytes.Contains(got[max(0, was-3):], []byte("\n\r\n"))
}

// sockError is err of op on p's socket.
func (l *answerLoop) sockError(p *pendingRead, op string, err error) error {
	ap, _ := netip.ParseAddrPort(p.ch.key.addr)
	if op == "read" {
		return &net.OpError{Op: "read", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError("recvfrom", err)}
	}
	return dialError(ap, op, err)
}

// endDial closes p's socket (with a reset) and finishes its check with
// err, on the loop. p must not be pending.
func (l *answerLoop) endDial(p *pendingRead, err error) {
	l.closeDial(p)
	l.end(p, err)
}

// closeDial closes p's socket and counts its dial done.
func (l *answerLoop) closeDial(p *pendingRead) {
	closeNow(p.fd)
	p.fd = -1
	if cap(p.pb.got) > answerBuffer {
		p.pb.got = nil // a long answer's buffer is not pooled
	}
	l.mu.Lock()
	l.dials--
	l.mu.Unlock()
}

// closeDials closes the sockets of the checks still pending on
// connections the loop dialed, once the loop has ended: no check finishes
// after Close.
func (l *answerLoop) closeDials() {
	l.mu.Lock()
	l.closed = true
	var dials []*pendingRead
	for _, p := range l.pending {
		if p.kc == nil {
			dials = append(dials, p)
		}
	}
	l.mu.Unlock()
	for _, p := range dials {
		if l.remove(p) {
			l.closeDial(p)
			probeBufs.Put(p.pb)
			p.pb = nil
		}
	}
}
