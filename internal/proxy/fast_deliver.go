package proxy

// The peer hop's delivery on the handler's own goroutine: a request a peer
// handed over without a body or with one of at most maxFastBody bytes of
// known length, for an HTTP/1.1 target without TLS, goes to
// the target over the fast path's pooled connections (pool.go) instead of
// through the reverse proxy and http.Transport, whose connection
// goroutines cost two hand-offs per request (with the reverse proxy, ~45 µs
// of CPU: docs/benchmarks.md). It sends and relays what the reverse proxy
// would, field for field (TestFastPathPeerHopAgreesWithNetHTTP); anything
// else takes the reverse proxy.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/peer"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/internal/proxy/router"
)

// deliverDirect serves r, a delivery for t, if it can; it reports false,
// having done nothing, when the reverse proxy must.
func (p *Proxy) deliverDirect(w http.ResponseWriter, r *http.Request, t *router.Target) bool {
	return p.sendDirect(w, r, t, nil)
}

// sendDirect sends r to t over the fast path's pooled target connections
// and relays the response, if it can (see deliverDirect); it reports false,
// having done nothing, when the reverse proxy must. x is the exchange of a
// request of this proxy's own clients (forwardDirect), nil for a delivery:
// with it the attempt is timed for the access log and a failure answered
// as the local forwarder answers it.
func (p *Proxy) sendDirect(w http.ResponseWriter, r *http.Request, t *router.Target, x *exchange) bool {
	// The request line and Host go out as they are: each must be what
	// http.Transport would accept (it refuses the rest, and so does the
	// reverse proxy then). The fields' names and values the HTTP/2 server
	// checked already.
	if !p.fast || r.ContentLength < 0 || r.ContentLength > maxFastBody || r.Header["Expect"] != nil ||
		r.Method == http.MethodConnect || targetScheme(t) != "http" ||
		!httpguts.ValidHeaderFieldName(r.Method) || !httpguts.ValidHostHeader(r.Host) || !plainRequestURI(r.URL.RequestURI()) {
		return false
	}
	if g := t.Group(); g != nil && (g.Version == model.HTTP2 || g.Version == model.GRPC) {
		return false
	}
	ctx := r.Context()
	sent := time.Now()
	tc, watch, err := p.deliveryRoundTrip(ctx, w, r, t, x)
	if x != nil {
		x.attemptAddr, x.sent, x.answered = t.Addr, sent, time.Now()
	}
	if err != nil {
		if x != nil {
			p.directFailed(w, r, t, err)
		} else {
			p.deliveryFailed(w, r, t, err)
		}
		return true
	}
	// The connection's own: its fields (in tc's read buffer) are valid
	// until the connection is read again or goes back to the pool.
	resp := &tc.resp
	t.Health.Observe(resp.Code < 500)
	cut := func(err error) {
		watch.stop()
		tc.conn.Close()
		p.log.Debug("response cut off", "target", t.Addr, "host", r.Host, "path", r.URL.Path, "err", err)
		// As the reverse proxy does: the peer's stream is reset.
		panic(http.ErrAbortHandler)
	}
	bodyless := h1.Bodyless(r.Method, resp.Code)
	if !bodyless && !bodyBuffered(resp, tc.br) {
		// The body has the request's deadline, or the overall limit, and
		// each wait for more of it the response idle timeout.
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(maxRequestDuration)
		}
		tc.deadlines.exact(tc.conn, deadline)
		if idle := p.limits.responseIdle; idle > 0 {
			tc.idle, tc.limit = idle, deadline
		}
	}
	if !bodyless && (resp.Chunked || resp.ContentLength < 0) && !hasField(resp, "Content-Type") {
		// A body that goes out as it comes gets no sniffed Content-Type,
		// as the reverse proxy's head, flushed before its body, has none.
		w.Header()["Content-Type"] = nil
	}
	var trailers []string
	if fields := headFields(w, resp); fields != nil {
		appendResponseFields(fields, resp)
	} else {
		trailers = copyResponseFields(w.Header(), resp)
	}
	w.WriteHeader(resp.Code)
	var body io.Reader
	switch {
	case bodyless:
	case resp.Chunked:
		body = httputil.NewChunkedReader(tc.br)
	case resp.ContentLength >= 0:
		tc.body = io.LimitedReader{R: tc.br, N: resp.ContentLength}
		body = &tc.body
	default:
		body = tc.br
	}
	if body != nil {
		// A body of unknown length goes out as it comes, as the reverse
		// proxy flushes it.
		if _, err := copyFlushing(w, body, resp.ContentLength < 0 || resp.Chunked); err != nil {
			cut(err)
		}
		if lr, ok := body.(*io.LimitedReader); ok && lr.N > 0 {
			cut(io.ErrUnexpectedEOF)
		}
	}
	if resp.Chunked && !bodyless {
		// A response without a body (to HEAD, 204, 304) has no trailer
		// section either, whatever its framing fields say.
		tr, err := readTrailers(tc.br)
		if err != nil {
			cut(err)
		}
		for k, vs := range tr {
			if !slices.Contains(trailers, k) {
				k = http.TrailerPrefix + k
			}
			w.Header()[k] = vs
		}
	}
	if tc.idle > 0 {
		// targetReader moved the read deadline: the next request sets
		// its own.
		tc.idle, tc.deadlines.r = 0, time.Time{}
	}
	if !watch.stop() || !bodyless && !resp.Chunked && resp.ContentLength < 0 || resp.Close {
		tc.conn.Close()
		return true
	}
	p.pool.put(tc, time.Now())
	return true
}

