package health

import (
	"net/netip"
	"syscall"
	"unsafe"
)

// The checks' system calls that never wait (a send or a read with
// MSG_DONTWAIT, an epoll wait with no timeout, and the dial path's socket,
// connect of a non-blocking socket, epoll registration and close with
// SO_LINGER 0, and the duplicate of a kept connection's socket the
// answer loop holds) are made raw: without
// telling Go's scheduler that the goroutine enters a system call. The
// syscall package's calls do tell it (entersyscall, exitsyscall), and each
// such entry wakes the runtime's monitor thread (sysmon) when it sleeps
// because the process was idle; woken by a system call, sysmon starts over
// at its shortest period, 20 µs, and sleeps and wakes (a nanosleep and a
// context switch each time) until the process has been idle through one of
// its rounds. A batch of checks woke it for every batch, and it then took
// about a seventh of the idle process's CPU. A raw call that returns at
// once needs none of that: the goroutine keeps its P, as it would for a
// call that does not block.

// sendNow sends b on fd without waiting and without SIGPIPE (a target
// that closed gives EPIPE), returning how much was sent.
func sendNow(fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(p), uintptr(len(b)), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// recvNow reads what fd has into b without waiting (flags add to
// MSG_DONTWAIT: MSG_PEEK), returning how much it read: 0 when the peer
// closed, EAGAIN when there is nothing.
func recvNow(fd int, b []byte, flags int) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(p), uintptr(len(b)), uintptr(flags|syscall.MSG_DONTWAIT), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollNow takes the events ep has ready into events, without waiting.
func epollNow(ep int, events []syscall.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// openNow opens a non-blocking TCP socket of family, closed with a reset
// (SO_LINGER on, 0 s).
func openNow(family int) (int, error) {
	fd, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
	if e != 0 {
		return -1, e
	}
	if err := lingerZeroNow(int(fd)); err != nil {
		closeNow(int(fd))
		return -1, err
	}
	return int(fd), nil
}

// lingerZeroNow sets fd, a socket, to close with a reset (SO_LINGER on,
// 0 s).
func lingerZeroNow(fd int) error {
	linger := syscall.Linger{Onoff: 1}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, uintptr(unsafe.Pointer(&linger)), unsafe.Sizeof(linger), 0); e != 0 {
		return e
	}
	return nil
}

// dupNow returns a duplicate of fd, closed on exec.
func dupNow(fd int) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// connectNow starts connecting fd, a non-blocking socket, to ap:
// EINPROGRESS while the connection is being made.
func connectNow(fd int, ap netip.AddrPort) error {
	var sa4 syscall.RawSockaddrInet4
	var sa6 syscall.RawSockaddrInet6
	var p unsafe.Pointer
	var n uintptr
	port := (*[2]byte)(unsafe.Pointer(&sa4.Port))
	if a := ap.Addr(); a.Is4() || a.Is4In6() {
		sa4.Family, sa4.Addr = syscall.AF_INET, a.Unmap().As4()
		p, n = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		sa6.Family, sa6.Addr = syscall.AF_INET6, a.As16()
		port = (*[2]byte)(unsafe.Pointer(&sa6.Port))
		p, n = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	port[0], port[1] = byte(ap.Port()>>8), byte(ap.Port())
	if _, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(p), n); e != 0 {
		return e
	}
	return nil
}

// closeNow closes fd (a socket with SO_LINGER 0 closes at once, with a
// reset).
func closeNow(fd int) error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

// epollCreateNow returns a new epoll instance, closed on exec.
func epollCreateNow() (int, error) {
	ep, _, e := syscall.RawSyscall(syscall.SYS_EPOLL_CREATE1, syscall.EPOLL_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(ep), nil
}

// epollAddNow registers fd with ep for ev.
func epollAddNow(ep, fd int, ev *syscall.EpollEvent) error {
	if _, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(ep), syscall.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}
