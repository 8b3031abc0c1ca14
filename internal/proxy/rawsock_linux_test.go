package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/testsync"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// serveLoopback serves connections on a loopback listener with serve until
// the test ends (testsync.ServeConns); it returns the address.
func serveLoopback(tb testing.TB, serve func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return testsync.ServeConns(tb, ln, serve)
}

// A raw socket reads and writes what net.Conn would: all of a write larger
// than the socket buffers (waiting for room through the poller), reads up
// to the peer's close (io.EOF), and deadlines and Close as net.Conn's.
func TestRawSocketAsNetConn(t *testing.T) {
	client, server := tcpPair(t)
	c := newIdleConn(server)
	if c.raw == nil {
		t.Fatal("no raw socket for a TCP connection")
	}

	// Many megabytes one way while the peer reads slowly at first.
	want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the peer read other bytes than were written")
	}

	// The other way, then the peer's close.
	if _, err := client.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "request" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	// A read deadline ends a wait with a timeout.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	_ = c.SetReadDeadline(time.Time{})

	// The body idle timeout of a handed-off connection still applies.
	c.idle.Store(int64(20 * time.Millisecond))
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read with the idle timeout: %v, want a timeout", err)
	}
	c.idle.Store(0)
	_ = c.SetReadDeadline(time.Time{})

	client.Close()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v, want io.EOF", n, err)
	}
	// Writing to a closed peer fails as a stale pooled connection does.
	var werr error
	for range 10 {
		if _, werr = c.Write([]byte("x")); werr != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !stale(werr) {
		t.Fatalf("write to a closed peer: %v, want EPIPE or ECONNRESET", werr)
	}
}

// Closing the connection ends a read waiting in the poller.
func TestRawSocketCloseEndsRead(t *testing.T) {
	_, server := tcpPair(t)
	c := newIdleConn(server)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still waiting after Close")
	}
}

// Target connections of the pool read and write raw too.
func TestPoolDialsRaw(t *testing.T) {
	addr := serveLoopback(t, func(c net.Conn) {
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err == nil {
			_, _ = c.Write(append(b, '!'))
		}
	})
	tc, err := newConnPool().dial(addr, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.conn.Close()
	if tc.raw == nil {
		t.Fatal("no raw socket for a target connection")
	}
	if _, err := tc.bw.WriteString("ping"); err != nil {
		t.Fatal(err)
	}
	if err := tc.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := tc.br.ReadString('!')
	if err != nil || got != "ping!" {
		t.Fatalf("target answered %q, %v", got, err)
	}
}

// Writes from several goroutines at once each arrive whole, as with
// net.Conn (the HTTP/2 server writes frames from its handlers).
func TestRawSocketConcurrentWrites(t *testing.T) {
	client, server := tcpPair(t)
	c := newIdleConn(server)
	const writers, each = 8, 200
	go func() {
		for w := range writers {
			go func() {
				msg := bytes.Repeat([]byte{'a' + byte(w)}, 1000)
				for range each {
					if _, err := c.Write(msg); err != nil {
						return
					}
				}
			}()
		}
	}()
	buf := make([]byte, 1000)
	for range writers * each {
		if _, err := io.ReadFull(client, buf); err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(buf, buf[:1]); n != len(buf) {
			t.Fatalf("a write was interleaved with another: %q…", buf[:40])
		}
	}
}

// lineAnswerer answers each line conn reads with "got N\n", N the line's
// length, after delay, and reports each line's length on got.
func lineAnswerer(conn net.Conn, delay time.Duration) <-chan int {
	got := make(chan int, 16)
	go func() {
		defer close(got)
		br := bufio.NewReaderSize(conn, 1<<16)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			got <- len(line)
			time.Sleep(delay)
			if _, err := io.WriteString(conn, "got "+strconv.Itoa(len(line))+"\n"); err != nil {
				return
			}
		}
	}()
	return got
}

