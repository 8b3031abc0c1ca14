package peer

import (
	"net/http"
	rtmetrics "runtime/metrics"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"trellis.dev/trellis/test/testsync"
)

// The goroutine that served a stream reads a connection again next time
// one is needed, instead of a new goroutine each stream; spares idle for
// spareIdle end, and so do all of them on Close.
func TestH2ServerReusesReaders(t *testing.T) {
	rc, srv := rawServer(t, http.HandlerFunc(ok200), func(s *HTTPServer) { s.spareIdle = 300 * time.Millisecond })
	spares := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.spares)
	}
	id := uint32(1)
	get := func() {
		t.Helper()
		rc.get(id, true)
		if got := rc.status(id); got != "200" {
			t.Fatalf("stream %d: status %s", id, got)
		}
		rc.next(func(f http2.Frame) bool {
			return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
		})
		id += 2
	}
	get()
	const requests = 200
	created := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	rtmetrics.Read(created)
	before := created[0].Value.Uint64()
	for range requests {
		get()
	}
	rtmetrics.Read(created)
	// One per stream before; now the first stream's, and any the test's
	// own timers start.
	if n := created[0].Value.Uint64() - before; n > requests/10 {
		t.Errorf("%d goroutines started for %d sequential streams, want few", n, requests)
	}
	if n := spares(); n < 1 || n > maxSpares {
		t.Errorf("%d spares after sequential streams, want 1 or more", n)
	}
	testsync.WaitFor(t, 5*time.Second, "idle spares end", func() bool { return spares() == 0 })
	// Still served after the spares ended: a new goroutine reads.
	get()
	testsync.WaitFor(t, 5*time.Second, "a spare again", func() bool { return spares() == 1 })
	srv.Close()
	if n := spares(); n != 0 {
		t.Errorf("%d spares after Close, want 0", n)
	}
	// A goroutine that served a stream after Close is not kept.
	if srv.park(&spare{next: make(chan *serverConn, 1)}) {
		t.Error("a spare was kept after Close")
	}
}
