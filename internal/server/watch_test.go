package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store/bolt"
	"trellis.dev/trellis/test/testsync"
)

// firstMessage opens a raw watch from rev and returns its first non-heartbeat message.
func firstMessage(t *testing.T, url string, rev int64) api.WatchMessage {
	t.Helper()
	return firstMessageOf(t, url, rev, "")
}

// firstMessageOf is firstMessage resuming a watch of the store storeID.
func firstMessageOf(t *testing.T, url string, rev int64, storeID string) api.WatchMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/watch?revision=%d&store=%s", url, rev, storeID), nil)
	req.Header.Set("Authorization", "Bearer "+tokenA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m api.WatchMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m.Type != api.WatchHeartbeat {
			return m
		}
	}
	t.Fatalf("watch from %d ended without a message: %v", rev, sc.Err())
	return api.WatchMessage{}
}

// Resuming from a revision in history sends only what came after it; a
// revision of 0, or one the store never reached, gets a snapshot.
func TestWatchResumesFromRevision(t *testing.T) {
	url, east, _ := newServer(t)
	ctx := context.Background()
	a := targetGroup("a", 1)
	if err := east.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := targetGroup("b", 2)
	if err := east.Put(ctx, b); err != nil {
		t.Fatal(err)
	}

	m := firstMessage(t, url, a.Revision)
	if m.Type != api.WatchChanges || m.Revision != b.Revision || len(m.Changes) != 1 || m.Changes[0].Name != "b" {
		t.Errorf("resume from %d: %+v, want the change that created b", a.Revision, m)
	}
	id := m.Store
	if id == "" {
		t.Fatal("a watch message without the store's identity")
	}
	if m := firstMessageOf(t, url, a.Revision, id); m.Type != api.WatchChanges || m.Store != id {
		t.Errorf("resume from %d of store %s: %+v, want the change that created b", a.Revision, id, m)
	}
	// A revision of another store, even one this store has passed, gets a
	// snapshot.
	if m := firstMessageOf(t, url, a.Revision, "another-store"); m.Type != api.WatchSnapshot || m.Snapshot == nil || len(m.Snapshot.TargetGroups) != 2 {
		t.Errorf("resume from %d of another store: %+v, want a snapshot", a.Revision, m)
	}
	for _, rev := range []int64{0, b.Revision + 100} {
		m := firstMessage(t, url, rev)
		if m.Type != api.WatchSnapshot || m.Snapshot == nil || len(m.Snapshot.TargetGroups) != 2 || m.Revision != b.Revision {
			t.Errorf("watch from %d: %+v, want a snapshot of both groups at %d", rev, m, b.Revision)
		}
	}
}

// When the stream breaks, Follow reconnects, resumes and misses nothing:
// every change made while it was cut off arrives, in order.
func TestFollowResumesAfterBrokenStream(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(server.New(st, server.Config{Tokens: map[string]string{tokenA: "east"}, Heartbeat: 50 * time.Millisecond}))
	defer srv.Close()
	var logs testsync.Buffer
	cl, _ := client.New(srv.URL, tokenA, client.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	// Writes use connections of their own, so cutting connections cuts
	// only the watch.
	writer, _ := client.New(srv.URL, tokenA, client.Options{
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan *model.Snapshot, 1000)
	go cl.Follow(ctx, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond},
		func(s *model.Snapshot) { snaps <- s })

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
		st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, server.New(st, server.Config{Tokens: map[string]string{tokenA: "east"}, Heartbeat: 50 * time.Millisecond})
	}
	oldStore, oldServer := open()
	newStore, newServer := open()
	var current atomic.Pointer[http.Handler]
	current.Store(&oldServer)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*current.Load()).ServeHTTP(w, r) }))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer, _ := client.New(srv.URL, tokenA, client.Options{HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	for i := range 3 {
		if err := writer.Put(ctx, targetGroup(fmt.Sprintf("old-%d", i), int32(1000+i))); err != nil {
			t.Fatal(err)
		}
	}
	cl, _ := client.New(srv.URL, tokenA, client.Options{})
	snaps := make(chan *model.Snapshot, 100)
	go cl.Follow(ctx, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond},
		func(s *model.Snapshot) { snaps <- s })
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
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := server.Config{Tokens: map[string]string{tokenA: "east"}, Heartbeat: 50 * time.Millisecond}
	var watchesB atomic.Int32
	a := httptest.NewServer(server.New(st, cfg))
	defer a.Close()
	hb := server.New(st, cfg)
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
	snaps := make(chan *model.Snapshot, 100)
	go cl.Follow(ctx, client.FollowOptions{IdleTimeout: time.Second, MinBackoff: 10 * time.Millisecond},
		func(s *model.Snapshot) { snaps <- s })
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
