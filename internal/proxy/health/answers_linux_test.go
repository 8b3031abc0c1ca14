package health

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// probeFast runs ch's check as the scheduler does when ch has a kept
// connection: sent by sendFast, answered through the answer loop. It fails
// the test when the check was not sent that way.
func probeFast(t *testing.T, c *Checker, ch *check) error {
	t.Helper()
	done := make(chan error, 1)
	if !c.sendFast(ch, func(err error) { done <- err }) {
		t.Fatal("the check was not sent for the answer loop")
	}
	return <-done
}

// A check sent for the answer loop ends as a worker's check does, against
// every misbehaving target: the target answers the check that opened the
// connection well, and misbehaves from the next, which the loop reads
// (handing to the worker's reads an answer it cannot finish at once, and
// replacing once a connection that ended before any byte of its answer).
func TestAnswerLoopMisbehavingTargets(t *testing.T) {
	// As TestMisbehavingTargets's, long enough for a loaded machine.
	const timeout = time.Second
	before := runtime.NumGoroutine()
	for _, tt := range misbehavingTargets(timeout) {
		t.Run(tt.name, func(t *testing.T) {
			rt := newRawTarget(t, func(n int, conn net.Conn, br *bufio.Reader) {
				if n == 0 {
					if !readRequest(br) {
						return
					}
					if _, err := io.WriteString(conn, ok200); err != nil {
						return
					}
				}
				tt.serve(n, conn, br)
			})
			c := New(Config{})
			defer c.Close()
			ch := checkOf(t, rt.addr(), false, false, timeout)
			if err := c.probe(ch); err != nil {
				t.Fatalf("the check that opens the connection: %v", err)
			}
			misbehavingWith(t, c, ch, rt, timeout, tt.pass, tt.kept, tt.is, func() error { return probeFast(t, c, ch) })
		})
	}
	testsync.WaitFor(t, 5*time.Second, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before })
}

// A kept connection with something to read before the request (a stale
// answer) is not sent on: sendFast drops it and leaves the check to a
// worker, which dials.
func TestAnswerLoopStaleAnswer(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	// The stale answer comes apart from the first, after it was read.
	rt2 := newRawTarget(t, func(_ int, conn net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(conn, ok200)
		time.Sleep(50 * time.Millisecond)
		io.WriteString(conn, ok200)
		io.Copy(io.Discard, conn)
	})
	ch2 := checkOf(t, rt2.addr(), false, false, 5*time.Second)
	defer c.done(ch2)
	if err := c.probe(ch2); err != nil {
		t.Fatal(err)
	}
	if ch2.conn.Load() == nil {
		t.Fatal("connection not kept after a well-formed answer")
	}
	testsync.WaitFor(t, 5*time.Second, "the stale answer", func() bool {
		kc := ch2.conn.Load()
		return kc != nil && !kc.socketIdle()
	})
	if c.sendFast(ch2, func(error) { t.Error("a check was sent on a connection holding a stale answer") }) {
		t.Fatal("sendFast sent on a connection holding a stale answer")
	}
	if ch2.conn.Load() != nil || c.KeptConns() != 0 {
		t.Errorf("the connection holding a stale answer was not dropped (%d kept)", c.KeptConns())
	}
}