// plainRequestURI reports whether uri can go on a request line as it is:
// no spaces or control characters.
func plainRequestURI(uri string) bool {
	for i := 0; i < len(uri); i++ {
		if uri[i] <= ' ' || uri[i] == 0x7f {
			return false
		}
	}
	return uri != ""
}

// deliveryRoundTrip sends r to t (a delivery, or with x a request of this
// proxy's own clients: writeDelivery) and reads the final response head
// into the connection's resp, relaying informational responses to w. A request that fails on a
// pooled connection before any response byte (the target had closed it) is
// sent once more on a new connection (a body, read from the peer, cannot
// be). The body is sent whole before the response is read, as the fast path
// does with the bodies it takes. The watch's stop ends the watch on r's
// context (its end, the peer resetting the stream, closes the connection);
// it reports false when the watch already fired.
func (p *Proxy) deliveryRoundTrip(ctx context.Context, w http.ResponseWriter, r *http.Request, t *router.Target, x *exchange) (*targetConn, requestWatch, error) {
	for attempt := 0; ; attempt++ {
		now := time.Now()
		deadline := now.Add(responseHeaderTimeout)
		d, exact := ctx.Deadline()
		if exact = exact && d.Before(deadline); exact {
			deadline = d
		}
		tc := p.pool.get(t.Addr, now, false)
		pooled := tc != nil
		var err error
		if !pooled {
			if tc, err = p.pool.dial(t.Addr, deadline); err != nil {
				return nil, requestWatch{}, err
			}
		}
		if exact {
			tc.deadlines.exact(tc.conn, deadline)
		} else {
			// responseHeaderTimeout within 1%, as the fast path's own
			// requests have it: a busy connection moves its timers
			// about once a second rather than twice per request.
			tc.deadlines.read(tc.conn, now, responseHeaderTimeout)
			tc.deadlines.write(tc.conn, now, responseHeaderTimeout)
		}
		watch := watchRequest(ctx, w, tc.conn)
		err = writeDelivery(tc.bw, r, x)
		if err == nil {
			err = tc.flushRequest()
		}
		if err == nil {
			err = readDeliveryResponse(tc.br, w, &tc.resp)
		}
		if err == nil {
			return tc, watch, nil
		}
		watch.stop()
		tc.conn.Close()
		if ctx.Err() != nil {
			return nil, requestWatch{}, ctx.Err()
		}
		if pooled && attempt == 0 && r.ContentLength == 0 && stale(err) && tc.br.Buffered() == 0 {
			continue
		}
		return nil, requestWatch{}, err
	}
}

