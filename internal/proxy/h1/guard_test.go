package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/net/http/httpguts"
)

const gh = "Host: x\r\n"

// A stream of well-framed requests passes a Guard byte for byte, however
// it arrives.
func TestGuardPassesWellFramedRequests(t *testing.T) {
	stream := "GET / HTTP/1.1\r\n" + gh + "\r\n" +
		"POST /cl HTTP/1.1\r\n" + gh + "Content-Length: 5\r\n\r\nhello" +
		"POST /chunked HTTP/1.1\r\n" + gh + "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n" +
		"POST /lf HTTP/1.1\nHost: x\nContent-Length: 2\n\nhi" +
		"GET /10 HTTP/1.0\r\n" + gh + "Connection: keep-alive\r\nContent-Length: 1\r\n\r\nz" +
		"GET /last HTTP/1.1\r\n" + gh + "Content-Length: 005\r\nContent-Length: 005\r\n\r\n12345"
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for name, wrap := range readers {
		g := NewGuard(wrap(strings.NewReader(stream)), 1<<10)
		got, err := io.ReadAll(iotest.OneByteReader(g))
		if err != nil || string(got) != stream {
			t.Errorf("%s: got %q, %v; want the stream unchanged", name, got, err)
		}
	}
}

// A refused head reaches net/http as a line it answers with 400, and the
// stream ends there: what follows it is never read as a request.
func TestGuardRefuses(t *testing.T) {
	ok := "GET /first HTTP/1.1\r\n" + gh + "\r\n"
	for _, head := range []string{
		"POST / HTTP/1.1\r\n" + gh + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.0\r\n" + gh + "Transfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\n" + gh + "Transfer-Encoding:\r\n chunked\r\n\r\n",
		"POST / HTTP/1.1\r\n" + gh + "Transfer-Encoding: chunked, gzip\r\n\r\n",
		"GET /\r\n",
	} {
		stream := ok + head + "0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + gh + "\r\n"
		g := NewGuard(strings.NewReader(stream), 1<<10)
		got, err := io.ReadAll(g)
		if want := ok + GuardRejection; err != nil || string(got) != want {
			t.Errorf("%q: got %q, %v; want %q", head, got, err, want)
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(GuardRejection)))
		if err == nil {
			t.Errorf("net/http takes the rejection line: %v", req.URL)
		}
	}
}

// The HTTP/0.9 request line is refused as soon as it is whole: the Guard
// does not wait for a head end that will not come.
func TestGuardRefusesHTTP09AtOnce(t *testing.T) {
	pr, pw := io.Pipe()
	g := NewGuard(pr, 1<<10)
	go pw.Write([]byte("GET /\r\n")) // and nothing more
	got, err := io.ReadAll(g)
	if err != nil || string(got) != GuardRejection {
		t.Fatalf("got %q, %v", got, err)
	}
	pw.Close()
}

// An h2c preface turns the Guard off, and so does Pass (an upgrade the
// target accepted): what follows is not HTTP/1. An upgrade request alone
// does not: the target may decline it.
func TestGuardPasses(t *testing.T) {
	h2c := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00"
	if got, err := io.ReadAll(NewGuard(strings.NewReader(h2c), 1<<10)); err != nil || string(got) != h2c {
		t.Errorf("h2c: got %q, %v", got, err)
	}

	upgrade := "GET /ws HTTP/1.1\r\n" + gh + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	frames := "\x81\x05hello \r\n\r\n"
	g := NewGuard(strings.NewReader(upgrade+frames), 1<<10)
	head := make([]byte, len(upgrade))
	if _, err := io.ReadFull(g, head); err != nil || string(head) != upgrade {
		t.Fatalf("upgrade request: %q, %v", head, err)
	}
	g.Pass()
	if rest, err := io.ReadAll(g); err != nil || string(rest) != frames {
		t.Errorf("after Pass: %q, %v; want the frames", rest, err)
	}

	declined := upgrade + "POST / HTTP/1.1\r\n" + gh + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	if got, err := io.ReadAll(NewGuard(strings.NewReader(declined), 1<<10)); err != nil || string(got) != upgrade+GuardRejection {
		t.Errorf("declined upgrade: got %q, %v; want the request behind it refused", got, err)
	}
}

// A chunked body the Guard cannot follow ends the stream just after the
// malformed line (so net/http sees the malformation and answers 400, not a
// client gone); a head larger than the bound is let through and ends it.
// Nothing after the malformed part ever reaches net/http.
func TestGuardEndsWhereItCannotFollow(t *testing.T) {
	head := "POST / HTTP/1.1\r\n" + gh + "Transfer-Encoding: chunked\r\n\r\n"
	for _, c := range []struct{ stream, want string }{
		{head + "3\r\nabc\r\nzz\r\nGET / HTTP/1.1\r\n\r\n", head + "3\r\nabc\r\nzz\r\n"},
		{head + "3\nabc\r\n0\r\n\r\n", head + "3\n"},
		{head + "3\r\nabcdef\r\n0\r\n\r\n", head + "3\r\nabcde"},
		{"GET / HTTP/1.1\r\n" + strings.Repeat("X-Long: 1\r\n", 200), "GET / HTTP/1.1\r\n" + strings.Repeat("X-Long: 1\r\n", 200)},
	} {
		got, err := io.ReadAll(NewGuard(strings.NewReader(c.stream), 1<<10))
		if err != nil || string(got) != c.want {
			t.Errorf("%.40q: got %q, %v; want %q", c.stream, got, err, c.want)
		}
	}
}

