package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"trellis.dev/trellis/internal/proxy/router"
)

// forwarder sends a request to one target and writes the response. It is the
// seam between routing and transport: localForwarder dials targets in this
// proxy's own network, and a target in another cluster's network goes to the
// peer forwarder, which will carry the request over the mTLS tunnel to that
// cluster's proxy.
type forwarder interface {
	forward(w http.ResponseWriter, r *http.Request, t *router.Target)
}

// Limits of the connections to targets.
const (
	dialTimeout           = 5 * time.Second
	dialKeepAlive         = 30 * time.Second
	maxIdleConnsPerHost   = 256
	idleConnTimeout       = 90 * time.Second
	responseHeaderTimeout = 60 * time.Second
	expectContinueTimeout = 1 * time.Second
	copyBufferSize        = 32 << 10
)

// newTransport returns the transport shared by every request to a local
// target. It ignores proxy environment variables and never asks for or
// decodes compression, so that responses pass through as the target sent
// them.
func newTransport() *http.Transport {
	return &http.Transport{
		DialContext:            (&net.Dialer{Timeout: dialTimeout, KeepAlive: dialKeepAlive}).DialContext,
		MaxIdleConnsPerHost:    maxIdleConnsPerHost,
		IdleConnTimeout:        idleConnTimeout,
		ResponseHeaderTimeout:  responseHeaderTimeout,
		ExpectContinueTimeout:  expectContinueTimeout,
		MaxResponseHeaderBytes: maxHeaderBytes,
		DisableCompression:     true,
	}
}

// localForwarder forwards to targets this proxy can dial directly, over
// HTTP/1.1.
type localForwarder struct {
	rp  *httputil.ReverseProxy
	log *slog.Logger
}

// targetKey is the request context key under which forward hands the
// chosen target to the reverse proxy's Rewrite.
type targetKey struct{}

func newLocalForwarder(transport http.RoundTripper, log *slog.Logger) *localForwarder {
	f := &localForwarder{log: log}
	f.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    retryingTransport{base: transport},
		BufferPool:   &bufferPool{},
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: f.upstreamError,
	}
	return f
}

func (f *localForwarder) forward(w http.ResponseWriter, r *http.Request, t *router.Target) {
	f.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)))
}

// rewrite points the outbound request at the chosen target. It keeps the
// Host header the client sent and sets the forwarding and identity headers
// (setForwardedHeaders), replacing any the client forged.
func rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(*router.Target)
	pr.Out.URL.Scheme = targetScheme(t)
	pr.Out.URL.Host = t.Addr
	setForwardedHeaders(pr.In, pr.Out.Header, exchangeOf(pr.In))
}

// upstreamError answers 502 when the target cannot be reached or fails
// before sending a response, and 504 when a timeout of the rule ran out.
func (f *localForwarder) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	t := r.Context().Value(targetKey{}).(*router.Target)
	level := slog.LevelWarn
	if r.Context().Err() != nil {
		// The client went away; nobody sees this response.
		level = slog.LevelDebug
	}
	f.log.Log(r.Context(), level, "upstream request failed", "target", t.Addr, "host", r.Host, "path", r.URL.Path, "err", err)
	w.WriteHeader(upstreamStatus(r, err))
}

// peerHop stands in for the peer tunnel to other clusters' proxies, which is
// not built yet: it answers 502 and says why in the log.
type peerHop struct {
	log *slog.Logger
}

func (h peerHop) forward(w http.ResponseWriter, r *http.Request, t *router.Target) {
	h.log.Error("peer hop to cluster "+t.Cluster+" not implemented", "cluster", t.Cluster, "target", t.Addr, "host", r.Host, "path", r.URL.Path)
	w.WriteHeader(http.StatusBadGateway)
}

// bufferPool recycles the reverse proxy's body copy buffers.
type bufferPool struct {
	pool sync.Pool
}

func (b *bufferPool) Get() []byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return *buf
	}
	return make([]byte, copyBufferSize)
}

func (b *bufferPool) Put(buf []byte) {
	b.pool.Put(&buf)
}
