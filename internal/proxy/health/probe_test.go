package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/test/testsync"
)

// rawTarget is a TCP listener on 127.0.0.1 whose n-th connection (from 0)
// serve handles, closing it when serve returns: a target that speaks
// HTTP/1.1 as a test wants it to, badly if need be.
type rawTarget struct {
	ln net.Listener
	// conns counts accepted connections, open those not closed yet.
	conns, open atomic.Int32
	mu          sync.Mutex
	live        map[net.Conn]bool
	wg          sync.WaitGroup
}

func newRawTarget(t testing.TB, serve func(n int, conn net.Conn, br *bufio.Reader)) *rawTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt := &rawTarget{ln: ln, live: map[net.Conn]bool{}}
	rt.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(rt.conns.Add(1)) - 1
			rt.open.Add(1)
			rt.mu.Lock()
			rt.live[conn] = true
			rt.mu.Unlock()
			rt.wg.Go(func() {
				defer func() {
					rt.mu.Lock()
					delete(rt.live, conn)
					rt.mu.Unlock()
					conn.Close()
					rt.open.Add(-1)
				}()
				serve(n, conn, bufio.NewReader(conn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		rt.mu.Lock()
		for conn := range rt.live {
			conn.Close()
		}
		rt.mu.Unlock()
		rt.wg.Wait()
	})
	return rt
}

func (rt *rawTarget) addr() string { return rt.ln.Addr().String() }

// readRequest reads one request head, reporting whether there was one.
func readRequest(br *bufio.Reader) bool {
	_, err := h1.ReadHead(br)
	return err == nil
}

// answer answers every request of conn with resp, until the client
// leaves.
func answer(resp string) func(int, net.Conn, *bufio.Reader) {
	b := []byte(resp)
	return func(_ int, conn net.Conn, br *bufio.Reader) {
		for readRequest(br) {
			if _, err := conn.Write(b); err != nil {
				return
			}
		}
	}
}

// plainCheck is a check of addr as a group's default check makes it, with
// the given timeout.
func plainCheck(t testing.TB, addr string, timeout time.Duration) *check {
	t.Helper()
	return checkOf(t, addr, false, false, timeout)
}

// checking is a Checker with one check of addr (checkOf, a 5-second
// timeout), the check and the Checker ended when the test ends.
func checking(t testing.TB, addr string, https, http2 bool) (*Checker, *check) {
	t.Helper()
	c := New(Config{})
	t.Cleanup(c.Close)
	ch := checkOf(t, addr, https, http2, 5*time.Second)
	t.Cleanup(func() { c.done(ch) })
	return c, ch
}

// checkOf is a check of addr over HTTPS or not, HTTP/2 or HTTP/1.1, with
// the given timeout.
func checkOf(t testing.TB, addr string, https, http2 bool, timeout time.Duration) *check {
	t.Helper()
	tg := &model.TargetGroup{Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}
	if https {
		tg.HealthCheck.Protocol = model.ProtocolHTTPS
	}
	if http2 {
		tg.HealthCheck.ProtocolVersion = model.HTTP2
	}
	sp, err := newSpec(tg, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sp.timeout = timeout
	return &check{key: sp.keyFor(&Target{addr: addr}), sp: sp}
}

// done drops ch's connection, as the checker does when the check goes.
func (c *Checker) done(ch *check) {
	if kc := ch.conn.Load(); kc != nil {
		c.drop(ch, kc)
	}
}

const ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// Targets that misbehave: each check ends within its timeout, as a failed
// check, except where the status arrived whole (the status alone decides
// a check; a body the check cannot finish only costs the connection). No
// connection or goroutine is left behind.
func TestMisbehavingTargets(t *testing.T) {
	// Long enough that a loaded machine answers the targets that do
	// answer within it (300 ms failed under four -race runs: a TLS
	// handshake, a 16 KiB head, took longer).
	const timeout = time.Second
	before := runtime.NumGoroutine()
	tests := misbehavingTargets(timeout)
	for _, tt := range tests {
		for _, https := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{true: ", https"}[https], func(t *testing.T) {
				rt := newRawTarget(t, tlsIf(t, https, tt.serve))
				c := New(Config{})
				defer c.Close()
				ch := checkOf(t, rt.addr(), https, false, timeout)
				misbehaving(t, c, ch, rt, timeout, tt.pass, tt.kept, tt.is)
			})
		}
	}
	testsync.WaitFor(t, 5*time.Second, "no goroutine left", func() bool { return runtime.NumGoroutine() <= before })
}

