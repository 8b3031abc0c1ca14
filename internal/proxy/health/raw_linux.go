package health

import (
	"syscall"
	"unsafe"
)

// The checks' system calls that never wait (a send or a read with
// MSG_DONTWAIT, an epoll wait with no timeout) are made raw: without
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
