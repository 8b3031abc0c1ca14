package proxy

// The fast path's wire writers: request heads to targets, response heads
// and the proxy's own answers to clients.

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/h1"
	"trellis.dev/trellis/internal/proxy/router"
)

// writers recycles the fast path's response buffers: a connection holds
// one only while it serves a request (or has responses of a pipeline
// unwritten), so idle keep-alive connections cost their read buffer alone.
var writers sync.Pool

func getWriter(w io.Writer) *bufio.Writer {
	if bw, ok := writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, fastWriteBuffer)
}

func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writers.Put(bw)
}

// answer writes a response of its own into the connection's buffer: no
// body, or fc.body as text (which it clears). unread is set when the
// request's body is still to be read: it is discarded, so that the
// connection can carry the next request. It reports whether it can.
func (fc *fastConn) answer(code int, keep, unread bool) bool {
	if unread && fc.req.ContentLength > 0 {
		n, err := fc.br.Discard(int(fc.req.ContentLength))
		fc.x.body.n.Add(int64(n))
		keep = keep && err == nil
	}
	keep = keep && !fc.s.draining.Load()
	fc.x.rec.status = code
	w := fc.bw
	w.WriteString("HTTP/1.1 ")
	writeStatus(w, code, nil)
	body := fc.body
	fc.body = ""
	if body != "" {
		w.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	w.WriteString("\r\n")
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if fc.req.Method != http.MethodHead {
		w.WriteString(body)
		fc.x.rec.bytes = int64(len(body))
	}
	return keep
}

// flush writes out the responses so far unless the client has pipelined
// another request, which will: a pipeline's responses go out together. It
// reports whether the write succeeded.
func (fc *fastConn) flush() bool {
	if fc.br.Buffered() > 0 {
		return true
	}
	return fc.bw.Flush() == nil
}

// writeRequest sends the request head, with the fields the forwarding
// rules (headers.go) add, and its body.
func (fc *fastConn) writeRequest(tc *targetConn) error {
	r, x, w := &fc.req, &fc.x, tc.bw
	if fc.fixedFrom != fc.sv {
		fc.setFixedFields()
	}
	if fc.edited == nil {
		// The head is made where it is written, in w's free buffer (a
		// head too large for it in an array of its own), and written
		// once.
		w.Write(fc.appendHead(w.AvailableBuffer()))
	} else {
		writeLine(w, r.Method, " ", r.Target, " HTTP/1.1\r\nHost: ")
		w.WriteString(fc.host)
		w.WriteString("\r\n")
		writeEditedFields(w, fc.edited, forwardedForMode(x), fc.ip)
		fc.writeEnd(w, fc.host)
	}
	if r.ContentLength > 0 {
		n, err := fc.copyBody(w, r.ContentLength)
		x.body.n.Add(n)
		if err != nil {
			return err
		}
	}
	return tc.flushRequest()
}

// writeEnd writes what follows the fields of a head whose rule edits them:
// the framing, the fields the proxy adds, and the empty line.
func (fc *fastConn) writeEnd(w *bufio.Writer, host string) {
	r := &fc.req
	// The body's framing is the proxy's: no edit or Connection option
	// changes it.
	if r.HasContentLength {
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(r.ContentLength, 10))
		w.WriteString("\r\n")
	}
	addRequestFields((*wireFields)(w), host, fc.x.id, fc.x.ruleInfo(nil))
	w.WriteString(fc.fixedFields)
	w.WriteString("\r\n")
}

// appendHead appends the head sent to the target of a request without
// header edits to b: the request line and Host, the client's fields that
// go on and X-Forwarded-For (appendFields), the framing, the fields the
// proxy adds, and the empty line, as writeEnd writes them.
func (fc *fastConn) appendHead(b []byte) []byte {
	r := &fc.req
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, r.Target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, r.Host...)
	b = append(b, "\r\n"...)
	b = fc.appendFields(b)
	if r.HasContentLength {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, r.ContentLength, 10)
		b = append(b, "\r\n"...)
	}
	lines := headLines(b)
	addRequestFields(&lines, r.Host, fc.x.id, fc.x.ruleInfo(nil))
	b = append(lines, fc.fixedFields...)
	return append(b, "\r\n"...)
}

// appendFields appends the client's header fields that go on to the
// target and X-Forwarded-For to b.
func (fc *fastConn) appendFields(b []byte) []byte {
	r := &fc.req
	var prior []string
	if r.HasForwardedFor {
		prior = (*requestFields)(r).Values("X-Forwarded-For")
	}
	if v, ok := forwardedFor(forwardedForMode(&fc.x), prior, fc.ip); ok {
		b = appendField(b, "X-Forwarded-For", v)
	}
	trailers := false
	for _, f := range r.Fields {
		if dropOnForward(f.Name) || namedIn(f.Name, r.ConnectionTokens) {
			trailers = trailers || equalFoldASCII(f.Name, "TE") && hasToken(f.Value, "trailers")
			continue
		}
		if f.Line != "" {
			b = append(b, f.Line...)
		} else {
			b = appendField(b, f.Name, f.Value)
		}
	}
	if trailers {
		b = append(b, "Te: trailers\r\n"...)
	}
	return b
}

