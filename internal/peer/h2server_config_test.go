package peer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

type connKey struct{}

// What HTTPServerConfig sets reaches the connection: the context hook
// (with the connection ServeConn got), the advertised limits, and the
// stream timeout, which resets a stream that outlives it and fails its
// handler's body read and context.
func TestH2ServerConfig(t *testing.T) {
	type seen struct {
		conn    net.Conn
		readErr error
		cause   error
	}
	seenc := make(chan seen, 1)
	srv := NewHTTPServerConfig(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(net.Conn)
		_, err := io.ReadAll(r.Body)
		<-r.Context().Done()
		seenc <- seen{c, err, context.Cause(r.Context())}
	}), slog.New(slog.DiscardHandler), HTTPServerConfig{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		MaxConcurrentStreams: 7,
		MaxHeaderListSize:    5000,
		StreamTimeout:        200 * time.Millisecond,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- c
		srv.ServeConn(c)
	}()
	t.Cleanup(func() { ln.Close(); srv.Close() })

	rc, settings := dialRawSettings(t, ln.Addr().String())
	if v := settings[http2.SettingMaxConcurrentStreams]; v != 7 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 7", v)
	}
	if v := settings[http2.SettingMaxHeaderListSize]; v != 5000 {
		t.Errorf("SETTINGS_MAX_HEADER_LIST_SIZE %d, want 5000", v)
	}
	start := time.Now()
	rc.get(1, false) // a body that never comes
	if code := rc.reset(1); code != http2.ErrCodeInternal {
		t.Errorf("stream past its timeout reset with %v, want INTERNAL_ERROR", code)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("stream reset after %v, before its timeout", d)
	}
	s := <-seenc
	if s.conn != <-accepted {
		t.Errorf("ConnContext got %v, not the connection ServeConn got", s.conn)
	}
	if s.readErr == nil || s.cause == nil || errors.Is(s.cause, context.Canceled) {
		t.Errorf("handler past the stream timeout: body read %v, context cause %v", s.readErr, s.cause)
	}
	if n := srv.Conns(); n != 1 {
		t.Errorf("Conns() = %d with one connection open", n)
	}
}

// Responses that finish while another writer holds the connection's write
// lock leave in one write: each writer but the last in line leaves its
// flush to the next.
func TestH2ServerCoalescesFlushes(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan struct{}, 2)
	srv := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-gate
		io.WriteString(w, "ok")
	}), slog.New(slog.DiscardHandler))
	var writes atomic.Int32
	rc := serveCountingWrites(t, srv, &writes)
	rc.get(1, true)
	rc.get(3, true)
	<-started
	<-started
	srv.mu.Lock()
	var c *serverConn
	for sc := range srv.conns {
		c = sc
	}
	srv.mu.Unlock()

	// Hold the write lock while both handlers finish and queue for it.
	c.lockWrite()
	before := writes.Load()
	close(gate)
	for deadline := time.Now().Add(10 * time.Second); c.writeWaiters.Load() < 2; {
		if time.Now().After(deadline) {
			c.unlockWrite(false)
			t.Fatal("the handlers did not queue for the write lock")
		}
		time.Sleep(time.Millisecond)
	}
	c.unlockWrite(false)
	ended := map[uint32]bool{}
	for len(ended) < 2 {
		f := rc.next(func(f http2.Frame) bool { return f.Header().Flags.Has(http2.FlagDataEndStream) })
		ended[f.Header().StreamID] = true
	}
	if n := writes.Load() - before; n != 1 {
		t.Errorf("two responses that finished together took %d writes, want 1", n)
	}
}

