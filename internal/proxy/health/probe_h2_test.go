package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// h2Peer is a raw HTTP/2 target's side of one connection: its framer,
// after the client's preface and the target's SETTINGS.
type h2Peer struct {
	conn net.Conn
	fr   *http2.Framer
}

// newH2Target is a rawTarget speaking HTTP/2 (over TLS with h2 by ALPN
// when https is set), as badly as serve wants.
func newH2Target(t testing.TB, https bool, serve func(n int, p *h2Peer)) *rawTarget {
	t.Helper()
	var cfg *tls.Config
	if https {
		cfg = targetTLS(t, "h2")
	}
	return newRawTarget(t, func(n int, conn net.Conn, _ *bufio.Reader) {
		if cfg != nil {
			tc := tls.Server(conn, cfg)
			defer tc.Close()
			conn = tc
		}
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
			return
		}
		p := &h2Peer{conn: conn, fr: http2.NewFramer(conn, conn)}
		p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		if p.fr.WriteSettings() != nil {
			return
		}
		serve(n, p)
	})
}

// request reads frames, acknowledging SETTINGS, until a request's
// HEADERS, and returns its stream; 0 when the connection ends.
func (p *h2Peer) request() uint32 {
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return 0
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && p.fr.WriteSettingsAck() != nil {
				return 0
			}
		case *http2.MetaHeadersFrame:
			return f.StreamID
		}
	}
}

// respond answers stream id with status and the given header fields,
// ending the stream.
func (p *h2Peer) respond(id uint32, status string, fields ...hpack.HeaderField) error {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: status})
	for _, f := range fields {
		enc.WriteField(f)
	}
	return p.writeBlock(id, buf.Bytes(), true)
}

// writeBlock writes a header block as HEADERS and as many CONTINUATION
// frames as it needs.
func (p *h2Peer) writeBlock(id uint32, block []byte, end bool) error {
	const max = 16 << 10
	first := block[:min(len(block), max)]
	block = block[len(first):]
	if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		frag := block[:min(len(block), max)]
		block = block[len(frag):]
		if err := p.fr.WriteContinuation(id, len(block) == 0, frag); err != nil {
			return err
		}
	}
	return nil
}

// serveH2 answers every request with 200 until the client leaves.
func serveH2(_ int, p *h2Peer) {
	for id := p.request(); id != 0; id = p.request() {
		if p.respond(id, "200") != nil {
			return
		}
	}
}

// HTTP/2 checks, by prior knowledge and over TLS, run as streams of one
// kept connection, which closes on Close.
func TestH2KeptConnection(t *testing.T) {
	for _, https := range []bool{false, true} {
		var checks atomic.Int32
		rt := newH2Target(t, https, func(_ int, p *h2Peer) {
			for id := p.request(); id != 0; id = p.request() {
				checks.Add(1)
				if p.respond(id, "200") != nil {
					return
				}
			}
		})
		// A timeout of 200 ms: one missed under -race on a loaded machine
		// would cost the connection.
		c := New(Config{Cluster: cluster, Second: 40 * time.Millisecond})
		hc := fastCheck()
		hc.ProtocolVersion = model.HTTP2
		if https {
			hc.Protocol = model.ProtocolHTTPS
		}
		host, port, _ := net.SplitHostPort(rt.addr())
		p, _ := strconv.Atoi(port)
		c.Update([]model.TargetGroup{tg("g", hc, model.Target{Address: host, Port: int32(p), Cluster: cluster, State: model.TargetActive})})
		testsync.WaitFor(t, 10*time.Second, "five checks", func() bool { return checks.Load() >= 5 })
		waitStatus(t, c, "g", rt.addr(), Healthy)
		if n := rt.conns.Load(); n != 1 {
			t.Errorf("https %v: %d connections for 5 checks, want 1", https, n)
		}
		if c.KeptConns() != 1 {
			t.Errorf("https %v: %d connections kept, want 1", https, c.KeptConns())
		}
		c.Close()
		testsync.WaitFor(t, 5*time.Second, "the connection closed on Close", func() bool { return rt.open.Load() == 0 })
	}
}