// In steady state, plain checks on kept connections run without workers:
// the first check of each target dials on a worker, which leaves after
// workerIdle; the later checks keep passing and failing on the kept
// connections, statuses move, and no worker starts again.
func TestSteadyChecksNeedNoWorker(t *testing.T) {
	cts := []*checkTarget{newCheckTarget(t, false, false), newCheckTarget(t, false, false), newCheckTarget(t, false, false)}
	c := New(Config{Cluster: cluster, Second: 20 * time.Millisecond})
	defer c.Close()
	var targets []model.Target
	for _, ct := range cts {
		targets = append(targets, ct.model(t, model.TargetActive))
	}
	hc := fastCheck() // every 100 ms here
	// A timeout of 1.2 s, not 100 ms: on a loaded machine an answer late
	// by a tenth of a second would close the kept connection, and the
	// next check would dial another.
	hc.TimeoutSeconds = 60
	hc.UnhealthyThresholdCount = 2
	c.Update([]model.TargetGroup{tg("g", hc, targets...)})
	for _, ct := range cts {
		waitStatus(t, c, "g", ct.addr(), Healthy)
	}
	testsync.WaitFor(t, 10*time.Second, "the first checks' workers gone", func() bool { return c.workers.Load() == 0 })
	before := cts[0].checks.Load()
	cts[0].code.Store(503)
	waitStatus(t, c, "g", cts[0].addr(), Unhealthy)
	cts[0].code.Store(200)
	waitStatus(t, c, "g", cts[0].addr(), Healthy)
	if n := cts[0].checks.Load() - before; n < 2+5 {
		t.Errorf("%d checks to turn unhealthy and healthy again, want at least 7", n)
	}
	if n := c.workers.Load(); n != 0 {
		t.Errorf("%d workers for checks on kept connections, want none", n)
	}
	for i, ct := range cts {
		if n := ct.conns.Load(); n != 1 {
			t.Errorf("target %d: %d connections, want every check on one kept connection", i, n)
		}
	}
}

// marked reports whether the answer loop marked kc (an event between
// checks).
func marked(c *Checker, kc *keptConn) bool {
	c.answers.mu.Lock()
	defer c.answers.mu.Unlock()
	return kc.stray
}

// checkNext runs ch's next check as the scheduler does: sent for the
// answer loop when sendFast takes it, else on a worker (c.probe). It
// reports the outcome and whether sendFast took it.
func checkNext(c *Checker, ch *check) (err error, fast bool) {
	done := make(chan error, 1)
	if c.sendFast(ch, func(err error) { done <- err }) {
		return <-done, true
	}
	return c.probe(ch), false
}

// keptFast opens ch's kept connection with a worker's check and sends the
// second check for the answer loop, so that the loop watches the
// connection; it returns the connection.
func keptFast(t *testing.T, c *Checker, ch *check) *keptConn {
	t.Helper()
	if err := c.probe(ch); err != nil {
		t.Fatalf("the check that opens the connection: %v", err)
	}
	if err := probeFast(t, c, ch); err != nil {
		t.Fatalf("the first check sent for the loop: %v", err)
	}
	kc := ch.conn.Load()
	if kc == nil || kc.token == 0 {
		t.Fatal("the connection is not kept and watched by the loop")
	}
	return kc
}

// newKeptFast starts a checker for rt's plain check and opens its kept
// connection as keptFast does; the check and the checker end with the
// test.
func newKeptFast(t *testing.T, rt *rawTarget) (*Checker, *check, *keptConn) {
	t.Helper()
	c, ch := checking(t, rt.addr(), false, false)
	return c, ch, keptFast(t, c, ch)
}

// waitReadable waits until kc's socket has something to read, or ended:
// what the target sent (or its close) reached it.
func waitReadable(t *testing.T, kc *keptConn) {
	t.Helper()
	var b [1]byte
	testsync.WaitFor(t, 5*time.Second, "the target's bytes or close reach the connection", func() bool {
		_, err := kc.recv(b[:], syscall.MSG_PEEK)
		return err != syscall.EAGAIN
	})
}

// collectIdle takes the events of the idle loop's epoll instance, as the
// scheduler does before it sends the next check, marking their
// connections.
func collectIdle(t *testing.T, c *Checker) {
	t.Helper()
	c.answers.mu.Lock()
	defer c.answers.mu.Unlock()
	if len(c.answers.pending) != 0 {
		t.Fatal("checks pending")
	}
	c.answers.takeStraysLocked()
}

