// Package testsync is test support for concurrent code, shared by the
// tests of every package: a buffer that goroutines may write while a test
// reads it, polling until a condition holds (or until a rotating pick
// includes some answers, or one answer stops coming), receiving from a
// channel within a timeout, serving each connection a listener accepts in
// its own goroutine, and the process's CPU time and heap growth. It holds
// only what several packages' tests use alike.
package testsync

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer that one goroutine may write (a logger, a
// process's output) while another reads it. The zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns what was written, split into lines without their ends;
// nil when nothing was.
func (b *Buffer) Lines() []string {
	s := strings.TrimSuffix(b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Poll calls done until it returns true or timeout passes, sleeping 1 ms
// at first and twice as long each time up to 50 ms, so that a fast
// condition is seen at once and a slow one is not asked too often. It
// reports whether done returned true: for a test that goes on when it
// did not (WaitFor and Eventually fail the test).
func Poll(timeout time.Duration, done func() bool) bool {
	deadline := time.Now().Add(timeout)
	sleep := time.Millisecond
	for !done() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 50*time.Millisecond)
	}
	return true
}

// WaitFor polls cond until it holds, failing t with "timed out after
// <timeout> waiting for <what>" when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// WaitForAnswers polls until n answers in a row include every one of
// want, failing t as WaitFor does: until a pick that rotates over targets
// includes them, say.
func WaitForAnswers(t testing.TB, timeout time.Duration, what string, n int, answer func() string, want ...string) {
	t.Helper()
	WaitFor(t, timeout, what, func() bool {
		seen := map[string]bool{}
		for range n {
			seen[answer()] = true
		}
		for _, w := range want {
			if !seen[w] {
				return false
			}
		}
		return true
	})
}

// LastSeen asks answer every 10 ms until it has said stays 50 times in a
// row or timeout passes; an answer other than leaves or stays fails t. It
// returns when answer last said leaves (the zero time if it never did) and
// whether the 50 in a row came: when a target left a pick, say.
func LastSeen(t testing.TB, timeout time.Duration, leaves, stays string, answer func() string) (last time.Time, settled bool) {
	t.Helper()
	start := time.Now()
	streak := 0
	for streak < 50 && time.Since(start) < timeout {
		switch got := answer(); got {
		case leaves:
			last, streak = time.Now(), 0
		case stays:
			streak++
		default:
			t.Fatalf("answered %q while %s left", got, leaves)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return last, streak == 50
}

// Eventually polls check until it returns nil, failing t with check's last
// error when timeout passes first: "<what>: not after <timeout>: <error>",
// or without "<what>: " when what is empty.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	var err error
	if Poll(timeout, func() bool { err = check(); return err == nil }) {
		return
	}
	if what == "" {
		t.Fatalf("after %v: %v", timeout, err)
	}
	t.Fatalf("%s: not after %v: %v", what, timeout, err)
}

// Receive returns the next value from ch, failing t with "<what>: channel
// closed" when ch closes, or "<what>: nothing within <timeout>" when
// nothing arrives in time.
func Receive[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-time.After(timeout):
		t.Fatalf("%s: nothing within %v", what, timeout)
	}
	var zero T
	return zero
}

// ServeConns accepts connections on ln until ln is closed, which it is
// when the test ends, and runs serve on each in its own goroutine, closing
// the connection when serve returns. It returns ln's address.
func ServeConns(t testing.TB, ln net.Listener, serve func(net.Conn)) string {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// Dial opens a TCP connection to addr, closed when the test ends, whose
// reads and writes fail after 10 seconds, so that a peer that goes quiet
// fails the test instead of hanging it.
func Dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// FreePorts returns n different ports on 127.0.0.1 that nothing listens
// on right now (a dial to them is refused until something does). Every
// listener stays open until all n are chosen: one closed at once could be
// handed out again by the next Listen.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
