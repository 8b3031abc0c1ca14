package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// wantResponse is what a test expects of a parsed response.
type wantResponse struct {
	code          int
	reason        string
	minor         int
	contentLength int64
	chunked       bool
	close         bool
	tokens        []string
	fields        []string // "Name: Value"
}

func (w wantResponse) check(t *testing.T, r *Response) {
	t.Helper()
	var tokens []string
	for _, tok := range r.ConnectionTokens {
		tokens = append(tokens, string(tok))
	}
	var fields []string
	for _, f := range r.Fields {
		fields = append(fields, string(f.Name)+": "+string(f.Value))
		if f.Line != nil && string(f.Line) != string(f.Name)+": "+string(f.Value)+"\r\n" {
			t.Errorf("field %q: Line %q", f.Name, f.Line)
		}
	}
	got := wantResponse{r.Code, string(r.Reason), r.Minor, r.ContentLength, r.Chunked, r.Close, tokens, fields}
	if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", w) {
		t.Errorf("got  %#v\nwant %#v", got, w)
	}
}

func TestParseResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  string
		want wantResponse
	}{
		{"200 OK", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
			wantResponse{200, "OK", 1, 5, false, false, nil, []string{"Content-Length: 5", "Content-Type: text/plain"}}},
		{"no reason", "HTTP/1.1 204\r\n\r\n",
			wantResponse{204, "", 1, -1, false, false, nil, nil}},
		{"empty reason", "HTTP/1.1 304 \r\nETag: \"x\"\r\n\r\n",
			wantResponse{304, "", 1, -1, false, false, nil, []string{"ETag: \"x\""}}},
		{"custom reason", "HTTP/1.1 299 Very  Custom\tReason \xff\r\n\r\n",
			wantResponse{299, "Very  Custom\tReason \xff", 1, -1, false, false, nil, nil}},
		{"reason starting with space", "HTTP/1.1 200  OK\r\n\r\n",
			wantResponse{200, " OK", 1, -1, false, false, nil, nil}},
		{"1xx", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
			wantResponse{103, "Early Hints", 1, -1, false, false, nil, []string{"Link: </a.css>; rel=preload"}}},
		{"code 999", "HTTP/1.1 999 Whatever\r\n\r\n",
			wantResponse{999, "Whatever", 1, -1, false, false, nil, nil}},
		{"HTTP/1.0 closes", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
			wantResponse{200, "OK", 0, 0, false, true, nil, []string{"Content-Length: 0"}}},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n",
			wantResponse{200, "OK", 0, 2, false, false, nil, []string{"Connection: Keep-Alive", "Content-Length: 2"}}},
		{"HTTP/1.0 close and keep-alive", "HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\n\r\n",
			wantResponse{200, "OK", 0, -1, false, true, nil, []string{"Connection: close, keep-alive"}}},
		{"HTTP/1.0 keep-alive then close", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
			wantResponse{200, "OK", 0, -1, false, true, nil, []string{"Connection: keep-alive", "Connection: close"}}},
		{"HTTP/1.0 close then keep-alive", "HTTP/1.0 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
			wantResponse{200, "OK", 0, -1, false, true, nil, []string{"Connection: close", "Connection: keep-alive"}}},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
			wantResponse{200, "OK", 1, 1, false, true, nil, []string{"Connection: close", "Content-Length: 1"}}},
		{"connection keep-alive", "HTTP/1.1 200 OK\r\nconnection: KEEP-ALIVE\r\n\r\n",
			wantResponse{200, "OK", 1, -1, false, false, nil, []string{"connection: KEEP-ALIVE"}}},
		{"connection tokens", "HTTP/1.1 200 OK\r\nConnection: X-A, close ,, \tx-b\r\nConnection: keep-alive, TE\r\n\r\n",
			wantResponse{200, "OK", 1, -1, false, true, []string{"X-A", "x-b", "TE"},
				[]string{"Connection: X-A, close ,, \tx-b", "Connection: keep-alive, TE"}}},
		{"duplicate equal Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\ncontent-length:  12 \r\n\r\n",
			wantResponse{200, "OK", 1, 12, false, false, nil, []string{"Content-Length: 12", "content-length: 12"}}},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
			wantResponse{200, "OK", 1, -1, true, false, nil, []string{"Transfer-Encoding: chunked"}}},
		{"chunked overrides length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: Chunked\r\n\r\n",
			wantResponse{200, "OK", 1, -1, true, false, nil, []string{"Content-Length: 10", "Transfer-Encoding: Chunked"}}},
		{"chunked with trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, Expires\r\n\r\n",
			wantResponse{200, "OK", 1, -1, true, false, nil, []string{"Transfer-Encoding: chunked", "Trailer: X-Checksum, Expires"}}},
		{"trailer without chunked", "HTTP/1.1 200 OK\r\nTrailer: Content-Length\r\nContent-Length: 0\r\n\r\n",
			wantResponse{200, "OK", 1, 0, false, false, nil, []string{"Trailer: Content-Length", "Content-Length: 0"}}},
		{"value trimming and obs-text", "HTTP/1.1 200 OK\r\nX-A:\t v \t\r\nX-B:\r\nX-C: caf\xc3\xa9\r\n\r\n",
			wantResponse{200, "OK", 1, -1, false, false, nil, []string{"X-A: v", "X-B: ", "X-C: caf\xc3\xa9"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			if err := ParseResponse([]byte(tc.raw), &r); err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			tc.want.check(t, &r)
			checkResponseAgainstNetHTTP(t, []byte(tc.raw), &r)
		})
	}
}

