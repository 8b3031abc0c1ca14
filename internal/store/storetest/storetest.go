// Package storetest is the conformance suite every store.Store
// implementation must pass: the behaviour the control plane relies on,
// written once so the embedded and etcd stores cannot drift apart.
//
// Tests make no assumption about a fresh store's revision: they measure
// revisions relative to the one they start at.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/test/testsync"
)

// timeout bounds every wait for an event; generous because the race
// detector on a loaded 2-core machine slows fsync-bound writers a lot.
const timeout = 10 * time.Second

// Run runs the suite. open must return a new, empty store for each call and
// register a cleanup that closes it (tolerating a store the test already
// closed). Subtests run in parallel, each with its own store.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"PutGet", testPutGet},
		{"List", testList},
		{"Revisions", testRevisions},
		{"TxnAtomic", testTxnAtomic},
		{"NoOpTxn", testNoOpTxn},
		{"Delete", testDelete},
		{"InvalidTxn", testInvalidTxn},
		{"CanceledContext", testCanceledContext},
		{"WatchReplay", testWatchReplay},
		{"WatchLive", testWatchLive},
		{"WatchPrefix", testWatchPrefix},
		{"WatchGrouping", testWatchGrouping},
		{"WatchCancel", testWatchCancel},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
	// Identity compares two stores.
	t.Run("Identity", func(t *testing.T) {
		t.Parallel()
		a, b := open(t), open(t)
		first := a.ID()
		if _, err := a.Txn(t.Context(), store.Put("k", []byte("v"))); err != nil {
			t.Fatal(err)
		}
		if first == "" || a.ID() != first {
			t.Errorf("ID() = %q, then %q after a write: want a stable non-empty identity", first, a.ID())
		}
		if a.ID() == b.ID() {
			t.Errorf("two new stores share the identity %q", a.ID())
		}
	})
	// Preconditions opens a store per case.
	t.Run("Preconditions", func(t *testing.T) {
		t.Parallel()
		testPreconditions(t, open)
	})
}

func testPutGet(t *testing.T, s store.Store) {
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name  string
		key   string
		value []byte
	}{
		{"simple", "/a/b", []byte("hello")},
		{"empty value", "/empty", []byte{}},
		{"nil value", "/nil", nil},
		{"binary", "/bin", []byte{0, 1, 2, 0xff, 0}},
		{"unicode key", "/ключ/✓", []byte("v")},
		{"large value", "/big", big},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rev := txn(t, s, store.Put(tc.key, tc.value))
			kv, err := s.Get(ctx, tc.key)
			if err != nil {
				t.Fatalf("Get(%q): %v", tc.key, err)
			}
			want := store.KeyValue{Key: tc.key, Value: tc.value, CreateRevision: rev, ModRevision: rev}
			if !equalKV(kv, want) {
				t.Errorf("Get(%q) = %s, want %s", tc.key, fmtKV(kv), fmtKV(want))
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		_, err := s.Get(ctx, "/missing")
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
		}
	})

	t.Run("caller reuses buffer", func(t *testing.T) {
		buf := []byte("first")
		txn(t, s, store.Put("/buf", buf))
		copy(buf, "XXXXX")
		if kv := get(t, s, "/buf"); string(kv.Value) != "first" {
			t.Errorf("after caller modified its buffer, value = %q, want %q", kv.Value, "first")
		}
	})
}

