package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrMalformed is wrapped by every error about a response head a target
// sent that the proxy cannot forward.
var ErrMalformed = errors.New("malformed response from target")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Response is a response head from a target. Its slices alias the head
// ReadResponseHead returned and are valid only until the reader it came
// from is read again.
type Response struct {
	// Code is the status code, Reason the reason phrase (maybe empty).
	Code   int
	Reason []byte
	// StatusLine is the status line as received, CRLF included.
	StatusLine []byte
	// Minor is the HTTP/1 minor version the target spoke.
	Minor int
	// Fields are the header fields in the order received.
	Fields []RField
	// ContentLength is the body's length, -1 when the head gives none.
	ContentLength int64
	// Chunked is set for a chunked body, which overrides any length.
	Chunked bool
	// Close is set when the target closes the connection after this
	// response.
	Close bool
	// ConnectionTokens are the connection options other than close and
	// keep-alive: names of more hop-by-hop fields.
	ConnectionTokens [][]byte
}

// RField is one header field of a response. Line is the whole line, CRLF
// included, when it is exactly Name + ": " + Value + CRLF, else nil.
type RField struct {
	Name, Value []byte
	Line        []byte
}

// ReadResponseHead reads a response head from br, up to and including the
// empty line, and consumes it. The head aliases br's buffer when it fits
// there and is otherwise collected in buf, grown up to limit bytes: a head
// larger than both br's buffer and limit is an error wrapping ErrMalformed.
// The error is io.EOF only when br ends before the head's first byte, and
// io.ErrUnexpectedEOF when it ends within the head.
func ReadResponseHead(br *bufio.Reader, buf []byte, limit int) ([]byte, error) {
	buf = buf[:0]
	n := 0
	for {
		if _, err := br.Peek(n + 1); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF && (len(buf) > 0 || br.Buffered() > 0) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		b, _ := br.Peek(br.Buffered())
		if len(buf) == 0 {
			if i := bytes.Index(b, crlfcrlf); i >= 0 {
				_, _ = br.Discard(i + 4)
				return b[:i+4], nil
			}
			if len(b) < br.Size() {
				n = len(b)
				continue
			}
		}
		// The head is larger than br's buffer: collect it in buf, up to
		// limit bytes. Its empty line may straddle what buf has and what
		// br holds, and what follows it in br is the body's.
		from, had := max(0, len(buf)-3), len(buf)
		if room := max(0, limit-len(buf)); len(b) > room {
			b = b[:room]
		}
		buf = append(buf, b...)
		if i := bytes.Index(buf[from:], crlfcrlf); i >= 0 {
			end := from + i + 4
			_, _ = br.Discard(end - had)
			return buf[:end], nil
		}
		_, _ = br.Discard(len(b))
		if len(buf) >= limit {
			return nil, malformed("response head larger than %d bytes", limit)
		}
		n = 0
	}
}

// ParseResponse parses head, as ReadResponseHead returned it, into r,
// reusing r's slices.
func ParseResponse(head []byte, r *Response) error {
	_, err := parseResponse(head, r)
	return err
}

// ParseBufferedResponse parses the response head at the start of buf, the
// bytes a reader has buffered, into r, in one pass: no search for its end
// first. It returns the head's length, to be consumed, when buf holds a
// whole valid head, and false otherwise; the caller then takes the head
// with ReadResponseHead and ParseResponse, which decide what is wrong. A
// head it takes is the one those two would take, to the same Response:
// its lines hold no CR or LF but their CRLF, so that its empty line is the
// first CRLFCRLF in buf.
func ParseBufferedResponse(buf []byte, r *Response) (int, bool) {
	n, err := parseResponse(buf, r)
	return n, err == nil
}

