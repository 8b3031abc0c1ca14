// Package sni reads the TLS ClientHello at the start of a connection without
// consuming it, so that a listener can route by server name and then either
// hand the untouched bytes to a backend (TLS passthrough) or terminate TLS
// itself.
//
// It lets crypto/tls parse the hello (no hand-written TLS parser): a server
// handshake runs over a read-only recording of the connection and is
// stopped as soon as the hello is known. It owns nothing else: what to do
// with the name is the caller's business.
package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"time"
)

// Hello is what the client's ClientHello said.
type Hello struct {
	// ServerName is the SNI, lower-cased; empty when the client sent none.
	ServerName string
	// Protos are the ALPN protocols the client offered.
	Protos []string
	// Read is every byte Peek read from the connection: the hello, and
	// whatever came with it. The returned connection replays them.
	Read []byte
}

// maxHello bounds how much a client may send before its hello is complete.
// A ClientHello is one handshake message of at most a few records; 64 KiB
// is generous even with post-quantum key shares.
const maxHello = 64 << 10

// errHelloRead stops the handshake once the hello has been captured.
var errHelloRead = errors.New("sni: hello read")

// Peek reads the ClientHello from conn within timeout and returns it with a
// connection that replays everything read so far before reading on: the
// returned conn is, to its reader, exactly the original stream. On error the
// caller should close conn.
func Peek(conn net.Conn, timeout time.Duration) (Hello, net.Conn, error) {
	if timeout > 0 {
		conn.SetReadDeadline(time.Now().Add(timeout))
		defer conn.SetReadDeadline(time.Time{})
	}
	rec := &recorder{r: conn}
	var hello Hello
	err := tls.Server(readOnlyConn{rec}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = Hello{ServerName: strings.ToLower(h.ServerName), Protos: h.SupportedProtos}
			return nil, errHelloRead
		},
	}).Handshake()
	if !errors.Is(err, errHelloRead) {
		if err == nil {
			err = errors.New("sni: handshake finished without a hello")
		}
		return Hello{}, nil, err
	}
	hello.Read = rec.buf.Bytes()
	return hello, &replayConn{Conn: conn, r: io.MultiReader(bytes.NewReader(hello.Read), conn)}, nil
}

// recorder keeps a copy of every byte read through it, up to maxHello.
type recorder struct {
	r   io.Reader
	buf bytes.Buffer
}

var errTooLong = errors.New("sni: ClientHello larger than 64 KiB")

func (r *recorder) Read(p []byte) (int, error) {
	if r.buf.Len() >= maxHello {
		return 0, errTooLong
	}
	p = p[:min(len(p), maxHello-r.buf.Len())]
	n, err := r.r.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

// readOnlyConn gives crypto/tls a conn it can read from but never write to:
// the handshake must not answer the client, only parse its hello.
type readOnlyConn struct{ r io.Reader }

var errReadOnly = errors.New("sni: connection is read-only while peeking")

func (c readOnlyConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (readOnlyConn) Write([]byte) (int, error)        { return 0, errReadOnly }
func (readOnlyConn) Close() error                     { return nil }
func (readOnlyConn) LocalAddr() net.Addr              { return nil }
func (readOnlyConn) RemoteAddr() net.Addr             { return nil }
func (readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }

// replayConn reads the peeked bytes first, then the connection.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
