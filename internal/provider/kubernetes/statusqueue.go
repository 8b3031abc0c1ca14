package kubernetes

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Background status writes. A reconcile sends the model first and then
// hands the statuses that differ to the statusQueue, which writes them
// statusWorkers at a time while later reconciles go on: a change is sent to
// the control plane without waiting for the status writes of the changes
// before it, and while routes keep arriving their statuses are written as
// they come rather than a reconcile's worth at a time, so that little is
// left to write when the last arrives.
const (
	// gatewayStatusInterval is the least time between two status writes
	// of one Gateway: while routes arrive every reconcile changes its
	// listeners' attached-route counts, and the writes in between would
	// be overwritten at once. The latest status waits out the interval.
	gatewayStatusInterval = 200 * time.Millisecond
	// statusRetryFirst and statusRetryMost bound the wait before a failed
	// write is tried again, doubling from one to the other.
	statusRetryFirst = 100 * time.Millisecond
	statusRetryMost  = 30 * time.Second
	// writtenKept is how long the queue keeps the object a write left:
	// longer than the cache takes to catch up.
	writtenKept = 30 * time.Second
)

// written is what a write of an object left: the object as the apiserver
// returned it, and the resourceVersion of the copy the write was made from
// (the cache's, which the write may have replaced by what the write before
// it left).
type written struct {
	before string
	obj    client.Object
	at     time.Time
}

// statusQueue holds the status writes waiting, at most one per object (a
// newer write of an object replaces the one waiting), oldest first, and
// runs them on its workers. An object's writes run one at a time, in the
// order they were queued.
type statusQueue struct {
	// write makes one write and reports how many requests it made.
	write func(context.Context, write) (int, error)
	log   *slog.Logger

	mu   sync.Mutex
	cond *sync.Cond
	// order holds the keys waiting to be written, oldest first: each is
	// in waiting, not running nor held, but for keys dropped since
	// (work skips them).
	order   []objectKey
	waiting map[objectKey]write
	running map[objectKey]bool
	// held are the Gateways waiting out gatewayStatusInterval (in
	// waiting, not in order), and notBefore when each may be written.
	held      map[objectKey]bool
	notBefore map[objectKey]time.Time
	// written holds, for writtenKept, what each object's last write
	// left: a write made from a copy the cache has not updated yet (it
	// is at the version that write was made at) starts from the object
	// that write left instead, rather than being refused as a conflict
	// and reading the object again. recent orders them by age.
	written map[objectKey]written
	recent  []objectKey
	// failures counts each object's failed writes in a row; retrying
	// names the retry each failed object waits for (a newer write of the
	// object cancels it), retries numbers them.
	failures map[objectKey]int
	retrying map[objectKey]uint64
	retries  uint64
	closed   bool
}

func newStatusQueue(writeFn func(context.Context, write) (int, error), log *slog.Logger) *statusQueue {
	q := &statusQueue{
		write:     writeFn,
		log:       log,
		waiting:   map[objectKey]write{},
		running:   map[objectKey]bool{},
		held:      map[objectKey]bool{},
		notBefore: map[objectKey]time.Time{},
		written:   map[objectKey]written{},
		failures:  map[objectKey]int{},
		retrying:  map[objectKey]uint64{},
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// run writes with workers goroutines until ctx ends, then waits for the
// writes in flight.
func (q *statusQueue) run(ctx context.Context, workers int) error {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { q.work(ctx) })
	}
	<-ctx.Done()
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
	wg.Wait()
	return nil
}

// has reports whether a write of k is waiting or running.
func (q *statusQueue) has(k objectKey) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.waiting[k]
	return ok || q.running[k]
}

// put queues w, replacing a write of the same object that is waiting
// (and a retry of one that failed).
func (q *statusQueue) put(w write) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.retrying, w.key)
	q.putLocked(w)
}