func TestParseResponseMalformed(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"empty", ""},
		{"no CRLF", "HTTP/1.1 200 OK"},
		{"no empty line", "HTTP/1.1 200 OK\r\nX: y\r\n"},
		{"short code", "HTTP/1.1 20 OK\r\n\r\n"},
		{"long code", "HTTP/1.1 2000 OK\r\n\r\n"},
		{"code then no space", "HTTP/1.1 200OK\r\n\r\n"},
		{"code then tab", "HTTP/1.1 200\tOK\r\n\r\n"},
		{"code below 100", "HTTP/1.1 099 Low\r\n\r\n"},
		{"non-digit code", "HTTP/1.1 2x0 OK\r\n\r\n"},
		{"signed code", "HTTP/1.1 +20 OK\r\n\r\n"},
		{"two spaces before code", "HTTP/1.1  200 OK\r\n\r\n"},
		{"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n"},
		{"HTTP/2", "HTTP/2 200 OK\r\n\r\n"},
		{"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"},
		{"lowercase http", "http/1.1 200 OK\r\n\r\n"},
		{"ICY", "ICY 200 OK\r\n\r\n"},
		{"control byte in reason", "HTTP/1.1 200 O\x01K\r\n\r\n"},
		{"bare LF status line", "HTTP/1.1 200 OK\nX: y\r\n\r\n"},
		{"bare LF after code", "HTTP/1.1 200\nX: y\r\n\r\n"},
		{"bare LF in fields", "HTTP/1.1 200 OK\r\nX: y\nZ: w\r\n\r\n"},
		{"bare CR in value", "HTTP/1.1 200 OK\r\nX: y\rZ\r\n\r\n"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n"},
		{"first field folded", "HTTP/1.1 200 OK\r\n X: y\r\n\r\n"},
		{"space before colon", "HTTP/1.1 200 OK\r\nX : y\r\n\r\n"},
		{"no colon", "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n"},
		{"empty name", "HTTP/1.1 200 OK\r\n: v\r\n\r\n"},
		{"non-token name", "HTTP/1.1 200 OK\r\nX(Y): v\r\n\r\n"},
		{"NUL in value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"},
		{"DEL in value", "HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n"},
		{"different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
		{"equal Content-Lengths spelled differently", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\n"},
		{"Content-Length list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"},
		{"Content-Length empty", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"},
		{"Content-Length negative", "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"},
		{"Content-Length too long", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n"},
		{"bad Content-Length with chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n"},
		{"Transfer-Encoding identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n"},
		{"Transfer-Encoding gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
		{"Transfer-Encoding twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"Transfer-Encoding empty", "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n"},
		{"HTTP/1.0 Transfer-Encoding", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"HTTP/1.0 Transfer-Encoding with length", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"},
		{"trailer announces Content-Length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-A, content-length\r\n\r\n"},
		{"trailer announces Transfer-Encoding", "HTTP/1.1 200 OK\r\nTrailer: TRANSFER-ENCODING\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"trailer announces Trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-A\r\nTrailer: ,trailer ,\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Response
			err := ParseResponse([]byte(tc.raw), &r)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v (response %+v), want ErrMalformed", err, r)
			}
		})
	}
}

func TestParseResponseReuse(t *testing.T) {
	var r Response
	if err := ParseResponse([]byte("HTTP/1.1 200 OK\r\nConnection: x-a, close\r\nTransfer-Encoding: chunked\r\n\r\n"), &r); err != nil {
		t.Fatal(err)
	}
	fields := &r.Fields[0]
	if err := ParseResponse([]byte("HTTP/1.1 404\r\nX: y\r\n\r\n"), &r); err != nil {
		t.Fatal(err)
	}
	wantResponse{404, "", 1, -1, false, false, nil, []string{"X: y"}}.check(t, &r)
	if &r.Fields[0] != fields {
		t.Error("Fields not reused")
	}
}

func TestBodyless(t *testing.T) {
	for _, tc := range []struct {
		method string
		code   int
		want   bool
	}{
		{"GET", 200, false},
		{"POST", 201, false},
		{"HEAD", 200, true},
		{"HEAD", 404, true},
		{"GET", 100, true},
		{"GET", 101, true},
		{"GET", 199, true},
		{"GET", 204, true},
		{"GET", 205, false},
		{"GET", 304, true},
		{"GET", 404, false},
		{"DELETE", 500, false},
	} {
		if got := Bodyless(tc.method, tc.code); got != tc.want {
			t.Errorf("Bodyless(%q, %d) = %v", tc.method, tc.code, got)
		}
	}
}

// TestReadResponseHeadPieces reads heads that are larger than the reader's
// buffer, arriving in pieces of every size, so that the end of the head
// straddles every buffer boundary.
func TestReadResponseHeadPieces(t *testing.T) {
	heads := []string{
		"HTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nX-A: " + strings.Repeat("a", 100) + "\r\nContent-Length: 4\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nX: \r\n\r\n",
	}
	bodies := []string{"", "body", "\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n"}
	for _, head := range heads {
		for _, body := range bodies {
			stream := head + body
			for piece := 1; piece <= len(stream); piece++ {
				for _, size := range []int{16, 17, 32, 4096} {
					br := bufio.NewReaderSize(&pieceReader{data: []byte(stream), piece: piece}, size)
					got, err := ReadResponseHead(br, nil, 1024)
					if err != nil || string(got) != head {
						t.Fatalf("head %q, piece %d, size %d: ReadResponseHead = %q, %v", head, piece, size, got, err)
					}
					var r Response
					if err := ParseResponse(got, &r); err != nil {
						t.Fatalf("head %q: ParseResponse: %v", head, err)
					}
					rest, err := io.ReadAll(br)
					if err != nil || string(rest) != body {
						t.Fatalf("head %q, piece %d, size %d: rest %q, %v; want %q", head, piece, size, rest, err, body)
					}
				}
			}
		}
	}
}

// TestReadResponseHeadStraddle places the end of the head at every offset
// around the boundary of a 16-byte buffer filled by full reads.
func TestReadResponseHeadStraddle(t *testing.T) {
	for pad := range 40 {
		head := "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("v", pad) + "\r\n\r\n"
		for _, body := range []string{"", "b", "\r", "\n\r\n", "\r\n\r\nmore"} {
			br := bufio.NewReaderSize(strings.NewReader(head+body), 16)
			buf := make([]byte, 0, 8)
			got, err := ReadResponseHead(br, buf, 4096)
			if err != nil || string(got) != head {
				t.Fatalf("pad %d body %q: ReadResponseHead = %q, %v", pad, body, got, err)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != body {
				t.Fatalf("pad %d body %q: rest %q", pad, body, rest)
			}
		}
	}
}

func TestReadResponseHeadAliases(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	// A head that fits in the reader's buffer aliases it, leaving buf be.
	br := bufio.NewReaderSize(strings.NewReader(head), 4096)
	buf := make([]byte, 0, 1024)
	got, err := ReadResponseHead(br, buf, 1024)
	if err != nil || string(got) != head {
		t.Fatalf("ReadResponseHead = %q, %v", got, err)
	}
	if &got[0] == &buf[:1][0] {
		t.Error("a head that fits in the reader's buffer was copied into buf")
	}
	// One that does not is collected in buf.
	br = bufio.NewReaderSize(strings.NewReader(head), 16)
	got, err = ReadResponseHead(br, buf, 1024)
	if err != nil || string(got) != head {
		t.Fatalf("ReadResponseHead = %q, %v", got, err)
	}
	if &got[0] != &buf[:1][0] {
		t.Error("a head larger than the reader's buffer was not collected in buf")
	}
}

func TestReadResponseHeadLimit(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nX-A: " + strings.Repeat("a", 100) + "\r\n\r\n"
	for _, piece := range []int{1, 7, 16, 1000} {
		for _, body := range []string{"", "some body bytes"} {
			for limit := len(head) - 20; limit <= len(head)+20; limit++ {
				br := bufio.NewReaderSize(&pieceReader{data: []byte(head + body), piece: piece}, 16)
				got, err := ReadResponseHead(br, nil, limit)
				switch {
				case limit >= len(head):
					if err != nil || string(got) != head {
						t.Errorf("piece %d limit %d: ReadResponseHead = %q, %v", piece, limit, got, err)
					}
				case !errors.Is(err, ErrMalformed):
					t.Errorf("piece %d limit %d (head %d bytes): ReadResponseHead = %q, %v; want ErrMalformed", piece, limit, len(head), got, err)
				}
			}
		}
	}
	// The limit does not apply to a head that fits in the reader's buffer.
	br := bufio.NewReaderSize(strings.NewReader(head), 4096)
	if got, err := ReadResponseHead(br, nil, 16); err != nil || string(got) != head {
		t.Errorf("ReadResponseHead = %q, %v", got, err)
	}
	// An endless head.
	br = bufio.NewReaderSize(io.MultiReader(strings.NewReader("HTTP/1.1 200 OK\r\n"), endless('x')), 64)
	if _, err := ReadResponseHead(br, nil, 1<<16); !errors.Is(err, ErrMalformed) {
		t.Errorf("endless head: %v", err)
	}
}

type endless byte

func (e endless) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(e)
	}
	return len(b), nil
}

func TestReadResponseHeadEOF(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		size int
		want error
	}{
		{"", 16, io.EOF},
		{"", 4096, io.EOF},
		{"H", 16, io.ErrUnexpectedEOF},
		{"HTTP/1.1 200 OK\r\n", 4096, io.ErrUnexpectedEOF},
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r", 16, io.ErrUnexpectedEOF},
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", 16, io.ErrUnexpectedEOF},
		{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r", 4096, io.ErrUnexpectedEOF},
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.raw), tc.size)
		if _, err := ReadResponseHead(br, nil, 1024); err != tc.want {
			t.Errorf("ReadResponseHead(%q) with a %d-byte buffer = %v, want %v", tc.raw, tc.size, err, tc.want)
		}
	}
	errBoom := errors.New("boom")
	br := bufio.NewReaderSize(io.MultiReader(strings.NewReader("HTTP/1.1 200 OK\r\nX: yyyyyyy"), errReader{errBoom}), 16)
	if _, err := ReadResponseHead(br, nil, 1024); err != errBoom {
		t.Errorf("ReadResponseHead = %v, want %v", err, errBoom)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// checkResponseAgainstNetHTTP parses head with http.ReadResponse and
// reports where it disagrees with r. It fails t if net/http refuses it.
func checkResponseAgainstNetHTTP(t *testing.T, head []byte, r *Response) {
	t.Helper()
	for _, f := range r.Fields {
		if f.Line != nil && string(f.Line) != string(f.Name)+": "+string(f.Value)+"\r\n" {
			t.Errorf("field %q: Line %q", f.Name, f.Line)
		}
	}
	nr := bytes.NewReader(append(head[:len(head):len(head)], "NEXT"...))
	br := bufio.NewReader(nr)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("net/http refuses %q, which h1 accepts: %v", head, err)
	}
	if consumed := len(head) + 4 - br.Buffered() - nr.Len(); consumed != len(head) {
		t.Errorf("net/http's head is %d bytes, h1's %d", consumed, len(head))
	}
	if resp.StatusCode != r.Code {
		t.Errorf("StatusCode: net/http %d, h1 %d", resp.StatusCode, r.Code)
	}
	if want := strconv.Itoa(r.Code) + " " + string(r.Reason); strings.TrimSuffix(resp.Status, " ") != strings.TrimSuffix(want, " ") {
		t.Errorf("Status: net/http %q, h1 %q", resp.Status, want)
	}
	if resp.ProtoMajor != 1 || resp.ProtoMinor != r.Minor {
		t.Errorf("version: net/http %d.%d, h1 1.%d", resp.ProtoMajor, resp.ProtoMinor, r.Minor)
	}
	chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
	if chunked != r.Chunked || len(resp.TransferEncoding) > 1 {
		t.Errorf("chunked: net/http %q, h1 %v", resp.TransferEncoding, r.Chunked)
	}
	bodyless := Bodyless("GET", r.Code)
	if !r.Chunked && !bodyless && resp.ContentLength != r.ContentLength {
		t.Errorf("ContentLength: net/http %d, h1 %d", resp.ContentLength, r.ContentLength)
	}
	if r.Chunked && r.ContentLength != -1 {
		t.Errorf("ContentLength %d with chunked", r.ContentLength)
	}
	// net/http also closes after a body delimited by the connection's end,
	// which ParseResponse leaves to its caller (it does not know whether
	// the request was a HEAD).
	toEOF := !r.Chunked && r.ContentLength == -1 && !bodyless
	if resp.Close != (r.Close || toEOF) {
		t.Errorf("Close: net/http %v, h1 %v (body to EOF: %v)", resp.Close, r.Close, toEOF)
	}
	// The fields net/http leaves in Header as they came.
	ours := make(http.Header)
	for _, f := range r.Fields {
		switch name := http.CanonicalHeaderKey(string(f.Name)); name {
		case "Connection", "Transfer-Encoding", "Content-Length", "Trailer":
		default:
			ours.Add(name, string(f.Value))
		}
	}
	theirs := resp.Header.Clone()
	for _, name := range []string{"Connection", "Transfer-Encoding", "Content-Length", "Trailer"} {
		delete(theirs, name)
	}
	if p := theirs["Pragma"]; len(p) > 0 && p[0] == "no-cache" && ours["Cache-Control"] == nil {
		delete(theirs, "Cache-Control")
	}
	if fmt.Sprint(ours) != fmt.Sprint(theirs) {
		t.Errorf("fields: net/http %q, h1 %q", theirs, ours)
	}
}
