package health

import (
	"container/heap"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// The answer loop runs the common check, plain HTTP/1.1 on a kept
// connection, without a worker: the scheduler writes the request (with
// no peek first: below), and one goroutine waits for the
// answers of every such check in flight on an epoll instance of its own,
// reads each with one non-blocking read, and finishes the check. A batch
// of due checks then costs the scheduler's wake-up and a write a check,
// and a few of the loop's polls for the whole batch (below), where a
// worker's check cost a hand-off to a worker, the deadline set and
// cleared on the connection, a read that found nothing and parked its
// goroutine, and the poller's wake-up for its answer alone.
//
// The loop polls; it is never woken by an answer. Its epoll instance is
// not in Go's poller (a bare epoll_create1, never an os.File), nor are
// the sockets it watches (kept_linux.go, dial_linux.go): an answer that
// arrives wakes nothing. While checks are pending the loop sleeps on a Go
// timer, firstPoll after a check was sent, then twice as long each time
// up to maxPoll, or to the earliest pending check's deadline when that is
// sooner, and takes what the epoll instance has with epoll_wait(timeout
// 0); when none is pending it waits for the scheduler's signal. Go's
// timers ride on the runtime's own wait (its epoll_wait's timeout), so a
// poll costs no thread of its own. A batch's answers (on loopback, within
// a millisecond or two of the sends) are then read by a few polls, where
// each arriving answer, or each few together, woke the runtime's poller
// thread before (through the loop's epoll instance, in Go's poller). A
// locked OS thread blocking in epoll_wait instead measured a third more
// CPU a check (its wake-ups, and sysmon's at each return from the
// blocking call: docs/benchmarks.md). An answer
// is read at most maxPoll late (firstPoll for a batch's first poll); the
// timeout holds as before: a check's deadline counts from its send, the
// poll at a deadline collects what came before the check is failed, so an
// answer that arrived in time is never failed for the loop's sleep.
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
// now "until the loop collects the event": the loop's next poll while
// checks are pending (at most maxPoll), and the scheduler's, before the
// first check it sends while none is (addPending: the loop does not poll
// then, and the events of that time wait in the epoll instance). A close in that window is
// the case a peek could always miss: the check's read ends before any
// byte of the answer, and the check is retried once on a new connection
// (answer, below). A stray answer in that window is taken for the check's
// own answer and decides that one check of that target: the target's own
// doing, as a target can answer a check whatever it likes anyway; it
// cannot touch another target's check (each connection is one target's),
// and it leaves the connection dropped or marked for the next check.

// answerBuffer is what the loop reads of an answer at once.
const answerBuffer = 4 * checkBuffer

// firstPoll and maxPoll bound the loop's sleep while checks are pending
// (above): the first poll after checks were sent, and the longest. On
// loopback a batch's answers come within a few hundred microseconds of
// its sends, so one poll a millisecond after mostly finds them all; a
// slower target's answer is read within maxPoll of coming, an added
// latency of under 0.1 % of the least check timeout (1 s) and nothing in
// a health check's outcome, while a target that never answers costs the
// loop at most 1/maxPoll polls a second until the check's deadline,
// however many such targets there are.
const (
	firstPoll = time.Millisecond
	maxPoll   = 8 * time.Millisecond
)

// answerLoop waits for the answers of checks the scheduler sent.
type answerLoop struct {
	c *Checker
	// ep is the epoll instance the check connections are registered
	// with (edge-triggered, once each), outside Go's poller; closed by
	// close, once nothing uses it.
	ep int

	// mu guards pending, queue, next, dials, closed, conns, idle, fresh,
	// idleEvents, pollFirst and pollMax.
	mu sync.Mutex
	// pending are the checks sent and not answered, by their
	// connection's token; queue orders them by deadline.
	pending map[uint64]*pendingRead
	queue   pendingQueue
	next    uint64
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
	// idle is set while the loop waits for wake, with no check pending;
	// the scheduler's next check clears it, after taking the events
	// that came meanwhile (idleEvents, its buffer for them), and signals
	// wake. fresh is set when a check was sent since the loop's last
	// poll: the next sleep is firstPoll again. pollFirst and pollMax
	// are firstPoll and maxPoll (tests change them).
	idle               bool
	fresh              bool
	wake               chan struct{}
	idleEvents         [64]syscall.EpollEvent
	pollFirst, pollMax time.Duration

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
	ep, err := epollCreateNow()
	if err != nil {
		return nil
	}
	return &answerLoop{c: c, ep: ep, pending: map[uint64]*pendingRead{}, conns: map[uint64]*keptConn{}, wake: make(chan struct{}, 1), pollFirst: firstPoll, pollMax: maxPoll}
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

// add makes p pending again, on the loop.
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
	l.wakeLocked()
	if p.kc.stray {
		p.kc.stray = false
		return false
	}
	l.addLocked(p)
	l.fresh = true
	return true
}

// wakeLocked, with l.mu held, readies the loop for a check about to be
// made pending (after this: the events it takes must not be a pending
// check's): when the loop is idle it takes the events that came since its
// last poll (each a connection's with no check pending: marked, as the
// loop marks them) and signals the loop.
func (l *answerLoop) wakeLocked() {
	if !l.idle {
		return
	}
	l.idle = false
	l.takeStraysLocked()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// takeStraysLocked, with l.mu held and no check pending, takes the events
// the epoll instance has and marks their connections.
func (l *answerLoop) takeStraysLocked() {
	for {
		n, _ := epollNow(l.ep, l.idleEvents[:])
		for _, ev := range l.idleEvents[:max(n, 0)] {
			if kc := l.conns[token(ev)]; kc != nil {
				kc.stray = true
			}
		}
		if n < len(l.idleEvents) {
			return
		}
	}
}

// token is the token ev was registered with.
func token(ev syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
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
	ctx := l.c.ctx
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var sleep time.Duration
	for {
		l.mu.Lock()
		if len(l.pending) == 0 {
			l.idle = true
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-l.wake:
			}
			l.mu.Lock()
		}
		if l.fresh {
			l.fresh = false
			sleep = l.pollFirst
		} else {
			sleep = min(2*sleep, l.pollMax)
		}
		wait := sleep
		if len(l.queue) > 0 {
			wait = max(0, min(wait, time.Until(l.queue[0].deadline)))
		}
		l.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		l.poll()
		l.expire()
	}
}

// poll finishes the pending checks whose connections have something to
// read (or, dialed by the loop, are connected), without waiting.
func (l *answerLoop) poll() {
	for {
		n := l.collect()
		for i, p := range l.ready {
			if p.kc == nil {
				l.dialed(p)
			} else {
				l.answer(p)
			}
			l.ready[i] = nil
		}
		if n < len(l.events) {
			return
		}
	}
}

// collect takes into l.ready the pending checks whose connections have
// something to read, returning the number of events it took.
func (l *answerLoop) collect() int {
	l.ready = l.ready[:0]
	n, _ := epollNow(l.ep, l.events[:])
	if n <= 0 {
		return 0
	}
	l.mu.Lock()
	for _, ev := range l.events[:n] {
		token := token(ev)
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
	return n
}

// expire fails the pending checks whose deadline passed. The poll just
// before has read what came by now: an answer that came in time has
// finished its check.
func (l *answerLoop) expire() {
	now := time.Now()
	for {
		l.mu.Lock()
		if len(l.queue) == 0 || l.queue[0].deadline.After(now) {
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

// close closes the loop's epoll instance, once the loop and the scheduler
// have ended (Checker.Close): its number is not reused under a call.
func (l *answerLoop) close() { closeNow(l.ep) }

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