// HTTP/2 targets that misbehave: each check ends within its timeout and
// drops the connection, except where noted; none holds the checker.
func TestMisbehavingH2Targets(t *testing.T) {
	const timeout = 300 * time.Millisecond
	before := runtime.NumGoroutine()
	tests := []struct {
		name  string
		serve func(n int, p *h2Peer)
		// pass is whether the check passes, kept whether the checker
		// keeps the connection afterwards.
		pass, kept bool
		is         func(error) bool
	}{
		{name: "well-behaved", serve: serveH2, pass: true, kept: true},
		{name: "unhealthy status", serve: func(_ int, p *h2Peer) {
			for id := p.request(); id != 0; id = p.request() {
				p.respond(id, "503")
			}
		}, kept: true, is: func(err error) bool { var se *statusError; return errors.As(err, &se) && se.code == 503 }},
		{name: "never answers", serve: func(_ int, p *h2Peer) {
			p.request()
			io.Copy(io.Discard, p.conn)
		}, is: func(err error) bool { return errors.Is(err, context.DeadlineExceeded) || isTimeout(err) }},
		{name: "half an answer: HEADERS without END_HEADERS", serve: func(_ int, p *h2Peer) {
			id := p.request()
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x88}[:0]})
			io.Copy(io.Discard, p.conn)
		}},
		{name: "resets the stream", serve: func(_ int, p *h2Peer) {
			p.fr.WriteRSTStream(p.request(), http2.ErrCodeInternal)
			io.Copy(io.Discard, p.conn)
		}},
		{name: "GOAWAY instead of an answer", serve: func(_ int, p *h2Peer) {
			p.request()
			p.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			io.Copy(io.Discard, p.conn)
		}},
		{name: "answers a stream never opened", serve: func(_ int, p *h2Peer) {
			p.respond(p.request()+2, "200")
			io.Copy(io.Discard, p.conn)
		}},
		{name: "huge header list", serve: func(_ int, p *h2Peer) {
			p.respond(p.request(), "200", hpack.HeaderField{Name: "x-filler", Value: strings.Repeat("a", 100<<10)})
			io.Copy(io.Discard, p.conn)
		}},
		{name: "endless CONTINUATION", serve: func(_ int, p *h2Peer) {
			id := p.request()
			p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x88}})
			frag := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 1000)
			for p.fr.WriteContinuation(id, false, frag) == nil {
			}
		}},
		{name: "flood of PING", serve: func(_ int, p *h2Peer) {
			p.request()
			for p.fr.WritePing(false, [8]byte{1}) == nil {
			}
		}, is: budgetOrTimeout},
		{name: "flood of SETTINGS", serve: func(_ int, p *h2Peer) {
			p.request()
			for p.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}) == nil {
			}
		}, is: budgetOrTimeout},
		{name: "body longer than the bound, never ended", serve: func(_ int, p *h2Peer) {
			id := p.request()
			var buf bytes.Buffer
			hpack.NewEncoder(&buf).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			p.writeBlock(id, buf.Bytes(), false)
			// The stream's whole window, then nothing: the check reads
			// maxCheckBody and resets the stream; the connection stays.
			chunk := make([]byte, 1<<10)
			for range 64 {
				p.fr.WriteData(id, false, chunk)
			}
			io.Copy(io.Discard, p.conn)
		}, pass: true, kept: true},
		{name: "garbage, not HTTP/2", serve: func(_ int, p *h2Peer) {
			io.WriteString(p.conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
			io.Copy(io.Discard, p.conn)
		}},
	}
	for _, tt := range tests {
		for _, https := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{true: ", h2"}[https], func(t *testing.T) {
				rt := newH2Target(t, https, tt.serve)
				c := New(Config{})
				defer c.Close()
				ch := checkOf(t, rt.addr(), https, true, timeout)
				misbehaving(t, c, ch, rt, timeout, tt.pass, tt.kept, tt.is)
			})
		}
	}
	testsync.WaitFor(t, 5*time.Second, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before })
}

