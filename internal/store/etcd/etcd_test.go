package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/internal/store/etcd"
	"trellis.dev/trellis/internal/store/storetest"
	"trellis.dev/trellis/test/kube"
	"trellis.dev/trellis/test/netns"
)

var quiet = slog.New(slog.DiscardHandler)

// open opens a store on e under prefix, closed when the test ends.
func open(t *testing.T, e *kube.Etcd, prefix string) *etcd.Store {
	t.Helper()
	s, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{e.Endpoint}, Prefix: prefix, Dialer: e.Dial, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs the store suite, each store on an etcd of its own:
// the suite counts revisions, and etcd's are per cluster.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, kube.StartEtcd(t), "/trellis/")
	})
}

// TestSharedPrefix is the high-availability case: two stores (two control
// planes) on one etcd and prefix are one store.
func TestSharedPrefix(t *testing.T) {
	e := kube.StartEtcd(t)
	a, b := open(t, e, "/trellis/"), open(t, e, "/trellis/")
	if a.ID() != b.ID() {
		t.Fatalf("two stores on one prefix: IDs %q and %q, want one", a.ID(), b.ID())
	}
	ctx := t.Context()
	base, err := a.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events, err := b.Watch(ctx, "/", base)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := a.Txn(ctx, store.Put("/x", []byte("1")))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Revision != rev || len(ev.Changes) != 1 || ev.Changes[0].KV.Key != "/x" {
			t.Errorf("b's watcher got %+v, want the put of /x at %d", ev, rev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b's watcher saw nothing of a's write")
	}
	// A precondition written against one is checked against the other.
	if _, err := b.Txn(ctx, store.Op{Type: store.OpPut, Key: "/x", Value: []byte("2"), IfRevision: store.MustNotExist}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("b creating /x that a wrote: error %v, want a conflict", err)
	}
	// Reopened, the prefix keeps its identity.
	if c := open(t, e, "/trellis/"); c.ID() != a.ID() {
		t.Errorf("reopened store has ID %q, want %q", c.ID(), a.ID())
	}
}

// TestPrefixesApart: stores under two prefixes of one etcd see nothing of
// each other, and etcd keys outside the prefix are not theirs.
func TestPrefixesApart(t *testing.T) {
	e := kube.StartEtcd(t)
	a, b := open(t, e, "/one/"), open(t, e, "/two/")
	if a.ID() == b.ID() {
		t.Fatalf("stores under two prefixes share the ID %q", a.ID())
	}
	ctx := t.Context()
	if _, err := a.Txn(ctx, store.Put("/k", []byte("a"))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "/k"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.Get of a's key: %v, want not found", err)
	}
	kvs, _, err := b.List(ctx, "")
	if err != nil || len(kvs) != 0 {
		t.Errorf("b.List = %v, %v; want nothing", kvs, err)
	}
	kvs, _, err = a.List(ctx, "")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "/k" || string(kvs[0].Value) != "a" {
		t.Errorf("a.List = %v, %v; want /k=a alone (not its identity key)", kvs, err)
	}
}

// TestListPages lists more keys than one etcd request returns, with writes
// landing between the pages: the result is one revision's.
func TestListPages(t *testing.T) {
	e := kube.StartEtcd(t)
	s := open(t, e, "/trellis/")
	ctx := t.Context()
	const n = 2500
	var rev int64
	for i := 0; i < n; i += 100 {
		ops := make([]store.Op, 100)
		for j := range ops {
			ops[j] = store.Put(fmt.Sprintf("/k/%05d", i+j), []byte(fmt.Sprint(i+j)))
		}
		var err error
		if rev, err = s.Txn(ctx, ops...); err != nil {
			t.Fatal(err)
		}
	}
	// Writers keep adding keys that sort between the existing ones while
	// the list runs; none of them may show.
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if _, err := s.Txn(ctx, store.Put(fmt.Sprintf("/k/%05d-late", i%n), nil)); err != nil && ctx.Err() == nil {
				t.Errorf("late write: %v", err)
				return
			}
		}
	}()
	kvs, listRev, err := s.List(ctx, "/k/")
	close(done)
	<-stopped
	if err != nil {
		t.Fatal(err)
	}
	// The pages must add up to what one read at the List's revision
	// holds: the first n keys and the late ones written before it.
	whole, err := adminClient(t, e).Get(ctx, "/trellis/k/k/", clientv3.WithPrefix(), clientv3.WithRev(listRev))
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != len(whole.Kvs) || len(kvs) < n {
		t.Fatalf("List returned %d keys; at its revision %d there were %d (want at least %d)", len(kvs), listRev, len(whole.Kvs), n)
	}
	for i, kv := range kvs {
		if w := whole.Kvs[i]; "/trellis/k"+kv.Key != string(w.Key) || kv.ModRevision != w.ModRevision {
			t.Fatalf("key %d = %s at %d; at the List's revision it is %s at %d", i, kv.Key, kv.ModRevision, w.Key, w.ModRevision)
		}
	}
	if listRev < rev {
		t.Errorf("List revision %d is before the write at %d", listRev, rev)
	}
}