// setMarked sets kc's mark as the answer loop would (or clears it).
func setMarked(c *Checker, kc *keptConn, stray bool) {
	c.answers.mu.Lock()
	kc.stray = stray
	c.answers.mu.Unlock()
}

// A check on a kept connection the loop watches, with nothing between
// checks, is sent with no peek.
func TestAnswerLoopNoPeek(t *testing.T) {
	rt := newRawTarget(t, answer(ok200))
	c, ch, kc := newKeptFast(t, rt)
	before := kc.peeks
	for i := range 5 {
		if err := probeFast(t, c, ch); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
	if n := kc.peeks - before; n != 0 {
		t.Errorf("%d peeks for 5 checks on a watched connection, want 0", n)
	}
	if ch.conn.Load() != kc || rt.conns.Load() != 1 {
		t.Errorf("the checks did not all run on the one kept connection (%d connections)", rt.conns.Load())
	}
}

// An answer nobody asked for, sent between checks, is not taken for the
// next check's: the connection is marked (by the scheduler, taking the
// idle loop's events before it sends), the next check drops it and runs
// on a new connection, judged by that connection's answer. (Had the peek
// been dropped without the mark, or the idle loop's events not taken
// before the send, the stray 503 would fail the check.)
func TestAnswerLoopStrayAnswerBetweenChecks(t *testing.T) {
	const stray503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
	stray := make(chan struct{})
	rt := newRawTarget(t, serveThen(2, stray, func(conn net.Conn, br *bufio.Reader) {
		io.WriteString(conn, stray503)
		for readRequest(br) {
			io.WriteString(conn, stray503)
		}
	}))
	c, ch, kc := newKeptFast(t, rt)
	close(stray)
	waitReadable(t, kc)
	err, fast := checkNext(c, ch)
	if err != nil {
		t.Fatalf("the check after a stray answer: %v (judged by the stray answer?)", err)
	}
	if fast {
		t.Error("the check was sent on the connection holding a stray answer")
	}
	if nkc := ch.conn.Load(); nkc == nil || nkc == kc {
		t.Error("the check did not keep a new connection")
	}
	if n := rt.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	if err, _ := checkNext(c, ch); err != nil {
		t.Errorf("the check after, on the new connection: %v", err)
	}
}

// A target that closes its kept connection between checks fails no
// check: the loop marks the connection, and the next check runs on a new
// one.
func TestAnswerLoopCloseBetweenChecks(t *testing.T) {
	rt, c, ch, _ := keptClosed(t)
	if err, _ := checkNext(c, ch); err != nil {
		t.Fatalf("the check after the target closed: %v", err)
	}
	if n := rt.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	if err := probeFast(t, c, ch); err != nil {
		t.Errorf("the check after, on the new connection: %v", err)
	}
}

// A close the loop has not collected when the check is sent (its event
// taken and its mark cleared here, as if the event were still to come)
// is the window a peek could miss too: the check is sent on the closed connection, its read
// ends before any byte of the answer, and it is retried once on a new
// connection, and passes.
func TestAnswerLoopCloseNotYetCollected(t *testing.T) {
	rt, c, ch, kc := keptClosed(t)
	collectIdle(t, c)
	if !marked(c, kc) {
		t.Fatal("the close's event did not mark the connection")
	}
	setMarked(c, kc, false)
	if err := probeFast(t, c, ch); err != nil {
		t.Fatalf("the check sent on a connection the target closed: %v", err)
	}
	if n := rt.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (a retry on a new one)", n)
	}
	if nkc := ch.conn.Load(); nkc == nil || nkc == kc {
		t.Error("the retry did not keep a new connection")
	}
}

