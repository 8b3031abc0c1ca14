// Package framing is the HTTP/1 framing table, written from RFC 9112: raw
// requests and what must come of each (served with a body of N bytes, or
// refused; the connection kept or closed), and a runner that sends a row
// to a proxy on loopback and checks the outcome. The proxy's own tests run
// it on both request paths; TestSmuggling here runs it against a built
// `trellis up`. It also runs h2spec and reads its report (H2Spec), for
// this package's and internal/peer's HTTP/2 tests. Test support only;
// nothing in the product imports it.
package framing

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// Case is one row of the HTTP/1 framing table: a raw request and
// what RFC 9112 (and, where it leaves a choice, this proxy's decision)
// says must come of it.
type Case struct {
	Name, Raw string
	// Status is the first response's status; 0 is any error status
	// (>= 400), for a body the proxy cannot read to its end.
	Status int
	// Body is the number of body bytes the target must receive, -1 when
	// the request must not reach the target at all.
	Body int
	// Close: the connection must end after the response. Otherwise a
	// request pipelined behind this one must be answered in turn.
	Close bool
	// RFC is the section of RFC 9112 the row follows.
	RFC string
}

// fh is the Host field of the table's requests: a route must serve
// shop.example.com (and, for the absolute-form rows, any Host).
const fh = "Host: shop.example.com\r\n"

