package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// A connection idle past idleConnTimeout to an address no request asks
// for again is closed by the pool's sweep, and the address forgotten; a
// connection idle for less stays.
func TestPoolSweepClosesIdleConnections(t *testing.T) {
	closed := make(chan string, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := testsync.ServeConns(t, ln, func(c net.Conn) {
		io.Copy(io.Discard, c) // until the proxy's side closes
		closed <- c.RemoteAddr().String()
	})
	p := newConnPool()
	t.Cleanup(func() { p.closeIdle(true) })
	old, err := p.dial(addr, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := p.dial(addr, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p.put(old, now.Add(-idleConnTimeout-time.Second))
	p.put(fresh, now)
	p.sweep()
	select {
	case a := <-closed:
		if a != old.conn.LocalAddr().String() {
			t.Errorf("the sweep closed %s, want the old connection %s", a, old.conn.LocalAddr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection idle past idleConnTimeout is still open after the sweep")
	}
	p.mu.Lock()
	l, armed := p.idle[addr], p.sweeping != nil
	p.mu.Unlock()
	if l == nil || len(l.conns) != 1 || l.conns[0] != fresh {
		t.Fatalf("after the sweep the pool holds %v, want the fresh connection alone", l)
	}
	if !armed {
		t.Error("the sweep is not armed again while a connection waits")
	}
	fresh.idleSince = now.Add(-idleConnTimeout)
	p.sweep()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the last connection idle past idleConnTimeout is still open after the sweep")
	}
	p.mu.Lock()
	n, armed := len(p.idle), p.sweeping != nil
	p.mu.Unlock()
	if n != 0 || armed {
		t.Errorf("with no connection left the pool keeps %d addresses (sweep armed: %v), want none", n, armed)
	}
}

// idleConns counts the connections p keeps idle to addr.
func (p *connPool) idleConns(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.idle[addr]; l != nil {
		return len(l.conns)
	}
	return 0
}