func testList(t *testing.T, s store.Store) {
	ctx := t.Context()
	keys := []string{"b", "a/2", "ab", "a/10", "a", "a/1", "a/1/x"}
	for _, k := range keys {
		txn(t, s, store.Put(k, []byte("v-"+k)))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a", "a/1", "a/1/x", "a/10", "a/2", "ab", "b"}},
		{"a", []string{"a", "a/1", "a/1/x", "a/10", "a/2", "ab"}},
		{"a/", []string{"a/1", "a/1/x", "a/10", "a/2"}},
		{"a/1", []string{"a/1", "a/1/x", "a/10"}},
		{"a/1/", []string{"a/1/x"}},
		{"b", []string{"b"}},
		{"c", nil},
		{"a/3", nil},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("prefix %q", tc.prefix), func(t *testing.T) {
			kvs, rev, err := s.List(ctx, tc.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", tc.prefix, err)
			}
			var got []string
			for _, kv := range kvs {
				got = append(got, kv.Key)
				if string(kv.Value) != "v-"+kv.Key {
					t.Errorf("List(%q): %s has value %q, want %q", tc.prefix, kv.Key, kv.Value, "v-"+kv.Key)
				}
				if kv.ModRevision == 0 || kv.ModRevision > rev {
					t.Errorf("List(%q): %s has revision %d, list revision is %d", tc.prefix, kv.Key, kv.ModRevision, rev)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
			}
			if cur := revision(t, s); rev != cur {
				t.Errorf("List(%q) revision = %d, want current revision %d", tc.prefix, rev, cur)
			}
		})
	}

	t.Run("after delete", func(t *testing.T) {
		rev := txn(t, s, store.Delete("a/10"))
		kvs, listRev, err := s.List(ctx, "a/1")
		if err != nil {
			t.Fatal(err)
		}
		if got := kvKeys(kvs); !slices.Equal(got, []string{"a/1", "a/1/x"}) {
			t.Errorf("List after delete = %q, want [a/1 a/1/x]", got)
		}
		if listRev != rev {
			t.Errorf("List revision = %d, want %d (the delete)", listRev, rev)
		}
	})
}

func testRevisions(t *testing.T, s store.Store) {
	base := revision(t, s)
	r1 := txn(t, s, store.Put("k", []byte("1")))
	r2 := txn(t, s, store.Put("other", []byte("x")))
	r3 := txn(t, s, store.Put("k", []byte("2")))
	if want := []int64{base + 1, base + 2, base + 3}; !slices.Equal([]int64{r1, r2, r3}, want) {
		t.Fatalf("revisions = %d %d %d, want %v", r1, r2, r3, want)
	}
	if got := revision(t, s); got != r3 {
		t.Errorf("Revision() = %d, want %d", got, r3)
	}
	kv := get(t, s, "k")
	if kv.CreateRevision != r1 || kv.ModRevision != r3 {
		t.Errorf("k: create %d mod %d, want create %d mod %d", kv.CreateRevision, kv.ModRevision, r1, r3)
	}
	// Recreating a deleted key starts a new life: a new CreateRevision.
	txn(t, s, store.Delete("k"))
	r5 := txn(t, s, store.Put("k", []byte("3")))
	kv = get(t, s, "k")
	if kv.CreateRevision != r5 || kv.ModRevision != r5 {
		t.Errorf("recreated k: create %d mod %d, want both %d", kv.CreateRevision, kv.ModRevision, r5)
	}
}

func testTxnAtomic(t *testing.T, s store.Store) {
	txn(t, s, store.Put("t/c", []byte("old")), store.Put("t/a", []byte("old")))
	before := revision(t, s)
	rev := txn(t, s, store.Put("t/a", []byte("A")), store.Put("t/b", []byte("B")), store.Delete("t/c"))
	if rev != before+1 {
		t.Errorf("multi-op txn revision = %d, want %d (one revision for the whole txn)", rev, before+1)
	}
	for _, k := range []string{"t/a", "t/b"} {
		if kv := get(t, s, k); kv.ModRevision != rev {
			t.Errorf("%s ModRevision = %d, want %d", k, kv.ModRevision, rev)
		}
	}
	if _, err := s.Get(t.Context(), "t/c"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted t/c: Get error = %v, want ErrNotFound", err)
	}
}

