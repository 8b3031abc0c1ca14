package proxy

import (
	"net/http"
)

// harden sets srv's timeouts: a client must send its request headers
// within readHeaderTimeout (a slowloris client dribbling them is cut off),
// a request and its response each take at most maxRequestDuration, and an
// idle keep-alive connection is closed after idleTimeout.
func (p *Proxy) harden(srv *http.Server) {
	srv.ReadHeaderTimeout = p.limits.readHeader
	srv.ReadTimeout = maxRequestDuration
	srv.WriteTimeout = maxRequestDuration
	srv.IdleTimeout = idleTimeout
}

// headerLines counts the header lines of a request.
func headerLines(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}
