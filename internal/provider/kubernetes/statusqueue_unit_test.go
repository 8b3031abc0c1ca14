package kubernetes

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/test/testsync"
)

// fakeWrites records the writes a statusQueue makes: each write's
// object's name and resourceVersion and the label "v" its change sets
// (which write it is), and makes each a new resourceVersion.
type fakeWrites struct {
	mu      sync.Mutex
	made    []string // name/resourceVersion/v
	running map[string]int
	most    int // the most writes of one object running at once
	fail    map[string]int
	release chan struct{} // when set, each write waits for a receive
	rv      int
}

func (f *fakeWrites) write(ctx context.Context, w write) (int, error) {
	name := w.obj.GetName()
	f.mu.Lock()
	f.running[name]++
	f.most = max(f.most, f.running[name])
	f.mu.Unlock()
	if f.release != nil {
		<-f.release
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[name]--
	if f.fail[name] > 0 {
		f.fail[name]--
		return 0, errors.New("refused")
	}
	cur := w.obj.DeepCopyObject().(client.Object)
	w.changes(cur)
	f.made = append(f.made, name+"/"+cur.GetResourceVersion()+"/"+cur.GetLabels()["v"])
	f.rv++
	after := strconv.Itoa(100 + f.rv)
	cur.SetResourceVersion(after)
	if w.done != nil {
		w.done(w.obj.GetResourceVersion(), after)
	}
	if w.wrote != nil {
		w.wrote(cur)
	}
	return 1, nil
}

func (f *fakeWrites) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.made...)
}

func queuedWrite(kind, name, rv, v string) write {
	var obj client.Object = &gatewayv1.HTTPRoute{}
	if kind == "Gateway" {
		obj = &gatewayv1.Gateway{}
	}
	obj.SetName(name)
	obj.SetResourceVersion(rv)
	return write{key: objectKey{kind, "", name}, obj: obj, steps: []change{{apply: func(o client.Object) bool {
		o.SetLabels(map[string]string{"v": v})
		return true
	}}}}
}

func startQueue(t *testing.T, f *fakeWrites, workers int) *statusQueue {
	t.Helper()
	f.running = map[string]int{}
	q := newStatusQueue(f.write, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- q.run(ctx, workers) }()
	t.Cleanup(func() {
		cancel()
		if f.release != nil {
			close(f.release)
		}
		<-done
	})
	return q
}