// A mark with nothing to read (the event of bytes already read, say by a
// worker's reads of a long answer) costs a peek, not the connection.
func TestAnswerLoopMarkWithNothingToRead(t *testing.T) {
	rt := newRawTarget(t, answer(ok200))
	c, ch, kc := newKeptFast(t, rt)
	setMarked(c, kc, true)
	before := kc.peeks
	if err := probeFast(t, c, ch); err != nil {
		t.Fatal(err)
	}
	if n := kc.peeks - before; n != 1 {
		t.Errorf("%d peeks, want 1", n)
	}
	if ch.conn.Load() != kc || rt.conns.Load() != 1 {
		t.Errorf("the connection was not kept (%d connections)", rt.conns.Load())
	}
}

// keptClosed opens a kept connection the loop watches to a target that
// then closes it, and waits until the close reached the connection.
func keptClosed(t *testing.T) (*rawTarget, *Checker, *check, *keptConn) {
	t.Helper()
	closing := make(chan struct{})
	rt := newRawTarget(t, serveThen(2, closing, nil))
	c, ch, kc := newKeptFast(t, rt)
	close(closing)
	waitReadable(t, kc)
	return rt, c, ch, kc
}

// serveThen answers the first connection's first n requests, waits for
// gate to close, and then hands the connection to then (if any) before
// closing it; later connections answer every request.
func serveThen(n int, gate <-chan struct{}, then func(net.Conn, *bufio.Reader)) func(int, net.Conn, *bufio.Reader) {
	return func(i int, conn net.Conn, br *bufio.Reader) {
		if i > 0 {
			answer(ok200)(i, conn, br)
			return
		}
		for range n {
			if !readRequest(br) {
				return
			}
			io.WriteString(conn, ok200)
		}
		<-gate
		if then != nil {
			then(conn, br)
		}
	}
}

// A connection the answer loop watches is held as its bare socket: its
// net.Conn is closed (out of Go's poller) while the target's connection
// stays, and later checks keep running on it. Dropped, it closes with a
// reset, as a kept net.Conn did.
func TestAnswerLoopDetachedSocket(t *testing.T) {
	reset := make(chan error, 1)
	rt := newRawTarget(t, func(_ int, conn net.Conn, br *bufio.Reader) {
		for {
			// A reset is reported by one read, the first after it.
			if _, err := br.Peek(1); err != nil {
				reset <- err
				return
			}
			if !readRequest(br) {
				return
			}
			if _, err := io.WriteString(conn, ok200); err != nil {
				return
			}
		}
	})
	c, ch, kc := newKeptFast(t, rt)
	if !kc.isDetached() {
		t.Fatal("the connection the loop watches is not detached")
	}
	if err := kc.raw.Control(func(uintptr) {}); err == nil {
		t.Error("the connection's net.Conn is still open (in Go's poller)")
	}
	for i := range 3 {
		if err, fast := checkNext(c, ch); err != nil || !fast {
			t.Fatalf("check %d on the detached socket: %v (sent for the loop: %v)", i, err, fast)
		}
	}
	if n := rt.conns.Load(); n != 1 {
		t.Errorf("%d connections, want every check on the one kept", n)
	}
	c.done(ch)
	select {
	case err := <-reset:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the target read %v after the drop, want a reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the dropped socket did not close")
	}
}

// An answer longer than the loop's read, on a detached connection, is
// read on by a worker through a borrowed net.Conn: the check passes, the
// connection is kept and watched, the borrowed one closes, and the next
// check is the loop's again.
func TestAnswerLoopDetachedLongAnswer(t *testing.T) {
	long := "HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n" + strings.Repeat("x", 8192)
	rt := newRawTarget(t, answer(long))
	c, ch, kc := newKeptFast(t, rt)
	before := openFDs(t)
	for i := range 3 {
		if err, fast := checkNext(c, ch); err != nil || !fast {
			t.Fatalf("check %d: %v (sent for the loop: %v)", i, err, fast)
		}
		if ch.conn.Load() != kc {
			t.Fatalf("check %d: the connection was not kept", i)
		}
	}
	kc.mu.Lock()
	tmp := kc.tmp
	kc.mu.Unlock()
	if tmp != nil {
		t.Error("the borrowed net.Conn is still held")
	}
	if n := rt.conns.Load(); n != 1 {
		t.Errorf("%d connections, want every check on the one kept", n)
	}
	if n := openFDs(t); n != before {
		t.Errorf("%d open descriptors after the long answers, %d before", n, before)
	}
}

