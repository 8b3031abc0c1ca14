package health

import (
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unique"
)

// MaxChecksInFlight bounds the checks under way at once. Checks run on
// workers the scheduler starts as they are needed, each running one check
// after another and leaving when it has had none for workerIdle, so the
// checker's goroutines grow with checks per second times their duration,
// not with targets, and a check starts no goroutine of its own; when this
// many are in flight, further due checks wait for one to finish.
const MaxChecksInFlight = 1024

// workerIdle is how long a worker without a check waits for the next
// before it leaves.
const workerIdle = time.Second

// batchWindow is how early, in the checker's seconds, a check may run:
// the scheduler wakes once for every check due within it, not once a
// check, and the answers to a batch sent together come back together, so
// that the answer loop too wakes for several. At 333 checks a second a
// window of 5 ms held 1.7 checks, and a process woken per check pays for
// its wake-up (a context switch and cold caches) more than for the
// check; 50 ms is still a sixth of a percent of the least interval.
const batchWindow = 50 * time.Millisecond

// checkKey is what one check probes: targets of several groups whose keys
// are equal (the same address and check) share its probes. It is 24 bytes,
// the checker's map holding one per address checked: what a check does is
// one interned probeKey, shared by every check alike.
type checkKey struct {
	// addr is the "host:port" dialed: the target's, or its host at the
	// check port.
	addr  string
	probe unique.Handle[probeKey]
}

// probeKey is what a check does at an address.
type probeKey struct {
	https, http2      bool
	pathQuery         string
	interval, timeout time.Duration
	matcher           string
}

// check is one scheduled probe and the targets that read its outcome.
type check struct {
	key checkKey
	// sp is the spec of the target that created the check; every
	// subscriber's spec probes alike (equal keys).
	sp  *spec
	due time.Time
	// queued reports whether the check waits in the queue: not in
	// flight, nor removed (a removed check's entry stays in the queue,
	// skipped, until it comes up). steady reports whether the check's
	// next probe is due an interval after the last: after its first
	// probe, or from the start when its first was spread over the
	// interval (spreadFirst).
	queued bool
	steady bool
	// subs are the targets reading the check, usually one.
	subs []*subscription
	// conn is the check's connection, kept between checks (nil before
	// the first, or after one not kept). Only the check in
	// flight, or the Checker holding its lock while the check is queued,
	// uses it; Close closes it whenever.
	conn atomic.Pointer[keptConn]
	// sent is the check while the answer loop waits for its answer
	// (answers_linux.go).
	sent pendingRead
}

// subscription is one target's share of a check: its own thresholds and
// count of passes or failures in a row.
type subscription struct {
	t *Target
	// gen is the generation of the mode that subscribed the target: a
	// status change of a later mode is never undone.
	gen           uint32
	passes, fails int32
	sp            *spec
}

// keyFor returns the check that sp makes of t.
func (sp *spec) keyFor(t *Target) checkKey {
	addr := t.addr
	if sp.port != 0 {
		host, _, _ := net.SplitHostPort(t.addr)
		addr = net.JoinHostPort(host, strconv.Itoa(int(sp.port)))
	}
	return checkKey{addr: addr, probe: sp.probe}
}

// subscribe makes t checked by sp, keeping its counts if it was checked
// before (a changed check keeps the target's status and counts). A check
// new to the checker runs first after a random delay of up to a second
// (or the interval, if shorter). c.mu must be held.
func (c *Checker) subscribe(t *Target, sub *subscription, sp *spec) {
	sub.sp = sp
	key := sp.keyFor(t)
	if t.check != nil && t.check.key == key {
		return
	}
	c.unsubscribe(t)
	ch := c.checks[key]
	if ch == nil {
		ch = &check{key: key, sp: sp, due: time.Now().Add(jitter(min(sp.interval, c.second)))}
		c.checks[key] = ch
		c.queue.push(ch)
		c.fresh = append(c.fresh, ch)
		c.poke()
	}
	sub.t = t
	ch.subs = append(ch.subs, sub)
	t.check, t.sub = ch, sub
}

// FirstCheckRate bounds, in checks a second, how fast the first checks of
// the targets one Update adds start: they spread over a second, or over as
// many seconds as this rate needs for them, but never over more than
// their interval. A proxy started at 100,000 targets (checked every 30 s)
// then checks them first at about 3,333 a second, the rate it keeps
// afterwards, not 100,000 within a second: a burst that took both cores
// of a small machine for seconds, just as its first configuration was
// served and its first changes came.
const FirstCheckRate = 2000

