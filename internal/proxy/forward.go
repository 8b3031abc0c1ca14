package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"syscall"
	"time"

	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
)

// The forwarding step: what both request paths do once a rule has chosen a
// backend and a target. forwardStep decides whether the target is reached
// at all (reachable: this proxy dials it, or the peer hop to its cluster's
// proxy carries the request, upstream.RoundTrip deciding which); forwardFailure maps a failed exchange to the
// status the client gets and the reason the access log records. The fast
// path (fast.go) and the net/http path (route.go, the reverse proxy's
// ErrorHandler) call them alike, so they answer alike.

// forwardStep is the step both request paths take for backend b and target
// t (nil when b's group has none to offer). It returns 0 when the caller
// forwards to t itself, recording t in x, or else the status to answer
// with, its reason recorded in x: 500 InvalidBackend when b has no target
// group (no weight, an invalid reference, a missing group: the Gateway API
// asks for 500), 503 NoTarget, 502 PeerUnavailable for a target of another
// cluster whose proxies this one cannot reach (see peerhop.go).
func (p *Proxy) forwardStep(x *exchange, b *router.Backend, t *router.Target, host, path string) int {
	switch {
	case b == nil || b.Group() == nil:
		x.failure = accesslog.InvalidBackend
		return http.StatusInternalServerError
	case t == nil:
		x.failure = accesslog.NoTarget
		return http.StatusServiceUnavailable
	}
	x.target = t
	if !p.reachable(t) {
		p.peerUnavailable(t, "host", host, "path", path)
		x.failure = accesslog.PeerUnavailable
		return http.StatusBadGateway
	}
	return 0
}

// A client that resets an HTTP/2 stream cancels its request's context:
// clientGone says so.

// forwardFailure maps an exchange with a target that failed with err to
// the status the client gets and the access log's reason. The client's
// faults first: a request body that failed to arrive (clientBodyError, see
// failure); 499 ClientClosedRequest when the client went away first. Then
// the target's (targetFault): 504 TargetTimeout when one of the rule's
// timeouts ran out (ruleExpired); 502 PeerUnavailable when the peer hop
// reached no target (hopUnsent); 502 TargetTimeout for another timeout
// (dialing, the wait for the response head); else 502
// TargetConnectionError.
func forwardFailure(err error, ruleExpired, clientGone bool) (int, accesslog.FailureReason) {
	var body *clientBodyError
	switch {
	case errors.As(err, &body):
		return body.failure(clientGone)
	case clientGone:
		return statusClientClosed, accesslog.ClientClosedRequest
	case ruleExpired:
		return http.StatusGatewayTimeout, accesslog.TargetTimeout
	case unsentByHop(err):
		return http.StatusBadGateway, accesslog.PeerUnavailable
	case isTimeout(err):
		return http.StatusBadGateway, accesslog.TargetTimeout
	}
	return http.StatusBadGateway, accesslog.TargetConnectionError
}

// targetFault reports whether a failure with reason is the target's, one
// that counts against its health (outlier ejection). A client's fault never
// does: a malformed or cut-short body says nothing about the target.
func targetFault(reason accesslog.FailureReason) bool {
	return reason == accesslog.TargetConnectionError || reason == accesslog.TargetTimeout
}

// clientBodyError is the error of reading a request body from the client:
// the body was malformed or cut short, or the client went away. Both paths
// mark the failure as the client's with it, the net/http path where the
// body is read (countingBody), the fast path where it copies the body.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// failure is the status and reason of a request whose body failed: 413
// RequestBodyTooLarge past Config.MaxRequestBodyBytes; 499
// ClientClosedRequest when the client went away or cut the body short; 408
// RequestBodyTimeout when the body idle timeout ran out; else, the body
// being malformed (a broken chunked encoding), 400 MalformedRequestBody.
func (e *clientBodyError) failure(clientGone bool) (int, accesslog.FailureReason) {
	var tooLarge *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(e.err, &tooLarge):
		return http.StatusRequestEntityTooLarge, accesslog.RequestBodyTooLarge
	case isTimeout(e.err):
		// Before clientGone: net/http cancels the request's context when
		// its read times out.
		return http.StatusRequestTimeout, accesslog.RequestBodyTimeout
	case clientGone:
		return statusClientClosed, accesslog.ClientClosedRequest
	case errors.Is(e.err, io.ErrUnexpectedEOF) || errors.Is(e.err, io.EOF) || errors.As(e.err, &ne) ||
		errors.Is(e.err, syscall.ECONNRESET):
		return statusClientClosed, accesslog.ClientClosedRequest
	}
	return http.StatusBadRequest, accesslog.MalformedRequestBody
}

