package proxy

// HTTP/2 requests of this proxy's own clients (over TLS or h2c) to an
// HTTP/1.1 target, sent on the handler's goroutine over the fast path's
// pooled target connections (sendDirect), as the peer hop's deliveries
// are, instead of through the reverse proxy and http.Transport, whose
// request clone and connection goroutines (a write loop and a read loop,
// two hand-offs per request) cost about a quarter of the proxy's CPU per
// HTTP/2 request (docs/benchmarks.md, "HTTPS, HTTP/2 and gRPC"). The
// target gets the fields the reverse proxy would send, field for field
// (TestHTTP2DirectAgreesWithReverseProxy).

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"trellis.dev/trellis/internal/proxy/router"
)

// forwardDirect serves r, an HTTP/2 request for t, a target of this
// proxy's cluster, if it can; it reports false, having done nothing, when
// the reverse proxy must: HTTP/1 requests (net/http serves only those the
// fast path gave up, upgrades among them), requests with an attempt plan
// (retries, a backend timeout, other clusters' targets: retryingTransport),
// request trailers, and whatever sendDirect does not take.
func (p *Proxy) forwardDirect(w http.ResponseWriter, r *http.Request, t *router.Target) bool {
	if r.ProtoMajor != 2 || r.Trailer != nil || r.Context().Value(planKey{}) != nil {
		return false
	}
	x := exchangeOf(r)
	if x == nil {
		return false
	}
	// The client's fields go to the target from r.Header as they are,
	// less the forwarding ones, which go out made anew (writeForwarded):
	// no copy of the header.
	return p.sendDirect(w, r, t, x)
}

// directFailed answers a request forwardDirect got no response for, as the
// local forwarder's transport (observeAttempts: the target's faults count
// against its health) and error handler (upstreamError) do.
func (p *Proxy) directFailed(w http.ResponseWriter, r *http.Request, t *router.Target, err error) {
	if d, ok := r.Context().Deadline(); ok && isTimeout(err) && !time.Now().Before(d) {
		// The target connection's deadline is the request's: it can
		// fire before the context's own timer has ended the context,
		// and it is the rule's timeout all the same (504, as the fast
		// path's own forwarding decides).
		err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	if _, reason := forwardFailure(err, false, errors.Is(r.Context().Err(), context.Canceled)); targetFault(reason) {
		t.Health.Observe(false)
	}
	p.local.upstreamError(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)), err)
}

// connLines are the header lines addConnFields makes for the requests of
// one HTTP/2 connection (its scheme, its listener's port, its client's
// identity), made with the workload identities of sv.
type connLines struct {
	sv    *served
	lines string
}

// connFields returns the lines addConnFields writes for r, a request of s's
// connection recorded in x, as the fast path keeps them per connection
// (setFixedFields): made again only when the proxy's identities changed (a
// pod's identity may be published after its first connection). Every
// request of a connection has the same scheme, listener port and client
// address.
func (s *streamStats) connFields(r *http.Request, x *exchange) string {
	if c := s.lines.Load(); c != nil && c.sv == x.served {
		return c.lines
	}
	var b strings.Builder
	addConnFieldsOf((*textFields)(&b), r, x)
	s.lines.Store(&connLines{sv: x.served, lines: b.String()})
	return b.String()
}