// spreadFirst spreads the first checks of the targets the Update that is
// ending added over as long as FirstCheckRate needs, when more than a
// second. A group's targets keep theirs close together (within a second,
// or as long as the rate needs for the group alone), at a random offset
// in that time: an Initial target takes no requests while a checked one of
// its group does, so a group spends about a second, not the whole spread,
// with its first healthy targets taking all of its requests. c.mu must be
// held.
func (c *Checker) spreadFirst() {
	fresh := c.fresh
	c.fresh = c.fresh[:0]
	defer clear(fresh)
	window := time.Duration(len(fresh)) * c.second / FirstCheckRate
	if window <= c.second {
		return // as subscribe scheduled them: within a second
	}
	now := time.Now()
	var (
		g            *Group
		offset, span time.Duration
	)
	for i, ch := range fresh {
		if len(ch.subs) == 0 {
			continue // removed again: not queued
		}
		if tg := ch.subs[0].t.group; tg != g {
			// The Update adds a group's targets one after another.
			g = tg
			n := 1
			for _, next := range fresh[i+1:] {
				if len(next.subs) == 0 || next.subs[0].t.group != g {
					break
				}
				n++
			}
			within := min(ch.sp.interval, window)
			span = min(within, max(c.second, time.Duration(n)*c.second/FirstCheckRate))
			offset = jitter(within - span)
		}
		ch.due = now.Add(offset + jitter(min(ch.sp.interval-offset, span)))
		// Spread over the whole interval, the first checks need no
		// second spreading: from the first on, every interval.
		ch.steady = window >= ch.sp.interval
	}
	// One pass re-orders the queue.
	c.queue.reorder()
	c.poke()
}

// unsubscribe stops checking t, and drops its check when no target reads
// it any more. c.mu must be held.
func (c *Checker) unsubscribe(t *Target) {
	ch := t.check
	if ch == nil {
		return
	}
	if i := slices.Index(ch.subs, t.sub); i >= 0 {
		ch.subs[i] = ch.subs[len(ch.subs)-1]
		ch.subs[len(ch.subs)-1] = nil
		ch.subs = ch.subs[:len(ch.subs)-1]
	}
	t.check, t.sub = nil, nil
	if len(ch.subs) > 0 {
		return
	}
	if ch.queued {
		// Its entry is skipped when it comes up.
		ch.queued = false
		// Queued, the check is not in flight: its idle connection closes
		// now. One in flight closes its own (runCheck), or Close does.
		if kc := ch.conn.Load(); kc != nil {
			c.drop(ch, kc)
		}
	} else {
		c.leaving[ch] = true
	}
	delete(c.checks, ch.key)
}

// poke wakes the scheduler to look at the queue's head again.
func (c *Checker) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// schedule runs every check when it is due, until Close. It wakes once
// for all the checks due within batchWindow (scaled to the checker's
// second) of the first: at thousands of checks a second, a few hundred
// wakes rather than one a check.
func (c *Checker) schedule() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	window := batchWindow * c.second / time.Second
	var batch []*check
	for {
		c.mu.Lock()
		wait := time.Hour
		batch = batch[:0]
		now := time.Now()
		held := now.Before(c.holdEnd)
		if held {
			wait = c.holdEnd.Sub(now) // or until the last release pokes
		} else {
			c.holdServed = true
		}
		if !held {
			c.queue.trim()
			if len(c.queue) > 0 {
				if d := c.queue.head().Sub(now); d > 0 {
					wait = d
				} else {
					for until := now.Add(window); len(c.queue) > 0 && !c.queue.head().After(until); c.queue.trim() {
						batch = append(batch, c.queue.pop())
					}
				}
			}
		}
		c.mu.Unlock()
		if len(batch) == 0 {
			timer.Reset(wait)
			select {
			case <-c.ctx.Done():
				return
			case <-c.wake:
			case <-timer.C:
			}
			continue
		}
		for i, ch := range batch {
			// A plain check on a kept connection is sent from here and
			// its answer read by the answer loop: no worker, no goroutine
			// woken or parked for it; past the bound of kept connections,
			// the loop dials it too (dial_linux.go).
			if !c.sendFast(ch, nil) && !c.dialFast(ch, nil) && !c.dispatch(ch) {
				return
			}
			batch[i] = nil
		}
	}
}

