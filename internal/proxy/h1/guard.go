package h1

import (
	"bytes"
	"io"
	"math"
	"strings"
)

// Guard is what net/http reads an HTTP/1 connection through: it follows
// the connection's messages, framing and all, and vets each request head
// before net/http sees it. net/http is more lenient than RFC 9112 allows
// a proxy to be, and keeps the connection open after messages that RFC 9112
// says must close it:
//
//   - Transfer-Encoding together with Content-Length (net/http drops the
//     Content-Length and reads the body chunked);
//   - Transfer-Encoding in an HTTP/1.0 request (net/http ignores it, so a
//     chunked body would be read as the next request);
//   - an obsolete line folding (net/http unfolds it, also in
//     Transfer-Encoding and Content-Length);
//   - a Transfer-Encoding whose last coding is not chunked (net/http
//     answers 501; RFC 9112 section 6.3 requires 400).
//
// The Guard answers those with 400 and closes, as nginx does: it hands
// net/http, in place of the head, a request line net/http refuses with
// "400 Bad Request" and "Connection: close", and then the end of the
// stream. A request line that cannot be one (an HTTP/0.9 "GET /") is
// refused as soon as it is complete, without waiting for a head that will
// not come.
//
// The framing it follows is net/http's (a body by Content-Length, by
// chunked coding, or none), so it knows where each head starts. Where it
// cannot follow (a body net/http will refuse, a head too large, a chunked
// body it finds malformed), it lets net/http have what it has, up to and
// including the malformed line (so that net/http answers the request's
// own error, a 400, rather than a vanished client), and then ends the
// stream: net/http closes the connection after either, so the two
// never read a different next request. An HTTP/2 preface turns it off for
// the rest of the connection, and so does Pass, which the server calls when
// a handler takes the connection over (an upgrade the target accepted):
// what follows is not HTTP/1. An upgrade the target declines leaves the
// connection in HTTP/1.1, vetted as before.
type Guard struct {
	src io.Reader
	// buf holds what was read from src and not returned yet, mem[r:w]; its
	// first ok bytes are vetted.
	mem      []byte
	r, w, ok int
	state    guardState
	left     int64 // bytes of the current body or chunk not yet vetted
	excess   int64 // chunked framing overhead, as net/http counts it
	err      error // src's error, returned once what came with it is used
	maxHead  int
}

type guardState int

const (
	guardHead guardState = iota
	guardBody
	guardChunkLine
	guardChunkData
	guardChunkEnd
	guardTrailer
	// guardPass: the rest is not HTTP/1 (or not ours): pass it on.
	guardPass
	// guardEnd: once the vetted bytes are read, the stream ends.
	guardEnd
)

// GuardRejection is what a Guard hands net/http in place of a refused
// head: a request line net/http answers with 400 and closes after.
const GuardRejection = "refused-framing\r\n"

// NewGuard returns a Guard reading the connection src. maxHead bounds a
// request head; it should exceed the server's limit, so that the server
// answers an oversize head itself (431).
func NewGuard(src io.Reader, maxHead int) *Guard {
	return &Guard{src: src, maxHead: maxHead}
}

// Pass turns g off: the rest of the connection, what g holds included, is
// read as it comes. It must not be called during a Read; net/http's
// hijacking waits for its reads to end before it reports the hijack.
func (g *Guard) Pass() {
	g.state, g.ok = guardPass, g.w-g.r
}

