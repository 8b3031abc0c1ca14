package health

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// The raw calls keep the contract of the syscall package's calls they
// replace: nothing to read is EAGAIN, a peek leaves what it saw, a peer's
// close reads as 0 and a send to it fails with EPIPE (no SIGPIPE ends the
// test), and the epoll wait hands back the token of a ready socket without
// waiting.
func TestRawCalls(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, peer := fds[0], fds[1]
	defer syscall.Close(ours)
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(ep)
	var token uint64 = 1<<32 | 7
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | -syscall.EPOLLET, Fd: int32(uint32(token)), Pad: int32(token >> 32)}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, ours, &ev); err != nil {
		t.Fatal(err)
	}
	var events [4]syscall.EpollEvent
	buf := make([]byte, 64)

	if n, err := epollNow(ep, events[:]); n != 0 || err != nil {
		t.Fatalf("epoll with nothing ready: %d events, %v", n, err)
	}
	if n, err := recvNow(ours, buf, 0); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("read with nothing sent: %d, %v; want EAGAIN", n, err)
	}
	if n, err := sendNow(peer, []byte("answer")); n != 6 || err != nil {
		t.Fatalf("send: %d, %v", n, err)
	}
	n, err := epollNow(ep, events[:])
	if n != 1 || err != nil {
		t.Fatalf("epoll with an answer sent: %d events, %v", n, err)
	}
	if got := uint64(uint32(events[0].Fd)) | uint64(uint32(events[0].Pad))<<32; got != token {
		t.Fatalf("epoll token %#x, want %#x", got, token)
	}
	if n, err := recvNow(ours, buf[:1], syscall.MSG_PEEK); n != 1 || err != nil || buf[0] != 'a' {
		t.Fatalf("peek: %d %q, %v", n, buf[:n], err)
	}
	if n, err := recvNow(ours, buf, 0); n != 6 || err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("read after the peek: %d %q, %v; want the whole answer", n, buf[:n], err)
	}
	if err := syscall.Close(peer); err != nil {
		t.Fatal(err)
	}
	if n, err := recvNow(ours, buf, 0); n != 0 || err != nil {
		t.Fatalf("read after the peer closed: %d, %v; want 0, nil", n, err)
	}
	if n, err := sendNow(ours, []byte("GET")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("send after the peer closed: %d, %v; want EPIPE", n, err)
	}
}

// connectNow reaches the address it is given, IPv4 and IPv6 (the port in
// network order), on a socket openNow made.
func TestConnectNow(t *testing.T) {
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		family := syscall.AF_INET
		if ap.Addr().Is6() {
			family = syscall.AF_INET6
		}
		fd, err := openNow(family)
		if err != nil {
			t.Fatal(err)
		}
		if err := connectNow(fd, ap); err != nil && !errors.Is(err, syscall.EINPROGRESS) {
			t.Fatalf("%s: connect: %v", ap, err)
		}
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		testsync.WaitFor(t, 5*time.Second, "the byte sent", func() bool {
			n, _ := recvNow(fd, buf, 0)
			return n == 1
		})
		conn.Close()
		ln.Close()
		if err := closeNow(fd); err != nil {
			t.Fatal(err)
		}
	}
}
