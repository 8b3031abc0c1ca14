package health

import (
	"time"
)

// Passive outlier ejection defaults. Lattice has no outlier detection; these
// follow Envoy's consecutive-5xx detector, with a larger share of a group
// allowed out because Lattice-style fail-open already guards the rest.
const (
	// DefaultConsecutiveFailures is how many failed requests in a row
	// eject a target.
	DefaultConsecutiveFailures = 5
	// DefaultBaseEjection is the first ejection's length. Each further
	// ejection of a target that failed again within this long of its
	// return lasts one base longer (30 s, 60 s, 90 s, ...).
	DefaultBaseEjection = 30 * time.Second
	// DefaultMaxEjection caps an ejection's length.
	DefaultMaxEjection = 300 * time.Second
	// DefaultMaxEjectedPercent caps the share of a group's Active targets
	// ejected at once, rounded down: a group of one never has its target
	// ejected, a group of two or three at most one.
	DefaultMaxEjectedPercent = 50
)

// Outlier configures passive outlier ejection. Zero fields take the
// defaults.
type Outlier struct {
	ConsecutiveFailures int32
	BaseEjection        time.Duration
	MaxEjection         time.Duration
	MaxEjectedPercent   int32
}

func (o Outlier) withDefaults() Outlier {
	if o.ConsecutiveFailures <= 0 {
		o.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if o.BaseEjection <= 0 {
		o.BaseEjection = DefaultBaseEjection
	}
	if o.MaxEjection <= 0 {
		o.MaxEjection = DefaultMaxEjection
	}
	if o.MaxEjectedPercent <= 0 {
		o.MaxEjectedPercent = DefaultMaxEjectedPercent
	}
	return o
}

// Observe records the outcome of one request sent to the target: ok is
// false for a 5xx response or a failure to get any response (refused,
// reset, timed out). ConsecutiveFailures failures in a row eject the target
// unless that would leave out more than MaxEjectedPercent of its group. It
// does nothing on a nil target.
//
// The success path is one atomic load; a failure, one atomic add.
func (t *Target) Observe(ok bool) {
	if t == nil {
		return
	}
	if ok {
		if t.fails.Load() != 0 {
			t.fails.Store(0)
		}
		return
	}
	if t.fails.Add(1) >= t.group.checker.outlier.ConsecutiveFailures {
		t.eject()
	}
}

// eject leaves t out of its group for an ejection time, if the group's cap
// allows.
func (t *Target) eject() {
	g := t.group
	c := g.checker
	o := &c.outlier
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fails.Store(0)
	// A target already out of rotation (unhealthy, initial, draining,
	// ejected) gains nothing from an ejection.
	if w := t.state.Load(); w&removedBit != 0 || !routable(w) {
		return
	}
	// Reserve a slot under the group's cap.
	for {
		n := g.ejected.Load()
		if n+1 > g.active.Load()*o.MaxEjectedPercent/100 {
			return
		}
		if g.ejected.CompareAndSwap(n, n+1) {
			break
		}
	}
	if t.ej == nil {
		t.ej = &ejection{}
	}
	ej := t.ej
	now := time.Now()
	if ej.readmitted.IsZero() || now.Sub(ej.readmitted) > o.BaseEjection {
		ej.ejections = 0
	}
	ej.ejections++
	d := min(o.BaseEjection*time.Duration(ej.ejections), o.MaxEjection)
	t.transition(func(w uint32) uint32 { return w | ejectedBit })
	g.ejections.Add(1)
	ej.timer = time.AfterFunc(d, t.readmit)
	c.log.Warn("target ejected: consecutive failed requests", "targetGroup", g.name, "target", t.addr,
		"failures", o.ConsecutiveFailures, "for", d)
}

// readmit ends t's ejection.
func (t *Target) readmit() {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, _ := t.transition(func(w uint32) uint32 { return w &^ ejectedBit })
	if old&ejectedBit == 0 || old&removedBit != 0 {
		return
	}
	t.group.ejected.Add(-1)
	t.ej.readmitted = time.Now()
	t.group.checker.log.Info("target readmitted after ejection", "targetGroup", t.group.name, "target", t.addr)
}
