// Package accesslog writes the proxy's access log: one JSON object per
// request, with the field names of Amazon VPC Lattice's access logs where
// they carry over, and "-" for a value that does not apply.
//
// It owns the entry format and the writing, which happens off the request
// path: Log hands the entry to a bounded queue and returns at once, one
// goroutine encodes entries into a buffered writer that it flushes
// periodically, and when the queue is full the entry is dropped and counted.
// A slow or stuck destination therefore never stalls traffic. It must not
// know about routing or HTTP handling: package proxy fills in the Entry.
package accesslog

import (
	"bufio"
	"cmp"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Entry is one request. Empty strings are written as "-".
type Entry struct {
	// StartTime is when the proxy received the request.
	StartTime time.Time
	// Duration is the whole exchange, from receiving the request to the
	// last byte of the response.
	Duration time.Duration
	// RequestToTarget is from sending the request to the target until the
	// target's response headers arrived; ResponseFromTarget from then until
	// the response was fully relayed. Both are zero when nothing was
	// forwarded.
	RequestToTarget, ResponseFromTarget time.Duration

	ServiceNetwork, Service, TargetGroup string
	ListenerPort                         int32
	// SourceCluster is the cluster of the proxy that received the request
	// from its client, DestinationCluster that of the target. A request a
	// peer handed over is logged by the receiving proxy too, with the same
	// two clusters.
	SourceCluster, DestinationCluster string
	// SourceIPPort is the client's address, TargetIPPort the target's.
	SourceIPPort, TargetIPPort string
	// Destination is the address the client connected to. It is formatted
	// by the writer, off the request path.
	Destination net.Addr

	Method, Path, Protocol string
	ResponseCode           int
	// BytesReceived counts the request body bytes read from the client,
	// BytesSent the response body bytes written to it.
	BytesReceived, BytesSent int64
	UserAgent, Host          string
	// FailureReason says why the proxy answered itself rather than a
	// target, such as NoMatchingRoute; empty when a target answered.
	FailureReason FailureReason
	// AuthDeniedReason is the level whose auth policy refused the request:
	// "Network" or "Service"; empty when auth let it through.
	AuthDeniedReason string
	RequestID        string
}

// FailureReason says why the proxy answered a request itself, or why the
// exchange with the target failed. The names follow Lattice's where it has
// one.
type FailureReason string

// Failure reasons.
const (
	// NoMatchingRoute: no route matched the request (404).
	NoMatchingRoute FailureReason = "NoMatchingRoute"
	// InvalidBackend: the backend picked has no weight, an invalid
	// reference or a missing target group (500).
	InvalidBackend FailureReason = "InvalidBackend"
	// NoTarget: the target group has no target to send to (503).
	NoTarget FailureReason = "NoTarget"
	// TargetConnectionError: the target could not be reached or failed
	// before it answered (502).
	TargetConnectionError FailureReason = "TargetConnectionError"
	// TargetTimeout: the target did not answer in time (504 when a rule's
	// timeout ran out, else 502).
	TargetTimeout FailureReason = "TargetTimeout"
	// PeerUnavailable: the target is in another cluster and the peer hop to
	// its proxy is not available (502).
	PeerUnavailable FailureReason = "PeerUnavailable"
	// PeerNotDeliverable: a peer handed over a request for a target that
	// is not this cluster's in the group it named (403, on the receiving
	// proxy).
	PeerNotDeliverable FailureReason = "PeerNotDeliverable"
	// ResponseAborted: the response was cut off midway.
	ResponseAborted FailureReason = "ResponseAborted"
	// HeaderCountExceeded: too many header lines (431).
	HeaderCountExceeded FailureReason = "HeaderCountExceeded"
	// ClientClosedRequest: the client went away before the response, or
	// cut its request body short (499).
	ClientClosedRequest FailureReason = "ClientClosedRequest"
	// MalformedRequest: the request's head is not well formed, such as an
	// HTTP/2 :path with a space (400).
	MalformedRequest FailureReason = "MalformedRequest"
	// RequestBodyTimeout: the client sent nothing of its request body for
	// the body idle timeout (408).
	RequestBodyTimeout FailureReason = "RequestBodyTimeout"
	// RequestBodyTooLarge: the request body is larger than the proxy takes
	// (413).
	RequestBodyTooLarge FailureReason = "RequestBodyTooLarge"
	// MalformedRequestBody: the client's request body was malformed, such
	// as a broken chunked encoding (400).
	MalformedRequestBody FailureReason = "MalformedRequestBody"
	// MisdirectedRequest: the Host is not served on the TLS connection's
	// server name (421).
	MisdirectedRequest FailureReason = "MisdirectedRequest"
	// ClientAccessDenied: an auth policy refused the request (403).
	ClientAccessDenied FailureReason = "ClientAccessDenied"
)

// Defaults of Options.
const (
	DefaultQueue         = 4096
	DefaultFlushInterval = time.Second
	bufferSize           = 64 << 10
)

// Options tune a Logger. Zero fields take the defaults.
type Options struct {
	// Queue is how many entries may wait for the writer before Log drops.
	Queue int
	// FlushInterval is how often buffered entries are written out.
	FlushInterval time.Duration
	// Logger receives write errors; nil discards them.
	Logger *slog.Logger
}

// Logger writes entries to an io.Writer from a goroutine of its own. It is
// safe for concurrent use.
type Logger struct {
	queue       chan Entry
	out         io.Writer
	w           *bufio.Writer
	flushEvery  time.Duration
	log         *slog.Logger
	dropped     atomic.Uint64
	writeErrors atomic.Uint64
	closed      atomic.Bool
	stopOnce    sync.Once
	stop, done  chan struct{}
}

// New starts a logger writing to out.
func New(out io.Writer, opts Options) *Logger {
	l := &Logger{
		queue:      make(chan Entry, cmp.Or(opts.Queue, DefaultQueue)),
		out:        out,
		w:          bufio.NewWriterSize(out, bufferSize),
		flushEvery: cmp.Or(opts.FlushInterval, DefaultFlushInterval),
		log:        opts.Logger,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	go l.run()
	return l
}

// Log queues e for writing and returns at once. If the queue is full, or
// the logger is closed, e is dropped and counted.
func (l *Logger) Log(e *Entry) {
	if l.closed.Load() {
		l.dropped.Add(1)
		return
	}
	select {
	case l.queue <- *e:
	default:
		l.dropped.Add(1)
	}
}

// Dropped returns how many entries were dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// WriteErrors returns how many writes to the destination failed; the
// entries buffered at the time are lost.
func (l *Logger) WriteErrors() uint64 { return l.writeErrors.Load() }

// Close writes out every queued entry and stops the writer. If ctx ends
// first (the destination is stuck), it returns the context's error and the
// writer goroutine exits once its write returns.
func (l *Logger) Close(ctx context.Context) error {
	l.closed.Store(true)
	l.stopOnce.Do(func() { close(l.stop) })
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Logger) run() {
	defer close(l.done)
	tick := time.NewTicker(l.flushEvery)
	defer tick.Stop()
	buf := make([]byte, 0, 1024)
	for {
		select {
		case e := <-l.queue:
			buf = l.write(buf, &e)
		case <-tick.C:
			l.flush()
		case <-l.stop:
			for {
				select {
				case e := <-l.queue:
					buf = l.write(buf, &e)
				default:
					l.flush()
					return
				}
			}
		}
	}
}

// write appends e's line to the buffer. A line that does not fit flushes
// the buffer first, so that every write reaching out ends at the end of a
// line: a reader of the file (a test, a log shipper) never sees half a line
// that is only finished by a later write.
func (l *Logger) write(buf []byte, e *Entry) []byte {
	buf = AppendJSON(buf[:0], e)
	if len(buf) > l.w.Available() && l.w.Buffered() > 0 {
		l.flush()
	}
	if _, err := l.w.Write(buf); err != nil {
		l.failed(err)
	}
	return buf
}

func (l *Logger) flush() {
	if l.w.Buffered() == 0 {
		return
	}
	if err := l.w.Flush(); err != nil {
		l.failed(err)
	}
}

// failed counts a write error and starts over with an empty buffer, so that
// one error does not stop logging for good (bufio's errors are sticky).
func (l *Logger) failed(err error) {
	if l.writeErrors.Add(1) == 1 {
		l.log.Error("access log write failed; later failures are only counted", "err", err)
	}
	l.w.Reset(l.out)
}

// AppendJSON appends e as one line of JSON, newline included. The fields
// come in the order of a Lattice access log entry, ARNs replaced by names.
func AppendJSON(b []byte, e *Entry) []byte {
	b = append(b, '{')
	b = appendString(b, "serviceNetwork", e.ServiceNetwork, false)
	b = appendString(b, "resolvedUser", "", true)
	b = appendString(b, "listenerType", "HTTP", true)
	b = appendInt(b, "listenerPort", int64(e.ListenerPort))
	b = appendString(b, "authDeniedReason", e.AuthDeniedReason, true)
	b = appendString(b, "targetGroup", e.TargetGroup, true)
	b = appendString(b, "sourceCluster", e.SourceCluster, true)
	b = appendString(b, "destinationCluster", e.DestinationCluster, true)
	b = appendString(b, "sourceIpPort", e.SourceIPPort, true)
	b = appendString(b, "destinationIpPort", addrString(e.Destination), true)
	b = appendString(b, "targetIpPort", e.TargetIPPort, true)
	b = appendString(b, "failureReason", string(e.FailureReason), true)
	b = appendString(b, "service", e.Service, true)
	b = appendString(b, "startTime", e.StartTime.UTC().Format("2006-01-02T15:04:05.000Z"), true)
	b = appendString(b, "requestMethod", e.Method, true)
	b = appendString(b, "requestPath", e.Path, true)
	b = appendString(b, "protocol", e.Protocol, true)
	b = appendInt(b, "responseCode", int64(e.ResponseCode))
	b = appendInt(b, "bytesReceived", e.BytesReceived)
	b = appendInt(b, "bytesSent", e.BytesSent)
	b = appendMillis(b, "duration", e.Duration)
	b = appendString(b, "userAgent", e.UserAgent, true)
	b = appendString(b, "hostHeader", e.Host, true)
	b = appendString(b, "serverNameIndication", "", true)
	b = appendMillis(b, "requestToTargetDuration", e.RequestToTarget)
	b = appendMillis(b, "responseFromTargetDuration", e.ResponseFromTarget)
	b = appendString(b, "sslCipher", "", true)
	b = appendString(b, "tlsVersion", "", true)
	b = appendString(b, "callerPrincipal", "", true)
	b = appendString(b, "callerX509IssuerOU", "", true)
	b = appendString(b, "callerX509SubjectCN", "", true)
	b = appendString(b, "callerX509SANDNS", "", true)
	b = appendString(b, "callerX509SANURI", "", true)
	b = appendString(b, "requestId", e.RequestID, true)
	b = appendString(b, "grpcResponseCode", "", true)
	return append(b, '}', '\n')
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func appendKey(b []byte, key string, comma bool) []byte {
	if comma {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendString(b []byte, key, v string, comma bool) []byte {
	b = appendKey(b, key, comma)
	if v == "" {
		return append(b, `"-"`...)
	}
	return appendQuoted(b, v)
}

func appendInt(b []byte, key string, v int64) []byte {
	return strconv.AppendInt(appendKey(b, key, true), v, 10)
}

// appendMillis writes d in milliseconds, to the microsecond.
func appendMillis(b []byte, key string, d time.Duration) []byte {
	return strconv.AppendFloat(appendKey(b, key, true), float64(d.Microseconds())/1000, 'f', -1, 64)
}

const hex = "0123456789abcdef"

// appendQuoted appends s as a JSON string. Control characters are escaped
// and invalid UTF-8 becomes U+FFFD, so that any header a client sends
// yields valid JSON on one line.
func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
