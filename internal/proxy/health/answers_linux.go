package health

import (
	"container/heap"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// The answer loop runs the common check, plain HTTP/1.1 on a kept
// connection, without a worker: the scheduler writes the request (with
// no peek first: below), and one goroutine waits for the
// answers of every such check in flight on an epoll instance of its own
// (itself in Go's poller), reads each as it comes with one non-blocking
// read, and finishes the check. A batch of due checks then costs the
// scheduler's wake-up and a write a check, and the loop's
// wake-ups as answers come (together, for a batch's checks answered
// together), where a worker's check cost a hand-off to a worker, the
// deadline set and cleared on the connection, a read that found nothing
// and parked its goroutine, and the poller's wake-up for its answer alone.
// What the loop cannot finish at once goes to the worker's code, on a
// goroutine of its own: an answer longer than one read brought
// (checkBuffer*4, or parts still to come), read on by the worker's
// blocking reads to the check's deadline; a connection that ended before
// any byte of the answer, replaced once within the check. An answer that
// does not come by the check's deadline fails the check, as a worker's.
//
// No peek before the write: the loop sees every event of a connection it
// watches, between checks too (edge-triggered: each arrival of bytes, and
// the target's close, is an event). An event of a connection with no
// check pending marks the connection (stray); the next check of a marked
// connection peeks it as a worker's check does, and drops it when there
// is something to read (an answer nobody asked for, or the target's
// close) or sends on it when there is not (the event was the tail of an
// answer already read, say by a worker's reads). An unmarked connection
// is sent on without a system call to look first. What this changes: a
// stray answer or a close that reached the socket but whose event the
// loop has not yet collected when the check becomes pending goes
// unnoticed, a window that was "between the peek and the write" and is
// now "until the loop collects the event" (the loop's wake-up, usually
// microseconds, longer on a loaded machine). A close in that window is
// the case a peek could always miss: the check's read ends before any
// byte of the answer, and the check is retried once on a new connection
// (answer, below). A stray answer in that window is taken for the check's
// own answer and decides that one check of that target: the target's own
// doing, as a target can answer a check whatever it likes anyway; it
// cannot touch another target's check (each connection is one target's),
// and it leaves the connection dropped or marked for the next check.

// answerBuffer is what the loop reads of an answer at once.
const answerBuffer = 4 * checkBuffer

// answerLoop waits for the answers of checks the scheduler sent.
type answerLoop struct {
	c *Checker
	// ep is the epoll instance the check connections are registered
	// with (edge-triggered, once each); file is ep in Go's poller.
	ep   int
	file *os.File
	raw  syscall.RawConn

	// mu guards pending, queue, deadline, next, dials and closed.
	mu sync.Mutex
	// pending are the checks sent and not answered, by their
	// connection's token; queue orders them by deadline, the earliest
	// of which is file's read deadline (deadline).
	pending  map[uint64]*pendingRead
	queue    pendingQueue
	deadline time.Time
	next     uint64
	// dials counts the checks in flight on connections the loop dialed
	// (dial_linux.go), at most MaxChecksInFlight less the workers; closed
	// is set when the loop ended, after which it takes no dial (their
	// sockets are its to close).
	dials  int
	closed bool
	// conns are the kept connections registered with ep, by token, until
	// dropped: what collect marks (keptConn.stray) on an event between
	// checks.
	conns map[uint64]*keptConn

	// sendMu guards req, the request sendFast sends: not a pooled
	// probeBuf's, which the loop may hand back to the pool (and a worker
	// fill with another request) as soon as the answer came, while the
	// send that brought it has not yet returned.
	sendMu sync.Mutex
	req    []byte

	// events, ready and outs are the loop's own.
	events [128]syscall.EpollEvent
	ready  []*pendingRead
	outs   []outcome
}

// pendingRead is a check sent on a kept connection, waiting for its
// answer.
type pendingRead struct {
	ch *check
	// kc is the kept connection the check was sent on; nil for a check
	// on a connection the loop dialed, whose socket is fd (dial_linux.go).
	kc       *keptConn
	token    uint64
	pb       *probeBuf
	start    time.Time
	deadline time.Time
	// done, when set, takes the outcome instead of finish (tests).
	done func(error)
	idx  int
	// fd, sent and got serve a check on a connection the loop dialed:
	// its socket, whether the request went, and how much of the answer
	// pb.got holds.
	fd   int
	sent bool
	got  int
	// hup is set by collect when the event that brought the answer also
	// told that the target closed (or reset) the connection: the
	// connection is then dropped after the answer, whatever it says.
	hup bool
}

// newAnswerLoop returns the checker's answer loop, or nil when the
// system gives none (checks then all run on workers).
func newAnswerLoop(c *Checker) *answerLoop {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := syscall.SetNonblock(ep, true); err != nil {
		syscall.Close(ep)
		return nil
	}
	l := &answerLoop{c: c, ep: ep, file: os.NewFile(uintptr(ep), "health-answers"), pending: map[uint64]*pendingRead{}, conns: map[uint64]*keptConn{}}
	// Without the poller (no deadlines), the loop could not wait.
	if l.file.SetReadDeadline(time.Time{}) != nil {
		l.file.Close()
		return nil
	}
	if l.raw, err = l.file.SyscallConn(); err != nil {
		l.file.Close()
		return nil
	}
	return l
}

// sendFast sends ch's check when it is a plain HTTP/1.1 check with a kept
// connection not known to have something to read (above: a connection
// the loop marked is peeked first), for the answer loop to finish
// (with done, when set, instead of finish). It reports false when it did
// not: the check is then for a worker, as if sendFast had not looked at
// it (a connection found unusable is dropped, and the worker dials).
func (c *Checker) sendFast(ch *check, done func(error)) bool {
	l := c.answers
	sp := ch.sp
	if l == nil || sp.https || sp.http2 || sp.requestURI == "" || c.ctx.Err() != nil {
		return false
	}
	kc := ch.conn.Load()
	if kc == nil || !kc.counted || kc.tls != nil || kc.cc != nil || kc.raw == nil {
		return false
	}
	if kc.token == 0 {
		// Not yet watched by the loop: what came before is for the
		// peek to see.
		if !kc.socketIdle() {
			c.drop(ch, kc)
			return false
		}
		// In conns before it is registered: an event that registering
		// gives (bytes already there) marks it.
		l.mu.Lock()
		l.next++
		token := l.next
		l.conns[token] = kc
		l.mu.Unlock()
		// Held as its bare socket from now on (kept_linux.go). A
		// connection that cannot be is left to a worker as it is; one
		// detached and not registered is dropped.
		if kc.detach() != nil {
			l.mu.Lock()
			delete(l.conns, token)
			l.mu.Unlock()
			return false
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | -syscall.EPOLLET, Fd: int32(token), Pad: int32(token >> 32)}
		if kc.watch(l.ep, &ev) != nil {
			l.mu.Lock()
			delete(l.conns, token)
			l.mu.Unlock()
			c.drop(ch, kc)
			return false
		}
		kc.token = token
	}
	start := time.Now()
	// pb is the loop's once p is pending: from then on only p's remover
	// may touch it.
	pb := probeBufs.Get().(*probeBuf)
	// A check is in flight once at a time: its pendingRead is its own.
	p := &ch.sent
	*p = pendingRead{ch: ch, kc: kc, token: kc.token, pb: pb, start: start, deadline: start.Add(sp.timeout), done: done, fd: -1}
	// Pending before it is sent: the answer's event finds it. A marked
	// connection is peeked first, and dropped if it has something to
	// read; marked again meanwhile (an event between the peek and
	// addKept), it is dropped.
	for peeked := false; !l.addKept(p); peeked = true {
		if peeked || !kc.socketIdle() {
			probeBufs.Put(pb)
			p.pb = nil
			c.drop(ch, kc)
			return false
		}
	}
	l.sendMu.Lock()
	l.req = appendRequest(l.req[:0], sp.requestURI, ch.key.addr)
	n, err := kc.send(l.req)
	whole := err == nil && n == len(l.req)
	l.sendMu.Unlock()
	if whole {
		return true
	}
	// Not sent whole (the target closed the connection, or does not read
	// its requests): a worker's check on a new connection, unless the
	// loop has taken the check already (it finishes it then).
	if !l.remove(p) {
		return true
	}
	probeBufs.Put(pb)
	c.drop(ch, kc)
	return false
}

// add makes p pending. The loop's deadline moves to p's if earlier.
func (l *answerLoop) add(p *pendingRead) {
	l.mu.Lock()
	l.addLocked(p)
	l.mu.Unlock()
}

// addKept makes p, a check on a kept connection, pending, unless its
// connection is marked (an event came between checks): it then clears the
// mark and reports false, for the caller to peek.
func (l *answerLoop) addKept(p *pendingRead) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.kc.stray {
		p.kc.stray = false
		return false
	}
	l.addLocked(p)
	return true
}

