//go:build !linux

package health

// socketIdle reports whether kc may carry the next check. Without a peek,
// a check on a connection the target closed is retried on a new one.
func (kc *keptConn) socketIdle() bool { return true }

// openFileLimit returns the process's limit of open files, 0 if unknown.
func openFileLimit() uint64 { return 0 }
