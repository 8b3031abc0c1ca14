package proxy

import (
	"context"
	"net/http"
	"time"

	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/router"
)

// serveRoute serves r with the route it matched on the listener at port:
// the auth policies of its service and network, the rule's filters, then its fixed response or a backend pick (by session
// when the rule has one), the backend's filters, and the forward with the
// rule's timeouts and retries.
func (p *Proxy) serveRoute(port int32, w http.ResponseWriter, r *http.Request, route *router.Rule) {
	if !p.authorize(w, r, route, port) {
		return
	}
	ctx := r.Context()
	if route.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, route.RequestTimeout)
		defer cancel()
	}
	// A shallow copy of our own when filters change its Host or URL, which
	// the caller's request keeps as the client sent them.
	if ctx != r.Context() || editsRequest(route) {
		r = r.WithContext(ctx)
		u := *r.URL
		r.URL = &u
	}

	var body *replayBody
	if route.Retry != nil || hasMirror(route) {
		body = bufferBody(r)
	}
	// The editor lives in the exchange, which serveHTTP's begin made for
	// this request: one allocation less per request.
	x := exchangeOf(r)
	x.editor = responseEditor{ResponseWriter: w}
	rw := &x.editor
	if p.applyFilters(rw, r, route, route.Filters, port, body) {
		return
	}
	if route.Status != 0 {
		rw.WriteHeader(route.Status)
		return
	}
	b, t, token := p.pick(r, route)
	if b == nil || b.Group() == nil {
		rw.WriteHeader(p.forwardStep(x, b, nil, r.Host, r.URL.Path))
		return
	}
	if p.applyFilters(rw, r, route, b.Filters, port, body) {
		return
	}
	if code := p.forwardStep(x, b, t, r.Host, r.URL.Path); code != 0 {
		rw.WriteHeader(code)
		return
	}
	if token != "" {
		rw.session, rw.token = route.Session, token
	}
	if r.Context().Err() == context.Canceled {
		// The client went away (an HTTP/2 stream reset) before anything
		// was sent: nothing goes to the target.
		x.failure = accesslog.ClientClosedRequest
		rw.WriteHeader(statusClientClosed)
		return
	}
	if route.Retry != nil || route.BackendTimeout > 0 || !b.Group().OnlyIn(p.cluster) {
		// A group with other clusters' targets may need another pick when
		// the peer hop reaches no target (see retryingTransport).
		r = r.WithContext(context.WithValue(r.Context(), planKey{}, &attemptPlan{
			group: b.Group(), retry: route.Retry, backendTimeout: route.BackendTimeout, body: body,
		}))
	}
	p.local.forward(rw, r, t)
}

// pick chooses the backend and target of r: the session's, when r names a
// live one, else by weight and round robin. token is the session token to
// hand the client when a new session starts, or "".
func (p *Proxy) pick(r *http.Request, route *router.Rule) (b *router.Backend, t *router.Target, token string) {
	s := route.Session
	if s != nil {
		if v := sessionValue(r, s); v != "" {
			if b, t := s.Lookup(v, time.Now()); t != nil {
				return b, t, ""
			}
		}
	}
	if b = route.Pick(); b == nil || b.Group() == nil {
		return b, nil, ""
	}
	t = b.Group().Pick()
	if s != nil && t != nil {
		token = s.Token(t, time.Now())
	}
	return b, t, token
}

// applyFilters runs filters on r in order. It reports true when a filter
// answered the request (a redirect or a CORS preflight). Response edits and
// CORS headers are recorded on rw, which applies them when the response's
// header is written.
func (p *Proxy) applyFilters(rw *responseEditor, r *http.Request, route *router.Rule, filters []router.Filter, port int32, body *replayBody) bool {
	for i := range filters {
		f := &filters[i]
		switch {
		case f.RequestHeaders != nil:
			f.RequestHeaders.Apply(r.Header, &r.Host)
		case f.ResponseHeaders != nil:
			rw.edits = append(rw.edits, f.ResponseHeaders)
		case f.Rewrite != nil:
			f.Rewrite.Apply(r, route.MatchedPrefix)
		case f.Redirect != nil:
			rw.Header().Set("Location", f.Redirect.Location(r, route.MatchedPrefix, port))
			rw.WriteHeader(f.Redirect.Code)
			return true
		case f.Mirror != nil:
			if f.Mirror.Group != nil && f.Mirror.Sample() {
				p.mirror(r, body, f.Mirror.Group)
			}
		case f.CORS != nil:
			if router.IsPreflight(r) {
				f.CORS.Preflight(r, rw.Header())
				rw.WriteHeader(http.StatusOK)
				return true
			}
			rw.cors, rw.corsRequest = f.CORS, r
		}
	}
	return false
}

// editsRequest reports whether any filter of route or its backends
// changes the request's Host or URL (header edits and rewrites).
func editsRequest(route *router.Rule) bool {
	edits := func(filters []router.Filter) bool {
		for i := range filters {
			if filters[i].RequestHeaders != nil || filters[i].Rewrite != nil {
				return true
			}
		}
		return false
	}
	if edits(route.Filters) {
		return true
	}
	for _, b := range route.Backends() {
		if edits(b.Filters) {
			return true
		}
	}
	return false
}

// hasMirror reports whether any filter of route or its backends mirrors,
// in which case the request body is buffered so that the copy gets it too.
func hasMirror(route *router.Rule) bool {
	for i := range route.Filters {
		if route.Filters[i].Mirror != nil {
			return true
		}
	}
	for _, b := range route.Backends() {
		for i := range b.Filters {
			if b.Filters[i].Mirror != nil {
				return true
			}
		}
	}
	return false
}

// responseEditor applies a route's response edits, CORS headers and
// session token to the response header just before it is written,
// whichever part of the proxy writes it.
type responseEditor struct {
	http.ResponseWriter
	edits       []*router.HeaderEdit
	cors        *router.CORS
	corsRequest *http.Request
	session     *router.Session
	token       string
	wrote       bool
}

func (rw *responseEditor) WriteHeader(code int) {
	if !rw.wrote && code >= 200 {
		rw.wrote = true
		// Header only when there is something to edit: the HTTP/2
		// server's writer makes its map on the first call, which a
		// response relayed as fields (peer.ResponseFields) never needs.
		if rw.cors != nil || rw.token != "" || len(rw.edits) > 0 {
			h := rw.Header()
			if rw.cors != nil {
				rw.cors.Actual(rw.corsRequest, h)
			}
			if rw.token != "" {
				setSession(h, rw.session, rw.token)
			}
			for _, e := range rw.edits {
				e.Apply(h, nil)
			}
		}
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *responseEditor) Write(b []byte) (int, error) {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	return rw.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the flusher and hijacker
// underneath, which the reverse proxy uses for streaming and upgrades.
func (rw *responseEditor) Unwrap() http.ResponseWriter { return rw.ResponseWriter }