// Read returns the next vetted bytes of the connection.
func (g *Guard) Read(p []byte) (int, error) {
	for g.ok == 0 {
		switch {
		case g.state == guardEnd:
			return 0, io.EOF
		case g.state == guardPass && g.r == g.w:
			return g.src.Read(p)
		case g.state == guardPass:
			g.ok = g.w - g.r
			continue
		case g.r == g.w && g.left > 0 && (g.state == guardBody || g.state == guardChunkData):
			// Body data with nothing buffered: straight through.
			if int64(len(p)) > g.left {
				p = p[:g.left]
			}
			if g.err != nil {
				err := g.err
				g.err = nil
				return 0, err
			}
			n, err := g.src.Read(p)
			g.data(int64(n))
			return n, err
		}
		if !g.step() {
			if err := g.fill(); err != nil {
				return 0, err
			}
		}
	}
	n := copy(p, g.mem[g.r:g.r+g.ok])
	g.r += n
	g.ok -= n
	if g.r == g.w {
		// Empty: start over at the front, and let a buffer grown for a
		// large head go.
		g.r, g.w = 0, 0
		if len(g.mem) > guardBuffer {
			g.mem = nil
		}
	}
	return n, nil
}

// guardBuffer is the size of a Guard's buffer, which grows for a head that
// does not fit.
const guardBuffer = 4096

// fill reads more of src into the buffer.
func (g *Guard) fill() error {
	if g.err != nil {
		err := g.err
		g.err = nil
		return err
	}
	if g.w == len(g.mem) {
		if g.r > 0 {
			g.w = copy(g.mem, g.mem[g.r:g.w])
			g.r = 0
		} else {
			mem := make([]byte, max(guardBuffer, 2*len(g.mem)))
			copy(mem, g.mem[:g.w])
			g.mem = mem
		}
	}
	n, err := g.src.Read(g.mem[g.w:])
	g.w += n
	if n > 0 {
		g.err = err
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// data accounts for n body bytes vetted.
func (g *Guard) data(n int64) {
	g.left -= n
	if g.left > 0 {
		return
	}
	switch g.state {
	case guardBody:
		g.state = guardHead
	case guardChunkData:
		g.state = guardChunkEnd
	}
}

// step vets what it can of the buffered bytes, moving ok forward or
// changing state. It reports false when it needs more input first.
func (g *Guard) step() bool {
	b := g.mem[g.r:g.w]
	switch g.state {
	case guardHead:
		return g.head(b)
	case guardBody, guardChunkData:
		n := min(int64(len(b)), g.left)
		if n == 0 {
			return false
		}
		g.ok = int(n)
		g.data(n)
		return true
	case guardChunkLine, guardTrailer:
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(b) >= maxChunkLine {
				g.end(len(b))
				return true
			}
			return false
		}
		line := b[:i+1]
		if g.state == guardChunkLine {
			g.chunkLine(line)
		} else {
			g.trailerLine(line)
		}
		return true
	case guardChunkEnd:
		if len(b) < 2 {
			return false
		}
		if b[0] != '\r' || b[1] != '\n' {
			g.end(2)
			return true
		}
		g.ok, g.state = 2, guardChunkLine
		return true
	}
	return true
}

// end lets net/http have the next n buffered bytes and then ends the
// stream.
func (g *Guard) end(n int) {
	g.ok, g.state = n, guardEnd
}

// reject replaces what is buffered with GuardRejection and ends the stream.
func (g *Guard) reject() {
	g.mem = append(g.mem[:0], GuardRejection...)
	g.r, g.w, g.err = 0, len(GuardRejection), nil
	g.end(g.w)
}

// head vets the request head at b's start once it is whole.
func (g *Guard) head(b []byte) bool {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		if len(b) > g.maxHead {
			g.end(len(b))
			return true
		}
		return false
	}
	rl, ok := parseRequestLine(bytes.TrimSuffix(b[:nl], []byte("\r")))
	if !ok {
		g.reject()
		return true
	}
	if rl.major != 1 {
		// An HTTP/2 preface (h2c) or a version net/http refuses (505).
		g.state, g.ok = guardPass, len(b)
		return true
	}
	end := headEnd(b, nl+1)
	if end < 0 {
		if len(b) > g.maxHead {
			g.end(len(b))
			return true
		}
		return false
	}
	v := vetFields(string(b[nl+1:end]), rl.minor == 0)
	switch v.framing {
	case framingRefused:
		g.reject()
		return true
	case framingServerRefuses:
		g.end(end)
		return true
	case framingChunked:
		g.state, g.excess = guardChunkLine, 0
	default:
		g.state, g.left = guardBody, v.length
		if v.length == 0 {
			g.state = guardHead
		}
	}
	g.ok = end
	return true
}