func (q *statusQueue) putLocked(w write) {
	if q.closed {
		return
	}
	k := w.key
	_, ok := q.waiting[k]
	q.waiting[k] = w
	if ok {
		return
	}
	if !q.running[k] {
		q.ready(k)
	}
	// A running key is queued again when its write ends.
}

// ready puts k, which is waiting and not running, in order, or holds it
// until its notBefore.
func (q *statusQueue) ready(k objectKey) {
	if q.held[k] {
		return
	}
	if wait := time.Until(q.notBefore[k]); wait > 0 {
		q.held[k] = true
		time.AfterFunc(wait, func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			delete(q.held, k)
			if _, ok := q.waiting[k]; ok && !q.running[k] && !q.closed {
				q.ready(k)
			}
		})
		return
	}
	delete(q.notBefore, k)
	q.order = append(q.order, k)
	q.cond.Signal()
}

// drop forgets a waiting write of k (its object is gone).
func (q *statusQueue) drop(k objectKey) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.waiting, k)
	delete(q.written, k)
	delete(q.failures, k)
	delete(q.retrying, k)
	// order may still name k: work skips keys not waiting.
}

// work runs waiting writes until the queue closes.
func (q *statusQueue) work(ctx context.Context) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		for len(q.order) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			return
		}
		k := q.order[0]
		q.order = q.order[1:]
		w, ok := q.waiting[k]
		if !ok || q.running[k] || q.held[k] {
			continue
		}
		delete(q.waiting, k)
		q.running[k] = true
		// base is the version of the copy the write was made from; a
		// chain of writes from one stale copy (the cache behind all of
		// them) each starts from what the one before left.
		base := w.obj.GetResourceVersion()
		if v, ok := q.written[k]; ok && base == v.before {
			w.obj = v.obj // writeOne changes copies of it
		}
		q.mu.Unlock()

		before := w.obj.GetResourceVersion()
		var left client.Object
		run := w
		run.wrote = func(o client.Object) { left = o }
		_, err := q.write(ctx, run)

		q.mu.Lock()
		delete(q.running, k)
		now := time.Now()
		if k.kind == "Gateway" {
			// Entries whose time has passed say nothing: forgotten here,
			// so that Gateways deleted since leave none behind.
			maps.DeleteFunc(q.notBefore, func(g objectKey, t time.Time) bool { return !t.After(now) && !q.held[g] })
			q.notBefore[k] = now.Add(gatewayStatusInterval)
		}
		if err == nil && left != nil && left.GetResourceVersion() != before {
			q.written[k] = written{before: base, obj: left, at: now}
			q.recent = append(q.recent, k)
		}
		// Forget what writes left writtenKept ago. (A key written again
		// since is in recent again, later: its first place waits.)
		for len(q.recent) > 0 {
			v, ok := q.written[q.recent[0]]
			if ok && now.Sub(v.at) < writtenKept {
				break
			}
			if ok {
				delete(q.written, q.recent[0])
			}
			q.recent = q.recent[1:]
		}
		_, newer := q.waiting[k]
		switch {
		case err == nil || ctx.Err() != nil || q.closed:
			delete(q.failures, k)
		case newer:
			// A newer write of the object is waiting: it is the retry.
			q.failures[k]++
		default:
			q.failures[k]++
			wait := min(statusRetryFirst<<min(q.failures[k]-1, 20), statusRetryMost)
			q.log.Warn("writing status; will try again", "kind", k.kind, "namespace", k.namespace, "name", k.name, "in", wait, "err", err)
			q.retries++
			id := q.retries
			q.retrying[k] = id
			time.AfterFunc(wait, func() {
				q.mu.Lock()
				defer q.mu.Unlock()
				if q.retrying[k] == id {
					delete(q.retrying, k)
					q.putLocked(w)
				}
			})
		}
		if _, ok := q.waiting[k]; ok {
			q.ready(k)
		}
	}
}

// pending returns how many writes are waiting or running.
func (q *statusQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.waiting) + len(q.running)
}
