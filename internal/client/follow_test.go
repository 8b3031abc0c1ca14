package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store/bolt"
	"trellis.dev/trellis/test/teststore"
	"trellis.dev/trellis/test/testsync"
)

// The client's tests run it against a real server over a real bolt store
// on loopback.

const tokenA = "token-a"

// serve runs a server over st for one cluster, "east", with token tokenA.
func serve(st *bolt.Store) http.Handler {
	return server.New(st, server.Config{Tokens: map[string]string{tokenA: "east"}, Heartbeat: 50 * time.Millisecond})
}

func targetGroup(name string, port int32) *model.TargetGroup {
	return &model.TargetGroup{
		Meta: model.Meta{Name: name}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
		Targets: []model.Target{{Address: "127.0.0.1", Port: port, Cluster: "east", State: model.TargetActive}},
	}
}

// newServer serves a control plane on an empty store until the test ends
// (after t.Context has ended: Close waits for open watches).
func newServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(serve(teststore.Bolt(t)))
	t.Cleanup(srv.Close)
	return srv
}

// eastOfNewServer serves a control plane on an empty store for the test,
// and returns cluster east's client of it and a context ended with the
// test.
func eastOfNewServer(t *testing.T) (*client.Client, context.Context) {
	t.Helper()
	srv := newServer(t)
	east, err := client.New(srv.URL, tokenA, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return east, t.Context()
}

// Follow delivers a snapshot, then every change, and after the stream breaks
// it resumes from its revision without losing one.
func TestFollowDeliversSnapshotThenChanges(t *testing.T) {
	east, ctx := eastOfNewServer(t)
	if err := east.Put(ctx, &model.ServiceNetwork{Meta: model.Meta{Name: "hotel"}, Mode: model.ModeServiceNetwork, Domain: "hotel.trellis.internal"}); err != nil {
		t.Fatal(err)
	}
	snaps := follow(ctx, east, client.FollowOptions{IdleTimeout: time.Second})

	next := func() *model.Snapshot {
		t.Helper()
		return testsync.Receive(t, snaps, 5*time.Second, "snapshot")
	}
	first := next()
	if len(first.Networks) != 1 || first.Networks[0].Name != "hotel" || first.Networks[0].Revision == 0 {
		t.Fatalf("first snapshot: %+v", first)
	}
	res, err := east.Apply(ctx, &model.Objects{TargetGroups: []model.TargetGroup{*targetGroup("a", 1), *targetGroup("b", 2)}})
	if err != nil {
		t.Fatal(err)
	}
	// One transaction is one snapshot holding both target groups (and the
	// network is gone: apply replaced everything east owns).
	s := next()
	if s.Revision != res.Revision || len(s.TargetGroups) != 2 || len(s.Networks) != 0 {
		t.Fatalf("after apply: revision %d (want %d), %d target groups, %d networks", s.Revision, res.Revision, len(s.TargetGroups), len(s.Networks))
	}
}

// When the stream breaks, Follow reconnects, resumes and misses nothing:
// every change made while it was cut off arrives, in order.
func TestFollowResumesAfterBrokenStream(t *testing.T) {
	srv := newServer(t)
	cl, writer, logs := followerAndWriter(t, srv.URL)
	ctx := t.Context()
	snaps := follow(ctx, cl, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond})

	const writes = 30
	for i := range writes {
		if err := writer.Put(ctx, targetGroup(fmt.Sprintf("tg-%02d", i), int32(1000+i))); err != nil {
			t.Fatal(err)
		}
		if i%5 == 2 {
			srv.CloseClientConnections() // cut the watch mid-stream
		}
	}
	var last *model.Snapshot
	deadline := time.After(10 * time.Second)
	for last == nil || len(last.TargetGroups) < writes {
		select {
		case s := <-snaps:
			if last != nil && s.Revision < last.Revision {
				t.Fatalf("revision went back from %d to %d", last.Revision, s.Revision)
			}
			last = s
		case <-deadline:
			t.Fatalf("after 10 s the follower has %d of %d target groups", len(last.TargetGroups), writes)
		}
	}
	if n := strings.Count(logs.String(), "configuration stream broke"); n == 0 {
		t.Error("the stream was never cut: the test proves nothing about resuming")
	}
	for i, tg := range last.TargetGroups {
		if want := fmt.Sprintf("tg-%02d", i); tg.Name != want || tg.Targets[0].Port != int32(1000+i) {
			t.Errorf("target group %d = %s port %d", i, tg.Name, tg.Targets[0].Port)
		}
	}
}

