package peer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
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
