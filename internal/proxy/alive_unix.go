//go:build unix

package proxy

import (
	"errors"
	"syscall"
)

// alive reports whether an idle connection is still open: the target has
// neither closed it nor sent anything unasked. It peeks at the socket
// without blocking.
func (c *targetConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Nothing to read: open. A byte or the end of the stream: not.
		open = errors.Is(err, syscall.EAGAIN)
		return true
	})
	return err == nil && open
}
