package testsync

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// ServeConns serves connections at once, each in its goroutine, closes
// each when serve returns, and closes the listener when the test ends.
func TestServeConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("serve", func(t *testing.T) {
		// serve answers one line, then returns.
		addr := ServeConns(t, ln, func(c net.Conn) {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				io.WriteString(c, "echo "+line)
			}
		})
		if addr != ln.Addr().String() {
			t.Errorf("address %s, want %s", addr, ln.Addr())
		}
		// Two connections open at once: the second is served while the
		// first's serve still waits for its line.
		var conns [2]net.Conn
		for i := range conns {
			conns[i] = Dial(t, addr)
		}
		for _, i := range []int{1, 0} {
			io.WriteString(conns[i], "hi\n")
			got, err := io.ReadAll(conns[i])
			if err != nil || string(got) != "echo hi\n" {
				t.Errorf("connection %d: %q, %v; want the echo, then the connection closed", i, got, err)
			}
		}
	})
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Error("the listener is still open after the test")
	}
}

// Dial's connection is closed when the test that dialled ends.
func TestDialClosedWithTheTest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Run("dial", func(t *testing.T) {
		io.WriteString(Dial(t, ln.Addr().String()), "hi")
	})
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "hi" {
		t.Errorf("read %q, %v; want the write, then the connection closed", got, err)
	}
}
