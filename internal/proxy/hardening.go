package proxy

import (
	"context"
	"net"
	"net/http"

	"trellis.dev/trellis/internal/peer"
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

// newHTTP2Server returns the server of the fast path's HTTP/2 connections,
// with the limits harden gives net/http's: the time to the first request's
// headers (handshake and preface included), the idle time, each request
// and its response at most maxRequestDuration (a stream past it is reset),
// and net/http's concurrent streams and header list size (maxHeaderBytes
// and 32 bytes a field for 10 fields, as net/http adds). The server itself
// bounds resets, control frames, CONTINUATION and windows; rapid resets
// also cut the connection through streamStats, as on net/http's.
func (p *Proxy) newHTTP2Server(h http.Handler, connContext func(context.Context, net.Conn) context.Context) *peer.HTTPServer {
	return peer.NewHTTPServerConfig(h, p.log, peer.HTTPServerConfig{
		ConnContext:          connContext,
		MaxConcurrentStreams: maxConcurrentStreams,
		MaxHeaderListSize:    maxHeaderBytes + 10*32,
		ReadHeaderTimeout:    p.limits.readHeader,
		IdleTimeout:          idleTimeout,
		StreamTimeout:        maxRequestDuration,
	})
}

// headerLines counts the header lines of a request.
func headerLines(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}