// requestWatch closes a target connection when the request it carries
// ends (its context is done) before stop.
type requestWatch struct {
	w http.ResponseWriter
	// stopCtx is context.AfterFunc's stop; nil when the HTTP/2 server's
	// stream closes the connection (peer.CloseOnAbort).
	stopCtx func() bool
}

// watchRequest starts the watch of ctx, the context of the request w
// answers, for conn. A request of the proxy's own HTTP/2 server is watched
// by its stream, without context.AfterFunc's allocations: its context ends
// only when the stream is aborted or at a deadline, which conn's own
// deadlines hold it to already (deliveryRoundTrip, sendDirect).
func watchRequest(ctx context.Context, w http.ResponseWriter, conn net.Conn) requestWatch {
	if peer.CloseOnAbort(w, conn) {
		return requestWatch{w: w}
	}
	return requestWatch{stopCtx: context.AfterFunc(ctx, func() { conn.Close() })}
}

// stop ends the watch; it reports false when the watch closed the
// connection already.
func (rw requestWatch) stop() bool {
	if rw.stopCtx != nil {
		return rw.stopCtx()
	}
	return peer.StopCloseOnAbort(rw.w)
}

// writeDelivery writes r's head as http.Transport writes what the reverse
// proxy makes of it, then the body: for a delivery (x nil) the peer's
// fields but hop-by-hop ones, no User-Agent of its own, its Content-Length
// (zero only for POST, PUT and PATCH); for a request of this proxy's own
// clients, recorded in x, the fields setForwardedHeaders would leave and
// add (writeForwarded), written from r.Header without copying it. The
// caller flushes w.
func writeDelivery(w *bufio.Writer, r *http.Request, x *exchange) error {
	writeLine(w, r.Method, " ", r.URL.RequestURI(), " HTTP/1.1\r\nHost: ")
	w.WriteString(r.Host)
	w.WriteString("\r\n")
	if ua := r.Header["User-Agent"]; x == nil && len(ua) > 0 && ua[0] != "" {
		writeField(w, "User-Agent", ua[0])
	}
	if r.ContentLength > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(r.ContentLength, 10))
		w.WriteString("\r\n")
	}
	if x != nil {
		writeForwarded(w, r, x)
	} else {
		var tokens []string
		for _, v := range r.Header["Connection"] {
			for t := range strings.SplitSeq(v, ",") {
				tokens = append(tokens, strings.Trim(t, " \t"))
			}
		}
		for k, vs := range r.Header {
			if k == "User-Agent" || k == "Host" || contentLength(k) || hopByHop(k) || namedIn(k, tokens) {
				continue
			}
			for _, v := range vs {
				writeField(w, k, v)
			}
		}
		if takesTrailers(r.Header["Te"]) {
			w.WriteString("Te: trailers\r\n")
		}
	}
	w.WriteString("\r\n")
	if r.ContentLength > 0 {
		n, err := io.CopyN(w, r.Body, r.ContentLength)
		if err != nil {
			if n < r.ContentLength && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// writeForwarded writes the fields of r, a request of this proxy's own
// clients recorded in x, that setForwardedHeaders leaves and adds: the
// client's as the fast path writes an edited header (writeEditedFields:
// X-Forwarded-For by the rule's mode, no hop-by-hop or forwarding fields,
// TE as "trailers"), then the proxy's own.
func writeForwarded(w *bufio.Writer, r *http.Request, x *exchange) {
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	writeEditedFields(w, r.Header, forwardedForMode(x), ip)
	if s, ok := x.ctx.Value(streamStatsKey{}).(*streamStats); ok {
		// addProxyFields, its connection's part made once per
		// connection and snapshot.
		w.WriteString(s.connFields(r, x))
		addRequestFields((*wireFields)(w), r.Host, x.id, x.ruleInfo(nil))
		return
	}
	addProxyFields((*wireFields)(w), r, x)
}

// readDeliveryResponse reads the target's final response head into resp;
// informational responses (1xx but 101) go on to w as they come.
func readDeliveryResponse(br *bufio.Reader, w http.ResponseWriter, resp *h1.Response) error {
	for {
		head, err := h1.ReadResponseHead(br, nil, maxHeaderBytes)
		if err != nil {
			return err
		}
		if err := h1.ParseResponse(head, resp); err != nil {
			return err
		}
		switch c := resp.Code; {
		case c == http.StatusSwitchingProtocols:
			return errors.New("target switched protocols unasked")
		case c < 200:
			h := w.Header()
			for _, f := range resp.Fields {
				k := http.CanonicalHeaderKey(string(f.Name))
				h[k] = append(h[k], string(f.Value))
			}
			w.WriteHeader(c)
			clear(h)
		default:
			return nil
		}
	}
}

// copyResponseFields adds resp's fields to h but hop-by-hop ones and those
// its Connection names, and the Trailer of a chunked one; it returns the
// trailers announced.
func copyResponseFields(h http.Header, resp *h1.Response) []string {
	// The names and values are substrings of one string, and the values'
	// slices parts of one array: two allocations for the fields rather
	// than two per field.
	n := 0
	for _, f := range resp.Fields {
		n += len(f.Name) + len(f.Value)
	}
	var b strings.Builder
	b.Grow(n)
	for _, f := range resp.Fields {
		b.Write(f.Name)
		b.Write(f.Value)
	}
	all, vals := b.String(), make([]string, len(resp.Fields))
	var trailers []string
	for i, f := range resp.Fields {
		name, value := all[:len(f.Name)], all[len(f.Name):len(f.Name)+len(f.Value)]
		all = all[len(f.Name)+len(f.Value):]
		if resp.Chunked && equalFoldBytes(f.Name, "Trailer") {
			for t := range strings.SplitSeq(value, ",") {
				if t = strings.Trim(t, " \t"); t != "" {
					trailers = append(trailers, http.CanonicalHeaderKey(t))
				}
			}
			continue
		}
		if hopByHop(f.Name) || namedInBytes(f.Name, resp.ConnectionTokens) || resp.Chunked && equalFoldBytes(f.Name, "Content-Length") {
			continue
		}
		k := http.CanonicalHeaderKey(name)
		if vs, ok := h[k]; ok {
			h[k] = append(vs, value)
			continue
		}
		vals[i] = value
		h[k] = vals[i : i+1 : i+1]
	}
	if len(trailers) > 0 {
		h["Trailer"] = []string{strings.Join(trailers, ", ")}
	}
	return trailers
}

// headFields returns the HTTP/2 server's head fields of the response w
// writes (peer.ResponseFields) when resp's fields can go there as they
// are: w is that server's writer, through this proxy's recorder and a
// response editor with nothing to edit, and resp announces no trailers.
// Otherwise (nil) they go through w's header map (copyResponseFields).
func headFields(w http.ResponseWriter, resp *h1.Response) *[]hpack.HeaderField {
	for {
		switch rw := w.(type) {
		case *responseEditor:
			if rw.cors != nil || rw.token != "" || len(rw.edits) > 0 {
				return nil
			}
			w = rw.ResponseWriter
			continue
		case *recorder:
			w = rw.ResponseWriter
			continue
		}
		break
	}
	if resp.Chunked && hasField(resp, "Trailer") {
		return nil
	}
	return peer.ResponseFields(w)
}

// hasField reports whether resp has a field named name.
func hasField(resp *h1.Response, name string) bool {
	for _, f := range resp.Fields {
		if equalFoldBytes(f.Name, name) {
			return true
		}
	}
	return false
}

// appendResponseFields appends resp's fields to fields as HTTP/2 sends
// them: the fields copyResponseFields would put in the header map (none
// hop-by-hop or named by Connection, no Content-Length beside chunked
// framing), names in lower case, in the order received. The names and
// values are substrings of one string: one allocation for them all.
func appendResponseFields(fields *[]hpack.HeaderField, resp *h1.Response) {
	n := 0
	for _, f := range resp.Fields {
		n += len(f.Name) + len(f.Value)
	}
	var b strings.Builder
	b.Grow(n)
	// A kept field's name: a common one's constant, or the length of its
	// lower-case copy in b, before its value.
	type span struct {
		common      string
		name, value int
	}
	var kept [16]span
	spans := kept[:0]
	for _, f := range resp.Fields {
		if hopByHop(f.Name) || namedInBytes(f.Name, resp.ConnectionTokens) || resp.Chunked && equalFoldBytes(f.Name, "Content-Length") {
			continue
		}
		sp := span{common: commonResponseField(f.Name), value: len(f.Value)}
		if sp.common == "" {
			sp.name = len(f.Name)
			for _, c := range f.Name {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				b.WriteByte(c)
			}
		}
		b.Write(f.Value)
		spans = append(spans, sp)
	}
	all := b.String()
	for _, sp := range spans {
		name := sp.common
		if name == "" {
			name = all[:sp.name]
		}
		*fields = append(*fields, hpack.HeaderField{Name: name, Value: all[sp.name : sp.name+sp.value]})
		all = all[sp.name+sp.value:]
	}
}

// commonResponseField returns the lower-case name of a field most
// responses have, when name is one (in any case), without a copy; ""
// otherwise.
func commonResponseField(name []byte) string {
	var f [2]string // lower-case and canonical
	switch len(name) {
	case 4:
		switch name[0] | 0x20 {
		case 'd':
			f = [2]string{"date", "Date"}
		case 'e':
			f = [2]string{"etag", "Etag"}
		case 'v':
			f = [2]string{"vary", "Vary"}
		}
	case 6:
		f = [2]string{"server", "Server"}
	case 8:
		f = [2]string{"location", "Location"}
	case 10:
		f = [2]string{"set-cookie", "Set-Cookie"}
	case 12:
		f = [2]string{"content-type", "Content-Type"}
	case 13:
		switch name[0] | 0x20 {
		case 'c':
			f = [2]string{"cache-control", "Cache-Control"}
		case 'l':
			f = [2]string{"last-modified", "Last-Modified"}
		case 'a':
			f = [2]string{"accept-ranges", "Accept-Ranges"}
		}
	case 14:
		f = [2]string{"content-length", "Content-Length"}
	case 16:
		f = [2]string{"content-encoding", "Content-Encoding"}
	}
	// Most targets send the canonical form, some lower case: a compare
	// of bytes before one that folds case.
	if f[0] == "" || string(name) != f[1] && string(name) != f[0] && !equalFoldBytes(name, f[0]) {
		return ""
	}
	return f[0]
}

// copyFlushing copies src to w, flushing after each write when flush is
// set.
func copyFlushing(w http.ResponseWriter, src io.Reader, flush bool) (int64, error) {
	bp := peerBuffers.get()
	defer peerBuffers.put(bp)
	buf := *bp
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
			if flush {
				if err := rc.Flush(); err != nil {
					return n, err
				}
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// readTrailers reads the trailer section after a chunked body's last chunk,
// at most maxHeaderBytes of it.
func readTrailers(br *bufio.Reader) (http.Header, error) {
	lr := &io.LimitedReader{R: br, N: maxHeaderBytes}
	tp := textproto.NewReader(bufio.NewReaderSize(lr, 16))
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	if tp.R.Buffered() > 0 {
		return nil, errors.New("bytes after the response's trailers")
	}
	return http.Header(h), nil
}

// deliveryFailed answers a delivery whose exchange with the target failed
// before a response, as the reverse proxy's error handler does.
func (p *Proxy) deliveryFailed(w http.ResponseWriter, r *http.Request, t *router.Target, err error) {
	ctx := r.Context()
	ruleExpired := errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded)
	clientGone := errors.Is(ctx.Err(), context.Canceled)
	code, reason := forwardFailure(err, ruleExpired, clientGone)
	if targetFault(reason) {
		t.Health.Observe(false)
	}
	level := slog.LevelWarn
	if code == statusClientClosed {
		level = slog.LevelDebug
	}
	p.log.Log(ctx, level, "upstream request failed", "target", t.Addr, "host", r.Host, "path", r.URL.Path, "err", err)
	w.WriteHeader(code)
}
