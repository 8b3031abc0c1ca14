package proxy

import (
	"net"
	"time"
)

// deadlines are a connection's read and write deadlines as last set. The
// limits that apply to every request (idle, header, response header and
// whole-request timeouts) are kept within 1% of their length rather than
// exactly, so that a busy connection updates its timers about once a
// second rather than several times per request.
type deadlines struct {
	r, w time.Time
}

func (d *deadlines) read(c net.Conn, now time.Time, timeout time.Duration) {
	if moved(d.r, now, timeout) {
		d.r = now.Add(timeout)
		_ = c.SetReadDeadline(d.r)
	}
}

func (d *deadlines) write(c net.Conn, now time.Time, timeout time.Duration) {
	if moved(d.w, now, timeout) {
		d.w = now.Add(timeout)
		_ = c.SetWriteDeadline(d.w)
	}
}

// check sets the read deadline for a wait that looks at something every
// interval (the fast path's check that a client is still there while its
// target works). A deadline between half an interval and an interval from
// now is kept: a look that comes early costs nothing, and a connection to
// a busy target then moves its timer about twice per interval rather than
// every few requests.
func (d *deadlines) check(c net.Conn, now time.Time, interval time.Duration) {
	// One clock subtraction rather than two additions and two
	// comparisons: it is done for every request.
	if in := d.r.Sub(now); in < interval-interval/2 || in > interval {
		d.r = now.Add(interval)
		_ = c.SetReadDeadline(d.r)
	}
}

// exactRead sets the read deadline to t.
func (d *deadlines) exactRead(c net.Conn, t time.Time) {
	if !d.r.Equal(t) {
		d.r = t
		_ = c.SetReadDeadline(t)
	}
}

// exact sets both deadlines to t: a rule's timeout.
func (d *deadlines) exact(c net.Conn, t time.Time) {
	if !d.r.Equal(t) || !d.w.Equal(t) {
		d.r, d.w = t, t
		_ = c.SetDeadline(t)
	}
}

// moved reports whether a deadline at have is off by more than 1% of
// timeout from now + timeout: one clock subtraction, no addition, for
// the deadline that stays. (No timeout here comes near the Duration
// range's ends, where the sums below would overflow; a zero have, before
// any deadline, is a saturated minimal distance and so moved.)
func moved(have, now time.Time, timeout time.Duration) bool {
	in, slack := have.Sub(now), timeout/100
	return in < timeout-slack || in > timeout+slack
}
