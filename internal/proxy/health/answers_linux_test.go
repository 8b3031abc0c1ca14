package health

import (
	"bufio"
	"io"
	"net"
	"runtime"
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