// misbehavingTarget is a target that answers a check as serve does, and
// what the check must make of it.
type misbehavingTarget struct {
	name  string
	serve func(n int, conn net.Conn, br *bufio.Reader)
	// pass is whether the check passes, kept whether the checker
	// keeps the connection afterwards.
	pass, kept bool
	// is, when set, is what the error must be.
	is func(error) bool
}

// misbehavingTargets are the ways of misbehaving a check must survive,
// with timeout its timeout.
func misbehavingTargets(timeout time.Duration) []misbehavingTarget {
	return []misbehavingTarget{
		{name: "well-behaved", serve: answer(ok200), pass: true, kept: true},
		{name: "chunked body", serve: answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"), pass: true, kept: true},
		{name: "no body (204)", serve: answer("HTTP/1.1 204 No Content\r\n\r\n"), kept: true,
			is: func(err error) bool { var se *statusError; return errors.As(err, &se) && se.code == 204 }},
		{name: "informational answers first", serve: answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok200), pass: true, kept: true},
		{name: "HTTP/1.0, closes", serve: answer("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), pass: true},
		{name: "Connection: close", serve: answer("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"), pass: true},
		{name: "accepts and never answers", serve: func(_ int, conn net.Conn, _ *bufio.Reader) { io.Copy(io.Discard, conn) }, is: isTimeout},
		{name: "one byte at a time", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			for _, b := range []byte(ok200) {
				if _, err := conn.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(timeout / 10)
			}
			io.Copy(io.Discard, conn)
		}, is: isTimeout},
		{name: "garbage", serve: answer("SSH-2.0-OpenSSH_9.6\r\n\r\n"), is: func(err error) bool { return errors.Is(err, h1.ErrMalformed) }},
		{name: "endless head", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(conn, "HTTP/1.1 200 OK\r\n")
			for {
				if _, err := io.WriteString(conn, "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"); err != nil {
					return
				}
			}
		}, is: func(err error) bool { return errors.Is(err, h1.ErrMalformed) }},
		{name: "closes after the status line", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(conn, "HTTP/1.1 200 OK\r\n")
		}, is: func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{name: "closes at once", serve: func(_ int, conn net.Conn, br *bufio.Reader) { readRequest(br) },
			is: func(err error) bool { return errors.Is(err, io.EOF) }},
		{name: "switches protocols", serve: answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"),
			is: func(err error) bool { var se *statusError; return errors.As(err, &se) && se.code == 101 }},
		{name: "endless informational answers", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			for {
				if _, err := io.WriteString(conn, "HTTP/1.1 102 Processing\r\n\r\n"); err != nil {
					return
				}
			}
		}, is: func(err error) bool { var se *statusError; return errors.As(err, &se) && se.code == 102 }},
		{name: "endless chunked body", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
			chunk := "400\r\n" + strings.Repeat("a", 0x400) + "\r\n"
			for {
				if _, err := io.WriteString(conn, chunk); err != nil {
					return
				}
			}
		}, pass: true},
		{name: "endless body to the close", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(conn, "HTTP/1.1 200 OK\r\n\r\n")
			for {
				if _, err := io.WriteString(conn, strings.Repeat("a", 1024)); err != nil {
					return
				}
			}
		}, pass: true},
		{name: "body longer than the bound", serve: answer("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("a", 1000000)), pass: true},
		{name: "body slower than the timeout", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			io.Copy(io.Discard, conn)
		}, pass: true},
		{name: "answers twice", serve: answer(ok200 + ok200), pass: true},
		{name: "ends mid-body (over TLS: close_notify)", serve: func(_ int, conn net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			conn.(interface{ CloseWrite() error }).CloseWrite()
			io.Copy(io.Discard, conn)
		}, pass: true},
	}
}

// misbehaving runs one check of ch against rt and says what went
// unexpected: how long it took, whether it passed, its error (when is is
// set), whether its connection is kept, and that the target's connections
// all close when the check goes.
func misbehaving(t *testing.T, c *Checker, ch *check, rt *rawTarget, timeout time.Duration, pass, kept bool, is func(error) bool) {
	t.Helper()
	misbehavingWith(t, c, ch, rt, timeout, pass, kept, is, func() error { return c.probe(ch) })
}

