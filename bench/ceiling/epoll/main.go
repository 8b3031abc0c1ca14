//go:build linux

// Command epoll is the event-loop forwarder of package ceiling:
// epoll PORT LOOPS TARGETPORT... runs LOOPS epoll loops, each on its own
// thread and its own SO_REUSEPORT socket on 127.0.0.1:PORT, and pairs each
// client connection with a connection of its own to 127.0.0.1:TARGETPORT
// (the target ports in turn).
package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
)

const soReusePort = 0xf // SO_REUSEPORT on Linux

var loopback = [4]byte{127, 0, 0, 1}

// conn is one side of a client–target pair.
type conn struct {
	peer   int
	client bool
	buf    []byte
	n      int
	// out is the client side's reusable buffer for the forwarded head.
	out []byte
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: epoll PORT LOOPS TARGETPORT...")
		os.Exit(2)
	}
	port, _ := strconv.Atoi(os.Args[1])
	loops, _ := strconv.Atoi(os.Args[2])
	var targets []int
	for _, a := range os.Args[3:] {
		p, _ := strconv.Atoi(a)
		targets = append(targets, p)
	}
	errs := make(chan error)
	for i := range loops {
		go func() { errs <- loop(port, i, targets) }()
	}
	fmt.Fprintln(os.Stderr, <-errs)
	os.Exit(1)
}

func loop(port, id int, targets []int) error {
	runtime.LockOSThread()
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	if err := syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, soReusePort, 1); err != nil {
		return err
	}
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Port: port, Addr: loopback}); err != nil {
		return err
	}
	if err := syscall.Listen(lfd, 4096); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(0)
	if err != nil {
		return err
	}
	watch := func(fd int) error {
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
	}
	if err := watch(lfd); err != nil {
		return err
	}
	// conns is indexed by file descriptor.
	var conns []*conn
	set := func(fd int, c *conn) {
		for fd >= len(conns) {
			conns = append(conns, nil)
		}
		conns[fd] = c
	}
	events := make([]syscall.EpollEvent, 256)
	next := id
	for {
		n, err := syscall.EpollWait(ep, events, -1)
		if err != nil {
			continue
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				for {
					cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK)
					if err != nil {
						break
					}
					next++
					tfd, err := dial(targets[next%len(targets)])
					if err != nil {
						syscall.Close(cfd)
						continue
					}
					_ = syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
					set(cfd, &conn{peer: tfd, client: true, buf: make([]byte, 8<<10), out: make([]byte, 0, 8<<10)})
					set(tfd, &conn{peer: cfd, buf: make([]byte, 8<<10)})
					_, _ = watch(cfd), watch(tfd)
				}
				continue
			}
			if fd >= len(conns) {
				continue
			}
			if c := conns[fd]; c != nil && !c.read(fd) {
				syscall.Close(fd)
				syscall.Close(c.peer)
				conns[c.peer], conns[fd] = nil, nil
			}
		}
	}
}

// dial connects to a target port on loopback, blocking (it is local), and
// makes the socket non-blocking.
func dial(port int) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return 0, err
	}
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: port, Addr: loopback}); err != nil {
		syscall.Close(fd)
		return 0, err
	}
	_ = syscall.SetNonblock(fd, true)
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	return fd, nil
}

var (
	endOfHead    = []byte("\r\n\r\n")
	forwardedFor = []byte("X-Forwarded-For: 127.0.0.1\r\n\r\n")
)

// bodyLength returns the Content-Length of a response head (status line
// and fields, each ending in CRLF), 0 when it has none.
func bodyLength(head []byte) int {
	const name = "content-length:"
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			return 0
		}
		line := head[:i]
		head = head[i+1:]
		if len(line) <= len(name) || line[0]|0x20 != 'c' {
			continue
		}
		match := true
		for j := range len(name) {
			if line[j]|0x20 != name[j] && line[j] != name[j] {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		n := 0
		for _, d := range line[len(name):] {
			if d >= '0' && d <= '9' {
				n = n*10 + int(d-'0')
			}
		}
		return n
	}
	return 0
}

// read takes what fd has and, once a whole message is in, writes it to the
// peer: a request head with X-Forwarded-For added, or a response. It
// reports false when the connection is done.
func (c *conn) read(fd int) bool {
	m, err := syscall.Read(fd, c.buf[c.n:])
	if err == syscall.EAGAIN {
		return true
	}
	if m <= 0 {
		return false
	}
	c.n += m
	b := c.buf[:c.n]
	h := bytes.Index(b, endOfHead)
	if h < 0 {
		return c.n < len(c.buf)
	}
	var out []byte
	if c.client {
		out = append(append(c.out[:0], b[:h+2]...), forwardedFor...)
	} else {
		end := h + 4 + bodyLength(b[:h+2])
		if c.n < end {
			return c.n < len(c.buf)
		}
		out = b[:end]
	}
	c.n = 0
	_, err = syscall.Write(c.peer, out)
	return err == nil
}