// testPreconditions covers every IfRevision kind for puts and deletes.
// Each case gets a fresh store holding "a" (created at A1, modified at A2).
// "m" is missing.
func testPreconditions(t *testing.T, open func(t *testing.T) store.Store) {
	type revs struct{ A1, A2 int64 }
	put := func(key string, ifRev int64) store.Op {
		return store.Op{Type: store.OpPut, Key: key, Value: []byte("new"), IfRevision: ifRev}
	}
	del := func(key string, ifRev int64) store.Op {
		return store.Op{Type: store.OpDelete, Key: key, IfRevision: ifRev}
	}
	conflict := func(key string, expected, actual int64) *store.ConflictError {
		return &store.ConflictError{Key: key, Expected: expected, Actual: actual}
	}
	tests := []struct {
		name string
		ops  func(r revs) []store.Op
		// conflict is the expected error, nil if the txn must apply.
		conflict func(r revs) *store.ConflictError
		// changes says whether an applied txn advances the revision.
		changes bool
	}{
		{
			name:    "put unconditional on existing",
			ops:     func(r revs) []store.Op { return []store.Op{put("a", store.Unconditional)} },
			changes: true,
		},
		{
			name:    "put must-not-exist on missing",
			ops:     func(r revs) []store.Op { return []store.Op{put("m", store.MustNotExist)} },
			changes: true,
		},
		{
			name:     "put must-not-exist on existing",
			ops:      func(r revs) []store.Op { return []store.Op{put("a", store.MustNotExist)} },
			conflict: func(r revs) *store.ConflictError { return conflict("a", store.MustNotExist, r.A2) },
		},
		{
			name:    "put at current revision",
			ops:     func(r revs) []store.Op { return []store.Op{put("a", r.A2)} },
			changes: true,
		},
		{
			name:     "put at stale revision",
			ops:      func(r revs) []store.Op { return []store.Op{put("a", r.A1)} },
			conflict: func(r revs) *store.ConflictError { return conflict("a", r.A1, r.A2) },
		},
		{
			name:     "put at revision on missing",
			ops:      func(r revs) []store.Op { return []store.Op{put("m", r.A2)} },
			conflict: func(r revs) *store.ConflictError { return conflict("m", r.A2, 0) },
		},
		{
			name:    "delete at current revision",
			ops:     func(r revs) []store.Op { return []store.Op{del("a", r.A2)} },
			changes: true,
		},
		{
			name:     "delete at stale revision",
			ops:      func(r revs) []store.Op { return []store.Op{del("a", r.A1)} },
			conflict: func(r revs) *store.ConflictError { return conflict("a", r.A1, r.A2) },
		},
		{
			name:     "delete at revision on missing",
			ops:      func(r revs) []store.Op { return []store.Op{del("m", r.A2)} },
			conflict: func(r revs) *store.ConflictError { return conflict("m", r.A2, 0) },
		},
		{
			name:     "delete must-not-exist on existing",
			ops:      func(r revs) []store.Op { return []store.Op{del("a", store.MustNotExist)} },
			conflict: func(r revs) *store.ConflictError { return conflict("a", store.MustNotExist, r.A2) },
		},
		{
			name:    "delete must-not-exist on missing changes nothing",
			ops:     func(r revs) []store.Op { return []store.Op{del("m", store.MustNotExist)} },
			changes: false,
		},
		{
			name: "conflict in a later op writes nothing",
			ops: func(r revs) []store.Op {
				return []store.Op{put("x", store.Unconditional), del("a", store.Unconditional), put("m", r.A1)}
			},
			conflict: func(r revs) *store.ConflictError { return conflict("m", r.A1, 0) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			var r revs
			r.A1 = txn(t, s, store.Put("a", []byte("a1")))
			r.A2 = txn(t, s, store.Put("a", []byte("a2")))

			rev, err := s.Txn(t.Context(), tc.ops(r)...)
			if tc.conflict == nil {
				if err != nil {
					t.Fatalf("Txn: %v, want success", err)
				}
				want := r.A2
				if tc.changes {
					want++
				}
				if rev != want {
					t.Errorf("Txn revision = %d, want %d", rev, want)
				}
				return
			}

			want := tc.conflict(r)
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Txn error = %v, want one matching ErrConflict", err)
			}
			var ce *store.ConflictError
			if !errors.As(err, &ce) {
				t.Fatalf("Txn error %T %v is not a *store.ConflictError", err, err)
			}
			if *ce != *want {
				t.Errorf("conflict = %+v, want %+v", *ce, *want)
			}
			// Nothing was written.
			if got := revision(t, s); got != r.A2 {
				t.Errorf("revision after conflict = %d, want %d", got, r.A2)
			}
			kvs, _, err := s.List(t.Context(), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(kvs) != 1 || kvs[0].Key != "a" || string(kvs[0].Value) != "a2" || kvs[0].ModRevision != r.A2 {
				t.Errorf("store after conflict = %s, want only a=a2 at %d", fmtKVs(kvs), r.A2)
			}
		})
	}
}

