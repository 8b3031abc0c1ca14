//go:build !unix

package proxy

import "net"

// peek cannot look at a socket here: it reports neither data nor a close.
// A stale pooled connection is found when a request on it fails (and is
// sent again when it can be); a client that went away, when its response
// is written.
func peek(net.Conn) (data, closed bool) { return false, false }
