package health

import (
	"strconv"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// heldChecker returns a checker whose holds last at most maxHold, checking
// ct at the least interval (50 ms here) with one failure enough to make it
// Unhealthy, once ct is Healthy.
func heldChecker(t *testing.T, ct *checkTarget, maxHold time.Duration) *Checker {
	t.Helper()
	c := New(Config{Cluster: cluster, Second: second, MaxHold: maxHold})
	t.Cleanup(c.Close)
	hc := fastCheck()
	hc.UnhealthyThresholdCount = 1
	c.Update([]model.TargetGroup{tg("g", hc, ct.model(t, model.TargetActive))})
	waitStatus(t, c, "g", ct.addr(), Healthy)
	return c
}

func TestHoldDefersChecksWithoutFailingTargets(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	c := heldChecker(t, ct, time.Minute)
	release := c.Hold()
	// A check in flight when the hold began arrives within its timeout
	// (50 ms) or not at all.
	time.Sleep(100 * time.Millisecond)
	before := ct.checks.Load()
	// Six intervals held: no check starts, and the target, whose checks
	// are all late, stays Healthy throughout.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if got := status(t, c, "g", ct.addr()); got != Healthy {
			t.Fatalf("held: target %s, want HEALTHY: a check's delay must not fail it", got)
		}
	}
	if n := ct.checks.Load() - before; n != 0 {
		t.Fatalf("%d checks started while held, want none", n)
	}
	release()
	release() // idempotent
	// The check that fell due during the hold runs once it ends, and the
	// checks go on at their interval.
	testsync.WaitFor(t, 5*time.Second, "the held checks to run after the release", func() bool { return ct.checks.Load() >= before+3 })
	if got := status(t, c, "g", ct.addr()); got != Healthy {
		t.Errorf("after the hold: target %s, want HEALTHY", got)
	}
}

func TestHoldEndsAtMaxHold(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	const maxHold = 200 * time.Millisecond
	c := heldChecker(t, ct, maxHold)
	// Holds that overlap, none released before the next is made: they
	// join the first one's period, which ends maxHold after it began.
	start := time.Now()
	release := c.Hold()
	time.Sleep(60 * time.Millisecond) // a check in flight has arrived
	before := ct.checks.Load()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-done:
				release()
				return
			case <-time.After(5 * time.Millisecond):
			}
			next := c.Hold()
			release()
			release = next
		}
	}()
	testsync.WaitFor(t, 10*time.Second, "checks to run again while holds keep overlapping", func() bool { return ct.checks.Load() >= before+3 })
	if held := time.Since(start); held < maxHold {
		t.Errorf("checks ran again %v after the hold began, before its MaxHold %v", held, maxHold)
	}
	if got := status(t, c, "g", ct.addr()); got != Healthy {
		t.Errorf("target %s, want HEALTHY", got)
	}
}

func TestHoldsBackToBackDoNotStarveChecks(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	c := heldChecker(t, ct, time.Minute)
	// A hold made the moment the last one ended waits until the
	// scheduler has started the checks then due: checks keep running
	// although something always holds or is about to.
	before := ct.checks.Load()
	release := c.Hold()
	testsync.WaitFor(t, 10*time.Second, "checks to run between back-to-back holds", func() bool {
		time.Sleep(2 * time.Millisecond)
		release()
		release = c.Hold()
		return ct.checks.Load() >= before+5
	})
	release()
	// And a hold after them holds again.
	testsync.WaitFor(t, 10*time.Second, "a hold that takes effect", func() bool {
		release := c.Hold()
		defer release()
		time.Sleep(100 * time.Millisecond)
		n := ct.checks.Load()
		time.Sleep(150 * time.Millisecond)
		return ct.checks.Load() == n
	})
}