func testNoOpTxn(t *testing.T, s store.Store) {
	ctx := t.Context()
	cur := txn(t, s, store.Put("k", []byte("v")))
	events, err := s.Watch(ctx, "", cur)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ops  []store.Op
	}{
		{"no ops", nil},
		{"delete missing", []store.Op{store.Delete("missing")}},
		{"delete two missing", []store.Op{store.Delete("m1"), store.Delete("m2")}},
	}
	for _, tc := range tests {
		rev, err := s.Txn(ctx, tc.ops...)
		if err != nil {
			t.Fatalf("%s: Txn: %v", tc.name, err)
		}
		if rev != cur {
			t.Errorf("%s: Txn revision = %d, want current %d", tc.name, rev, cur)
		}
		if got := revision(t, s); got != cur {
			t.Errorf("%s: Revision() = %d, want %d (not advanced)", tc.name, got, cur)
		}
	}
	// No-op transactions produce no events: the next one is the next write.
	next := txn(t, s, store.Put("sentinel", nil))
	if next != cur+1 {
		t.Errorf("next write revision = %d, want %d", next, cur+1)
	}
	if ev := recv(t, events); ev.Revision != next {
		t.Errorf("watcher got event at %d, want %d (no-op txns must not produce events)", ev.Revision, next)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	txn(t, s, store.Put("d/1", []byte("v")), store.Put("d/2", []byte("v")))
	rev := txn(t, s, store.Delete("d/1"))
	if _, err := s.Get(ctx, "d/1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get deleted key: error = %v, want ErrNotFound", err)
	}
	kvs, _, err := s.List(ctx, "d/")
	if err != nil {
		t.Fatal(err)
	}
	if got := kvKeys(kvs); !slices.Equal(got, []string{"d/2"}) {
		t.Errorf("List after delete = %q, want [d/2]", got)
	}
	// Deleting again is a no-op, not an error.
	again, err := s.Txn(ctx, store.Delete("d/1"))
	if err != nil || again != rev {
		t.Errorf("second delete = %d, %v; want %d, nil", again, err, rev)
	}
}

func testInvalidTxn(t *testing.T, s store.Store) {
	base := txn(t, s, store.Put("k", []byte("v")))
	tests := []struct {
		name string
		ops  []store.Op
	}{
		{"empty key", []store.Op{store.Put("ok", nil), store.Put("", []byte("v"))}},
		{"duplicate put", []store.Op{store.Put("d", []byte("1")), store.Put("d", []byte("2"))}},
		{"put and delete same key", []store.Op{store.Put("k", []byte("1")), store.Delete("k")}},
	}
	for _, tc := range tests {
		_, err := s.Txn(t.Context(), tc.ops...)
		if err == nil {
			t.Errorf("%s: Txn succeeded, want an error", tc.name)
		}
		if errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: error %v is a conflict; it is a malformed txn", tc.name, err)
		}
	}
	if got := revision(t, s); got != base {
		t.Errorf("revision after rejected txns = %d, want %d", got, base)
	}
	if kv := get(t, s, "k"); string(kv.Value) != "v" {
		t.Errorf("k = %q after rejected txns, want %q", kv.Value, "v")
	}
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Txn(ctx, store.Put("k", []byte("v"))); !errors.Is(err, context.Canceled) {
		t.Errorf("Txn with canceled ctx: error = %v, want context.Canceled", err)
	}
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Txn with canceled ctx wrote k (Get error = %v)", err)
	}
	if _, err := s.Watch(ctx, "", 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch with canceled ctx: error = %v, want context.Canceled", err)
	}
}

func testWatchReplay(t *testing.T, s store.Store) {
	base := revision(t, s)
	var want []store.Event
	for i := range 5 {
		k := fmt.Sprintf("w/%d", i)
		rev := txn(t, s, store.Put(k, []byte(k)))
		want = append(want, putEvent(rev, rev, k, k))
		txn(t, s, store.Put(fmt.Sprintf("other/%d", i), nil))
	}
	rev := txn(t, s, store.Delete("w/0"))
	want = append(want, store.Event{Revision: rev, Changes: []store.Change{deleteChange(rev, "w/0")}})

	tests := []struct {
		name  string
		after int64
		want  []store.Event
	}{
		{"from start", base, want},
		{"from middle", want[2].Revision, want[3:]},
		{"from just before an event", want[2].Revision - 1, want[2:]},
		{"from last", rev, nil},
	}
	// Open every watcher before the sentinel write that ends each replay.
	watchers := make([]<-chan store.Event, len(tests))
	for i, tc := range tests {
		var err error
		if watchers[i], err = s.Watch(t.Context(), "w/", tc.after); err != nil {
			t.Fatalf("Watch from %d: %v", tc.after, err)
		}
	}
	sentinel := txn(t, s, store.Put("w/sentinel", nil))
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range tc.want {
				checkEvent(t, recv(t, watchers[i]), w)
			}
			// Nothing else was replayed: the next event is the new write.
			checkEvent(t, recv(t, watchers[i]), putEvent(sentinel, sentinel, "w/sentinel", ""))
		})
	}
}