// misbehavingWith is misbehaving with the check run by run.
func misbehavingWith(t *testing.T, c *Checker, ch *check, rt *rawTarget, timeout time.Duration, pass, kept bool, is func(error) bool, run func() error) {
	t.Helper()
	start := time.Now()
	err := run()
	// A check held by its target would take as long as the target
	// liked; the slack is for a loaded machine under -race, where a
	// check bounded by its timeout has been seen to end 1.5 s late.
	if took := time.Since(start); took > timeout+3*time.Second {
		t.Errorf("the check took %v, its timeout is %v", took, timeout)
	}
	switch {
	case pass && err != nil:
		t.Errorf("check failed: %v, want passed", err)
	case !pass && err == nil:
		t.Error("check passed, want failed")
	case is != nil && !is(err):
		t.Errorf("check failed with %v (%T), not the expected error", err, err)
	}
	if got := ch.conn.Load() != nil; got != kept || c.KeptConns() != btoi(got) {
		t.Errorf("connection kept: %v (%d counted), want %v", got, c.KeptConns(), kept)
	}
	c.done(ch)
	if c.KeptConns() != 0 {
		t.Errorf("%d connections counted after the check's went", c.KeptConns())
	}
	testsync.WaitFor(t, 5*time.Second, "the target's connections closed", func() bool { return rt.open.Load() == 0 })
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A check does not use a kept connection that has something to read
// before its request: an answer nobody asked for would pass for its own
// (here a stale 200 while the target now answers 503). Over TLS, the
// stale answer written apart is a record of its own, which the TLS
// connection may already hold when the socket has nothing.
func TestStaleAnswerIsNotTaken(t *testing.T) {
	for _, tc := range []struct {
		name         string
		https, apart bool
	}{{"http", false, false}, {"http, written apart", false, true}, {"https", true, false}, {"https, written apart", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var code atomic.Value
			code.Store("200 OK")
			// answered counts the answers written whole, so that a check
			// starts after the last stale answer arrived: one arriving
			// after the request is beyond anyone's telling.
			var answered atomic.Int32
			rt := newRawTarget(t, tlsIf(t, tc.https, func(_ int, conn net.Conn, br *bufio.Reader) {
				for readRequest(br) {
					resp := "HTTP/1.1 " + code.Load().(string) + "\r\nContent-Length: 0\r\n\r\n"
					// Every answer twice: the second is stale.
					writes := []string{resp + resp}
					if tc.apart {
						writes = []string{resp, resp}
					}
					for _, w := range writes {
						if _, err := io.WriteString(conn, w); err != nil {
							return
						}
					}
					answered.Add(1)
				}
			}))
			c, ch := checking(t, rt.addr(), tc.https, false)
			if err := c.probeH1(ch); err != nil {
				t.Fatalf("first check: %v", err)
			}
			code.Store("503 Service Unavailable")
			for i := range 3 {
				testsync.WaitFor(t, 5*time.Second, "the last answer written", func() bool { return answered.Load() == int32(i+1) })
				var se *statusError
				if err := c.probeH1(ch); !errors.As(err, &se) || se.code != 503 {
					t.Fatalf("check %d: %v, want status 503 (the stale 200 taken?)", i+2, err)
				}
			}
			if n := rt.conns.Load(); n != 4 {
				t.Errorf("%d connections for 4 checks each answered twice, want 4 (none reused)", n)
			}
		})
	}
}

// A kept connection the target closed is replaced within the check, so
// that the check passes: whether the close arrived before the check (a
// target restarted, or closing idle connections) or as the request went
// out (the target closed it without answering), over TLS (close_notify)
// as well.
func TestKeptConnectionClosedByTarget(t *testing.T) {
	overHTTPAndHTTPS(t, keptConnectionClosedByTarget)
}