// DefaultMaxHold bounds a Hold when Config.MaxHold is zero: the goal of
// a configuration change served is 250 ms, and a check held that long
// runs less than 1 % of the least interval (5 s) late.
const DefaultMaxHold = 250 * time.Millisecond

// Hold keeps the checker from starting checks until release is called
// or Config.MaxHold passed, whichever comes first, so that a configuration
// change under way (a provider's reading, the control plane's write, the
// proxy's compile, in one process) has the CPU that thousands of checks a
// second would take: a production proxy yields its background work to a
// pending apply. Checks in flight finish; the checks that fall due meanwhile
// run as soon as the hold ends, in the order they fell due, none dropped,
// and a check's timeout counts from when it starts, so the delay fails no
// target. A new hold starts only once the scheduler has started the checks
// due when the last one ended, so that back-to-back holds cannot starve the
// checks: each round delays a check by at most MaxHold.
// A hold that finds one under way joins it, and cannot lengthen it. release
// is idempotent.
func (c *Checker) Hold() (release func()) {
	c.mu.Lock()
	now := time.Now()
	if !now.Before(c.holdEnd) && c.holdServed && !c.closed {
		c.hold.period++
		c.hold.n = 0
		c.holdEnd = now.Add(c.maxHold)
		c.holdServed = false
	}
	period, joined := c.hold.period, now.Before(c.holdEnd)
	if joined {
		c.hold.n++
	}
	c.mu.Unlock()
	if !joined {
		return func() {}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.hold.period == period {
				if c.hold.n--; c.hold.n == 0 {
					c.holdEnd = time.Time{}
				}
			}
			c.mu.Unlock()
			c.poke()
		})
	}
}

// worker runs checks one after another: the checker's goroutines grow
// with the checks in flight, and a check starts none of its own.
type worker struct {
	// next hands the worker its next check.
	next chan *check
}

// dispatch hands ch to the idle worker that finished last, or to a new
// one while fewer than MaxChecksInFlight run, or else waits for one to be
// free. It reports false when the checker closed first. Only the
// scheduler calls it.
func (c *Checker) dispatch(ch *check) bool {
	for {
		c.idleMu.Lock()
		if n := len(c.idle); n > 0 {
			// Last in, first out: the few workers a steady rate needs
			// do the work, and the others, idle, leave.
			w := c.idle[n-1]
			c.idle[n-1] = nil
			c.idle = c.idle[:n-1]
			c.idleMu.Unlock()
			w.next <- ch
			return true
		}
		c.idleMu.Unlock()
		if c.workers.Load() < MaxChecksInFlight {
			c.workers.Add(1)
			w := &worker{next: make(chan *check, 1)}
			c.loops.Go(func() { c.work(w, ch) })
			return true
		}
		select {
		case <-c.freed:
		case <-c.ctx.Done():
			return false
		}
	}
}

// work runs ch, then the checks handed to w, until w has had none for
// workerIdle or the checker closes.
func (c *Checker) work(w *worker, ch *check) {
	defer func() {
		c.workers.Add(-1)
		c.signalFreed()
	}()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	var outs []outcome
	for {
		outs = c.runCheck(ch, outs)
		c.idleMu.Lock()
		c.idle = append(c.idle, w)
		c.idleMu.Unlock()
		c.signalFreed()
		idle.Reset(workerIdle)
		select {
		case ch = <-w.next:
			continue
		case <-c.ctx.Done():
			return
		case <-idle.C:
		}
		c.idleMu.Lock()
		i := slices.Index(c.idle, w)
		if i >= 0 {
			c.idle = slices.Delete(c.idle, i, i+1)
		}
		c.idleMu.Unlock()
		if i >= 0 {
			return
		}
		// Handed a check as it timed out.
		select {
		case ch = <-w.next:
		case <-c.ctx.Done():
			return
		}
	}
}

// signalFreed tells a waiting dispatch that a worker finished or left.
func (c *Checker) signalFreed() {
	select {
	case c.freed <- struct{}{}:
	default:
	}
}

// outcome is one subscriber's view of a probe.
type outcome struct {
	t             *Target
	gen           uint32
	sp            *spec
	passes, fails int
}