// A proxy that resumes against a control plane whose store was replaced
// (its data lost and rebuilt, its revisions already past the proxy's) gets
// the new store's snapshot, not the new history's changes after a revision
// of the old one: nothing of the old store survives in what it serves.
func TestFollowSeesAReplacedStore(t *testing.T) {
	open := func() (*bolt.Store, http.Handler) {
		st := teststore.Bolt(t)
		return st, serve(st)
	}
	oldStore, oldServer := open()
	newStore, newServer := open()
	var current atomic.Pointer[http.Handler]
	current.Store(&oldServer)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*current.Load()).ServeHTTP(w, r) }))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, writer, _ := followerAndWriter(t, srv.URL)
	for i := range 3 {
		if err := writer.Put(ctx, targetGroup(fmt.Sprintf("old-%d", i), int32(1000+i))); err != nil {
			t.Fatal(err)
		}
	}
	cl, _ := client.New(srv.URL, tokenA, client.Options{})
	snaps := follow(ctx, cl, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond})
	if s := <-snaps; len(s.TargetGroups) != 3 || s.Store != oldStore.ID() {
		t.Fatalf("first snapshot: %d target groups of store %q, want 3 of %q", len(s.TargetGroups), s.Store, oldStore.ID())
	}

	// The new store gets further than the old one before the switch.
	current.Store(&newServer)
	for i := range 6 {
		if err := writer.Put(ctx, targetGroup(fmt.Sprintf("new-%d", i), int32(2000+i))); err != nil {
			t.Fatal(err)
		}
	}
	srv.CloseClientConnections()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-snaps:
			if s.Store != newStore.ID() {
				continue
			}
			var names []string
			for _, tg := range s.TargetGroups {
				names = append(names, tg.Name)
			}
			if want := "new-0 new-1 new-2 new-3 new-4 new-5"; strings.Join(names, " ") != want {
				t.Errorf("after the switch the follower has %v, want exactly %s", names, want)
			}
			return
		case <-deadline:
			t.Fatal("the follower never took the new store's snapshot")
		}
	}
}

// A client given two servers of one store moves to the second when the
// first goes away: its calls go through, and its watch resumes there
// without a snapshot, missing nothing.
func TestClientFailsOverBetweenServers(t *testing.T) {
	st := teststore.Bolt(t)
	var watchesB atomic.Int32
	a := httptest.NewServer(serve(st))
	defer a.Close()
	hb := serve(st)
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/watch" {
			watchesB.Add(1)
			if r.URL.Query().Get("revision") == "" {
				t.Errorf("the watch on B did not resume: %s", r.URL)
			}
		}
		hb.ServeHTTP(w, r)
	}))
	defer b.Close()
	var logs testsync.Buffer
	cl, err := client.New(a.URL+","+b.URL, tokenA, client.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := follow(ctx, cl, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond})
	if err := cl.Put(ctx, targetGroup("first", 1001)); err != nil {
		t.Fatal(err)
	}
	waitTargetGroups := func(n int) *model.Snapshot {
		t.Helper()
		for deadline := time.After(10 * time.Second); ; {
			select {
			case s := <-snaps:
				if len(s.TargetGroups) == n {
					return s
				}
			case <-deadline:
				t.Fatalf("the follower never had %d target groups", n)
			}
		}
	}
	waitTargetGroups(1)
	if watchesB.Load() != 0 {
		t.Fatal("the client watched B while A was up")
	}

	a.CloseClientConnections()
	a.Close()
	// The put cannot reach A; it goes to B.
	if err := cl.Put(ctx, targetGroup("second", 1002)); err != nil {
		t.Fatalf("Put with A gone: %v", err)
	}
	s := waitTargetGroups(2)
	if s.TargetGroups[1].Name != "second" {
		t.Errorf("target groups %v", s.TargetGroups)
	}
	if watchesB.Load() == 0 {
		t.Error("the follower has the second write, but never watched B")
	}
	if !strings.Contains(logs.String(), "trying the next") {
		t.Errorf("no failover in the client's log:\n%s", logs.String())
	}
}

