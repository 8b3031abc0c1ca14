//go:build !linux

package proxy

import "net"

// rawSocket is Linux's (rawsock_linux.go); elsewhere connections are read
// and written as net.Conn.
type rawSocket struct{}

func newRawSocket(net.Conn) *rawSocket { return nil }

func (*rawSocket) Read([]byte) (int, error)  { panic("rawSocket: none off Linux") }
func (*rawSocket) Write([]byte) (int, error) { panic("rawSocket: none off Linux") }
func (*rawSocket) holdNextWrite()            { panic("rawSocket: none off Linux") }