// writeEditedFields is writeFields for a header the rule's edits changed.
func writeEditedFields(w *bufio.Writer, h http.Header, xff model.ForwardedForMode, ip string) {
	if v, ok := forwardedFor(xff, h["X-Forwarded-For"], ip); ok {
		writeField(w, "X-Forwarded-For", v)
	}
	var tokens []string
	for _, v := range h["Connection"] {
		for t := range strings.SplitSeq(v, ",") {
			tokens = append(tokens, strings.Trim(t, " \t"))
		}
	}
	for k, vs := range h {
		if dropOnForward(k) || namedIn(k, tokens) {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
	if takesTrailers(h["Te"]) {
		w.WriteString("Te: trailers\r\n")
	}
}

func writeField(w *bufio.Writer, name, value string) {
	writeLine(w, name, ": ", value, "\r\n")
}

// writeLine writes a, b, c and d: with one copy into w's buffer when they
// fit there, the common case, rather than four writes.
func writeLine(w *bufio.Writer, a, b, c, d string) {
	buf := w.AvailableBuffer()
	if len(a)+len(b)+len(c)+len(d) > cap(buf) {
		w.WriteString(a)
		w.WriteString(b)
		w.WriteString(c)
		w.WriteString(d)
		return
	}
	buf = append(buf, a...)
	buf = append(buf, b...)
	buf = append(buf, c...)
	buf = append(buf, d...)
	w.Write(buf)
}

// writeResponseHead writes resp's head to the client without its
// hop-by-hop fields, edited by edits in order, closing the connection
// after it unless keep.
func (fc *fastConn) writeResponseHead(resp *h1.Response, keep bool, edits []*router.HeaderEdit) {
	w := fc.bw
	// Lines that go on as they came and lie one after the other in the
	// target's head are written together: run is the ones so far.
	var run []byte
	if resp.Minor == 1 && len(resp.Reason) > 0 {
		// "HTTP/1.1 " + code + " " + reason + CRLF, what writeStatus
		// would write.
		run = resp.StatusLine
	} else {
		w.WriteString("HTTP/1.1 ")
		writeStatus(w, resp.Code, resp.Reason)
	}
	if len(edits) > 0 {
		w.Write(run)
		run = nil
		writeEditedResponse(w, resp, edits)
	}
	for _, f := range resp.Fields {
		if len(edits) > 0 && !equalFoldBytes(f.Name, "Content-Length") {
			// Only the framing is not the edits'.
			continue
		}
		if hopByHop(f.Name) && !(resp.Chunked && equalFoldBytes(f.Name, "Trailer")) || namedInBytes(f.Name, resp.ConnectionTokens) {
			continue
		}
		if f.Line != nil {
			if follows(run, f.Line) {
				run = run[:len(run)+len(f.Line)]
			} else {
				w.Write(run)
				run = f.Line
			}
			continue
		}
		w.Write(run)
		run = nil
		w.Write(f.Name)
		w.WriteString(": ")
		w.Write(f.Value)
		w.WriteString("\r\n")
	}
	w.Write(run)
	if resp.Chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !keep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
}

// follows reports whether b starts where a ends, in the same array.
func follows(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && len(a)+len(b) <= cap(a) && &a[:len(a)+1][len(a)] == &b[0]
}

// writeEditedResponse writes the fields of resp but its framing
// (Content-Length, Transfer-Encoding) and hop-by-hop ones, after edits.
func writeEditedResponse(w *bufio.Writer, resp *h1.Response, edits []*router.HeaderEdit) {
	h := make(http.Header, len(resp.Fields))
	for _, f := range resp.Fields {
		if hopByHop(f.Name) && !(resp.Chunked && equalFoldBytes(f.Name, "Trailer")) || namedInBytes(f.Name, resp.ConnectionTokens) {
			continue
		}
		k := http.CanonicalHeaderKey(string(f.Name))
		h[k] = append(h[k], string(f.Value))
	}
	for _, e := range edits {
		e.Apply(h, nil)
	}
	for k, vs := range h {
		if k == "Content-Length" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			writeField(w, k, v)
		}
	}
}

// writeStatus writes a status line's code and reason: the given one, or
// the code's standard text.
func writeStatus(w *bufio.Writer, code int, reason []byte) {
	if code >= 100 && code <= 999 {
		// The codes of responses (ParseResponse) and of routes.
		w.WriteByte(byte('0' + code/100))
		w.WriteByte(byte('0' + code/10%10))
		w.WriteByte(byte('0' + code%10))
	} else {
		w.WriteString(strconv.Itoa(code))
	}
	w.WriteByte(' ')
	if len(reason) > 0 {
		w.Write(reason)
	} else {
		w.WriteString(http.StatusText(code))
	}
	w.WriteString("\r\n")
}

// copyBody copies the request body, n bytes, from the client to w, the
// target. Each wait for more of it from the client is bounded by the body
// idle timeout, and its failures are the client's (clientBodyError); w's
// are the target's.
func (fc *fastConn) copyBody(w *bufio.Writer, n int64) (int64, error) {
	idle := fc.s.p.limits.bodyIdle
	var done int64
	for done < n {
		if fc.br.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return done, err
			}
			if idle > 0 {
				fc.deadlines.exactRead(fc.rw, time.Now().Add(idle))
			}
			if _, err := fc.br.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return done, &clientBodyError{err}
			}
		}
		m, err := h1.CopyN(w, fc.br, min(n-done, int64(fc.br.Buffered())), w)
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}