// Close ends at once a worker's read on a borrowed net.Conn (a target
// that sends part of a long answer and stalls), not at the check's
// deadline.
func TestCloseEndsBorrowedRead(t *testing.T) {
	rt := newRawTarget(t, func(n int, conn net.Conn, br *bufio.Reader) {
		for i := 0; readRequest(br); i++ {
			if i < 2 {
				io.WriteString(conn, ok200)
				continue
			}
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n"+strings.Repeat("x", 5000))
			io.Copy(io.Discard, conn)
			return
		}
	})
	// Checks every 0.5 s, a timeout of 100 s.
	c := New(Config{Cluster: cluster, Second: 100 * time.Millisecond})
	defer c.Close()
	host, port, _ := net.SplitHostPort(rt.addr())
	p, _ := strconv.Atoi(port)
	c.Update([]model.TargetGroup{tg("g", model.HealthCheck{IntervalSeconds: 5, TimeoutSeconds: 1000}, model.Target{Address: host, Port: int32(p), Cluster: cluster, State: model.TargetActive})})
	testsync.WaitFor(t, 20*time.Second, "a worker reading on a borrowed conn", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, ch := range c.checks {
			if kc := ch.conn.Load(); kc != nil {
				kc.mu.Lock()
				tmp := kc.tmp
				kc.mu.Unlock()
				return tmp != nil
			}
		}
		return false
	})
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close waits for the borrowed read (the check's deadline is 100 s away)")
	}
	testsync.WaitFor(t, 10*time.Second, "the target's connection closed", func() bool { return rt.open.Load() == 0 })
}

// No descriptor is left behind: a checker's kept connections, held by the
// answer loop as bare sockets (and borrowed for a long answer), close
// when their targets leave and when the checker closes.
func TestKeptSocketsLeakNoDescriptor(t *testing.T) {
	long := "HTTP/1.1 200 OK\r\nContent-Length: 8192\r\n\r\n" + strings.Repeat("x", 8192)
	var rts []*rawTarget
	for i := range 6 {
		resp := ok200
		if i%2 == 1 {
			resp = long
		}
		rts = append(rts, newRawTarget(t, answer(resp)))
	}
	open := func() int32 {
		var n int32
		for _, rt := range rts {
			n += rt.open.Load()
		}
		return n
	}
	before := openFDs(t)
	c := New(Config{Cluster: cluster, Second: 20 * time.Millisecond})
	defer c.Close()
	var targets []model.Target
	for _, rt := range rts {
		host, port, _ := net.SplitHostPort(rt.addr())
		p, _ := strconv.Atoi(port)
		targets = append(targets, model.Target{Address: host, Port: int32(p), Cluster: cluster, State: model.TargetActive})
	}
	hc := fastCheck()
	hc.TimeoutSeconds = 60
	c.Update([]model.TargetGroup{tg("g", hc, targets...)})
	testsync.WaitFor(t, 20*time.Second, "every kept connection watched by the loop", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		n := 0
		for _, ch := range c.checks {
			if kc := ch.conn.Load(); kc != nil && kc.isDetached() {
				n++
			}
		}
		return n == len(rts)
	})
	if n := c.KeptConns(); n != len(rts) {
		t.Fatalf("%d kept connections, want %d", n, len(rts))
	}
	c.Update([]model.TargetGroup{tg("g", hc)})
	testsync.WaitFor(t, 10*time.Second, "the targets' connections closed", func() bool { return open() == 0 && c.KeptConns() == 0 })
	// The answer loop's epoll instance is the checker's one descriptor.
	testsync.WaitFor(t, 10*time.Second, "the descriptors of the targets that left closed", func() bool { return openFDs(t) <= before+1 })
	c.Update([]model.TargetGroup{tg("g", hc, targets...)})
	testsync.WaitFor(t, 20*time.Second, "the targets back, kept", func() bool { return c.KeptConns() == len(rts) })
	c.Close()
	testsync.WaitFor(t, 10*time.Second, "the targets' connections closed", func() bool { return open() == 0 })
	testsync.WaitFor(t, 10*time.Second, "every descriptor closed", func() bool { return openFDs(t) <= before })
}