// statusClientClosed is the code recorded for a request whose client
// closed its connection before the response started, as nginx logs it.
const statusClientClosed = 499

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

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
	// direct, when set, serves the requests it can without the reverse
	// proxy (deliveries: deliverDirect).
	direct func(http.ResponseWriter, *http.Request, *router.Target) bool
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

// forward sends r to t, a target of this proxy's cluster, and writes the
// response to w.
func (f *localForwarder) forward(w http.ResponseWriter, r *http.Request, t *router.Target) {
	if f.direct != nil && f.direct(w, r, t) {
		return
	}
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

// upstreamError answers a request whose exchange with the target failed
// before a response, as forwardFailure says.
func (f *localForwarder) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	t := r.Context().Value(targetKey{}).(*router.Target)
	ctx := r.Context()
	x := exchangeOf(r)
	if x != nil {
		if ce := x.body.failed.Load(); ce != nil {
			// The body failed first; the transport may report the
			// context the failure cancelled instead.
			err = ce
		}
	}
	ruleExpired := errors.Is(err, errBackendTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(ctx.Err(), context.DeadlineExceeded)
	code, reason := forwardFailure(err, ruleExpired, errors.Is(ctx.Err(), context.Canceled))
	level := slog.LevelWarn
	if code == statusClientClosed {
		// The client went away; nobody sees this response.
		level = slog.LevelDebug
	}
	if x != nil {
		x.failure = reason
	}
	f.log.Log(ctx, level, "upstream request failed", "target", t.Addr, "host", r.Host, "path", r.URL.Path, "err", err)
	w.WriteHeader(code)
}

// newDeliveryForwarder returns the forwarder of requests peers hand over:
// like the local forwarder, but the request's forwarding and identity
// headers are the sending proxy's (set there by the same rules, then the
// identity by deliver), so they pass as they came.
func newDeliveryForwarder(transport http.RoundTripper, log *slog.Logger) *localForwarder {
	f := newLocalForwarder(transport, log)
	f.rp.Rewrite = func(pr *httputil.ProxyRequest) {
		t := pr.In.Context().Value(targetKey{}).(*router.Target)
		pr.Out.URL.Scheme = targetScheme(t)
		pr.Out.URL.Host = t.Addr
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v, ok := pr.In.Header[k]; ok {
				pr.Out.Header[k] = v
			}
		}
	}
	return f
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

// get and put are Get and Put for callers that keep the pointer: put
// stores it again rather than a new one (an allocation per Put).
func (b *bufferPool) get() *[]byte {
	if buf, ok := b.pool.Get().(*[]byte); ok {
		return buf
	}
	buf := make([]byte, copyBufferSize)
	return &buf
}

func (b *bufferPool) put(buf *[]byte) { b.pool.Put(buf) }

// errResponseIdle is the cause of a response cut off because the target
// sent nothing of its body for the response idle timeout.
var errResponseIdle = errors.New("target response idle timeout")

// idleResponses bounds the wait for each read of a response body from a
// target by idle (Config.ResponseIdleTimeout) on the net/http path: when it
// runs out, the attempt's context is cancelled, which closes the target
// connection and cuts the response off. Upgraded connections, idle by
// nature, are not bounded.
type idleResponses struct {
	base http.RoundTripper
	idle time.Duration
}

func (t idleResponses) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.idle <= 0 || req.Header.Get("Upgrade") != "" {
		return t.base.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = newIdleBody(resp.Body, t.idle, cancel)
	return resp, nil
}

// newIdleBody bounds each read of body by idle: past it, cancel is called
// with errResponseIdle (and once more, with nil, when the body is closed).
func newIdleBody(body io.ReadCloser, idle time.Duration, cancel context.CancelCauseFunc) *idleBody {
	b := &idleBody{ReadCloser: body, idle: idle, cancel: cancel}
	b.timer = time.AfterFunc(idle, func() { cancel(errResponseIdle) })
	b.timer.Stop()
	return b
}

// idleBody is a response body whose reads each must return within idle.
type idleBody struct {
	io.ReadCloser
	idle   time.Duration
	timer  *time.Timer
	cancel context.CancelCauseFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.ReadCloser.Read(p)
	b.timer.Stop()
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}
