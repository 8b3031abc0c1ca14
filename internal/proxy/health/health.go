// Package health keeps the proxy's view of each target's health: active
// health checks (the Lattice semantics of target-group health checks) and
// passive outlier ejection (targets that keep failing real requests are left
// out for a while).
//
// It owns the per-target state that the request path reads, the check loops
// and the ejection timers. The state of a target survives config changes as
// long as its target group, address and port stay the same. It must not
// route, forward or know about route tables: package router reads
// Target.Routable and Group.FailOpen, and package proxy reports the outcome
// of each request with Target.Observe.
//
// The request path reads health without locks: a target's status, ejection
// and generation share one atomic word, and each group counts its routable
// targets atomically.
package health

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Status is a target's health as Lattice reports it (ListTargets).
type Status uint8

const (
	// Initial: checks are enabled and the target has not passed one yet.
	// It takes no requests unless every target of its group is down.
	Initial Status = iota
	// Healthy: the target passed its last checks.
	Healthy
	// Unhealthy: the target failed UnhealthyThresholdCount checks in a row
	// and has not since passed HealthyThresholdCount in a row.
	Unhealthy
	// Unavailable: health checks are disabled for the target's group (or
	// are not this proxy's to run, for a target in another cluster). The
	// target takes requests.
	Unavailable
	// Draining: the control plane is removing the target. It takes no new
	// requests and is not checked.
	Draining
)

var statusNames = [...]string{"INITIAL", "HEALTHY", "UNHEALTHY", "UNAVAILABLE", "DRAINING"}

// Statuses lists every status, in order.
var Statuses = []Status{Initial, Healthy, Unhealthy, Unavailable, Draining}

// String returns the Lattice name of the status, such as "HEALTHY".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "UNKNOWN"
}

// The layout of a target's state word.
const (
	statusMask = 0x0f
	ejectedBit = 1 << 4
	removedBit = 1 << 5
	genShift   = 8
	genStep    = 1 << genShift
)

func statusOf(w uint32) Status { return Status(w & statusMask) }

func withStatus(w uint32, s Status) uint32 { return w&^statusMask | uint32(s) }

// routable reports whether a target in state w takes new requests while its
// group has any such target.
func routable(w uint32) bool {
	s := statusOf(w)
	return (s == Healthy || s == Unavailable) && w&ejectedBit == 0
}

// counted is what a target in state w adds to its group's routable count:
// a removed target no longer counts.
func counted(w uint32) int32 {
	if w&removedBit == 0 && routable(w) {
		return 1
	}
	return 0
}

// Target is the health of one target of one target group. Its methods are
// safe for concurrent use, and a nil *Target is a target without health
// state: always routable, observing nothing.
//
// A proxy holds one per target of every group (100,000 at issue 15's
// size), so what only an ejected target needs is kept apart (ej) and the
// struct stays at 64 bytes.
type Target struct {
	group *Group
	// addr is "host:port", the traffic address; a check port, if the
	// group sets one, is joined to its host.
	addr string

	// state holds the status, the ejected and removed bits and the
	// generation, which every change of the target's check mode advances so
	// that a check loop of an earlier mode cannot change the status.
	state atomic.Uint32
	// fails counts consecutive failed requests (passive observation).
	fails atomic.Int32

	// mu guards the ejection bookkeeping, ej, which the target's first
	// ejection allocates.
	mu sync.Mutex
	ej *ejection

	// check is the check the target reads, sub its share of it; nil when
	// it is not checked. Only the Checker, holding its lock, touches them.
	check *check
	sub   *subscription
}

// ejection is a target's passive-ejection bookkeeping: its ejections in a
// row, when it was last readmitted, and the timer of the ejection under
// way.
type ejection struct {
	ejections  int
	readmitted time.Time
	timer      *time.Timer
}

// Addr returns the target's "host:port".
func (t *Target) Addr() string { return t.addr }

// Group returns the target's group.
func (t *Target) Group() *Group { return t.group }

// Status returns the target's status.
func (t *Target) Status() Status { return statusOf(t.state.Load()) }

// Ejected reports whether passive outlier detection has left the target out.
func (t *Target) Ejected() bool { return t.state.Load()&ejectedBit != 0 }

// Routable reports whether the target should take new requests while its
// group has routable targets: it is Healthy or Unavailable, and not ejected.
// A nil target is routable.
func (t *Target) Routable() bool {
	return t == nil || routable(t.state.Load())
}

// transition applies f to the state word atomically and keeps the group's
// routable count in step. It returns the old and new words.
func (t *Target) transition(f func(uint32) uint32) (old, new uint32) {
	for {
		old = t.state.Load()
		new = f(old)
		if new == old {
			return old, new
		}
		if t.state.CompareAndSwap(old, new) {
			break
		}
	}
	g := t.group
	g.checker.gen.Add(1)
	if d := counted(new) - counted(old); d != 0 {
		g.routable.Add(d)
	}
	if from, to := shown(old), shown(new); from != to {
		if n := g.byStatus(from); n != nil {
			n.Add(-1)
		}
		if n := g.byStatus(to); n != nil {
			n.Add(1)
		}
	}
	return old, new
}

// shown is the status a target in state w counts under in its group's
// summary: its own, or none (Draining's slot, never summarized) once
// removed.
func shown(w uint32) Status {
	if w&removedBit != 0 {
		return Draining
	}
	return statusOf(w)
}

// byStatus is the group's count of targets of status s, Healthy or
// Unhealthy; nil for the statuses not counted.
func (g *Group) byStatus(s Status) *atomic.Int32 {
	switch s {
	case Healthy:
		return &g.healthy
	case Unhealthy:
		return &g.unhealthy
	}
	return nil
}

// Group is the health of one target group's targets.
type Group struct {
	name    string
	checker *Checker
	// routable counts the group's targets that take requests; at zero the
	// group fails open.
	routable atomic.Int32
	// active is the number of the group's Active targets, and ejected how
	// many of them passive outlier detection has left out.
	active, ejected atomic.Int32
	// ejections counts every ejection since the group appeared.
	ejections atomic.Uint64
	// healthy and unhealthy count the targets of those statuses, so that
	// a summary (a scrape) reads two numbers per group, not every target.
	healthy, unhealthy atomic.Int32
	// spec is the group's active check, nil when checks are disabled.
	spec atomic.Pointer[spec]

	// targets and last are guarded by the Checker's lock: targets are
	// sorted by address (find), last is what the group was last updated
	// from.
	targets []*Target
	last    *groupInput
}

// Name returns the target group's name.
func (g *Group) Name() string { return g.name }

// FailOpen reports whether no target of the group is routable, in which
// case requests go to every target by round robin, regardless of health, as
// Lattice does. A nil group never fails open.
func (g *Group) FailOpen() bool {
	return g != nil && g.routable.Load() <= 0
}

// Target returns the state of the target at addr ("host:port"), or nil when
// the group has none.
func (g *Group) Target(addr string) *Target {
	g.checker.mu.Lock()
	defer g.checker.mu.Unlock()
	return g.find(addr)
}

// find returns the target at addr, or nil. The Checker's lock must be
// held.
func (g *Group) find(addr string) *Target {
	i, ok := slices.BinarySearchFunc(g.targets, addr, func(t *Target, addr string) int { return strings.Compare(t.addr, addr) })
	if !ok {
		return nil
	}
	return g.targets[i]
}
