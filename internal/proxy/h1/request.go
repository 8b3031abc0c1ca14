// Package h1 reads and writes HTTP/1.1 message heads for the proxy's own
// HTTP/1.1 path, which forwards the common request without net/http's
// per-request allocations and goroutines.
//
// The parsers accept a strict subset of what net/http accepts, and parse
// what they accept exactly as net/http does (fuzz tests compare the two).
// Everything else is ErrUnsupported, and the caller hands the connection,
// bytes and all, to net/http: the request with a body of unknown length, an
// upgrade, an Expect, HTTP/1.0, an obsolete line folding, a malformed head.
// So a client cannot make the two paths disagree about where a request
// starts or ends. Guard vets the request heads net/http reads, for the
// framings RFC 9112 says must not keep a connection that net/http would
// take. It owns no connections and must not log.
package h1

import (
	"bufio"
	"bytes"
	"errors"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// ErrUnsupported is returned for a head that the fast path leaves to
// net/http: one that is valid but uses a feature it does not handle, or one
// that is malformed, which net/http answers.
var ErrUnsupported = errors.New("h1: request not handled by the fast path")

// MaxFields bounds the header fields of a request the fast path takes.
const MaxFields = 100

// Field is one header field as received; Name keeps the client's case and
// Value is trimmed of surrounding whitespace. Line is the whole line, CRLF
// included, when it is exactly Name + ": " + Value + CRLF, else "".
type Field struct {
	Name, Value string
	Line        string
}

// Request is a request head. Its strings are substrings of Head, so they
// stay valid, and may be kept, after the connection's buffers are reused.
type Request struct {
	// Head is the whole head, request line to the empty line.
	Head string
	// Method and Target are as in the request line, where Target is in
	// origin form ("/path?query").
	Method, Target string
	// Path is Target's path, unescaped as url.URL.Path; RawQuery is its
	// query without the "?".
	Path, RawQuery string
	Host           string
	// Fields are the header fields in the order received, Host included.
	Fields []Field
	// ContentLength is the body's length, 0 when there is none;
	// HasContentLength is set when the head has a Content-Length field.
	ContentLength    int64
	HasContentLength bool
	// HasForwardedFor is set when the head has an X-Forwarded-For field,
	// in any case.
	HasForwardedFor bool
	// Close is set when the client asked to close the connection after
	// this request ("Connection: close").
	Close bool
	// ConnectionTokens are the connection options other than close and
	// keep-alive: names of more hop-by-hop fields, in any case.
	ConnectionTokens []string
	// UserAgent is the User-Agent field's value, "" when absent.
	UserAgent string
}

// ReadHead returns the next request head from br, up to and including the
// empty line, and consumes it. The head must fit in br's buffer and end its
// lines with CRLF; when it does not, or when the bytes that arrive are not
// a plausible request line, ReadHead returns ErrUnsupported without
// consuming anything, so that the caller can hand br's content on. Other
// errors are the connection's, a client that closes mid-head included.
func ReadHead(br *bufio.Reader) (string, error) {
	scanned, first := 0, true
	for {
		if _, err := br.Peek(scanned + 1); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return "", ErrUnsupported
			}
			return "", err
		}
		// Peek filled at least scanned+1 bytes; look at all of them.
		buf, _ := br.Peek(br.Buffered())
		if !isTokenByte(buf[0]) {
			// Not a method (a TLS ClientHello, a stray CRLF): net/http's.
			return "", ErrUnsupported
		}
		for {
			i := bytes.IndexByte(buf[scanned:], '\n')
			if i < 0 {
				break
			}
			nl := scanned + i
			if nl == 0 || buf[nl-1] != '\r' {
				// A bare LF, which net/http takes as a line end and we
				// do not.
				return "", ErrUnsupported
			}
			if first && !plausibleRequestLine(buf[:nl-1]) {
				// Not a request line (an HTTP/0.9 "GET /"): net/http
				// refuses it at once, where waiting for the rest of a
				// head would wait for nothing.
				return "", ErrUnsupported
			}
			first = false
			scanned = nl + 1
			if nl >= 3 && buf[nl-3] == '\r' && buf[nl-2] == '\n' {
				head := string(buf[:scanned])
				_, _ = br.Discard(scanned)
				return head, nil
			}
		}
		scanned = len(buf)
	}
}

// ParseRequest parses head, as ReadHead returned it, into r, reusing r's
// Fields and ConnectionTokens. It returns ErrUnsupported for anything the
// fast path does not take.
func ParseRequest(head string, r *Request) error {
	n, err := parseRequest(head, r)
	if err == nil && n != len(head) {
		return ErrUnsupported
	}
	return err
}

// ReadBufferedRequest takes the request head at the start of br's buffer
// and parses it into r, in one pass and without reading, when the buffered
// bytes end with an empty line (a client that waits for each answer has
// sent just its head) and ParseRequest takes the head. Otherwise it
// consumes nothing and reports false, and the caller goes the way of
// ReadHead and ParseRequest, which decide what is wrong. A head it takes
// is the one ReadHead would return: its lines end in CRLF and hold no CR
// or LF, and its request line is one ReadHead finds plausible.
func ReadBufferedRequest(br *bufio.Reader, r *Request) (string, bool) {
	buf, _ := br.Peek(br.Buffered())
	if !bytes.HasSuffix(buf, crlfcrlf) {
		return "", false
	}
	s := string(buf)
	n, err := parseRequest(s, r)
	if err != nil {
		return "", false
	}
	_, _ = br.Discard(n)
	return s[:n], true
}