// nothingSent fails the test if the peer gets a line within 50 ms.
func nothingSent(t *testing.T, got <-chan int, what string) {
	t.Helper()
	select {
	case n := <-got:
		t.Fatalf("%s: the peer got %d bytes, want none yet", what, n)
	case <-time.After(50 * time.Millisecond):
	}
}

// readLine reads one answer of lineAnswerer through s.
func readLine(t *testing.T, s *rawSocket, want string) {
	t.Helper()
	var got []byte
	buf := make([]byte, 64)
	for !bytes.HasSuffix(got, []byte("\n")) {
		n, err := s.Read(buf)
		if err != nil {
			t.Fatalf("read %q then %v, want %q", got, err, want)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// A write held for the next read (holdNextWrite) goes out with that read,
// which then waits for the answer without a read that finds nothing; a
// write before that read sends the held bytes first; a read the poller
// refuses (its deadline passed) keeps them held; a held write larger than
// the socket's buffers goes out whole, waiting for room as Write does.
func TestRawSocketHeldWrite(t *testing.T) {
	client, server := tcpPair(t)
	s := newRawSocket(server)
	got := lineAnswerer(client, 10*time.Millisecond)

	// Without holding: the read right after the write finds nothing.
	if _, err := s.Write([]byte("zero\n")); err != nil {
		t.Fatal(err)
	}
	readLine(t, s, "got 5\n")
	<-got
	if s.empty != 1 {
		t.Fatalf("%d empty reads after a plain write, want 1", s.empty)
	}

	s.empty = 0
	s.holdNextWrite()
	if n, err := s.Write([]byte("one\n")); n != 4 || err != nil {
		t.Fatalf("held write: %d, %v", n, err)
	}
	nothingSent(t, got, "held write before the read")
	readLine(t, s, "got 4\n")
	if n := <-got; n != 4 {
		t.Fatalf("peer got %d bytes, want 4", n)
	}
	if s.empty != 0 {
		t.Fatalf("%d empty reads after a held write, want 0", s.empty)
	}

	// A write after a held one: both, in order.
	s.holdNextWrite()
	if _, err := s.Write([]byte("three\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("fourth\n")); err != nil {
		t.Fatal(err)
	}
	if a, b := <-got, <-got; a != 6 || b != 7 {
		t.Fatalf("peer got lines of %d and %d bytes, want 6 then 7", a, b)
	}
	readLine(t, s, "got 6\n")
	readLine(t, s, "got 7\n")

	// A read past its deadline writes nothing; the next one does.
	s.holdNextWrite()
	if _, err := s.Write([]byte("fifth!\n")); err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := s.Read(make([]byte, 8)); !isTimeout(err) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	nothingSent(t, got, "held write after a refused read")
	_ = server.SetReadDeadline(time.Time{})
	readLine(t, s, "got 7\n")
	<-got

	// 8 MiB held, more than both sockets' buffers, the peer reading only
	// after a while.
	big := append(bytes.Repeat([]byte("0123456789abcdef"), 1<<19), '\n')
	s.holdNextWrite()
	if _, err := s.Write(big); err != nil {
		t.Fatal(err)
	}
	readLine(t, s, "got "+strconv.Itoa(len(big))+"\n")
	if n := <-got; n != len(big) {
		t.Fatalf("peer got %d bytes, want %d", n, len(big))
	}
}

// A held write to a peer that has closed the connection fails the read
// that sends it as a stale pooled connection fails, not by waiting.
func TestRawSocketHeldWriteToClosedPeer(t *testing.T) {
	client, server := tcpPair(t)
	s := newRawSocket(server)
	client.Close()
	time.Sleep(20 * time.Millisecond) // the peer's FIN arrives first
	errc := make(chan error, 1)
	go func() {
		s.holdNextWrite()
		_, _ = s.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		_, err := s.Read(make([]byte, 64))
		errc <- err
	}()
	select {
	case err := <-errc:
		if !stale(err) {
			t.Fatalf("read after a held write to a closed peer: %v, want EOF, EPIPE or ECONNRESET", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read still waiting after a held write to a closed peer")
	}
}

// The fast path sends a request to its target with the read of the
// answer: over a pooled connection, a target that answers after a while
// costs no read that finds nothing, and every answer is the right one.
func TestFastPathSendsWithTheWait(t *testing.T) {
	tgt, conns := scriptedTarget(t, func(conn net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			time.Sleep(5 * time.Millisecond)
			body := req.Method + " " + req.URL.Path
			if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
				return
			}
		}
	})
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", tgt)}, to("a", 1)))
	conn := dialWeb(t, p)
	br := bufio.NewReader(conn)
	for i := range 10 {
		method, body := "GET", ""
		if i%2 == 1 {
			method, body = "POST", strings.Repeat("b", 40<<10) // larger than a write buffer
		}
		path := "/r" + strconv.Itoa(i)
		if _, err := io.WriteString(conn, method+" "+path+" HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := method + " " + path; resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, b, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("target saw %d connections, want 1", n)
	}
	p.pool.mu.Lock()
	defer p.pool.mu.Unlock()
	var pooled []*targetConn
	for _, l := range p.pool.idle {
		pooled = append(pooled, l.conns...)
	}
	if len(pooled) != 1 || pooled[0].raw == nil {
		t.Fatalf("%d pooled target connections, want one read raw", len(pooled))
	}
	if n := pooled[0].raw.empty; n != 0 {
		t.Fatalf("%d reads of the target found nothing, want 0", n)
	}
}

// BenchmarkRawSocketExchange sends a small request and reads its answer
// over loopback, from a peer that answers each at once: written then read
// (the read finds nothing first, then waits), or held for the read
// (holdNextWrite). cpu-ns/op is the process's CPU time (the peer's
// included), which a loaded machine inflates less than the wall time.
func BenchmarkRawSocketExchange(b *testing.B) {
	for _, held := range []bool{false, true} {
		name := "read-first"
		if held {
			name = "held"
		}
		b.Run(name, func(b *testing.B) {
			addr := serveLoopback(b, func(c net.Conn) {
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			})
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			s := newRawSocket(conn)
			req, answer := []byte("GET / HTTP/1.1\r\n\r\n"), make([]byte, 64)
			cpu0 := testsync.CPUTime()
			b.ResetTimer()
			for range b.N {
				if held {
					s.holdNextWrite()
				}
				if _, err := s.Write(req); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < len(req); {
					n, err := s.Read(answer)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(testsync.CPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(s.empty)/float64(b.N), "empty-reads/op")
		})
	}
}

// A request whose bytes all went out before its Flush (a body ending on the
// write buffer's end) leaves no hold behind for the next request's writes.
func TestFlushRequestWithNothingBuffered(t *testing.T) {
	client, server := tcpPair(t)
	tc := &targetConn{conn: server, raw: newRawSocket(server)}
	tc.bw = bufio.NewWriterSize(tc.raw, fastWriteBuffer)
	tc.br = bufio.NewReaderSize(targetReader{tc}, fastReadBuffer)
	got := lineAnswerer(client, 0)
	if _, err := tc.bw.Write(append(bytes.Repeat([]byte("a"), 2*fastWriteBuffer-1), '\n')); err != nil {
		t.Fatal(err)
	}
	if tc.bw.Buffered() != 0 {
		t.Fatalf("%d bytes buffered, want none (written through)", tc.bw.Buffered())
	}
	if err := tc.flushRequest(); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 2*fastWriteBuffer {
		t.Fatalf("peer got %d bytes, want %d", n, 2*fastWriteBuffer)
	}
	if _, err := tc.br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// The next write goes out at once.
	if _, err := tc.raw.Write([]byte("next\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 5 {
			t.Fatalf("peer got %d bytes, want 5", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write after an empty flush was held")
	}
}
