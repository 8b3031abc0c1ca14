package health

import "syscall"

// socketIdle reports whether kc's socket has nothing to read. It costs one
// non-blocking peek.
func (kc *keptConn) socketIdle() bool {
	if kc.raw == nil {
		return true
	}
	kc.peeks++
	if kc.isDetached() {
		_, err := kc.recv(kc.peekBuf[:], syscall.MSG_PEEK)
		return err == syscall.EAGAIN
	}
	if kc.peekFn == nil {
		kc.peekFn = kc.peek
	}
	if err := kc.raw.Read(kc.peekFn); err != nil {
		return false
	}
	return kc.peekErr == syscall.EAGAIN
}

func (kc *keptConn) peek(fd uintptr) bool {
	_, kc.peekErr = recvNow(int(fd), kc.peekBuf[:], syscall.MSG_PEEK)
	return true
}

// openFileLimit returns the process's limit of open files, 0 if unknown.
func openFileLimit() uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	return l.Cur
}