// runCheck probes ch once, moves every subscriber's status, and queues
// the next probe an interval after this one was due (the interval is not
// affected by how long the check took, nor by a batch running it a little
// early; after the first, between half an interval and one). outs is
// the worker's to reuse.
func (c *Checker) runCheck(ch *check, outs []outcome) []outcome {
	start := time.Now()
	return c.finish(ch, start, c.probe(ch), outs)
}

// finish ends a check of ch that started at start with err: it moves every
// subscriber's status and queues the next probe (runCheck).
func (c *Checker) finish(ch *check, start time.Time, err error, outs []outcome) []outcome {
	if c.ctx.Err() != nil {
		return outs
	}
	c.mu.Lock()
	if c.checks[ch.key] != ch {
		delete(c.leaving, ch)
		c.mu.Unlock()
		// Every subscriber left while it was in flight.
		if kc := ch.conn.Load(); kc != nil {
			c.drop(ch, kc)
		}
		return outs
	}
	outs = outs[:0]
	for _, s := range ch.subs {
		if err == nil {
			s.passes, s.fails = s.passes+1, 0
		} else {
			s.passes, s.fails = 0, s.fails+1
		}
		outs = append(outs, outcome{s.t, s.gen, s.sp, int(s.passes), int(s.fails)})
	}
	// The first checks of new targets run within a second, or spread
	// over less than their interval (spreadFirst); the second of each
	// runs at a random point of the second half of its interval, so that
	// from then on they are spread over half an interval more rather than
	// due together. Those spread over the whole interval stay as they are.
	next := ch.sp.interval
	if !ch.steady {
		next = next/2 + jitter(next-next/2)
		ch.steady = true
	}
	ch.due = ch.due.Add(next)
	if ch.due.Before(start) {
		ch.due = start.Add(next) // it ran an interval late: from now on
	}
	if c.queue.push(ch) {
		c.poke()
	}
	c.mu.Unlock()
	// Outside the lock: a transition is logged, and a slow log must not
	// hold up every other check.
	for i, o := range outs {
		c.record(o.t, o.gen, o.sp, o.passes, o.fails, err)
		outs[i] = outcome{}
	}
	return outs
}

// checkQueue is a min-heap of checks by due time. Its entries hold the
// due time, so that ordering them reads the queue's own memory, not two
// checks' a comparison (at 10,000 checks those reads were 9 % of an idle
// process's CPU); a removed check's entry stays until it comes up.
type checkQueue []queued

type queued struct {
	// due is the check's due time when it was queued.
	due time.Time
	ch  *check
}

// head returns when the first entry is due.
func (q checkQueue) head() time.Time { return q[0].due }

// push queues ch at its due time, reporting whether it is first.
func (q *checkQueue) push(ch *check) bool {
	ch.queued = true
	*q = append(*q, queued{ch.due, ch})
	return q.up(len(*q)-1) == 0
}

// pop takes the first entry's check out of the queue.
func (q *checkQueue) pop() *check {
	old := *q
	ch := old[0].ch
	n := len(old) - 1
	old[0] = old[n]
	old[n] = queued{}
	*q = old[:n]
	q.down(0)
	ch.queued = false
	return ch
}

// trim drops the entries of removed checks from the head.
func (q *checkQueue) trim() {
	for len(*q) > 0 && !(*q)[0].ch.queued {
		old := *q
		n := len(old) - 1
		old[0] = old[n]
		old[n] = queued{}
		*q = old[:n]
		q.down(0)
	}
}

// reorder takes every queued check's due time again, dropping removed
// checks' entries, and orders the queue anew.
func (q *checkQueue) reorder() {
	live := (*q)[:0]
	for _, e := range *q {
		if e.ch.queued {
			live = append(live, queued{e.ch.due, e.ch})
		}
	}
	clear((*q)[len(live):])
	*q = live
	for i := len(live)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

func (q checkQueue) up(i int) int {
	for i > 0 {
		parent := (i - 1) / 2
		if !q[i].due.Before(q[parent].due) {
			break
		}
		q[i], q[parent] = q[parent], q[i]
		i = parent
	}
	return i
}

func (q checkQueue) down(i int) {
	n := len(q)
	for {
		least := i
		if l := 2*i + 1; l < n && q[l].due.Before(q[least].due) {
			least = l
		}
		if r := 2*i + 2; r < n && q[r].due.Before(q[least].due) {
			least = r
		}
		if least == i {
			return
		}
		q[i], q[least] = q[least], q[i]
		i = least
	}
}
