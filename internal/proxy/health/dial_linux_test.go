package health

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// probeDial runs ch's check as the scheduler does past the bound of kept
// connections: dialed by the answer loop. It fails the test when the
// check was not started that way.
func probeDial(t *testing.T, c *Checker, ch *check) error {
	t.Helper()
	done := make(chan error, 1)
	if !c.dialFast(ch, func(err error) { done <- err }) {
		t.Fatal("the check was not dialed by the answer loop")
	}
	return <-done
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A check the answer loop dials ends as a worker's check on a new
// connection does, against every misbehaving target, and never keeps its
// connection: the status alone decides, then the socket closes (with a
// reset). No socket or goroutine is left behind.
func TestDialLoopMisbehavingTargets(t *testing.T) {
	// Long enough that a loaded machine answers the targets that do
	// answer within it (300 ms was seen to fail under four -race runs).
	const timeout = time.Second
	before := runtime.NumGoroutine()
	c := New(Config{MaxKeptConns: -1})
	fds := openFDs(t)
	for _, tt := range misbehavingTargets(timeout) {
		t.Run(tt.name, func(t *testing.T) {
			rt := newRawTarget(t, tt.serve)
			ch := plainCheck(t, rt.addr(), timeout)
			misbehavingWith(t, c, ch, rt, timeout, tt.pass, false, tt.is, func() error { return probeDial(t, c, ch) })
			if n := rt.conns.Load(); n != 1 {
				t.Errorf("%d connections for one check, want 1", n)
			}
		})
	}
	if n := openFDs(t); n > fds {
		t.Errorf("%d file descriptors open after the checks, %d before", n, fds)
	}
	c.Close()
	testsync.WaitFor(t, 5*time.Second, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before })
}

// A check of a port nobody listens on fails as refused, and one whose
// final status comes past the bound of what the loop reads fails as too
// long, having read no more than the bound.
func TestDialLoopRefusedAndTooLong(t *testing.T) {
	c := New(Config{MaxKeptConns: -1})
	defer c.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := probeDial(t, c, plainCheck(t, closed, 5*time.Second)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("check of a closed port: %v, want connection refused", err)
	}
	// Informational answers, each under the head's bound, until the
	// loop's bound: the check fails there, not at its timeout.
	rt := newRawTarget(t, func(_ int, conn net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(conn, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: "+strings.Repeat("a", 8000)+"\r\n\r\n", 3))
		io.Copy(io.Discard, conn)
	})
	if err := probeDial(t, c, plainCheck(t, rt.addr(), 10*time.Second)); !errors.Is(err, errDialAnswerTooLong) {
		t.Errorf("check of a target answering 24 KB of informational heads: %v, want %v", err, errDialAnswerTooLong)
	}
	testsync.WaitFor(t, 5*time.Second, "the target's connections closed", func() bool { return rt.open.Load() == 0 })
}

// Targets that hold the checks' connections without answering do not
// hold up a check of another target: with a hundred checks waiting for
// answers that do not come (their timeout a minute), a check of a
// well-behaved target passes, and the waiting ones end when the checker
// closes, their sockets with them.
func TestDialLoopHeldConnectionsStallNothing(t *testing.T) {
	silent := newRawTarget(t, func(_ int, conn net.Conn, _ *bufio.Reader) { io.Copy(io.Discard, conn) })
	good := newRawTarget(t, answer(ok200))
	fds := openFDs(t)
	c := New(Config{MaxKeptConns: -1})
	waiting := make(chan error, 100)
	for range 100 {
		ch := plainCheck(t, silent.addr(), time.Minute)
		if !c.dialFast(ch, func(err error) { waiting <- err }) {
			t.Fatal("the check was not dialed by the answer loop")
		}
	}
	testsync.WaitFor(t, 10*time.Second, "the silent target's connections", func() bool { return silent.conns.Load() == 100 })
	if err := probeDial(t, c, plainCheck(t, good.addr(), time.Minute)); err != nil {
		t.Errorf("check of a well-behaved target beside 100 held connections: %v", err)
	}
	if len(waiting) != 0 {
		t.Errorf("%d checks of the silent target ended, want none before their timeout", len(waiting))
	}
	c.Close()
	testsync.WaitFor(t, 5*time.Second, "the silent target's connections closed", func() bool { return silent.open.Load() == 0 })
	if n := openFDs(t); n > fds+1 { // the good target's connection may still close
		t.Errorf("%d file descriptors open after Close, %d before", n, fds)
	}
}

// Past the bound of kept connections, the scheduler's checks run without
// workers: every check a new connection the loop dials and closes, the
// statuses moving as the target answers.
func TestDialLoopNeedsNoWorker(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	c := New(Config{Cluster: cluster, Second: 20 * time.Millisecond, MaxKeptConns: -1})
	defer c.Close()
	hc := fastCheck() // every 100 ms here
	hc.UnhealthyThresholdCount = 2
	c.Update([]model.TargetGroup{tg("g", hc, ct.model(t, model.TargetActive))})
	waitStatus(t, c, "g", ct.addr(), Healthy)
	ct.code.Store(503)
	waitStatus(t, c, "g", ct.addr(), Unhealthy)
	ct.code.Store(200)
	waitStatus(t, c, "g", ct.addr(), Healthy)
	checks, conns := ct.checks.Load(), ct.conns.Load()
	if checks < 1+2+5 {
		t.Errorf("%d checks to turn healthy, unhealthy and healthy again, want at least 8", checks)
	}
	if conns < checks {
		t.Errorf("%d connections for %d checks, want one a check", conns, checks)
	}
	if n := c.workers.Load(); n != 0 {
		t.Errorf("%d workers for checks past the bound, want none", n)
	}
	if n := c.KeptConns(); n != 0 {
		t.Errorf("%d connections kept past the bound", n)
	}
}

// FuzzDialAnswer feeds the decision of a check the loop dialed whatever a
// target may answer, split wherever the fuzzer likes into what one read
// brings: it never panics, decides once the connection ends, keeps no
// more than its bound, and decides as it does with the answer whole.
func FuzzDialAnswer(f *testing.F) {
	for _, seed := range answerSeeds {
		f.Add([]byte(seed), uint16(1), uint16(7))
	}
	f.Add([]byte(strings.Repeat("HTTP/1.1 103 Early Hints\r\nX: "+strings.Repeat("a", 9000)+"\r\n\r\n", 3)), uint16(4096), uint16(4096))
	f.Fuzz(func(t *testing.T, answer []byte, first, step uint16) {
		pb := probeBufs.Get().(*probeBuf)
		defer probeBufs.Put(pb)
		answer = answer[:min(len(answer), maxDialAnswer)]
		whole := func() (int, error) {
			done, code, err := pb.dialAnswer(answer, 0, true)
			if !done {
				t.Fatal("not decided with the whole answer and the connection's end")
			}
			return code, err
		}
		wantCode, wantErr := whole()
		if wantErr == nil && wantCode < 100 {
			t.Fatalf("decided with no error and code %d", wantCode)
		}
		for got, was := min(len(answer), int(first)), 0; ; got, was = min(len(answer), got+int(step)+1), got {
			eof := got == len(answer)
			done, code, err := pb.dialAnswer(answer[:got], was, eof)
			if !done && eof {
				t.Fatalf("not decided at the connection's end, after %d bytes", got)
			}
			if done {
				if code != wantCode || (err == nil) != (wantErr == nil) {
					t.Fatalf("read in parts: code %d, err %v; whole: code %d, err %v", code, err, wantCode, wantErr)
				}
				return
			}
		}
	})
}