// TestStatusQueue checks the queue's promises: a newer write of an object
// replaces the one waiting, one object's writes never run at once and run
// in order, a write queued while one of its object runs follows it at the
// version that one left, a failed write is tried again but never undoes a
// newer one, and a Gateway's writes are spaced by gatewayStatusInterval.
func TestStatusQueue(t *testing.T) {
	t.Run("a newer write replaces the one waiting", func(t *testing.T) {
		f := &fakeWrites{release: make(chan struct{})}
		q := startQueue(t, f, 1)
		q.put(queuedWrite("HTTPRoute", "a", "1", "1"))
		testsync.WaitFor(t, 5*time.Second, "the first write running", func() bool { return q.pending() == 1 && !q.hasWaiting("a") })
		for v := 2; v <= 5; v++ {
			q.put(queuedWrite("HTTPRoute", "b", "1", strconv.Itoa(v)))
		}
		if !q.has(objectKey{"HTTPRoute", "", "b"}) || q.pending() != 2 {
			t.Fatalf("%d writes pending; want a's running and b's one waiting", q.pending())
		}
		f.release <- struct{}{}
		f.release <- struct{}{}
		testsync.WaitFor(t, 5*time.Second, "both written", func() bool { return q.pending() == 0 })
		if got := f.writes(); len(got) != 2 || got[1] != "b/1/5" {
			t.Errorf("writes %q; want a's, then b's last alone", got)
		}
	})

	t.Run("one object's writes run one at a time, in order, each at the version the last left", func(t *testing.T) {
		f := &fakeWrites{release: make(chan struct{})}
		q := startQueue(t, f, 4)
		q.put(queuedWrite("HTTPRoute", "a", "1", "1"))
		testsync.WaitFor(t, 5*time.Second, "the first write running", func() bool { return !q.hasWaiting("a") })
		// Queued from a copy the cache has not updated: still at 1.
		q.put(queuedWrite("HTTPRoute", "a", "1", "2"))
		f.release <- struct{}{}
		f.release <- struct{}{}
		testsync.WaitFor(t, 5*time.Second, "both written", func() bool { return q.pending() == 0 })
		if got := f.writes(); len(got) != 2 || got[0] != "a/1/1" || got[1] != "a/101/2" {
			t.Errorf("writes %q; want a/1/1 then a/101/2", got)
		}
		if f.most != 1 {
			t.Errorf("%d writes of one object ran at once", f.most)
		}
	})

	t.Run("writes from one stale copy each start where the last left", func(t *testing.T) {
		f := &fakeWrites{}
		q := startQueue(t, f, 2)
		for v := range 4 {
			// The cache never catches up: every write is made from the
			// copy at 1.
			q.put(queuedWrite("HTTPRoute", "a", "1", strconv.Itoa(v)))
			testsync.WaitFor(t, 5*time.Second, "written", func() bool { return q.pending() == 0 })
		}
		want := []string{"a/1/0", "a/101/1", "a/102/2", "a/103/3"}
		if got := f.writes(); !slices.Equal(got, want) {
			t.Errorf("writes %q; want %q", got, want)
		}
	})

	t.Run("a failed write is tried again, unless a newer one came", func(t *testing.T) {
		f := &fakeWrites{fail: map[string]int{"a": 2, "b": 1}, release: make(chan struct{}, 100)}
		for range 100 {
			f.release <- struct{}{}
		}
		q := startQueue(t, f, 2)
		q.put(queuedWrite("HTTPRoute", "a", "1", "1"))
		testsync.WaitFor(t, 10*time.Second, "a written after two failures", func() bool { return len(f.writes()) == 1 })
		if got := f.writes(); got[0] != "a/1/1" {
			t.Errorf("writes %q; want a/1/1", got)
		}
		q.put(queuedWrite("HTTPRoute", "b", "1", "old"))
		testsync.WaitFor(t, 5*time.Second, "b's first try failed", func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.fail["b"] == 0
		})
		q.put(queuedWrite("HTTPRoute", "b", "1", "new"))
		testsync.WaitFor(t, 10*time.Second, "b written", func() bool { return q.pending() == 0 && len(f.writes()) == 2 })
		time.Sleep(3 * statusRetryFirst) // a retry of "old" would have come by now
		if got := f.writes(); len(got) != 2 || got[1] != "b/1/new" {
			t.Errorf("writes %q; want b's newer write alone", got)
		}
	})

	t.Run("a Gateway's writes are spaced, the latest written", func(t *testing.T) {
		f := &fakeWrites{}
		q := startQueue(t, f, 4)
		start := time.Now()
		for v := range 20 {
			q.put(queuedWrite("Gateway", "gw", "1", strconv.Itoa(v)))
			time.Sleep(gatewayStatusInterval / 20)
		}
		testsync.WaitFor(t, 5*time.Second, "written", func() bool { return q.pending() == 0 })
		took := time.Since(start)
		got := f.writes()
		if max := int(took/gatewayStatusInterval) + 1; len(got) > max || len(got) < 2 {
			t.Errorf("%d writes in %v: %q; want 2 to %d, one per %v", len(got), took, got, max, gatewayStatusInterval)
		}
		if last := got[len(got)-1]; last != "gw/"+strconv.Itoa(100+len(got)-1)+"/19" {
			t.Errorf("the last write %q; want the 20th, at the version the one before left", last)
		}
	})
	t.Run("a Gateway's spacing is forgotten once it has passed", func(t *testing.T) {
		f := &fakeWrites{}
		q := startQueue(t, f, 2)
		for i := range 5 {
			q.put(queuedWrite("Gateway", "gw-"+strconv.Itoa(i), "1", "0"))
		}
		testsync.WaitFor(t, 5*time.Second, "written", func() bool { return q.pending() == 0 })
		time.Sleep(gatewayStatusInterval + 50*time.Millisecond)
		q.put(queuedWrite("Gateway", "last", "1", "0"))
		testsync.WaitFor(t, 5*time.Second, "written", func() bool { return q.pending() == 0 })
		q.mu.Lock()
		defer q.mu.Unlock()
		if _, ok := q.notBefore[objectKey{"Gateway", "", "last"}]; len(q.notBefore) != 1 || !ok {
			t.Errorf("spacing kept for %v; want the last Gateway's alone (deleted Gateways must leave nothing)", q.notBefore)
		}
	})
}

// hasWaiting reports whether a write of the HTTPRoute name is waiting.
func (q *statusQueue) hasWaiting(name string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.waiting[objectKey{"HTTPRoute", "", name}]
	return ok
}
