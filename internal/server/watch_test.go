package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
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
