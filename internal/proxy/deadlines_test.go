package proxy

import (
	"net"
	"testing"
	"time"
)

// countingConn counts the read deadlines set on a real (in-memory)
// connection.
type countingConn struct {
	net.Conn
	sets int
	last time.Time
}

func (c *countingConn) SetReadDeadline(t time.Time) error {
	c.sets++
	c.last = t
	return c.Conn.SetReadDeadline(t)
}

// The client check's deadline moves only when it is off by more than half
// an interval (or lies past one), and the wait it bounds still ends within
// an interval.
func TestDeadlinesCheck(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	c := &countingConn{Conn: a}
	var d deadlines
	const interval = 2 * time.Second
	t0 := time.Now()
	steps := []struct {
		at   time.Duration // after t0
		sets int           // deadlines set so far
		want time.Duration // the deadline, after t0
	}{
		{0, 1, interval},                     // none yet: set
		{10 * time.Millisecond, 1, interval}, // a few requests later: kept
		{interval / 2, 1, interval},          // exactly half an interval late: kept
		{interval/2 + time.Millisecond, 2, interval*3/2 + time.Millisecond}, // more: moved
		{interval * 4, 3, interval * 5},                                     // long expired: moved
	}
	for i, s := range steps {
		d.check(c, t0.Add(s.at), interval)
		if c.sets != s.sets || !d.r.Equal(t0.Add(s.want)) || !c.last.Equal(d.r) {
			t.Fatalf("step %d (at %v): %d deadlines set, deadline at %v (conn has %v); want %d, at %v",
				i, s.at, c.sets, d.r.Sub(t0), c.last.Sub(t0), s.sets, s.want)
		}
	}
	// A later deadline (the target's response header timeout) is brought
	// back: the check must come within an interval.
	d.exactRead(c, t0.Add(time.Minute))
	n := c.sets
	d.check(c, t0.Add(interval*4), interval)
	if c.sets != n+1 || !d.r.Equal(t0.Add(interval*5)) {
		t.Fatalf("after a later deadline: %d more set, deadline at %v; want 1 more, at %v", c.sets-n, d.r.Sub(t0), interval*5)
	}

	// The wait it bounds ends with a timeout between half an interval
	// and an interval after it was set.
	const short = 200 * time.Millisecond
	var e deadlines
	start := time.Now()
	e.check(c, start, short)
	e.check(c, start.Add(short/4), short) // kept
	_, err := a.Read(make([]byte, 1))
	waited := time.Since(start)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read ended with %v, want a timeout", err)
	}
	if waited < short/2 || waited > short+time.Second {
		t.Errorf("read timed out after %v, want between %v and %v (plus scheduling)", waited, short/2, short)
	}
}

// moved decides as its first form did: want := now + timeout, moved when
// |want - have| > timeout/100, around the 1% edges and for no deadline yet.
func TestDeadlinesMoved(t *testing.T) {
	now := time.Now()
	for _, timeout := range []time.Duration{time.Second, 10 * time.Second, 3*time.Minute + 7} {
		slack := timeout / 100
		for _, off := range []time.Duration{0, 1, -1, slack - 1, slack, slack + 1, -slack + 1, -slack, -slack - 1, timeout, -timeout, -2 * timeout} {
			have := now.Add(timeout + off)
			want := now.Add(timeout)
			if got, old := moved(have, now, timeout), want.Sub(have).Abs() > slack; got != old {
				t.Errorf("timeout %v, deadline off by %v: moved %v, want %v", timeout, off, got, old)
			}
		}
		if !moved(time.Time{}, now, timeout) {
			t.Errorf("timeout %v: no deadline yet is not moved", timeout)
		}
	}
}
