//go:build unix

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// peek looks at the socket of c without blocking and without consuming
// anything: it reports whether the peer has sent data, and whether it has
// closed (or reset) its end, with nothing left to read. A connection that
// cannot be peeked at reports neither.
func peek(c net.Conn) (data, closed bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN):
		case err != nil || n == 0:
			closed = true
		default:
			data = true
		}
		return true
	})
	return data, closed || err != nil
}