// A revision of many changes (a configuration's first apply) is encoded by
// the server's watch and decoded by Follow side by side: the snapshot it
// makes must be the one a new follower gets whole, in a snapshot message
// (decoded one object after another), after puts and after deletions.
func TestFollowLargeRevisionsMatchSnapshots(t *testing.T) {
	east, ctx := eastOfNewServer(t)
	snaps := follow(ctx, east, client.FollowOptions{IdleTimeout: time.Second})
	testsync.Receive(t, snaps, 5*time.Second, "first snapshot")
	groups := func(n, port int) *model.Objects {
		objs := &model.Objects{}
		for i := range n {
			tg := targetGroup(fmt.Sprintf("tg-%04d", i), int32(port+i))
			tg.Targets = append(tg.Targets, model.Target{Address: "127.0.0.2", Port: int32(port + i), Cluster: "east", State: model.TargetDraining})
			objs.Add(tg)
		}
		return objs
	}
	// 700 target groups put; then 300 of them deleted and 400 changed.
	for _, objs := range []*model.Objects{groups(700, 1000), groups(400, 3000)} {
		res, err := east.Apply(ctx, objs)
		if err != nil {
			t.Fatal(err)
		}
		var got *model.Snapshot
		for got == nil || got.Revision < res.Revision {
			got = testsync.Receive(t, snaps, 10*time.Second, "snapshot of the apply")
		}
		fresh := make(chan *model.Snapshot, 1)
		freshCtx, freshCancel := context.WithCancel(ctx)
		go east.Follow(freshCtx, client.FollowOptions{IdleTimeout: time.Second}, func(s *model.Snapshot) {
			select {
			case fresh <- s:
			default:
			}
		})
		want := testsync.Receive(t, fresh, 10*time.Second, "a new follower's snapshot")
		freshCancel()
		if got.Revision != want.Revision || len(got.TargetGroups) != len(objs.TargetGroups) {
			t.Fatalf("followed revision %d with %d target groups; a new follower got revision %d, the apply had %d", got.Revision, len(got.TargetGroups), want.Revision, len(objs.TargetGroups))
		}
		if !reflect.DeepEqual(got.Objects, want.Objects) {
			t.Fatalf("revision %d: the followed objects differ from a new follower's", got.Revision)
		}
	}
}

// With Kinds, every snapshot holds those kinds alone, across reconnects
// that resume with the filter: the changes of other kinds never arrive,
// and none of the filtered kinds' is missed.
func TestFollowKindsResumes(t *testing.T) {
	srv := newServer(t)
	cl, writer, logs := followerAndWriter(t, srv.URL)
	ctx := t.Context()
	if err := writer.Put(ctx, targetGroup("before", 999)); err != nil {
		t.Fatal(err)
	}
	snaps := follow(ctx, cl, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond, Kinds: []model.Kind{model.KindServiceNetwork}})

	const writes = 20
	for i := range writes {
		name := fmt.Sprintf("n-%02d", i)
		if err := writer.Put(ctx, &model.ServiceNetwork{Meta: model.Meta{Name: name}, Mode: model.ModeServiceNetwork, Domain: name + ".trellis.internal"}); err != nil {
			t.Fatal(err)
		}
		if err := writer.Put(ctx, targetGroup(fmt.Sprintf("tg-%02d", i), int32(1000+i))); err != nil {
			t.Fatal(err)
		}
		if i%5 == 2 {
			srv.CloseClientConnections()
		}
	}
	var last *model.Snapshot
	deadline := time.After(10 * time.Second)
	for last == nil || len(last.Networks) < writes {
		select {
		case s := <-snaps:
			if len(s.TargetGroups) != 0 {
				t.Fatalf("a snapshot at revision %d holds %d target groups, want none", s.Revision, len(s.TargetGroups))
			}
			if last != nil && s.Revision <= last.Revision {
				t.Fatalf("revision went from %d to %d", last.Revision, s.Revision)
			}
			last = s
		case <-deadline:
			t.Fatalf("after 10 s the follower has %d of %d networks", len(last.Networks), writes)
		}
	}
	if !strings.Contains(logs.String(), "configuration stream broke") {
		t.Error("the stream was never cut: the test proves nothing about resuming")
	}
	for i, n := range last.Networks {
		if want := fmt.Sprintf("n-%02d", i); n.Name != want {
			t.Errorf("network %d = %s, want %s", i, n.Name, want)
		}
	}
}

// follow runs c.Follow with opts until ctx ends and returns the snapshots
// it delivers, in order.
func follow(ctx context.Context, c *client.Client, opts client.FollowOptions) <-chan *model.Snapshot {
	snaps := make(chan *model.Snapshot, 1000)
	go c.Follow(ctx, opts, func(s *model.Snapshot) { snaps <- s })
	return snaps
}

// followerAndWriter returns a client for Follow, logging to the returned
// buffer, and a client for writes. Writes use connections of their own, so
// cutting connections cuts only the watch.
func followerAndWriter(t *testing.T, url string) (follower, writer *client.Client, logs *testsync.Buffer) {
	t.Helper()
	logs = new(testsync.Buffer)
	follower, err := client.New(url, tokenA, client.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	writer, err = client.New(url, tokenA, client.Options{
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return follower, writer, logs
}