// headEnd returns the index just after the empty line that ends the head
// in b, whose lines start at from, or -1. Lines end with LF, an optional
// CR before it (as net/http reads them).
func headEnd(b []byte, from int) int {
	for i := from; i < len(b); {
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			return -1
		}
		if nl == 0 || nl == 1 && b[i] == '\r' {
			return i + nl + 1
		}
		i += nl + 1
	}
	return -1
}

// chunkLine vets a chunk-size line, as net/http's chunked reader reads it.
func (g *Guard) chunkLine(line []byte) {
	if len(line) < 2 || bytes.IndexByte(line, '\r') != len(line)-2 || len(line) > maxChunkLine {
		g.end(len(line))
		return
	}
	digits, _, _ := bytes.Cut(trimOWS(line[:len(line)-2]), []byte(";"))
	size, ok := hexSize(digits)
	if !ok {
		g.end(len(line))
		return
	}
	g.excess = max(0, g.excess+int64(len(line))-16-2*size)
	if g.excess > maxExcess {
		g.end(len(line))
		return
	}
	g.ok = len(line)
	if size == 0 {
		g.state = guardTrailer
		return
	}
	g.state, g.left = guardChunkData, size
}

// trailerLine vets a line of the trailer section; the empty line ends the
// body.
func (g *Guard) trailerLine(line []byte) {
	if len(line) < 2 || line[len(line)-2] != '\r' {
		g.end(len(line))
		return
	}
	if len(line) == 2 {
		g.ok, g.state = 2, guardHead
		return
	}
	name, value, ok := bytes.Cut(line[:len(line)-2], []byte(":"))
	if !ok || !validName(name) || !validValue(trimOWS(value)) {
		g.end(len(line))
		return
	}
	g.ok = len(line)
}

// hexSize parses a chunk size: 1 to 16 hex digits, as net/http takes them,
// that fit in an int64.
func hexSize(s []byte) (int64, bool) {
	n, ok := parseHex(s, 16)
	if !ok || n > math.MaxInt64 {
		return 0, false
	}
	return int64(n), true
}

// parseHex parses 1 to maxDigits hex digits (at most 16).
func parseHex(s []byte, maxDigits int) (uint64, bool) {
	if len(s) == 0 || len(s) > maxDigits {
		return 0, false
	}
	var n uint64
	for _, c := range s {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | uint64(d)
	}
	return n, true
}

// requestLine is a request line's version, as net/http reads it.
type requestLine struct {
	major, minor int
}

// parseRequestLine splits a request line as net/http does (method, SP,
// target, SP, version; the version "HTTP/" digit "." digit). It reports
// false for a line net/http refuses with 400: an HTTP/0.9 request line
// among them.
func parseRequestLine[T string | []byte](line T) (requestLine, bool) {
	sp1 := -1
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' {
			sp1 = i
			break
		}
	}
	if sp1 <= 0 {
		return requestLine{}, false
	}
	sp2 := -1
	for i := sp1 + 1; i < len(line); i++ {
		if line[i] == ' ' {
			sp2 = i
			break
		}
	}
	if sp2 < 0 {
		return requestLine{}, false
	}
	for i := 0; i < sp1; i++ {
		if !isTokenByte(line[i]) {
			return requestLine{}, false
		}
	}
	proto := line[sp2+1:]
	if len(proto) != len("HTTP/1.1") || string(proto[:5]) != "HTTP/" || proto[6] != '.' ||
		!isDigit(proto[5]) || !isDigit(proto[7]) {
		return requestLine{}, false
	}
	return requestLine{major: int(proto[5] - '0'), minor: int(proto[7] - '0')}, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// plausibleRequestLine reports whether line (without its line end) can be