// Table is the expectation table, written from RFC 9112. Where
// the RFC lets a server choose between refusing and serving-then-closing
// (Transfer-Encoding with Content-Length, HTTP/1.0 with Transfer-Encoding,
// obs-fold), the proxy refuses with 400 and closes, as nginx does.
var Table = []Case{
	{"plain GET", "GET /r HTTP/1.1\r\n" + fh + "\r\n", 200, 0, false, "baseline"},
	{"Content-Length", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 5\r\n\r\nhello", 200, 5, false, "6.3 (6)"},
	{"chunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, 3, false, "6.3 (4), 7.1"},
	{"chunked with extension and trailer", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 200, 3, false, "7.1.1, 7.1.2"},
	{"chunked, upper case", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, 3, false, "7 (codings are case-insensitive)"},
	{"chunked, mixed case and OWS", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding:  Chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, 3, false, "5.1, 7"},
	{"CL.TE", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", 400, -1, true, "6.3 (3): MAY reject, MUST close"},
	{"TE.CL", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400, -1, true, "6.3 (3)"},
	{"TE with Content-Length: 0", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, -1, true, "6.3 (3)"},
	{"obs-fold Transfer-Encoding", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, -1, true, "5.2: reject with 400"},
	{"obs-fold continues Transfer-Encoding", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: gzip\r\n\tchunked\r\n\r\n0\r\n\r\n", 400, -1, true, "5.2"},
	{"obs-fold Content-Length", "POST /r HTTP/1.1\r\n" + fh + "Content-Length:\r\n 5\r\n\r\nhello", 400, -1, true, "5.2"},
	{"obs-fold other field", "GET /r HTTP/1.1\r\n" + fh + "X-A: 1\r\n 2\r\n\r\n", 400, -1, true, "5.2"},
	{"HTTP/1.0 chunked", "POST /r HTTP/1.0\r\n" + fh + "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, -1, true, "6.1: faulty framing, MUST close"},
	{"HTTP/1.0 chunked with Content-Length", "POST /r HTTP/1.0\r\n" + fh + "Connection: keep-alive\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400, -1, true, "6.1"},
	{"HTTP/1.0 keep-alive", "POST /r HTTP/1.0\r\n" + fh + "Connection: keep-alive\r\nContent-Length: 5\r\n\r\nhello", 200, 5, false, "9.3"},
	{"HTTP/1.0", "GET /r HTTP/1.0\r\n" + fh + "\r\n", 200, 0, true, "9.3: no keep-alive"},
	{"Connection: close", "GET /r HTTP/1.1\r\n" + fh + "Connection: close\r\n\r\n", 200, 0, true, "9.6"},
	{"duplicate Content-Length, equal", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 200, 5, false, "6.3 (5), RFC 9110 8.6"},
	{"duplicate Content-Length, unequal", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, -1, true, "6.3 (5): 400 and close"},
	{"Content-Length list", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 5, 5\r\n\r\nhello", 400, -1, true, "6.3 (5)"},
	{"Content-Length with plus sign", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: +5\r\n\r\nhello", 400, -1, true, "6.3 (5)"},
	{"Content-Length negative", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: -1\r\n\r\n", 400, -1, true, "6.3 (5)"},
	{"Content-Length hex", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 0x5\r\n\r\nhello", 400, -1, true, "6.3 (5)"},
	{"Content-Length empty", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: \r\n\r\n", 400, -1, true, "6.3 (5)"},
	{"Content-Length overflow", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 99999999999999999999\r\n\r\n", 400, -1, true, "6.3 (5)"},
	{"Content-Length with OWS", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: \t5 \r\n\r\nhello", 200, 5, false, "5.1: OWS is not the value"},
	{"Content-Length leading zeros", "POST /r HTTP/1.1\r\n" + fh + "Content-Length: 005\r\n\r\nhello", 200, 5, false, "RFC 9110 8.6: 1*DIGIT"},
	{"Content-Length, space before colon", "POST /r HTTP/1.1\r\n" + fh + "Content-Length : 5\r\n\r\nhello", 400, -1, true, "5.1: MUST 400"},
	{"Transfer-Encoding, space before colon", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, -1, true, "5.1: MUST 400"},
	{"gzip alone", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: gzip\r\n\r\nhello", 400, -1, true, "6.3 (4): chunked not final: 400, close"},
	{"chunked, gzip", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, -1, true, "6.3 (4)"},
	{"identity", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: identity\r\n\r\n", 400, -1, true, "6.3 (4)"},
	{"chunked, chunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, -1, true, "7: chunked once only"},
	{"two fields chunked and chunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, -1, true, "7"},
	{"xchunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, -1, true, "6.3 (4)"},
	{"gzip, chunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, -1, true, "6.1: unknown coding SHOULD 501"},
	{"two fields gzip and chunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, -1, true, "6.1, 5.3"},
	{"vertical tab before chunked", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: \vchunked\r\n\r\n0\r\n\r\n", 400, -1, true, "5.5"},
	{"bare LF line ends", "POST /r HTTP/1.1\nHost: shop.example.com\nContent-Length: 5\n\nhello", 200, 5, false, "2.2: MAY take LF"},
	{"bare CR in a field", "GET /r HTTP/1.1\r\n" + fh + "X-A: 1\rX-B: 2\r\n\r\n", 400, -1, true, "2.2: bare CR invalid"},
	{"NUL in a field value", "GET /r HTTP/1.1\r\n" + fh + "X-A: a\x00b\r\n\r\n", 400, -1, true, "5.5: MUST reject or replace"},
	{"CTL in a field value", "GET /r HTTP/1.1\r\n" + fh + "X-A: a\x01b\r\n\r\n", 400, -1, true, "5.5"},
	{"NUL in Transfer-Encoding", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n", 400, -1, true, "5.5"},
	{"absolute-form target", "GET http://shop.example.com/r HTTP/1.1\r\n" + fh + "\r\n", 200, 0, false, "3.2.2"},
	{"absolute-form overrides Host", "GET http://shop.example.com/r HTTP/1.1\r\nHost: other.example\r\n\r\n", 200, 0, false, "3.2.2: Host ignored"},
	{"no Host", "GET /r HTTP/1.1\r\n\r\n", 400, -1, true, "3.2: MUST 400"},
	{"two Host fields", "GET /r HTTP/1.1\r\n" + fh + fh + "\r\n", 400, -1, true, "3.2: MUST 400"},
	{"HTTP/0.9 request line", "GET /\r\n", 400, -1, true, "2.3: no HTTP/0.9; answered at once"},
	{"HTTP/0.9 request line, LF", "GET /\n", 400, -1, true, "2.3"},
	{"HTTP/2.0 request line", "GET /r HTTP/2.0\r\n" + fh + "\r\n", 505, -1, true, "2.3"},
	{"malformed chunk size", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 0, -1, true, "7.1: unrecoverable"},
	{"chunk size line with bare LF", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 0, -1, true, "7.1"},
	{"chunk data longer than its size", "POST /r HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", 0, -1, true, "7.1"},
}

// Probe is the request pipelined behind a row's to see that the connection
// still carries requests, and where the row's request ended.
const Probe = "GET /probe HTTP/1.1\r\n" + fh + "\r\n"

// Warmup is a request the fast path hands to net/http (a chunked body), so
// that the row behind it is parsed by net/http on a handed-off connection.
const Warmup = "POST /warmup HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"

// DeclinedUpgrade is an upgrade request that a target which does not
// upgrade answers with 200: the connection goes on in HTTP/1.1, parsed by
// net/http, and the row behind it must be vetted all the same.
const DeclinedUpgrade = "GET /upgrade HTTP/1.1\r\n" + fh + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"

// Run sends c's request on a connection of its own to addr, after prefix,
// and checks the outcome.
func Run(addr, prefix string, c Case) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	return RunConn(conn, prefix, c)
}

// RunConn is Run on a connection the caller dialed (a TLS one, say); it
// closes conn. A row fails when its answer takes more than 5 s: half the
// proxy's request head timeout, which a request line that hangs would
// wait for.
func RunConn(conn net.Conn, prefix string, c Case) error {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	raw := prefix + c.Raw
	if !c.Close {
		raw += Probe
	}
	if _, err := io.WriteString(conn, raw); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	if prefix != "" {
		got, err := readResponse(br, "POST")
		if err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
		if got.status != http.StatusOK {
			return fmt.Errorf("prefix answered %d %q, want 200", got.status, got.text)
		}
	}
	method, _, _ := strings.Cut(c.Raw, " ")
	got, err := readResponse(br, method)
	if err != nil {
		return err
	}
	switch {
	case c.Status == 0 && got.status < 400:
		return fmt.Errorf("status %d, want an error", got.status)
	case c.Status != 0 && got.status != c.Status:
		return fmt.Errorf("status %d, want %d (%s)", got.status, c.Status, got.text)
	case c.Body < 0 && got.reached:
		return fmt.Errorf("reached the target (%s), want refused before it", got.text)
	case c.Body >= 0 && got.bodyLen != c.Body:
		return fmt.Errorf("target received %d body bytes, want %d (%s)", got.bodyLen, c.Body, got.text)
	}
	if c.Close {
		// Nothing more may come, and the connection must end (not time
		// out).
		if n, err := br.ReadByte(); err == nil {
			return fmt.Errorf("connection open after the response: read %q", n)
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			return errors.New("connection left open after the response")
		}
		return nil
	}
	next, err := readResponse(br, "GET")
	if err != nil {
		return fmt.Errorf("pipelined request: %w", err)
	}
	if next.status != 200 || next.text != "GET /probe 0" {
		return fmt.Errorf("pipelined request answered %d %q, want the Probe's", next.status, next.text)
	}
	return nil
}

type response struct {
	status int
	text   string
	// reached: the target answered (the echo's "METHOD /path N ...").
	reached bool
	bodyLen int
}

func readResponse(br *bufio.Reader, method string) (response, error) {
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return response{}, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode, text: string(b)}
	var m, path string
	if n, _ := fmt.Sscanf(r.text, "%s %s %d", &m, &path, &r.bodyLen); n == 3 && strings.HasPrefix(path, "/") {
		r.reached = true
	}
	return r, nil
}

// Echo is a target for the table: it answers "METHOD /path N", N the
// number of body bytes it read, or 400 when the body fails.
func Echo(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, n)
}

// Outcome describes what a row expects, for a printed table.
func (c Case) Outcome() string {
	s := "any error"
	if c.Status != 0 {
		s = fmt.Sprint(c.Status)
	}
	if c.Body >= 0 {
		s += fmt.Sprintf(", body %d", c.Body)
	}
	if c.Close {
		return s + ", close"
	}
	return s + ", keep"
}