func testWatchLive(t *testing.T, s store.Store) {
	ctx := t.Context()
	cur := txn(t, s, store.Put("k", []byte("v0")))
	events, err := s.Watch(ctx, "", cur)
	if err != nil {
		t.Fatal(err)
	}
	r1 := txn(t, s, store.Put("k", []byte("v1")))
	checkEvent(t, recv(t, events), putEvent(r1, cur, "k", "v1"))
	r2 := txn(t, s, store.Delete("k"))
	checkEvent(t, recv(t, events), store.Event{Revision: r2, Changes: []store.Change{deleteChange(r2, "k")}})
	r3 := txn(t, s, store.Put("k", []byte("v3")))
	checkEvent(t, recv(t, events), putEvent(r3, r3, "k", "v3"))
}

func testWatchPrefix(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := revision(t, s)
	watch := func(prefix string) <-chan store.Event {
		ch, err := s.Watch(ctx, prefix, base)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	wa, wb, wall := watch("a/"), watch("b/"), watch("")
	r1 := txn(t, s, store.Put("a/1", []byte("1")))
	r2 := txn(t, s, store.Put("b/1", []byte("1")))
	r3 := txn(t, s, store.Put("a/2", []byte("2")), store.Put("b/2", []byte("2")))
	r4 := txn(t, s, store.Put("c/1", []byte("1")))
	r5 := txn(t, s, store.Put("a/end", nil), store.Put("b/end", nil))

	tests := []struct {
		name   string
		events <-chan store.Event
		want   []store.Event
	}{
		{"a/", wa, []store.Event{
			putEvent(r1, r1, "a/1", "1"),
			putEvent(r3, r3, "a/2", "2"),
			putEvent(r5, r5, "a/end", ""),
		}},
		{"b/", wb, []store.Event{
			putEvent(r2, r2, "b/1", "1"),
			putEvent(r3, r3, "b/2", "2"),
			putEvent(r5, r5, "b/end", ""),
		}},
		{"all", wall, []store.Event{
			putEvent(r1, r1, "a/1", "1"),
			putEvent(r2, r2, "b/1", "1"),
			{Revision: r3, Changes: []store.Change{putChange(r3, r3, "a/2", "2"), putChange(r3, r3, "b/2", "2")}},
			putEvent(r4, r4, "c/1", "1"),
			{Revision: r5, Changes: []store.Change{putChange(r5, r5, "a/end", ""), putChange(r5, r5, "b/end", "")}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range tc.want {
				checkEvent(t, recv(t, tc.events), w)
			}
		})
	}
}

func testWatchGrouping(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := txn(t, s, store.Put("x/3", []byte("old")))
	wx, err := s.Watch(ctx, "x/", base)
	if err != nil {
		t.Fatal(err)
	}
	wall, err := s.Watch(ctx, "", base)
	if err != nil {
		t.Fatal(err)
	}
	rev := txn(t, s,
		store.Put("y/1", []byte("y")),
		store.Put("x/1", []byte("1")),
		store.Delete("x/3"),
		store.Put("x/2", []byte("2")),
	)
	// One event per transaction, changes in op order.
	checkEvent(t, recv(t, wx), store.Event{Revision: rev, Changes: []store.Change{
		putChange(rev, rev, "x/1", "1"),
		deleteChange(rev, "x/3"),
		putChange(rev, rev, "x/2", "2"),
	}})
	checkEvent(t, recv(t, wall), store.Event{Revision: rev, Changes: []store.Change{
		putChange(rev, rev, "y/1", "y"),
		putChange(rev, rev, "x/1", "1"),
		deleteChange(rev, "x/3"),
		putChange(rev, rev, "x/2", "2"),
	}})
}

func testWatchCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	base := txn(t, s, store.Put("k", []byte("v")))
	events, err := s.Watch(ctx, "", base-1)
	if err != nil {
		t.Fatal(err)
	}
	checkEvent(t, recv(t, events), putEvent(base, base, "k", "v"))
	cancel()
	waitClosed(t, events)
	// Writes go on after the watcher has gone.
	if rev := txn(t, s, store.Put("k", []byte("v2"))); rev != base+1 {
		t.Errorf("write after cancel: revision %d, want %d", rev, base+1)
	}
}

// testConcurrentWriters checks that concurrent transactions get distinct,
// gap-free revisions and that two watchers, one started before the writes
// and one started in the middle (replay, then live), see every transaction
// exactly once, in order.
func testConcurrentWriters(t *testing.T, s store.Store) {
	const writers, perWriter, total = 8, 200, 8 * 200
	ctx := t.Context()
	base := revision(t, s)
	early, err := s.Watch(ctx, "c/", base)
	if err != nil {
		t.Fatal(err)
	}

	acks := make([][]int64, writers) // acks[w][i]: revision of writer w's i-th txn
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				key := fmt.Sprintf("c/%d/%d", w, i)
				rev, err := s.Txn(ctx, store.Put(key, []byte(key)))
				if err != nil {
					t.Errorf("writer %d: Txn %d: %v", w, i, err)
					return
				}
				acks[w] = append(acks[w], rev)
			}
		})
	}

	// Start the second watcher once some writes have landed.
	var late <-chan store.Event
	for deadline := time.Now().Add(timeout); late == nil; {
		if revision(t, s) >= base+total/3 {
			if late, err = s.Watch(ctx, "c/", base); err != nil {
				t.Fatal(err)
			}
		} else if time.Now().After(deadline) {
			t.Fatal("writers made no progress")
		} else {
			time.Sleep(time.Millisecond)
		}
	}

	// Drain both watchers while the writers run, so neither falls behind.
	seen := make([]map[int64]string, 2)
	var readers sync.WaitGroup
	for i, events := range []<-chan store.Event{early, late} {
		seen[i] = make(map[int64]string, total)
		readers.Go(func() {
			last := base
			for range total {
				ev, ok := recvOK(events)
				if !ok {
					t.Errorf("watcher %d: ended after revision %d, want %d events", i, last, total)
					return
				}
				if ev.Revision != last+1 {
					t.Errorf("watcher %d: event at %d after %d, want %d", i, ev.Revision, last, last+1)
				}
				last = ev.Revision
				if len(ev.Changes) != 1 {
					t.Errorf("watcher %d: event at %d has %d changes, want 1", i, ev.Revision, len(ev.Changes))
					continue
				}
				seen[i][ev.Revision] = ev.Changes[0].KV.Key
			}
		})
	}
	wg.Wait()
	readers.Wait()
	if t.Failed() {
		return
	}

	byRev := make(map[int64]string, total)
	for w, revs := range acks {
		for i, rev := range revs {
			if i > 0 && rev <= revs[i-1] {
				t.Errorf("writer %d: revision %d after %d, want strictly increasing", w, rev, revs[i-1])
			}
			key := fmt.Sprintf("c/%d/%d", w, i)
			if other, dup := byRev[rev]; dup {
				t.Errorf("revision %d acknowledged for both %s and %s", rev, other, key)
			}
			byRev[rev] = key
		}
	}
	for rev := base + 1; rev <= base+total; rev++ {
		if _, ok := byRev[rev]; !ok {
			t.Errorf("no writer acknowledged revision %d", rev)
		}
	}
	for i := range seen {
		for rev, key := range byRev {
			if seen[i][rev] != key {
				t.Errorf("watcher %d: revision %d changed %q, writer acknowledged %q", i, rev, seen[i][rev], key)
			}
		}
	}
	if got := revision(t, s); got != base+total {
		t.Errorf("final revision = %d, want %d", got, base+total)
	}
}