// TestCompactedWatch: a watch from before etcd's compaction fails with
// ErrCompacted; one from the compaction on works.
func TestCompactedWatch(t *testing.T) {
	e := kube.StartEtcd(t)
	s := open(t, e, "/trellis/")
	ctx := t.Context()
	first, err := s.Txn(ctx, store.Put("/a", []byte("1")))
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 5 {
		if last, err = s.Txn(ctx, store.Put("/a", []byte(fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	admin := adminClient(t, e)
	if _, err := admin.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Watch(ctx, "/", first); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("Watch from %d after compacting to %d: error %v, want ErrCompacted", first, last, err)
	}
	events, err := s.Watch(ctx, "/", last)
	if err != nil {
		t.Fatalf("Watch from the compaction revision: %v", err)
	}
	next, err := s.Txn(ctx, store.Put("/b", nil))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Revision != next {
			t.Errorf("watch from %d: first event at %d, want %d", last, ev.Revision, next)
		}
	case <-time.After(10 * time.Second):
		t.Error("watch from the compaction revision saw no write")
	}
}

// TestTooManyOps: a transaction larger than etcd allows fails, names the
// etcd flag, and writes nothing.
func TestTooManyOps(t *testing.T) {
	e := kube.StartEtcd(t)
	s := open(t, e, "/trellis/")
	ctx := t.Context()
	before, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops := make([]store.Op, 200) // etcd's default limit is 128
	for i := range ops {
		ops[i] = store.Put(fmt.Sprintf("/k/%d", i), nil)
	}
	_, err = s.Txn(ctx, ops...)
	if err == nil || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Fatalf("Txn of %d ops: error %v, want one naming --max-txn-ops", len(ops), err)
	}
	if after, err := s.Revision(ctx); err != nil || after != before {
		t.Errorf("revision after the refused txn = %d, %v; want %d", after, err, before)
	}
}

// TestEtcdRestart: while etcd is down, calls fail within their context;
// a watch started before stays open and, once etcd is back, goes on from
// where it was, missing nothing.
func TestEtcdRestart(t *testing.T) {
	e := kube.StartEtcd(t)
	s := open(t, e, "/trellis/")
	ctx := t.Context()
	rev, err := s.Txn(ctx, store.Put("/before", nil))
	if err != nil {
		t.Fatal(err)
	}
	events, err := s.Watch(ctx, "/", rev)
	if err != nil {
		t.Fatal(err)
	}
	e.Kill(t)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Txn(short, store.Put("/x", nil)); err == nil {
		t.Error("Txn with etcd down succeeded")
	}
	e.Restart(t)
	next, err := s.Txn(ctx, store.Put("/after", nil))
	if err != nil {
		t.Fatalf("Txn once etcd is back: %v", err)
	}
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("watch ended across the restart")
		}
		if ev.Revision != next || ev.Changes[0].KV.Key != "/after" {
			t.Errorf("first event after the restart: %+v, want the put of /after at %d", ev, next)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch saw nothing of a write made after the restart")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := etcd.Open(t.Context(), etcd.Options{}); err == nil || !strings.Contains(err.Error(), "no endpoints") {
		t.Errorf("Open without endpoints: %v", err)
	}
	// Nothing listens on port 1 of a fresh namespace's loopback: Open
	// gives up after the dial timeout, naming the endpoint.
	ns := netns.New(t)
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return ns.DialContext(ctx, "tcp", addr) }
	start := time.Now()
	_, err := etcd.Open(t.Context(), etcd.Options{Endpoints: []string{"http://127.0.0.1:1"}, Dialer: dial, DialTimeout: time.Second, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Open of a dead endpoint: %v, want an error naming it", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Open of a dead endpoint took %v", d)
	}
}

// adminClient is a plain etcd client for what the store does not do
// (compaction).
func adminClient(t *testing.T, e *kube.Etcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(e.Dial)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
