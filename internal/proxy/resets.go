package proxy

import (
	"log/slog"
	"net"
	"sync/atomic"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and resets
// them at once, so that each costs the proxy a request, and perhaps a
// target its share, while the client's concurrency limit never binds. The
// HTTP/2 servers bound the handlers running per connection
// (maxConcurrentStreams); net/http's keeps the connection, the proxy's own
// (peer.HTTPServer) ends it only past 1000 resets in 10 s. streamStats cuts
// it sooner, on either.

// streamStats counts the streams of one HTTP/2 connection, completed and
// reset by the client, and closes the connection when the resets say it
// is abusive. The listener's ConnContext makes one per connection.
type streamStats struct {
	conn              net.Conn
	completed, resets atomic.Int64
	cut               atomic.Bool
	// lines are the forwarding header lines of the connection's requests
	// sent directly (connFields).
	lines atomic.Pointer[connLines]
}

// done records a stream that ended, reset by the client or not. It reports
// whether the connection was cut.
func (s *streamStats) done(reset bool, log *slog.Logger) bool {
	if !reset {
		s.completed.Add(1)
		return false
	}
	n := s.resets.Add(1)
	if n <= rapidResets || n <= s.completed.Load() || !s.cut.CompareAndSwap(false, true) {
		return false
	}
	log.Warn("HTTP/2 connection closed: its client resets most of its streams (rapid reset)",
		"remote", s.conn.RemoteAddr().String(), "reset", n, "completed", s.completed.Load())
	s.conn.Close()
	return true
}

// streamStatsKey is the context key of a connection's *streamStats.
type streamStatsKey struct{}
