package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err == nil {
			_, _ = c.Write(append(b, '!'))
		}
	}()
	tc, err := newConnPool().dial(ln.Addr().String(), time.Now().Add(5*time.Second))
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