// forget stops marking kc, which is dropped.
func (l *answerLoop) forget(kc *keptConn) {
	l.mu.Lock()
	delete(l.conns, kc.token)
	l.mu.Unlock()
}

// addLocked is add with l.mu held.
func (l *answerLoop) addLocked(p *pendingRead) {
	l.pending[p.token] = p
	heap.Push(&l.queue, p)
	if l.deadline.IsZero() || p.deadline.Before(l.deadline) {
		l.deadline = p.deadline
		l.file.SetReadDeadline(p.deadline)
	}
}

// remove takes p out of the pending checks, reporting whether it was
// there: whoever removes it finishes its check.
func (l *answerLoop) remove(p *pendingRead) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.idx < 0 || l.pending[p.token] != p {
		return false
	}
	delete(l.pending, p.token)
	heap.Remove(&l.queue, p.idx)
	return true
}

// run waits for answers until the checker closes.
func (l *answerLoop) run() {
	defer l.closeDials()
	for {
		l.ready = l.ready[:0]
		err := l.raw.Read(l.collect)
		if l.c.ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			l.c.log.Error("health check answers: the loop ended", "err", err)
			return
		}
		for i, p := range l.ready {
			if p.kc == nil {
				l.dialed(p)
			} else {
				l.answer(p)
			}
			l.ready[i] = nil
		}
		l.expire()
	}
}