func keptConnectionClosedByTarget(t *testing.T, https bool) {
	t.Run("before the check", func(t *testing.T) {
		ct := newCheckTarget(t, https, false)
		c, ch := checking(t, ct.addr(), https, false)
		if err := c.probeH1(ch); err != nil {
			t.Fatal(err)
		}
		ct.srv.CloseClientConnections()
		testsync.WaitFor(t, 5*time.Second, "the target's close", func() bool { return ct.closed.Load() == 1 })
		if err := c.probeH1(ch); err != nil {
			t.Errorf("check after the target closed its connection: %v", err)
		}
		if n := ct.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("without answering", func(t *testing.T) {
		// The first connection answers one request and closes at the
		// second without a byte; later ones answer.
		rt := newRawTarget(t, tlsIf(t, https, func(n int, conn net.Conn, br *bufio.Reader) {
			for i := 0; readRequest(br); i++ {
				if n == 0 && i == 1 {
					return
				}
				if _, err := io.WriteString(conn, ok200); err != nil {
					return
				}
			}
		}))
		c, ch := checking(t, rt.addr(), https, false)
		for i := range 3 {
			if err := c.probeH1(ch); err != nil {
				t.Fatalf("check %d: %v", i+1, err)
			}
		}
		if n := rt.conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("a new connection is not retried", func(t *testing.T) {
		rt := newRawTarget(t, tlsIf(t, https, func(_ int, _ net.Conn, br *bufio.Reader) { readRequest(br) }))
		c, ch := checking(t, rt.addr(), https, false)
		if err := c.probeH1(ch); err == nil {
			t.Error("check passed on a connection closed without an answer")
		}
		if n := rt.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1: only a kept connection is replaced", n)
		}
	})
}

// The checker keeps one connection per checked address, closes it when
// its target leaves, keeps no more than MaxKeptConns (a check past the
// bound opens and closes its own), and closes them all on Close.
func TestKeptConnections(t *testing.T) {
	overHTTPAndHTTPS(t, keptConnections)
}

// overHTTPAndHTTPS runs test as two subtests, "http" and "https", its
// checks over TLS in the second.
func overHTTPAndHTTPS(t *testing.T, test func(t *testing.T, https bool)) {
	for _, https := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[https], func(t *testing.T) { test(t, https) })
	}
}

func keptConnections(t *testing.T, https bool) {
	a, b := newCheckTarget(t, https, false), newCheckTarget(t, https, false)
	// A check that times out closes its connection, which this test
	// counts: a timeout of 200 ms rather than the package's usual 50, so
	// that a loaded machine does not make one.
	c := New(Config{Cluster: cluster, Second: 4 * second, MaxKeptConns: 1})
	defer c.Close()
	hc := fastCheck()
	if https {
		hc.Protocol = model.ProtocolHTTPS
	}
	c.Update([]model.TargetGroup{tg("g", hc, a.model(t, model.TargetActive), b.model(t, model.TargetActive))})
	testsync.WaitFor(t, 10*time.Second, "five checks of each", func() bool { return a.checks.Load() >= 5 && b.checks.Load() >= 5 })
	waitStatus(t, c, "g", a.addr(), Healthy)
	waitStatus(t, c, "g", b.addr(), Healthy)
	if n := c.KeptConns(); n != 1 {
		t.Errorf("%d connections kept, want 1 (the bound)", n)
	}
	// Two targets' checks, ten or more, ran on the same few workers.
	if n := c.workers.Load(); n > 2 {
		t.Errorf("%d check workers for two targets, want at most 2", n)
	}
	kept, unkept := a, b
	if a.conns.Load() > b.conns.Load() {
		kept, unkept = b, a
	}
	// The kept one may have been replaced once: a check that times out
	// (a TLS handshake on a loaded machine) closes its connection.
	if k, u := kept.conns.Load(), unkept.conns.Load(); k > 2 || u < 4 || u < 2*k {
		t.Errorf("connections: %d and %d, want 1 kept (2 after a timeout) and one a check", k, u)
	}
	// The kept target leaves: its connection closes.
	c.Update([]model.TargetGroup{tg("g", hc, unkept.model(t, model.TargetActive))})
	testsync.WaitFor(t, 5*time.Second, "the leaving target's connection closed", func() bool { return kept.closed.Load() == kept.conns.Load() })
	// Below the bound again, the other target's checks keep theirs.
	testsync.WaitFor(t, 5*time.Second, "the other target's connection kept", func() bool { return c.KeptConns() == 1 })
	n, checks := unkept.conns.Load(), unkept.checks.Load()
	testsync.WaitFor(t, 5*time.Second, "three more checks", func() bool { return unkept.checks.Load() >= checks+3 })
	if got := unkept.conns.Load(); got > n+1 {
		t.Errorf("%d new connections for 3 checks, want at most 1 once below the bound", got-n)
	}
	c.Close()
	testsync.WaitFor(t, 5*time.Second, "every connection closed on Close", func() bool {
		return a.closed.Load() == a.conns.Load() && b.closed.Load() == b.conns.Load()
	})
}

// BenchmarkProbe is one check of a loopback target that answers 200 with
// a short body, for each protocol (http, https: HTTP/1.1 plain and over
// TLS; h2c, h2: HTTP/2 by prior knowledge and over TLS): on the kept
// connection (what the checker does), on a new connection per check
// (what it does past MaxKeptConns; TLS sessions resumed), and through
// an http.Transport client connection per check without session
// resumption (what it did before for HTTPS and HTTP/2 checks).
// cpu-µs/op is the process's CPU time per check, the target's share
// included.
func BenchmarkProbe(b *testing.B) {
	const body = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nok\n"
	cpu := func(b *testing.B, run func() error) {
		start := testsync.CPUTime()
		for b.Loop() {
			if err := run(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((testsync.CPUTime()-start).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	}
	for _, proto := range []struct {
		name         string
		https, http2 bool
	}{{"http", false, false}, {"https", true, false}, {"h2c", false, true}, {"h2", true, true}} {
		var addr string
		if proto.http2 {
			addr = newCheckTarget(b, proto.https, true).addr()
		} else {
			addr = newRawTarget(b, tlsIf(b, proto.https, answer(body))).addr()
		}
		for _, bc := range []struct {
			name string
			kept int
		}{{"kept", 0}, {"new-connection", -1}} {
			b.Run(proto.name+"/"+bc.name, func(b *testing.B) {
				c := New(Config{MaxKeptConns: bc.kept})
				defer c.Close()
				ch := checkOf(b, addr, proto.https, proto.http2, 5*time.Second)
				defer c.done(ch)
				cpu(b, func() error { return c.probe(ch) })
			})
		}
		b.Run(proto.name+"/transport", func(b *testing.B) {
			tr := oldTransport(proto.http2)
			cpu(b, func() error { return transportCheck(tr, addr, proto.https, proto.http2) })
		})
	}
}

// oldTransport is the transport whose client connections ran HTTPS and
// HTTP/2 checks, one per check, before they were kept.
func oldTransport(http2 bool) *http.Transport {
	var p http.Protocols
	if http2 {
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Protocols: &p, DisableCompression: true}
}

// transportCheck is a check on a new client connection of tr, closed
// afterwards.
func transportCheck(tr *http.Transport, addr string, https, http2 bool) error {
	scheme := "http"
	if https {
		scheme = "https"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, err := tr.NewClientConn(ctx, scheme, addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+"/", nil)
	req.Header.Set("User-Agent", userAgent)
	req.Close = !http2
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// answerSeeds are answers a target may give, for the fuzz tests.
var answerSeeds = []string{
	ok200,
	ok200 + ok200,
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\n" + ok200,
	"HTTP/1.1 101 Switching Protocols\r\n\r\n",
	"HTTP/1.0 503 Service Unavailable\r\n\r\ndown",
	"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
	"HTTP/1.1 200 OK\r\n",
	"garbage\r\n\r\n",
	"",
}

// FuzzAnswerLoopRead feeds the answer loop's parse whatever one read of an
// answer brought: it never panics, and either asks for more (the rest is
// read on by a worker's code) or decides at once, keeping the connection
// only after a final answer read whole with nothing after it.
func FuzzAnswerLoopRead(f *testing.F) {
	for _, seed := range answerSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, got []byte) {
		pb := probeBufs.Get().(*probeBuf)
		defer probeBufs.Put(pb)
		pb.src = countingReader{prefix: got}
		pb.br.Reset(&pb.src)
		code, keep, _, err := pb.readAnswer()
		short := pb.src.short
		pb.src = countingReader{}
		if keep && (short || err != nil || code < 200) {
			t.Errorf("connection kept after code %d, err %v, short %v", code, err, short)
		}
		if errors.Is(err, errIncomplete) && !short {
			t.Errorf("incomplete without asking for more: %v", err)
		}
		if !short && err == nil && code < 100 {
			t.Errorf("no error and code %d", code)
		}
	})
}

// FuzzCheckAnswer feeds a check whatever a target may answer: it never
// panics, ends when the answer does, and keeps the connection only after
// a final answer read whole with nothing after it.
func FuzzCheckAnswer(f *testing.F) {
	for _, seed := range answerSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		client, target := net.Pipe()
		defer client.Close()
		go func() {
			defer target.Close()
			if readRequest(bufio.NewReader(target)) {
				target.Write(answer)
			}
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		pb := probeBufs.Get().(*probeBuf)
		defer probeBufs.Put(pb)
		code, keep, answered, err := pb.exchange(&keptConn{Conn: client}, "/", "192.0.2.1:80")
		if isTimeout(err) {
			t.Fatalf("the check waited for more than the answer: %v", err)
		}
		if keep && (err != nil || code < 200 || !answered) {
			t.Errorf("connection kept after code %d, err %v, answered %v", code, err, answered)
		}
		if err == nil && code < 100 {
			t.Errorf("no error and code %d", code)
		}
	})
}

// Workers follow the rate of checks: a burst starts as many as it keeps in
// flight, and once checks come one at a time again, the last worker to
// finish takes the next, so the others leave after workerIdle. (Handed
// out in turn, every worker would get a check often enough to stay.)
func TestWorkersFollowTheRate(t *testing.T) {
	ct := newCheckTarget(t, false, false)
	ct.delay.Store(int64(200 * time.Millisecond))
	c := New(Config{})
	defer c.Close()
	for range 50 {
		c.dispatch(plainCheck(t, ct.addr(), 5*time.Second))
	}
	if n := c.workers.Load(); n != 50 {
		t.Fatalf("%d workers for 50 checks in flight, want 50", n)
	}
	ct.delay.Store(0)
	testsync.WaitFor(t, 5*time.Second, "the burst's workers idle", func() bool {
		c.idleMu.Lock()
		defer c.idleMu.Unlock()
		return len(c.idle) == 50
	})
	for end := time.Now().Add(2 * workerIdle); time.Now().Before(end); {
		c.dispatch(plainCheck(t, ct.addr(), 5*time.Second))
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.workers.Load(); n > 10 {
		t.Errorf("%d workers left for a check every 10 ms, want a few", n)
	}
}

// Close ends a check in flight at once, even one whose targets left while
// it was (here against a target that never answers, with a 12 s timeout).
func TestCloseEndsChecksInFlight(t *testing.T) {
	rt := newRawTarget(t, func(_ int, conn net.Conn, _ *bufio.Reader) { io.Copy(io.Discard, conn) })
	host, port, _ := net.SplitHostPort(rt.addr())
	p, _ := strconv.Atoi(port)
	mt := model.Target{Address: host, Port: int32(p), Cluster: cluster, State: model.TargetActive}
	for _, leave := range []bool{false, true} {
		c := New(Config{Cluster: cluster, Second: 100 * time.Millisecond})
		n := rt.conns.Load()
		c.Update([]model.TargetGroup{tg("g", model.HealthCheck{IntervalSeconds: 300, TimeoutSeconds: 120}, mt)})
		testsync.WaitFor(t, 5*time.Second, "the check under way", func() bool { return rt.conns.Load() > n })
		if leave {
			c.Update(nil)
		}
		start := time.Now()
		c.Close()
		if took := time.Since(start); took > 6*time.Second {
			t.Errorf("target left %v: Close took %v with a check in flight (its timeout: 12 s)", leave, took)
		}
	}
	testsync.WaitFor(t, 5*time.Second, "the target's connections closed", func() bool { return rt.open.Load() == 0 })
}

// The benchmarks' knob bounds kept connections: at -1 every check dials
// and closes its connection; a value that is not an integer is ignored.
func TestBenchMaxKeptEnv(t *testing.T) {
	rt := newRawTarget(t, answer(ok200))
	t.Setenv(BenchMaxKeptEnv, "-1")
	c := New(Config{})
	defer c.Close()
	ch := plainCheck(t, rt.addr(), 5*time.Second)
	for range 3 {
		if err := c.probe(ch); err != nil {
			t.Fatal(err)
		}
		if ch.conn.Load() != nil || c.KeptConns() != 0 {
			t.Fatalf("a connection kept with %s=-1", BenchMaxKeptEnv)
		}
	}
	if n := rt.conns.Load(); n != 3 {
		t.Errorf("%d connections for 3 checks, want 3", n)
	}
	t.Setenv(BenchMaxKeptEnv, "many")
	c2 := New(Config{})
	defer c2.Close()
	if c2.maxKept <= 0 {
		t.Errorf("a bound of %d kept connections from %s=many, want the default", c2.maxKept, BenchMaxKeptEnv)
	}
}