// a request line net/http takes: a head that starts otherwise is refused
// at once, without waiting for the rest.
func plausibleRequestLine[T string | []byte](line T) bool {
	_, ok := parseRequestLine(line)
	return ok
}

// Framing decisions of vetFields.
const (
	// framingLength: a body of length bytes (none when 0).
	framingLength = iota
	framingChunked
	// framingRefused: refused here, with 400, and the connection closed.
	framingRefused
	// framingServerRefuses: a head net/http refuses itself (a
	// Transfer-Encoding it does not implement: 501; a bad Content-Length:
	// 400) and closes after.
	framingServerRefuses
	// framingPass: not HTTP/1 (an h2c preface, another version); the rest
	// of the connection is not vetted.
	framingPass
)

// verdict is the framing decision for a request head.
type verdict struct {
	framing int
	// length is the body's length when framing is framingLength.
	length int64
}

// vetHead returns the framing decision for a whole request head (request
// line to the empty line), as a Guard makes it. ok is false when the
// decision is not the Guard's: a head net/http refuses itself, or a
// version other than HTTP/1.x.
func vetHead(head string) (v verdict, ok bool) {
	line, fields, found := strings.Cut(head, "\n")
	if !found {
		return verdict{framing: framingRefused}, true
	}
	rl, valid := parseRequestLine(strings.TrimSuffix(line, "\r"))
	if !valid {
		return verdict{framing: framingRefused}, true
	}
	if rl.major != 1 {
		return verdict{framing: framingPass}, false
	}
	v = vetFields(fields, rl.minor == 0)
	return v, v.framing != framingServerRefuses
}

// vetFields decides the framing of a request from its field lines (each
// ending in LF, an empty line last). http10 is set for an HTTP/1.0
// request. Only the fields that decide the framing are looked at, and obs
// folds anywhere; the rest is net/http's to refuse.
func vetFields(fields string, http10 bool) verdict {
	var te, cl []string
	for fields != "" {
		var line string
		line, fields, _ = strings.Cut(fields, "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			// An obsolete line folding, which net/http would unfold
			// (RFC 9112 section 5.2 lets a server refuse it).
			return verdict{framing: framingRefused}
		}
		name, value, _ := strings.Cut(line, ":")
		switch {
		case strings.EqualFold(name, "Transfer-Encoding"):
			te = append(te, trimOWS(value))
		case strings.EqualFold(name, "Content-Length"):
			cl = append(cl, trimOWS(value))
		}
	}
	switch {
	case len(te) > 0 && (http10 || len(cl) > 0 || !chunkedLast(te)):
		// RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty
		// framing; section 6.3: with Content-Length it may be refused,
		// and chunked must be the final coding.
		return verdict{framing: framingRefused}
	case len(te) > 0 && (len(te) > 1 || !strings.EqualFold(te[0], "chunked")):
		// net/http takes a single "chunked" only, and answers 501.
		return verdict{framing: framingServerRefuses}
	case len(te) > 0:
		return verdict{framing: framingChunked}
	}
	var n int64
	for i, v := range cl {
		m, ok := parseLength(v)
		if !ok || i > 0 && v != cl[0] {
			return verdict{framing: framingServerRefuses}
		}
		n = m
	}
	return verdict{framing: framingLength, length: n}
}

// chunkedLast reports whether the transfer codings of the Transfer-Encoding
// values te, in order, are valid and end with chunked, which appears
// nowhere else.
func chunkedLast(te []string) bool {
	var codings []string
	for _, v := range te {
		for c := range strings.SplitSeq(v, ",") {
			c, _, _ = strings.Cut(c, ";")
			c = trimOWS(c)
			if c == "" || !validName(c) {
				return false
			}
			codings = append(codings, c)
		}
	}
	for i, c := range codings {
		if strings.EqualFold(c, "chunked") != (i == len(codings)-1) {
			return false
		}
	}
	return true
}