// collect takes the pending checks whose connections have something to
// read, as the loop's wait for the epoll instance to be readable; it
// reports false (wait) when there are none.
func (l *answerLoop) collect(uintptr) bool {
	n, _ := epollNow(l.ep, l.events[:])
	if n <= 0 {
		return false
	}
	l.mu.Lock()
	for _, ev := range l.events[:n] {
		token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		p := l.pending[token]
		if p == nil {
			// Between checks (a close, or an answer nobody asked for):
			// marked, for the next check to peek. A connection already
			// dropped is not in conns.
			if kc := l.conns[token]; kc != nil {
				kc.stray = true
			}
			continue
		}
		if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			p.hup = true
		}
		delete(l.pending, token)
		heap.Remove(&l.queue, p.idx)
		l.ready = append(l.ready, p)
	}
	l.mu.Unlock()
	return true
}

// expire fails the pending checks whose deadline passed, and moves the
// loop's deadline when it passed or is later than the earliest pending
// check's. A deadline still to come and earlier than every pending check's
// stays: it costs the loop an early wake-up once, where setting and
// clearing it for every check (usually the only one pending) would cost
// two timer changes a check.
func (l *answerLoop) expire() {
	now := time.Now()
	for {
		l.mu.Lock()
		if len(l.queue) == 0 || l.queue[0].deadline.After(now) {
			var d time.Time
			if len(l.queue) > 0 {
				d = l.queue[0].deadline
			}
			if passed := !l.deadline.After(now); passed && !d.Equal(l.deadline) || !d.IsZero() && d.Before(l.deadline) {
				l.deadline = d
				l.file.SetReadDeadline(d)
			}
			l.mu.Unlock()
			return
		}
		p := heap.Pop(&l.queue).(*pendingRead)
		delete(l.pending, p.token)
		l.mu.Unlock()
		if p.kc == nil {
			l.endDial(p, fmt.Errorf("health check: no answer within %v: %w", p.ch.sp.timeout, os.ErrDeadlineExceeded))
			continue
		}
		l.c.drop(p.ch, p.kc)
		l.end(p, fmt.Errorf("health check: no answer within %v: %w", p.ch.sp.timeout, os.ErrDeadlineExceeded))
	}
}