// budgetOrTimeout is the end of a check that a flood of frames held: the
// connection's read budget spent, or (on a slow machine, before it is)
// the check's timeout.
func budgetOrTimeout(err error) bool {
	return errors.Is(err, errReadBudget) || errors.Is(err, context.DeadlineExceeded)
}

// A target that misbehaves between checks on a kept HTTP/2 connection
// (a GOAWAY, a close, a flood of frames) costs that connection, not the
// next check: it runs on a new one. A flood ends the connection once past
// h2IdleBudget, without waiting for the next check.
func TestH2BetweenChecks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(p *h2Peer)
	}{
		{"GOAWAY", func(p *h2Peer) { p.fr.WriteGoAway(1, http2.ErrCodeNo, nil); io.Copy(io.Discard, p.conn) }},
		{"close", func(p *h2Peer) {}},
		{"flood of PING", func(p *h2Peer) {
			for p.fr.WritePing(false, [8]byte{2}) == nil {
			}
		}},
		{"flood of SETTINGS", func(p *h2Peer) {
			for p.fr.WriteSettings() == nil {
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var first atomic.Bool
			rt := newH2Target(t, false, func(n int, p *h2Peer) {
				if n != 0 {
					serveH2(n, p)
					return
				}
				if p.respond(p.request(), "200") == nil {
					first.Store(true)
					tc.after(p)
				}
			})
			c, ch := checking(t, rt.addr(), false, true)
			if err := c.probe(ch); err != nil {
				t.Fatalf("first check: %v", err)
			}
			// The first connection ends on its own (the target's close,
			// or the flood past the budget), or is dropped by the next
			// check (GOAWAY).
			if tc.name != "GOAWAY" {
				testsync.WaitFor(t, 5*time.Second, "the first connection ended", func() bool { return rt.open.Load() == 0 })
			}
			if err := c.probe(ch); err != nil {
				t.Fatalf("second check: %v", err)
			}
			if n := rt.conns.Load(); n != 2 {
				t.Errorf("%d connections, want 2", n)
			}
		})
	}
}

// An HTTPS HTTP/2 check of a target that does not agree on h2 by ALPN
// fails, saying so.
func TestH2WithoutALPN(t *testing.T) {
	rt := newRawTarget(t, tlsIf(t, true, answer(ok200)))
	c, ch := checking(t, rt.addr(), true, true)
	if err := c.probe(ch); err == nil || !strings.Contains(err.Error(), "h2 by ALPN") {
		t.Errorf("check of a target without h2: %v, want the ALPN named", err)
	}
}

// Past the bound of kept HTTP/2 connections, an HTTP/2 check opens its
// own connection and closes it afterwards, while HTTP/1.1 checks still
// keep theirs within the shared bound.
func TestH2KeptBound(t *testing.T) {
	rt := newH2Target(t, false, serveH2)
	plain := newRawTarget(t, answer(ok200))
	c := New(Config{})
	defer c.Close()
	c.maxKeptH2 = 1
	a, b := checkOf(t, rt.addr(), false, true, 5*time.Second), checkOf(t, rt.addr(), false, true, 5*time.Second)
	p := plainCheck(t, plain.addr(), 5*time.Second)
	defer c.done(a)
	defer c.done(b)
	defer c.done(p)
	for i := range 3 {
		for _, ch := range []*check{a, b, p} {
			if err := c.probe(ch); err != nil {
				t.Fatalf("round %d: %v", i+1, err)
			}
		}
	}
	if n := rt.conns.Load(); n != 4 {
		t.Errorf("%d HTTP/2 connections for 6 checks, want 4 (1 kept, 3 of their own)", n)
	}
	if c.KeptConns() != 2 || c.keptH2.Load() != 1 {
		t.Errorf("%d connections kept, %d of them HTTP/2; want 2 and 1", c.KeptConns(), c.keptH2.Load())
	}
	testsync.WaitFor(t, 5*time.Second, "the unkept connections closed", func() bool { return rt.open.Load() == 1 })
}