// parseRequest parses the head at the start of s into r and returns its
// length, the empty line included.
func parseRequest(s string, r *Request) (int, error) {
	*r = Request{Fields: r.Fields[:0], ConnectionTokens: r.ConnectionTokens[:0]}
	line, rest, ok := cutLine(s)
	if !ok {
		return 0, ErrUnsupported
	}
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !validMethod(method) || !parseTarget(target, r) {
		return 0, ErrUnsupported
	}
	r.Method, r.Target = method, target

	hosts, lengths := 0, 0
	for {
		if strings.HasPrefix(rest, "\r\n") {
			rest = rest[2:]
			break
		}
		var name, value, line string
		name, value, rest, line, ok = cutFieldLine(rest)
		if !ok || len(r.Fields) == MaxFields {
			// A field name with surrounding space, an obsolete folding, a
			// control byte, a bare LF.
			return 0, ErrUnsupported
		}
		r.Fields = append(r.Fields, Field{Name: name, Value: value, Line: line})
		switch special(name) {
		case fieldHost:
			hosts++
			r.Host = value
		case fieldForwardedFor:
			r.HasForwardedFor = true
		case fieldContentLength:
			lengths++
			r.HasContentLength = true
			n, ok := parseLength(value)
			if !ok {
				return 0, ErrUnsupported
			}
			r.ContentLength = n
		case fieldConnection:
			if !r.connection(value) {
				return 0, ErrUnsupported
			}
		case fieldUserAgent:
			if r.UserAgent == "" {
				r.UserAgent = value
			}
		case fieldUnsupported:
			return 0, ErrUnsupported
		}
	}
	if hosts != 1 || lengths > 1 || !httpguts.ValidHostHeader(r.Host) {
		return 0, ErrUnsupported
	}
	n := len(s) - len(rest)
	r.Head = s[:n]
	return n, nil
}

// cutLine returns s's first line without its CRLF, and the rest; ok is
// false when s has no CRLF or its first line ends in a bare LF.
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return "", "", false
	}
	return s[:i-1], s[i+1:], true
}

// cutLineBytes is cutLine for bytes.
func cutLineBytes(s []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(s, '\n')
	if i < 1 || s[i-1] != '\r' {
		return nil, nil, false
	}
	return s[:i-1], s[i+1:], true
}

// trimOWS trims the optional whitespace (SP, HTAB) around a field value.
func trimOWS[T string | []byte](s T) T {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// Request fields ParseRequest reads or refuses.
const (
	fieldOther = iota
	fieldHost
	fieldContentLength
	fieldConnection
	fieldUserAgent
	fieldForwardedFor
	// fieldUnsupported: Transfer-Encoding, Expect, Upgrade.
	fieldUnsupported
)

// special tells which of the fields ParseRequest reads or refuses name, a
// field name as cutField takes it, is, by its length first so that most
// names are compared with nothing.
func special(name string) int {
	switch len(name) {
	case 4:
		if equalFold(name, "host") {
			return fieldHost
		}
	case 6:
		if equalFold(name, "expect") {
			return fieldUnsupported
		}
	case 7:
		if equalFold(name, "upgrade") {
			return fieldUnsupported
		}
	case 10:
		switch {
		case equalFold(name, "connection"):
			return fieldConnection
		case equalFold(name, "user-agent"):
			return fieldUserAgent
		}
	case 14:
		if equalFold(name, "content-length") {
			return fieldContentLength
		}
	case 15:
		if equalFold(name, "x-forwarded-for") {
			return fieldForwardedFor
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return fieldUnsupported
		}
	}
	return fieldOther
}

// connection records the options of a Connection field. It reports false
// for an option the fast path does not take (upgrade) or an empty one.
func (r *Request) connection(value string) bool {
	for value != "" {
		var opt string
		opt, value, _ = strings.Cut(value, ",")
		opt = strings.Trim(opt, " \t")
		switch {
		case opt == "" || !httpguts.ValidHeaderFieldName(opt):
			return false
		case strings.EqualFold(opt, "close"):
			r.Close = true
		case strings.EqualFold(opt, "keep-alive"):
		case strings.EqualFold(opt, "upgrade"):
			return false
		default:
			r.ConnectionTokens = append(r.ConnectionTokens, opt)
		}
	}
	return true
}

// parseTarget splits an origin-form target into r's Path and RawQuery. It
// takes visible ASCII but '#'; a target with escapes is unescaped by
// url.ParseRequestURI, as net/http does.
func parseTarget(target string, r *Request) bool {
	if target == "" || target[0] != '/' {
		return false
	}
	escaped := false
	for i := 0; i < len(target); i++ {
		c := target[i]
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
		escaped = escaped || c == '%'
	}
	if escaped {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return false
		}
		r.Path, r.RawQuery = u.Path, u.RawQuery
		return true
	}
	r.Path, r.RawQuery, _ = strings.Cut(target, "?")
	return true
}

// parseLength parses a Content-Length value: decimal digits, at most 18 of
// them so that it cannot overflow.
func parseLength[T string | []byte](s T) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func validMethod(m string) bool {
	if m == "" || m == "CONNECT" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !isTokenByte(m[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	return c < 0x80 && httpguts.IsTokenRune(rune(c))
}
