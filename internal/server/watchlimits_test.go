package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/testsync"
)

// openWatch starts a watch stream with token and, when it is answered
// 200, reads its first message; it returns the status and, otherwise, the
// error's message. The stream stays open until close is called.
func openWatch(t *testing.T, ctx context.Context, url, token string) (status int, msg string, close func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/watch", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	close = func() { cancel(); resp.Body.Close() }
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		close()
		return resp.StatusCode, e.Message, close
	}
	var m api.WatchMessage
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m.Type != api.WatchSnapshot {
		close()
		t.Fatalf("first watch message: %q, %v", m.Type, err)
	}
	return resp.StatusCode, "", close
}

// A cluster opens at most MaxWatches watch streams at once: one more is
// 429 naming the bound, another cluster's are still served, and a closed
// stream makes room for a new one.
func TestWatchesPerClusterBounded(t *testing.T) {
	url := serve(t, server.Config{Tokens: map[string]string{tokenA: "east", tokenB: "west"}, Heartbeat: 50 * time.Millisecond, MaxWatches: 3})
	ctx := t.Context()
	var closes []func()
	for i := range 3 {
		if status, msg, close := openWatch(t, ctx, url, tokenA); status != http.StatusOK {
			t.Fatalf("east's watch %d: %d %s", i, status, msg)
		} else {
			closes = append(closes, close)
		}
	}
	defer func() {
		for _, c := range closes {
			c()
		}
	}()
	if status, msg, _ := openWatch(t, ctx, url, tokenA); status != http.StatusTooManyRequests || !strings.Contains(msg, "MaxWatches") {
		t.Errorf("east's fourth watch: %d %q, want 429 naming MaxWatches", status, msg)
	}
	status, msg, closeWest := openWatch(t, ctx, url, tokenB)
	if status != http.StatusOK {
		t.Errorf("west's watch beside east's three: %d %s", status, msg)
	}
	closeWest()
	closes[0]()
	closes = closes[1:]
	testsync.WaitFor(t, 20*time.Second, "a new watch of east's once one is closed", func() bool {
		status, _, close := openWatch(t, ctx, url, tokenA)
		if status == http.StatusOK {
			closes = append(closes, close)
		}
		return status == http.StatusOK
	})
}

// The worst watcher: a cluster opens streams and never reads them, over
// a store (6 MB) larger than the sockets can buffer (the kernel's most,
// tcp_wmem, is commonly 4 MiB). While they are open
// another cluster's stream gets its snapshot (a cluster holds at most a
// quarter of the snapshot budget), and the cluster's own streams are
// served again once SnapshotTimeout has cut the unread ones off (without
// it the first unread stream would hold the cluster's share for good).
func TestUnreadWatchesGiveTheirSnapshotBudgetBack(t *testing.T) {
	url := serve(t, server.Config{Tokens: map[string]string{tokenA: "east", tokenB: "west"}, Heartbeat: 50 * time.Millisecond,
		MaxSnapshotBytes: 4, SnapshotTimeout: 5 * time.Second})
	for i := range 6 {
		if status, msg := send(t, "PUT", fmt.Sprintf("%s/v1/servicenetworks/n%d", url, i), strings.NewReader(padded(1<<20))); status != http.StatusCreated {
			t.Fatalf("network %d: %d %s", i, status, msg)
		}
	}
	// The first stream reads the store's size: every later one reserves
	// a cluster's whole share (1 of 4 bytes).
	_, _, c := openWatch(t, t.Context(), url, tokenA)
	c()
	for range 4 {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(conn, "GET /v1/watch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tokenA)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	// Once an unread stream holds east's share, another waits and is
	// refused (503) after SnapshotTimeout.
	testsync.WaitFor(t, 60*time.Second, "east's unread streams to hold its share", func() bool {
		status, msg, close := openWatch(t, ctx, url, tokenA)
		close()
		if status == http.StatusServiceUnavailable && !strings.Contains(msg, "MaxSnapshotBytes") {
			t.Errorf("503 not naming MaxSnapshotBytes: %s", msg)
		}
		return status == http.StatusServiceUnavailable
	})
	if status, msg, close := openWatch(t, ctx, url, tokenB); status != http.StatusOK {
		t.Errorf("west's watch beside east's unread ones: %d %s", status, msg)
	} else {
		close()
	}
	testsync.WaitFor(t, 60*time.Second, "east's watch served after its unread ones", func() bool {
		status, msg, close := openWatch(t, ctx, url, tokenA)
		close()
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Fatalf("east's watch: %d %s", status, msg)
		}
		return status == http.StatusOK
	})
}