func testClosed(t *testing.T, s store.Store) {
	base := txn(t, s, store.Put("k", []byte("v")))
	events, err := s.Watch(t.Context(), "", base)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitClosed(t, events)

	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"List", func() error { _, _, err := s.List(ctx, ""); return err }},
		{"Txn", func() error { _, err := s.Txn(ctx, store.Put("k", nil)); return err }},
		{"Watch", func() error { _, err := s.Watch(ctx, "", 0); return err }},
		{"Revision", func() error { _, err := s.Revision(ctx); return err }},
	}
	for _, tc := range tests {
		if err := tc.call(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: error = %v, want ErrClosed", tc.name, err)
		}
	}
}

// Helpers.

func txn(t *testing.T, s store.Store, ops ...store.Op) int64 {
	t.Helper()
	rev, err := s.Txn(t.Context(), ops...)
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	return rev
}

func get(t *testing.T, s store.Store, key string) store.KeyValue {
	t.Helper()
	kv, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

// recv returns the next event, failing the test if the channel closes or
// nothing arrives in time.
func recv(t *testing.T, events <-chan store.Event) store.Event {
	t.Helper()
	return testsync.Receive(t, events, timeout, "watch event")
}

// recvOK is recv for goroutines other than the test's, which must not call
// t.Fatal: ok is false if the channel closed or timed out.
func recvOK(events <-chan store.Event) (store.Event, bool) {
	select {
	case ev, ok := <-events:
		return ev, ok
	case <-time.After(timeout):
		return store.Event{}, false
	}
}

// waitClosed drains events until the channel closes.
func waitClosed(t *testing.T, events <-chan store.Event) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed within", timeout)
		}
	}
}