// A read error of the connection (a deadline net/http sets to stop a
// background read) comes out as it is, and the Guard carries on after it.
func TestGuardPassesErrorsAndResumes(t *testing.T) {
	errTimeout := errors.New("timeout")
	part1, part2 := "GET / HTTP/1.1\r\n", gh+"\r\n"
	src := &scriptedReader{steps: []step{{data: part1}, {err: errTimeout}, {data: part2}}}
	g := NewGuard(src, 1<<10)
	buf := make([]byte, 64)
	if n, err := g.Read(buf); n != 0 || err != errTimeout {
		t.Fatalf("first read: %d, %v; want the timeout", n, err)
	}
	got, err := io.ReadAll(g)
	if err != nil || string(got) != part1+part2 {
		t.Fatalf("then: %q, %v", got, err)
	}
}

type step struct {
	data string
	err  error
}

type scriptedReader struct{ steps []step }

func (r *scriptedReader) Read(p []byte) (int, error) {
	if len(r.steps) == 0 {
		return 0, io.EOF
	}
	s := r.steps[0]
	r.steps = r.steps[1:]
	return copy(p, s.data), s.err
}

// The Guard's framing decision agrees with net/http's wherever the Guard
// lets a head through, and with the fast path's parser wherever that takes
// a head; and it refuses only what RFC 9112 lets a server refuse.
func FuzzVetHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\nHost: x\nTransfer-Encoding:\n chunked\n\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"GET /\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, head string) {
		v, ok := vetHead(head)
		refused, chunked := v.framing == framingRefused, v.framing == framingChunked
		var r Request
		if ParseRequest(head, &r) == nil && (!ok || v.framing != framingLength || r.ContentLength != v.length) {
			t.Fatalf("%q: the fast path takes it with length %d; guard ok=%v framing=%d length=%d", head, r.ContentLength, ok, v.framing, v.length)
		}
		if !ok {
			return
		}
		if refused {
			if !refusable(head) {
				t.Fatalf("refused %q, which RFC 9112 does not let a server refuse for its framing", head)
			}
			return
		}
		if req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head))); err == nil {
			netChunked := len(req.TransferEncoding) == 1 && req.TransferEncoding[0] == "chunked"
			if netChunked != chunked || !chunked && req.ContentLength != v.length {
				t.Fatalf("%q: guard chunked=%v length=%d, net/http %v %d", head, chunked, v.length, req.TransferEncoding, req.ContentLength)
			}
		}
	})
}

// refusable reports whether head has what RFC 9112 lets a server refuse
// for framing: no valid request line, an obs-fold, a head net/http
// refuses anyway, or a Transfer-Encoding with Content-Length, in HTTP/1.0
// or whose codings do not end in a single chunked. It reads the fields
// with net/textproto, not with the Guard's code.
func refusable(head string) bool {
	line, fields, whole := strings.Cut(head, "\n")
	line = strings.TrimSuffix(line, "\r")
	if !whole || !plausibleRequestLine(line) {
		return true
	}
	if strings.Contains(fields, "\n ") || strings.Contains(fields, "\n\t") || strings.HasPrefix(fields, " ") || strings.HasPrefix(fields, "\t") {
		return true
	}
	h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(fields + "\r\n"))).ReadMIMEHeader()
	if err != nil {
		return true
	}
	te := h.Values("Transfer-Encoding")
	if len(te) == 0 {
		return false
	}
	if h.Get("Content-Length") != "" || len(h.Values("Content-Length")) > 0 || strings.HasSuffix(line, "HTTP/1.0") {
		return true
	}
	var codings []string
	for _, v := range te {
		for _, c := range strings.Split(v, ",") {
			c, _, _ = strings.Cut(c, ";")
			codings = append(codings, strings.ToLower(strings.Trim(c, " \t")))
		}
	}
	return codings[len(codings)-1] != "chunked" || slices.Contains(codings[:len(codings)-1], "chunked") ||
		slices.ContainsFunc(codings, func(c string) bool { return !httpguts.ValidHeaderFieldName(c) })
}

// Whatever a client sends, net/http reading it through a Guard reads the
// same requests as reading it directly, up to where the Guard stops it:
// the Guard can cut a connection short, never make a request out of other
// bytes.
func FuzzGuardStream(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /2 HTTP/1.1\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream string) {
		direct := readRequests(strings.NewReader(stream))
		guarded := readRequests(NewGuard(strings.NewReader(stream), 1<<10))
		// The last one the Guard let through may end early (a body cut
		// short, a refusal); those before it are the same.
		for i := 0; i+1 < len(guarded); i++ {
			if i >= len(direct) || guarded[i] != direct[i] {
				t.Fatalf("request %d through the guard %q, directly %q", i, guarded[i], direct)
			}
		}
	})
}

// readRequests reads requests from r as net/http's server does, bodies and
// all, until one fails or the connection would close; it returns a line
// for each: method, target, body (or the error).
func readRequests(r io.Reader) []string {
	br := bufio.NewReader(r)
	var out []string
	for range 16 {
		req, err := http.ReadRequest(br)
		if err != nil {
			return append(out, "error")
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return append(out, req.Method+" "+req.RequestURI+" body error")
		}
		out = append(out, req.Method+" "+req.RequestURI+" "+string(bytes.ToValidUTF8(body, nil)))
		if req.Close {
			return out
		}
	}
	return out
}

// BenchmarkGuard reads a pipeline of requests (a GET, a Content-Length
// body, a chunked body) through a Guard, in net/http's 4 KiB reads.
func BenchmarkGuard(b *testing.B) {
	one := "GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 512\r\n\r\n" + strings.Repeat("x", 512) +
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + strings.Repeat("y", 256) + "\r\n0\r\n\r\n"
	stream := strings.Repeat(one, 32)
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		g := NewGuard(strings.NewReader(stream), 1<<16)
		for {
			if _, err := g.Read(buf); err != nil {
				break
			}
		}
	}
}
