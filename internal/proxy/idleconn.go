package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// idleConn is a client connection as accepted. While a request body is
// read from it over HTTP/1 (countingBody sets idle), each read from the
// socket first moves the read deadline to idle from now: the body idle
// timeout bounds each wait for bytes, chunk framing included, however a
// body reader splits its reads. HTTP/2 streams are bounded per read of the
// stream instead (http.ResponseController), their frames arriving whole.
//
// Its reads and writes are raw system calls where the socket allows
// (rawSocket), whichever path or TLS connection reads and writes it.
type idleConn struct {
	net.Conn
	idle atomic.Int64 // a time.Duration; 0 is none
	raw  *rawSocket   // nil: c.Conn's own Read and Write
}

func newIdleConn(c net.Conn) *idleConn {
	return &idleConn{Conn: c, raw: newRawSocket(c)}
}

func (c *idleConn) Read(p []byte) (int, error) {
	if d := time.Duration(c.idle.Load()); d > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(d))
	}
	if c.raw != nil {
		return c.raw.Read(p)
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.Write(p)
	}
	return c.Conn.Write(p)
}

// SyscallConn lets peek look at the socket underneath.
func (c *idleConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, syscall.EINVAL
	}
	return sc.SyscallConn()
}

// CloseWrite half-closes the connection, as net/http does before closing
// it after an error response.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// idleListener wraps the connections a listener accepts in idleConn.
type idleListener struct{ net.Listener }

func (l idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newIdleConn(c), nil
}

// idleConnKey is the context key of a connection's idleConn.
type idleConnKey struct{}

// withIdleConn returns ctx with the idleConn under c, if any: c itself, or
// what a handed-off or TLS connection wraps.
func withIdleConn(ctx context.Context, c net.Conn) context.Context {
	for {
		switch cc := c.(type) {
		case *idleConn:
			return context.WithValue(ctx, idleConnKey{}, cc)
		case *replayConn:
			c = cc.Conn
		case *tls.Conn:
			c = cc.NetConn()
		default:
			return ctx
		}
	}
}