// answer reads what p's connection has and finishes p's check, or hands
// it to the worker's code when it cannot finish it at once.
func (l *answerLoop) answer(p *pendingRead) {
	c, pb, kc := l.c, p.pb, p.kc
	if cap(pb.got) < answerBuffer {
		pb.got = make([]byte, answerBuffer)
	}
	got := pb.got[:answerBuffer]
	n, err := kc.recv(got, 0)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		// An event with nothing to read: wait on. Its next event comes
		// with the next epoll wait.
		l.add(p)
		return
	case err != nil || n == 0:
		// Closed before any byte of the answer: a restarted target, or
		// one closing idle connections. Replaced once, as a worker does.
		c.drop(p.ch, kc)
		l.handOff(p, func() error { return c.probeH1(p.ch) })
		return
	}
	pb.src = countingReader{prefix: got[:n]}
	pb.br.Reset(&pb.src)
	code, keep, _, err := pb.readAnswer()
	short := pb.src.short
	pb.src = countingReader{}
	if short {
		// More to come: the worker's blocking reads from the start of
		// the answer, to the check's deadline.
		l.handOff(p, func() error { return c.readOn(p.ch, kc, pb, got[:n], p.deadline) })
		return
	}
	if !keep || p.hup {
		c.drop(p.ch, kc)
	}
	l.end(p, c.outcome(p.ch.sp, code, err))
}

// handOff finishes p's check with run on a goroutine of its own.
func (l *answerLoop) handOff(p *pendingRead, run func() error) {
	l.c.loops.Go(func() { l.c.endPending(p, run(), nil) })
}

// end finishes p's check with err, on the loop.
func (l *answerLoop) end(p *pendingRead, err error) {
	l.outs = l.c.endPending(p, err, l.outs)
}

// endPending finishes p's check with err; outs is the caller's to reuse.
func (c *Checker) endPending(p *pendingRead, err error, outs []outcome) []outcome {
	probeBufs.Put(p.pb)
	p.pb = nil
	if p.done != nil {
		p.done(err)
		return outs
	}
	return c.finish(p.ch, p.start, err, outs)
}

// close ends the loop's wait.
func (l *answerLoop) close() { l.file.Close() }

// pendingQueue is a min-heap of pending checks by deadline.
type pendingQueue []*pendingRead

func (q pendingQueue) Len() int           { return len(q) }
func (q pendingQueue) Less(i, j int) bool { return q[i].deadline.Before(q[j].deadline) }
func (q pendingQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].idx, q[j].idx = i, j
}
func (q *pendingQueue) Push(x any) {
	p := x.(*pendingRead)
	p.idx = len(*q)
	*q = append(*q, p)
}
func (q *pendingQueue) Pop() any {
	old := *q
	p := old[len(old)-1]
	old[len(old)-1] = nil
	p.idx = -1
	*q = old[:len(old)-1]
	return p
}