// parseResponse parses the head at the start of buf into r and returns its
// length, the empty line included.
func parseResponse(buf []byte, r *Response) (int, error) {
	*r = Response{Fields: r.Fields[:0], ConnectionTokens: r.ConnectionTokens[:0], ContentLength: -1}
	line, rest, ok := cutLineBytes(buf)
	if !ok || len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, malformed("status line %q", truncate(line))
	}
	switch line[7] {
	case '0':
		r.Minor = 0
	case '1':
		r.Minor = 1
	default:
		return 0, malformed("status line %q", truncate(line))
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, malformed("status line %q", truncate(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, malformed("status code %d", code)
	}
	r.Code = code
	r.StatusLine = buf[:len(line)+2]
	if len(line) > 13 {
		r.Reason = line[13:]
		if !validValue(r.Reason) {
			return 0, malformed("status line %q", truncate(line))
		}
	}
	var length []byte // the first Content-Length value
	var hasClose, hasKeepAlive, trailer bool
	for {
		if len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n' {
			rest = rest[2:]
			break
		}
		name, value, next, line, ok := cutFieldLine(rest)
		if !ok {
			return 0, malformedLine(rest)
		}
		rest = next
		r.Fields = append(r.Fields, RField{Name: name, Value: value, Line: line})
		switch {
		case equalFold(name, "content-length"):
			// Like net/http, take repeats of the same value, as spelled.
			if length != nil {
				if !bytes.Equal(value, length) {
					return 0, malformed("Content-Length %q", truncate(value))
				}
				break
			}
			n, ok := parseLength(value)
			if !ok {
				return 0, malformed("Content-Length %q", truncate(value))
			}
			length = value
			r.ContentLength = n
		case equalFold(name, "transfer-encoding"):
			// An HTTP/1.0 message with a Transfer-Encoding has a faulty
			// framing (RFC 9112, section 6.1); net/http ignores the field.
			if !equalFold(value, "chunked") || r.Chunked || r.Minor == 0 {
				return 0, malformed("Transfer-Encoding %q", truncate(value))
			}
			r.Chunked = true
		case equalFold(name, "connection"):
			for value := value; len(value) > 0; {
				opt := value
				if i := bytes.IndexByte(value, ','); i >= 0 {
					opt, value = value[:i], value[i+1:]
				} else {
					value = nil
				}
				opt = trimOWS(opt)
				switch {
				case len(opt) == 0:
				case equalFold(opt, "close"):
					hasClose = true
				case equalFold(opt, "keep-alive"):
					hasKeepAlive = true
				default:
					r.ConnectionTokens = append(r.ConnectionTokens, opt)
				}
			}
		case equalFold(name, "trailer"):
			trailer = true
		}
	}
	// As net/http: HTTP/1.0 closes unless kept alive, HTTP/1.1 when
	// asked to, whatever the order of the options.
	r.Close = hasClose || r.Minor == 0 && !hasKeepAlive
	if r.Chunked {
		r.ContentLength = -1
		// A trailer cannot carry the framing fields; net/http refuses a
		// chunked response whose Trailer field names one.
		if trailer && framingTrailer(r.Fields) {
			return 0, malformed("Trailer names a framing field")
		}
	}
	return len(buf) - len(rest), nil
}

// malformedLine is the error of a header line that cutField does not take,
// at the start of rest.
func malformedLine(rest []byte) error {
	line, _, ok := cutLineBytes(rest)
	if !ok {
		return malformed("head does not end with an empty line")
	}
	if name, _, ok := bytes.Cut(line, []byte(":")); ok && validName(name) {
		return malformed("value of %s", name)
	}
	return malformed("header line %q", truncate(line))
}

// framingTrailer reports whether a Trailer field of fields names
// Content-Length, Transfer-Encoding or Trailer.
func framingTrailer(fields []RField) bool {
	for _, f := range fields {
		if !equalFold(f.Name, "trailer") {
			continue
		}
		for value := f.Value; len(value) > 0; {
			var name []byte
			name, value, _ = bytes.Cut(value, []byte(","))
			name = bytes.Trim(name, " \t")
			if equalFold(name, "content-length") || equalFold(name, "transfer-encoding") || equalFold(name, "trailer") {
				return true
			}
		}
	}
	return false
}

// Bodyless reports whether a response with this code to a request with
// this method has no body, whatever its head says.
func Bodyless(method string, code int) bool {
	return method == "HEAD" || code < 200 || code == 204 || code == 304
}

var crlfcrlf = []byte("\r\n\r\n")

// equalFold reports whether b is s in any case, for s of lower-case
// letters and '-' and b without control bytes (a field name or a field
// value, as parsed): then b[i]|0x20 is s[i] exactly when b[i] is s[i] in
// either case ('-' | 0x20 is '-', and only CR, a control byte, also gives
// '-'). Eight bytes are compared at a time, the last eight (which may
// overlap the ones before) last. The lengths are compared inline, where
// most names part.
func equalFold[T string | []byte](b T, s string) bool {
	return len(b) == len(s) && foldEqual(b, s)
}

// foldEqual is equalFold for b and s of one length.
func foldEqual[T string | []byte](b T, s string) bool {
	n := len(s)
	if n < 8 {
		for i := range n {
			if b[i]|0x20 != s[i] {
				return false
			}
		}
		return true
	}
	for i := 0; i < n-8; i += 8 {
		if word(b, i)|0x2020202020202020 != word(s, i) {
			return false
		}
	}
	return word(b, n-8)|0x2020202020202020 == word(s, n-8)
}

// word is the eight bytes of s from i as a little-endian number.
func word[T string | []byte](s T, i int) uint64 {
	w := s[i : i+8]
	return uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
		uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
}

// truncate shortens what an error quotes from a target.
func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// validName reports whether b is a header field name: a token.
func validName[T string | []byte](b T) bool {
	if len(b) == 0 {
		return false
	}
	for i := range len(b) {
		if !isTokenByte(b[i]) {
			return false
		}
	}
	return true
}

// validValue reports whether b is a header field value: no control bytes
// but HTAB, as httpguts.ValidHeaderFieldValue, without converting b.
func validValue[T string | []byte](b T) bool {
	for i := range len(b) {
		if c := b[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
