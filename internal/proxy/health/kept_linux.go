package health

import (
	"net"
	"os"
	"syscall"
)

// A plain HTTP/1.1 connection the answer loop watches is held as its bare
// socket, outside Go's poller: the loop sends the checks' requests and
// reads their answers with raw calls on its own epoll instance, and a
// net.Conn would keep the socket registered with the runtime's poller as
// well, which then woke the runtime's netpoll for every answer the loop
// had already read (findRunnable, some 3-4.5 µs of a check's ~19). The
// first check sendFast sends on a connection detaches it: a duplicate of
// its socket is kept (non-blocking, set to close with a reset), and the
// net.Conn is closed, which takes it out of Go's poller. A worker that
// must read on (an answer longer than the loop's read, or in parts) reads
// through a net.Conn over another duplicate, closed when its check ends
// (borrow); the loop's epoll instance watches the socket throughout.

// detach makes kc's socket the loop's: a duplicate of tcp's, outside Go's
// poller (tcp closes). kc is unchanged when it fails.
func (kc *keptConn) detach() error {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.closed {
		return net.ErrClosed
	}
	sock := -1
	var err error
	if cerr := kc.raw.Control(func(fd uintptr) { sock, err = dupNow(int(fd)) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	if err := lingerZeroNow(sock); err != nil {
		closeNow(sock)
		return err
	}
	// The duplicate holds the socket open: this close only takes tcp
	// out of Go's poller.
	kc.tcp.Close()
	kc.sock, kc.detached = sock, true
	return nil
}

// isDetached reports whether kc is held as its bare socket.
func (kc *keptConn) isDetached() bool {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	return kc.detached
}

// watch registers kc's socket with the epoll instance ep for ev.
func (kc *keptConn) watch(ep int, ev *syscall.EpollEvent) error {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.closed {
		return net.ErrClosed
	}
	return epollAddNow(ep, kc.sock, ev)
}

// send sends b on kc's socket without waiting (sendNow).
func (kc *keptConn) send(b []byte) (int, error) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.closed {
		return 0, net.ErrClosed
	}
	return sendNow(kc.sock, b)
}

// recv reads what kc's socket has without waiting (recvNow).
func (kc *keptConn) recv(b []byte, flags int) (int, error) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.closed {
		return 0, net.ErrClosed
	}
	return recvNow(kc.sock, b, flags)
}

// borrow returns a net.Conn over a duplicate of kc's socket, for a
// worker's blocking reads; giveBack closes it. Closing kc closes it too,
// so that a read on it ends at once.
func (kc *keptConn) borrow() (net.Conn, error) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.closed {
		return nil, net.ErrClosed
	}
	sock, err := dupNow(kc.sock)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(sock), "health-check")
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	kc.tmp = conn
	return conn, nil
}

// giveBack closes conn, which borrow returned; kc's socket stays open.
func (kc *keptConn) giveBack(conn net.Conn) {
	kc.mu.Lock()
	if kc.tmp == conn {
		kc.tmp = nil
	}
	kc.mu.Unlock()
	conn.Close()
}

// closeSocket closes a detached connection's socket.
func closeSocket(sock int) { closeNow(sock) }
