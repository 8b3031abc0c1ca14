package proxy

// Config, and every limit and timeout of the proxy, in one place.

import (
	"crypto/tls"
	"io"
	"log/slog"
	"time"
	"trellis.dev/trellis/internal/peer"

	"trellis.dev/trellis/internal/proxy/accesslog"

	"cmp"

	"trellis.dev/trellis/internal/proxy/health"
)

// Config configures a Proxy.
type Config struct {
	// Cluster is the cluster this proxy runs in. Targets of any other
	// cluster are reached through a peer hop to that cluster's proxy.
	Cluster string
	// Peer carries requests for other clusters' targets to their proxies
	// (package peer); nil answers them 502 PeerUnavailable. The proxy
	// tells it the peers each snapshot publishes.
	Peer *peer.Client
	// BindAddress is the IP listeners bind on, such as "127.0.0.1"; empty
	// binds every interface. An edge network with addresses is served on
	// those instead (router.ListenerBinds).
	BindAddress string
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
	// AccessLog receives one JSON object per request, one per line, in the
	// shape of Lattice's access logs (package accesslog); nil turns access
	// logging off. It is written off the request path: when it falls
	// behind, entries are dropped and counted, never waited for.
	AccessLog io.Writer
	// AccessLogDir is where the access-log sinks that networks and
	// services name (ServiceNetwork.AccessLogs, Service.AccessLogs) are
	// written, sink NAME to AccessLogDir/NAME.log, each entry also going
	// to AccessLog; empty writes none.
	AccessLogDir string
	// AdminAddress is where ListenAdmin serves /metrics, /healthz and
	// /readyz, such as "127.0.0.1:9901".
	AdminAddress string
	// TargetMetrics exports trellis_target_health and trellis_target_ejected,
	// one series each per target. Off, only the per-group counts are
	// exported, so that the series grow with target groups, not targets.
	TargetMetrics bool
	// DisableFastPath serves HTTP listeners with net/http alone, without
	// the fast path for plain HTTP/1.1 forwarding (fast.go). It is a
	// switch for diagnosis: both paths behave the same, one is faster.
	DisableFastPath bool
	// RequestBodyIdleTimeout bounds the wait for the next bytes of a
	// request body from the client, as nginx's client_body_timeout: when
	// it runs out the request is answered 408 and its target connection
	// closed. Zero is DefaultIdleTimeout; negative is no limit but the
	// request's 10 minutes.
	RequestBodyIdleTimeout time.Duration
	// ResponseIdleTimeout bounds the wait for the next bytes of a target's
	// response body, as nginx's proxy_read_timeout: when it runs out the
	// response is cut off (ResponseAborted) and the target connection
	// closed. The wait for the response head is bounded apart (60 s, or
	// the rule's timeouts). Zero is DefaultIdleTimeout; negative is no
	// limit but the request's 10 minutes.
	ResponseIdleTimeout time.Duration
	// MaxRequestBodyBytes bounds a request body: a request that declares
	// a larger one is answered 413 before anything is forwarded, one that
	// sends more is cut off with 413. Zero is no limit.
	MaxRequestBodyBytes int64
	// TLSKeyExchange are the key exchange groups HTTPS listeners accept
	// (tls.Config.CurvePreferences: a set, chosen from in Go's order of
	// preference; ParseKeyExchange reads them). Empty is Go's default,
	// which prefers the hybrid post-quantum X25519MLKEM768 when a client
	// offers it.
	TLSKeyExchange []tls.CurveID

	test testKnobs
}

// DefaultIdleTimeout is the default of Config.RequestBodyIdleTimeout and
// Config.ResponseIdleTimeout: nginx's default client_body_timeout and
// proxy_read_timeout.
const DefaultIdleTimeout = 60 * time.Second

// Limits of the listeners' HTTP servers.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
	// removedPortDrain bounds how long requests in flight on a listener
	// whose bind left the config may take to finish before their
	// connections are closed.
	removedPortDrain = 30 * time.Second
)

// testKnobs are Config settings that only tests set, to run in
// milliseconds what takes seconds in production.
type testKnobs struct {
	// healthSecond is health.Config.Second.
	healthSecond time.Duration
	outlier      health.Outlier
	accessLog    accesslog.Options
	// readHeaderTimeout replaces readHeaderTimeout when non-zero.
	readHeaderTimeout time.Duration
	// clientCheck replaces clientCheckInterval when non-zero.
	clientCheck time.Duration
}

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

// limits are the listener timeouts and sizes in force; tests shorten them.
// A zero idle timeout is no limit.
type limits struct {
	readHeader             time.Duration
	bodyIdle, responseIdle time.Duration
	maxBody                int64
}

func newLimits(cfg Config) limits {
	idle := func(d time.Duration) time.Duration {
		switch {
		case d < 0:
			return 0
		case d == 0:
			return DefaultIdleTimeout
		}
		return d
	}
	return limits{
		readHeader:   cmp.Or(cfg.test.readHeaderTimeout, readHeaderTimeout),
		bodyIdle:     idle(cfg.RequestBodyIdleTimeout),
		responseIdle: idle(cfg.ResponseIdleTimeout),
		maxBody:      max(cfg.MaxRequestBodyBytes, 0),
	}
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

// clientCheckInterval is how often the fast path checks, while it waits for
// a target's response, that the client is still there (awaitResponse).
const clientCheckInterval = 2 * time.Second

// maxFastBody is the largest request body the fast path forwards. It sends
// a body before it reads the response, so a larger one, which a target may
// answer before reading, goes to net/http, which does both at once.
const maxFastBody = 64 << 10

// Buffer sizes of the fast path's connections, client and target side.
const (
	fastReadBuffer  = 8 << 10
	fastWriteBuffer = 8 << 10
)

// staleAfter is how long a connection to a target may sit idle before it is
// checked for a close by the target (a keep-alive timeout) when taken from
// the pool. Busier connections are taken as they are: a request that fails
// on one that went stale is retried on a fresh connection when it can be.
const staleAfter = time.Second

// Limits of request mirroring.
const (
	// maxMirrorsInFlight bounds the mirrored requests in flight across the
	// proxy; a mirror beyond it is dropped rather than queued, so that
	// mirroring never holds up or piles onto the main traffic.
	maxMirrorsInFlight = 256
	// mirrorTimeout bounds one mirrored request, response included.
	mirrorTimeout = 30 * time.Second
)

// maxReplayBody bounds the request body the proxy buffers so that it can
// send it more than once: again on a retry, or to a mirror as well. A
// request with a larger body is forwarded as a stream, once: it is not
// retried and not mirrored.
const maxReplayBody = 64 << 10

// maxDrain bounds how much of a discarded response (a retried attempt's, a
// mirror's) is read so that its connection can be reused.
const maxDrain = 64 << 10

// maxConcurrentStreams is the listeners' HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS,
// nginx's http2_max_concurrent_streams.
const maxConcurrentStreams = 128

// rapidResets is how many streams of one HTTP/2 connection its client may
// reset (cancel before their response ended) while it has more reset
// streams than completed ones; one more closes the connection. A client
// that cancels now and then (a browser leaving a page, gRPC deadlines)
// completes far more streams than it resets and is never cut.
const rapidResets = 100

// Limits of TLS passthrough connections.
const (
	// helloTimeout bounds how long a client may take to send its
	// ClientHello before its connection is closed.
	helloTimeout = 10 * time.Second
	// passthroughDialTimeout bounds connecting to the chosen target.
	passthroughDialTimeout = 5 * time.Second
)
