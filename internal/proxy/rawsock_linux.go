package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
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
	// empty counts the reads that found nothing (EAGAIN) and waited, under
	// rmu: what holdNextWrite saves, for tests.
	empty int
	// sendFirstFn writes held, then reads (sendThenRead).
	sendFirstFn func(fd uintptr) bool

	// hold makes the next Write keep its bytes in held instead of
	// writing them (holdNextWrite); heldSet tells Read, without wmu, that
	// held is set. Both under wmu. sent is sendFirstFn's result.
	hold    bool
	held    []byte
	heldSet atomic.Bool
	sent    bool
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
	s.readFn, s.writeFn, s.sendFirstFn = s.readFd, s.writeFd, s.sendFirstFd
	return s
}

// holdNextWrite makes the next Write return without writing: its bytes are
// written by the Read after it, which then waits for the answer through the
// poller without first trying to read. A request sent to a target cannot
// have its answer yet when it is written; a read right after the write only
// finds nothing (EAGAIN), a system call of about half a microsecond each
// exchange. The write cannot be moved into that read's wait later than
// this: Go's poller forgets, when a read begins, that the socket became
// readable before, so a wait that does not read first is safe only for
// bytes that come after the read began, the answer to what that read
// writes.
//
// The written slice is kept, not copied: the caller must not change it
// until the next Read or Write (a bufio.Writer's Flush as its last call
// before reading the answer). A Write before that Read writes the held
// bytes first. For one goroutine's request-and-answer use: the Read that
// writes held bytes holds the write lock until they are written.
func (s *rawSocket) holdNextWrite() {
	s.wmu.Lock()
	s.hold = true
	s.wmu.Unlock()
}

// Read reads from the socket as net.Conn does.
func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	s.rbuf, s.rn, s.rerrno = p, 0, 0
	var err error
	if s.heldSet.Load() {
		err = s.sendThenRead()
	} else {
		err = s.rc.Read(s.readFn)
	}
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
			s.empty++
			return false
		default:
			s.rerrno = e
			return true
		}
	}
}

// sendThenRead writes the held bytes and reads into rbuf, under rmu: the
// write and the wait for the answer in one poller read (holdNextWrite).
// Its error is the poller's, or the write's as net.Conn reports it; a read's
// errno is left in rerrno.
func (s *rawSocket) sendThenRead() error {
	s.wmu.Lock()
	held := s.held
	if held == nil {
		// A Write of another goroutine sent them meanwhile: a read as
		// any, which tries before it waits.
		s.wmu.Unlock()
		return s.rc.Read(s.readFn)
	}
	s.held = nil
	s.heldSet.Store(false)
	s.wbuf, s.wn, s.werrno, s.sent = held, 0, 0, false
	err := s.rc.Read(s.sendFirstFn)
	if !s.sent {
		// Not all written: the poller refused before (a deadline, Close),
		// the write failed, or the socket's buffer was full.
		wn, werrno := s.wn, s.werrno
		switch {
		case err != nil:
			// The bytes stay held for the next Read.
			s.held = held[wn:]
			s.heldSet.Store(true)
		case werrno != 0:
			err = s.opError("write", werrno)
		default:
			// Room to wait for: the rest as Write writes, then the
			// read as Read reads.
			err = s.rc.Write(s.writeFn)
			if err == nil && s.werrno != 0 {
				err = s.opError("write", s.werrno)
			}
		}
		s.wbuf = nil
		s.wmu.Unlock()
		if err != nil {
			return err
		}
		return s.rc.Read(s.readFn)
	}
	return err
}

// sendFirstFd writes wbuf, then reads: the first call returns false once
// everything is written, so that the poller waits before the read is
// tried (holdNextWrite). It lets wmu go once the write is done.
func (s *rawSocket) sendFirstFd(fd uintptr) bool {
	if !s.sent {
		if !s.writeFd(fd) {
			return true
		}
		if s.werrno != 0 {
			return true
		}
		s.sent = true
		s.wbuf = nil
		s.wmu.Unlock()
		return false
	}
	return s.readFd(fd)
}

// Write writes all of p to the socket as net.Conn does.
func (s *rawSocket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	if s.hold && s.held == nil {
		s.hold = false
		s.held = p
		s.heldSet.Store(true)
		s.wmu.Unlock()
		return len(p), nil
	}
	s.hold = false
	if s.held != nil {
		// Bytes a Read has not written yet go first.
		s.wbuf, s.wn, s.werrno = s.held, 0, 0
		s.held = nil
		s.heldSet.Store(false)
		err := s.rc.Write(s.writeFn)
		errno := s.werrno
		if err == nil && errno != 0 {
			err = s.opError("write", errno)
		}
		if err != nil {
			s.wbuf = nil
			s.wmu.Unlock()
			return 0, err
		}
	}
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
