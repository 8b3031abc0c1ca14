//go:build !linux

package health

import (
	"errors"
	"net"
)

// socketIdle reports whether kc may carry the next check. Without a peek,
// a check on a connection the target closed is retried on a new one.
func (kc *keptConn) socketIdle() bool { return true }

// openFileLimit returns the process's limit of open files, 0 if unknown.
func openFileLimit() uint64 { return 0 }

// answerLoop is Linux's (answers_linux.go); elsewhere every check runs on
// a worker.
type answerLoop struct{}

func newAnswerLoop(*Checker) *answerLoop { return nil }
func (*answerLoop) run()                 {}
func (*answerLoop) close()               {}
func (*answerLoop) forget(*keptConn)     {}

// sendFast and dialFast leave every check to a worker.
func (c *Checker) sendFast(*check, func(error)) bool { return false }
func (c *Checker) dialFast(*check, func(error)) bool { return false }

type pendingRead struct{}

// Connections are detached only for the answer loop.
func (kc *keptConn) isDetached() bool          { return false }
func (kc *keptConn) borrow() (net.Conn, error) { return nil, errors.ErrUnsupported }
func (kc *keptConn) giveBack(net.Conn)         {}
func closeSocket(int)                          {}