// TestFirstChecksSpread: the first checks of an Update's new targets start
// at most FirstCheckRate a second, a group's close together; a few new
// targets still within a second.
func TestFirstChecksSpread(t *testing.T) {
	// Checks due in the checker's seconds, which last an hour here: none
	// runs during the test.
	c := New(Config{Cluster: cluster, Second: time.Hour})
	t.Cleanup(c.Close)
	hc := model.HealthCheck{IntervalSeconds: 30, TimeoutSeconds: 5}
	// spread updates c to groups and returns, by group, the earliest and
	// the latest first check after the Update.
	spread := func(groups []model.TargetGroup) (earliest, latest map[string]time.Duration) {
		start := time.Now()
		c.Update(groups)
		c.mu.Lock()
		defer c.mu.Unlock()
		earliest, latest = map[string]time.Duration{}, map[string]time.Duration{}
		for _, ch := range c.checks {
			name := ch.subs[0].t.group.name
			d := ch.due.Sub(start)
			if e, ok := earliest[name]; !ok || d < e {
				earliest[name] = d
			}
			latest[name] = max(latest[name], d)
		}
		for i, e := range c.queue {
			if e.ch.queued && !e.due.Equal(e.ch.due) || (i > 0 && c.queue[(i-1)/2].due.After(e.due)) {
				t.Fatalf("queue out of order at %d", i)
			}
		}
		return earliest, latest
	}
	// groups makes n groups of size targets each, on addresses of 127.b.
	groups := func(prefix string, b, n, size int) []model.TargetGroup {
		var out []model.TargetGroup
		for g := range n {
			var targets []model.Target
			for i := range size {
				j := g*size + i
				targets = append(targets, model.Target{Address: "127." + strconv.Itoa(b) + "." + strconv.Itoa(j/250) + "." + strconv.Itoa(j%250+1),
					Port: 9, Cluster: cluster, State: model.TargetActive})
			}
			out = append(out, tg(prefix+strconv.Itoa(g), hc, targets...))
		}
		return out
	}
	few := groups("few", 7, 2, 10)
	if _, latest := spread(few); max(latest["few0"], latest["few1"]) > time.Hour {
		t.Errorf("20 new targets: first checks spread over %v, want within one (checker) second", latest)
	}
	// 6,000 new checks at 2,000 a second: over three seconds (the 20 of
	// the first Update keep theirs, within the first), each group's
	// within one.
	many := groups("many", 8, 3*FirstCheckRate/10, 10)
	earliest, latest := spread(append(few, many...))
	var last time.Duration
	for _, g := range many {
		e, l := earliest[g.Name], latest[g.Name]
		if e < 0 || l-e > time.Hour {
			t.Fatalf("group %s: first checks from %v to %v after the Update, want within one (checker) second of each other", g.Name, e, l)
		}
		last = max(last, l)
	}
	if last < 2*time.Hour || last > 3*time.Hour {
		t.Errorf("%d new targets: the last first check %v after the Update, want within 2-3 (checker) seconds", len(many)*10, last)
	}
	// Spread over less than the interval, the second check spreads
	// them further.
	steady(t, c, false)
	// One group too large for a second spreads at the rate; never over
	// more than the interval.
	big := groups("big", 9, 1, 3*FirstCheckRate)
	more := groups("more", 10, 1, 40*FirstCheckRate)
	earliest, latest = spread(append(big, more...))
	if d := latest["big0"] - earliest["big0"]; d < 2*time.Hour {
		t.Errorf("a group of %d new targets: first checks within %v, want spread over about 3 (checker) seconds", 3*FirstCheckRate, d)
	}
	if latest["more0"] > 30*time.Hour+time.Minute { // (the Update itself takes a moment)
		t.Errorf("%d new targets: first checks spread over %v, more than the interval", 40*FirstCheckRate, latest["more0"])
	}
	// Spread over the whole interval, the checks are next due an
	// interval after the first.
	steady(t, c, true)
}

// steady fails t unless every check of c is next due an interval after
// its first (want), or spread further at the second (!want).
func steady(t *testing.T, c *Checker, want bool) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.checks {
		if ch.steady != want {
			t.Fatalf("group %s: steady %v, want %v", ch.subs[0].t.group.name, ch.steady, want)
		}
	}
}
