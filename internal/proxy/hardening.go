package proxy

import (
	"cmp"
	"net/http"
	"time"
)

// Limits that defend the listeners against clients that hold resources.
const (
	// maxHeaderCount bounds the header lines of a request (Envoy's
	// default); more are answered 431. maxHeaderBytes bounds their size.
	maxHeaderCount = 100
	// maxRequestDuration bounds reading a request, body included, and
	// writing its response: Lattice's fixed 10-minute connection limit,
	// applied per request.
	maxRequestDuration = 10 * time.Minute
)

// limits are the listener timeouts in force; tests shorten them.
type limits struct {
	readHeader time.Duration
}

func newLimits(k testKnobs) limits {
	return limits{readHeader: cmp.Or(k.readHeaderTimeout, readHeaderTimeout)}
}

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