// The stream timeout holds for each stream from its own HEADERS, with one
// timer for the connection: streams opened apart are reset apart, each
// past its own timeout, and a stream whose handler set its own write
// deadline (none) is not reset by it.
func TestH2ServerStreamTimeoutEachStream(t *testing.T) {
	const timeout = 300 * time.Millisecond
	release := make(chan struct{})
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unbounded" {
			http.NewResponseController(w).SetWriteDeadline(time.Time{})
			<-release
			io.WriteString(w, "ok")
			return
		}
		<-r.Context().Done()
	}), func(s *HTTPServer) { s.streamTimeout = timeout })
	start := time.Now()
	rc.get(1, true)
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, EndStream: true, EndHeaders: true,
		BlockFragment: rc.block(":method", "GET", ":scheme", "https", ":path", "/unbounded", ":authority", "x")})
	time.Sleep(timeout / 2)
	opened5 := time.Now()
	rc.get(5, true)
	for _, s := range []struct {
		id     uint32
		opened time.Time
	}{{1, start}, {5, opened5}} {
		f := rc.next(func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
		if f.StreamID != s.id || f.ErrCode != http2.ErrCodeInternal {
			t.Fatalf("RST_STREAM %d %v, want stream %d reset INTERNAL_ERROR", f.StreamID, f.ErrCode, s.id)
		}
		if d := time.Since(s.opened); d < timeout {
			t.Errorf("stream %d reset %v after its HEADERS, before its timeout %v", s.id, d, timeout)
		}
	}
	time.Sleep(timeout)
	close(release)
	if st := rc.status(3); st != "200" {
		t.Errorf("stream without a write deadline answered %s after the timeout, want 200", st)
	}
}

// closerFunc is an io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// wrapped is a handler's wrapper of the server's ResponseWriter.
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// CloseOnAbort closes what it was given when the peer resets the stream
// while the watch is on, through a wrapper of the ResponseWriter, and not
// once StopCloseOnAbort ended the watch; it refuses writers not the
// server's.
func TestH2ServerCloseOnAbort(t *testing.T) {
	type result struct {
		path    string
		closed  bool
		stopped bool
	}
	results := make(chan result, 2)
	watching := make(chan struct{}, 1)
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		closed := make(chan struct{})
		if !CloseOnAbort(wrapped{w}, closerFunc(func() error { close(closed); return nil })) {
			t.Error("CloseOnAbort refused the server's writer")
		}
		if r.URL.Path == "/reset" {
			watching <- struct{}{}
			<-r.Context().Done()
			<-closed
		}
		stopped := StopCloseOnAbort(w)
		select {
		case <-closed:
			results <- result{r.URL.Path, true, stopped}
		default:
			results <- result{r.URL.Path, false, stopped}
		}
	}), nil)
	if CloseOnAbort(httptest.NewRecorder(), closerFunc(func() error { return nil })) {
		t.Error("CloseOnAbort took a writer not the server's")
	}
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndHeaders: true,
		BlockFragment: rc.block(":method", "POST", ":scheme", "https", ":path", "/reset", ":authority", "x")})
	<-watching
	rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	if r := <-results; !r.closed || r.stopped {
		t.Errorf("stream reset while watched: closed %v, stop reported %v; want closed, false", r.closed, r.stopped)
	}
	rc.get(3, true)
	if st := rc.status(3); st != "200" {
		t.Errorf("watched stream that ended: status %s", st)
	}
	if r := <-results; r.closed || !r.stopped {
		t.Errorf("stream whose watch stopped: closed %v, stop reported %v; want not closed, true", r.closed, r.stopped)
	}
}

// A watch its handler left on ends with the handler: the stream reset
// after it (a response shorter than its declared length) closes nothing.
func TestH2ServerCloseOnAbortEndsWithHandler(t *testing.T) {
	var closed atomic.Bool
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		CloseOnAbort(w, closerFunc(func() error { closed.Store(true); return nil }))
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "ok")
	}), nil)
	rc.get(1, true)
	if code := rc.reset(1); code != http2.ErrCodeInternal {
		t.Fatalf("short response reset with %v, want INTERNAL_ERROR", code)
	}
	// The reset's abort runs right after its RST_STREAM is written.
	time.Sleep(100 * time.Millisecond)
	if closed.Load() {
		t.Error("a stream reset after its handler returned closed the handler's watched closer")
	}
}
