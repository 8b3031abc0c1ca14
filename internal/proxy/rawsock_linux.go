package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawSocket reads and writes a connection's socket with raw system calls
// (syscall.RawSyscall), waiting for it through the connection's own poller
// (syscall.RawConn), so that deadlines, Close and the errors' kinds stay as
// net.Conn's. A raw call does not tell the Go scheduler that the thread
// enters a system call. The socket is non-blocking, so none blocks; and
// the runtime's monitor thread (sysmon) sleeps while every P is idle and is
// woken by the next call that does tell, after which it polls every 20 µs
// again. A proxy at moderate load goes idle between most requests, so
// each request woke it about once: 6–10 µs of CPU and one more context
// switch per request (docs/benchmarks.md, "Latency at half of nginx's
// saturated rate").
type rawSocket struct {
	conn net.Conn
	rc   syscall.RawConn
	// rmu and wmu serialize reads and writes (as net.Conn's do: an
	// HTTP/2 server may write from several goroutines) over the calls'
	// arguments and results, kept here so that the functions handed to
	// rc are made once (a closure per call would allocate).
	rmu, wmu       sync.Mutex
	rbuf, wbuf     []byte
	rn, wn         int
	rerrno, werrno syscall.Errno
	readFn         func(fd uintptr) bool
	writeFn        func(fd uintptr) bool
}

// newRawSocket returns raw reads and writes for c's socket, or nil when c
// has none (a test's pipe, a TLS connection).
func newRawSocket(c net.Conn) *rawSocket {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	if _, ok := c.(*net.TCPConn); !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawSocket{conn: c, rc: rc}
	s.readFn, s.writeFn = s.readFd, s.writeFd
	return s
}

// Read reads from the socket as net.Conn does.
func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	s.rbuf, s.rn, s.rerrno = p, 0, 0
	err := s.rc.Read(s.readFn)
	n, errno := s.rn, s.rerrno
	s.rbuf = nil
	s.rmu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, s.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *rawSocket) readFd(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch e {
		case 0:
			s.rn = int(r)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.rerrno = e
			return true
		}
	}
}

// Write writes all of p to the socket as net.Conn does.
func (s *rawSocket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	s.wbuf, s.wn, s.werrno = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n, errno := s.wn, s.werrno
	s.wbuf = nil
	s.wmu.Unlock()
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, s.opError("write", errno)
	}
	return n, nil
}

func (s *rawSocket) writeFd(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		b := s.wbuf[s.wn:]
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			s.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

// opError is the error net.Conn returns for a failed call.
func (s *rawSocket) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