// slowPolls makes c's answer loop sleep as long as the earliest pending
// check's deadline allows: no poll before it.
func slowPolls(c *Checker) {
	c.answers.mu.Lock()
	c.answers.pollFirst, c.answers.pollMax = time.Hour, time.Hour
	c.answers.mu.Unlock()
}

// keptSlow starts a checker with a check of timeout on rt, opens its kept
// connection as keptFast does (two checks), and makes the loop's polls
// slow (slowPolls).
func keptSlow(t *testing.T, rt *rawTarget, timeout time.Duration) (*Checker, *check) {
	t.Helper()
	c := New(Config{})
	t.Cleanup(c.Close)
	ch := checkOf(t, rt.addr(), false, false, timeout)
	t.Cleanup(func() { c.done(ch) })
	keptFast(t, c, ch)
	slowPolls(c)
	return c, ch
}

// The loop's sleep never fails a check whose answer came in time: with
// polls as rare as the deadline allows, the answer that came well before
// the deadline is read by the poll at the deadline, before the check
// would fail for it. (Failing the pending checks past their deadline
// before taking the events fails this check.)
func TestAnswerLoopSleepFailsNoTimelyAnswer(t *testing.T) {
	rt := newRawTarget(t, func(_ int, conn net.Conn, br *bufio.Reader) {
		for n := 0; readRequest(br); n++ {
			if n >= 2 {
				time.Sleep(50 * time.Millisecond) // a slow target, well within the timeout
			}
			if _, err := io.WriteString(conn, ok200); err != nil {
				return
			}
		}
	})
	c, ch := keptSlow(t, rt, 500*time.Millisecond)
	if err := probeFast(t, c, ch); err != nil {
		t.Fatalf("the answer that came in time, read at the deadline: %v", err)
	}
	if n := rt.conns.Load(); n != 1 {
		t.Errorf("%d connections, want the one kept", n)
	}
}

// A check whose answer never comes fails at its deadline, however long
// the loop would otherwise sleep.
func TestAnswerLoopDeadlineEndsSleep(t *testing.T) {
	never := make(chan struct{})
	rt := newRawTarget(t, serveThen(2, never, nil))
	t.Cleanup(func() { close(never) }) // before the target's end waits for its connections
	c, ch := keptSlow(t, rt, 200*time.Millisecond)
	done := make(chan error, 1)
	if !c.sendFast(ch, func(err error) { done <- err }) {
		t.Fatal("the check was not sent for the answer loop")
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the check without an answer: %v, want its deadline passed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the check without an answer did not fail by its deadline (the loop slept past it)")
	}
}

// With no check pending the loop does not poll: it waits for the
// scheduler's next send, and the checks after still pass.
func TestAnswerLoopIdleWithNothingPending(t *testing.T) {
	rt := newRawTarget(t, answer(ok200))
	c, ch, _ := newKeptFast(t, rt)
	idle := func() bool {
		c.answers.mu.Lock()
		defer c.answers.mu.Unlock()
		return c.answers.idle
	}
	for i := range 3 {
		testsync.WaitFor(t, 10*time.Second, "the loop idle, nothing pending", idle)
		if err := probeFast(t, c, ch); err != nil {
			t.Fatalf("check %d after the loop went idle: %v", i, err)
		}
	}
}
