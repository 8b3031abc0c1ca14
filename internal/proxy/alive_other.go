//go:build !unix

package proxy

// alive cannot peek at a socket here; a stale connection is found when a
// request on it fails, and retried when it can be.
func (c *targetConn) alive() bool { return c.br.Buffered() == 0 }
