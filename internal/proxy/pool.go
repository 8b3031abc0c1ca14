package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"
	"time"

	"trellis.dev/trellis/internal/proxy/h1"
)

// connPool keeps the fast path's idle HTTP/1.1 connections to targets, per
// target address, most recently used first.
type connPool struct {
	dialer net.Dialer
	mu     sync.Mutex
	// idle holds a list per address that has had one, changed in place:
	// a get and a put look the address up once and assign nothing.
	idle   map[string]*idleConns
	closed bool
	// sweeping is armed while idle connections wait: sweep closes those
	// idle past idleConnTimeout, which get alone never reaches for an
	// address no request asks for again (a target gone in a rolling
	// update).
	sweeping *time.Timer
}

// idleConns are the idle connections to one address, the most recently
// used last.
type idleConns struct{ conns []*targetConn }

// targetConn is one HTTP/1.1 connection to a target.
type targetConn struct {
	conn net.Conn
	// raw reads and writes conn with raw system calls (rawSocket); nil
	// when conn has no socket of its own.
	raw  *rawSocket
	br   *bufio.Reader
	bw   *bufio.Writer
	addr string
	// reused is set once the connection has carried a request.
	reused bool
	// idleSince is when it was put back in the pool.
	idleSince time.Time
	deadlines deadlines
	// idle, while set, bounds each read (a response body's) to idle from
	// its start, and never past limit (targetReader).
	idle  time.Duration
	limit time.Time
	// resp is the last response head read for a delivery
	// (deliveryRoundTrip), kept for its arrays; body reads its body when
	// the head gives its length (sendDirect), kept here to save the
	// request an allocation.
	resp h1.Response
	body io.LimitedReader
}

// targetReader reads a target connection for its bufio.Reader.
type targetReader struct{ c *targetConn }

func (r targetReader) Read(p []byte) (int, error) {
	c := r.c
	if c.idle > 0 {
		d := time.Now().Add(c.idle)
		if !c.limit.IsZero() && c.limit.Before(d) {
			d = c.limit
		}
		_ = c.conn.SetReadDeadline(d)
	}
	if c.raw != nil {
		return c.raw.Read(p)
	}
	return c.conn.Read(p)
}

func newConnPool() *connPool {
	return &connPool{
		dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive},
		idle:   map[string]*idleConns{},
	}
}

// get returns an idle connection to addr, or nil when there is none. It
// drops connections idle past idleConnTimeout and those found closed: a
// connection idle for staleAfter, or any when check is set (for a request
// that could not be sent again), is checked first.
func (p *connPool) get(addr string, now time.Time, check bool) *targetConn {
	for {
		p.mu.Lock()
		l := p.idle[addr]
		if l == nil || len(l.conns) == 0 {
			p.mu.Unlock()
			return nil
		}
		last := len(l.conns) - 1
		c := l.conns[last]
		l.conns[last] = nil
		l.conns = l.conns[:last]
		p.mu.Unlock()
		idle := now.Sub(c.idleSince)
		if idle < staleAfter && !check || idle < idleConnTimeout && c.alive() {
			return c
		}
		c.conn.Close()
	}
}

// dial opens a connection to addr.
func (p *connPool) dial(addr string, deadline time.Time) (*targetConn, error) {
	d := p.dialer
	if !deadline.IsZero() {
		d.Deadline = deadline
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &targetConn{conn: conn, addr: addr, raw: newRawSocket(conn)}
	var w io.Writer = conn
	if c.raw != nil {
		w = c.raw
	}
	c.bw = bufio.NewWriterSize(w, fastWriteBuffer)
	c.br = bufio.NewReaderSize(targetReader{c}, fastReadBuffer)
	return c, nil
}

// put returns c to the pool, or closes it when the pool for its address is
// full or the pool is closed.
func (p *connPool) put(c *targetConn, now time.Time) {
	c.reused = true
	c.idleSince = now
	p.mu.Lock()
	l := p.idle[c.addr]
	if p.closed || l != nil && len(l.conns) >= maxIdleConnsPerHost {
		p.mu.Unlock()
		c.conn.Close()
		return
	}
	if l == nil {
		l = &idleConns{}
		p.idle[c.addr] = l
	}
	l.conns = append(l.conns, c)
	if p.sweeping == nil {
		p.sweeping = time.AfterFunc(idleConnTimeout/2, p.sweep)
	}
	p.mu.Unlock()
}

// sweep closes the connections idle past idleConnTimeout, forgets the
// addresses left with none, and is armed again while any connection waits.
func (p *connPool) sweep() {
	now := time.Now()
	var stale []*targetConn
	p.mu.Lock()
	for addr, l := range p.idle {
		kept := l.conns[:0]
		for _, c := range l.conns {
			if now.Sub(c.idleSince) >= idleConnTimeout {
				stale = append(stale, c)
			} else {
				kept = append(kept, c)
			}
		}
		clear(l.conns[len(kept):])
		l.conns = kept
		if len(kept) == 0 {
			delete(p.idle, addr)
		}
	}
	p.sweeping = nil
	if len(p.idle) > 0 && !p.closed {
		p.sweeping = time.AfterFunc(idleConnTimeout/2, p.sweep)
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.conn.Close()
	}
}

// closeIdle closes every idle connection; with final set, connections put
// back later are closed too.
func (p *connPool) closeIdle(final bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string]*idleConns{}
	p.closed = p.closed || final
	if p.sweeping != nil {
		p.sweeping.Stop()
		p.sweeping = nil
	}
	p.mu.Unlock()
	for _, l := range idle {
		for _, c := range l.conns {
			c.conn.Close()
		}
	}
}

// alive reports whether an idle connection is still open: the target has
// neither closed it nor sent anything unasked.
func (c *targetConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	data, closed := peek(c.conn)
	return !data && !closed
}