func putChange(rev, create int64, key, value string) store.Change {
	return store.Change{Type: store.ChangePut, KV: store.KeyValue{
		Key: key, Value: []byte(value), CreateRevision: create, ModRevision: rev,
	}}
}

func deleteChange(rev int64, key string) store.Change {
	return store.Change{Type: store.ChangeDelete, KV: store.KeyValue{Key: key, ModRevision: rev}}
}

func putEvent(rev, create int64, key, value string) store.Event {
	return store.Event{Revision: rev, Changes: []store.Change{putChange(rev, create, key, value)}}
}

// checkEvent compares events. A delete's CreateRevision is not compared:
// the interface leaves it unspecified.
func checkEvent(t *testing.T, got, want store.Event) {
	t.Helper()
	ok := got.Revision == want.Revision && len(got.Changes) == len(want.Changes)
	for i := 0; ok && i < len(got.Changes); i++ {
		g, w := got.Changes[i], want.Changes[i]
		ok = g.Type == w.Type && g.KV.Key == w.KV.Key && g.KV.ModRevision == w.KV.ModRevision
		if g.Type == store.ChangeDelete {
			ok = ok && g.KV.Value == nil
		} else {
			ok = ok && bytes.Equal(g.KV.Value, w.KV.Value) && g.KV.CreateRevision == w.KV.CreateRevision
		}
	}
	if !ok {
		t.Errorf("event = %s, want %s", fmtEvent(got), fmtEvent(want))
	}
}

// equalKV compares key values, treating nil and empty values as equal.
func equalKV(a, b store.KeyValue) bool {
	return a.Key == b.Key && bytes.Equal(a.Value, b.Value) &&
		a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision
}

func kvKeys(kvs []store.KeyValue) []string {
	var keys []string
	for _, kv := range kvs {
		keys = append(keys, kv.Key)
	}
	return keys
}

func fmtKV(kv store.KeyValue) string {
	v := string(kv.Value)
	if len(v) > 32 {
		v = fmt.Sprintf("%s...(%d bytes)", v[:32], len(v))
	}
	return fmt.Sprintf("%s=%q@%d/%d", kv.Key, v, kv.CreateRevision, kv.ModRevision)
}

func fmtKVs(kvs []store.KeyValue) string {
	var parts []string
	for _, kv := range kvs {
		parts = append(parts, fmtKV(kv))
	}
	return fmt.Sprint(parts)
}

func fmtEvent(ev store.Event) string {
	var parts []string
	for _, c := range ev.Changes {
		parts = append(parts, c.Type.String()+" "+fmtKV(c.KV))
	}
	return fmt.Sprintf("{rev %d %v}", ev.Revision, parts)
}
