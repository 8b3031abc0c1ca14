package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"golang.org/x/net/http/httpguts"
)

// readRequest runs ReadHead and ParseRequest on raw as a server would.
func readRequest(raw string) (Request, error) {
	br := bufio.NewReaderSize(strings.NewReader(raw), 4096)
	head, err := ReadHead(br)
	if err != nil {
		return Request{}, err
	}
	var r Request
	err = ParseRequest(head, &r)
	return r, err
}

func TestParseRequestAccepted(t *testing.T) {
	type fields = []Field
	for _, tc := range []struct {
		name string
		raw  string
		want Request // Head is filled in from raw
	}{
		{
			name: "forwarded for, any case",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nx-forwarded-FOR: 10.0.0.1\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h", HasForwardedFor: true,
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "x-forwarded-FOR", Value: "10.0.0.1"}}},
		},
		{
			name: "minimal",
			raw:  "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "example.com",
				Fields: fields{{Name: "Host", Value: "example.com"}}},
		},
		{
			name: "path and query",
			raw:  "GET /a/b/c.html?x=1&y=%2F HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
			want: Request{Method: "GET", Target: "/a/b/c.html?x=1&y=%2F", Path: "/a/b/c.html", RawQuery: "x=1&y=%2F",
				Host: "example.com:8080", Fields: fields{{Name: "Host", Value: "example.com:8080"}}},
		},
		{
			name: "empty query",
			raw:  "GET /p? HTTP/1.1\r\nHost: h\r\n\r\n",
			want: Request{Method: "GET", Target: "/p?", Path: "/p", Host: "h", Fields: fields{{Name: "Host", Value: "h"}}},
		},
		{
			name: "escaped slash",
			raw:  "GET /a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n",
			want: Request{Method: "GET", Target: "/a%2Fb", Path: "/a/b", Host: "h", Fields: fields{{Name: "Host", Value: "h"}}},
		},
		{
			name: "escaped space and query",
			raw:  "GET /a%20b/%7Euser?q=a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
			want: Request{Method: "GET", Target: "/a%20b/%7Euser?q=a%20b", Path: "/a b/~user", RawQuery: "q=a%20b",
				Host: "h", Fields: fields{{Name: "Host", Value: "h"}}},
		},
		{
			name: "double slash is a path",
			raw:  "GET //evil.example/x HTTP/1.1\r\nHost: h\r\n\r\n",
			want: Request{Method: "GET", Target: "//evil.example/x", Path: "//evil.example/x", Host: "h",
				Fields: fields{{Name: "Host", Value: "h"}}},
		},
		{
			name: "content length",
			raw:  "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\nContent-Type: application/json\r\n\r\n",
			want: Request{Method: "POST", Target: "/submit", Path: "/submit", Host: "h", ContentLength: 42, HasContentLength: true,
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "Content-Length", Value: "42"}, {Name: "Content-Type", Value: "application/json"}}},
		},
		{
			name: "content length leading zeros and case",
			raw:  "PUT /x HTTP/1.1\r\ncontent-length:  007 \r\nhost: h\r\n\r\n",
			want: Request{Method: "PUT", Target: "/x", Path: "/x", Host: "h", ContentLength: 7, HasContentLength: true,
				Fields: fields{{Name: "content-length", Value: "007"}, {Name: "host", Value: "h"}}},
		},
		{
			name: "content length 18 digits",
			raw:  "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999999999999\r\n\r\n",
			want: Request{Method: "PUT", Target: "/x", Path: "/x", Host: "h", ContentLength: 999999999999999999, HasContentLength: true,
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "Content-Length", Value: "999999999999999999"}}},
		},
		{
			name: "connection close",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h", Close: true,
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "Connection", Value: "close"}}},
		},
		{
			name: "connection keep-alive",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h",
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "Connection", Value: "Keep-Alive"}}},
		},
		{
			name: "connection tokens",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Foo ,\tCLOSE, keep-alive,x-bar\r\nConnection: te\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h", Close: true,
				ConnectionTokens: []string{"X-Foo", "x-bar", "te"},
				Fields:           fields{{Name: "Host", Value: "h"}, {Name: "Connection", Value: "X-Foo ,\tCLOSE, keep-alive,x-bar"}, {Name: "Connection", Value: "te"}}},
		},
		{
			name: "empty connection",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\nConnection:\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h",
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "Connection", Value: ""}}},
		},
		{
			name: "user agent first wins",
			raw:  "GET / HTTP/1.1\r\nUser-Agent: curl/8.5.0\r\nHost: h\r\nuser-agent: other\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h", UserAgent: "curl/8.5.0",
				Fields: fields{{Name: "User-Agent", Value: "curl/8.5.0"}, {Name: "Host", Value: "h"}, {Name: "user-agent", Value: "other"}}},
		},
		{
			name: "value trimming",
			raw:  "GET / HTTP/1.1\r\nHost: \t h \t\r\nX-A:v\r\nX-B:   a  b   \r\nX-Empty:\r\nX-Tabs:\t\t\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h",
				Fields: fields{{Name: "Host", Value: "h"}, {Name: "X-A", Value: "v"}, {Name: "X-B", Value: "a  b"}, {Name: "X-Empty", Value: ""}, {Name: "X-Tabs", Value: ""}}},
		},
		{
			name: "field order and repeats kept",
			raw:  "DELETE /r HTTP/1.1\r\nAccept: a\r\nHost: h\r\nAccept: b\r\nCookie: c=1\r\nX-Obs-Text: caf\xc3\xa9\r\n\r\n",
			want: Request{Method: "DELETE", Target: "/r", Path: "/r", Host: "h",
				Fields: fields{{Name: "Accept", Value: "a"}, {Name: "Host", Value: "h"}, {Name: "Accept", Value: "b"}, {Name: "Cookie", Value: "c=1"}, {Name: "X-Obs-Text", Value: "caf\xc3\xa9"}}},
		},
		{
			name: "extension method",
			raw:  "PURGE /cache HTTP/1.1\r\nHost: h\r\n\r\n",
			want: Request{Method: "PURGE", Target: "/cache", Path: "/cache", Host: "h", Fields: fields{{Name: "Host", Value: "h"}}},
		},
		{
			name: "empty host",
			raw:  "GET / HTTP/1.1\r\nHost:\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "", Fields: fields{{Name: "Host", Value: ""}}},
		},
		{
			name: "ipv6 host",
			raw:  "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "[::1]:8080", Fields: fields{{Name: "Host", Value: "[::1]:8080"}}},
		},
		{
			name: "100 fields",
			raw:  "GET / HTTP/1.1\r\nHost: h\r\n" + manyFields(99) + "\r\n",
			want: Request{Method: "GET", Target: "/", Path: "/", Host: "h",
				Fields: append(fields{{Name: "Host", Value: "h"}}, manyFieldsList(99)...)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readRequest(tc.raw)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			want := tc.want
			want.Head = tc.raw
			// Compare nil and empty slices alike.
			if len(got.ConnectionTokens) == 0 && len(want.ConnectionTokens) == 0 {
				got.ConnectionTokens, want.ConnectionTokens = nil, nil
			}
			cmp := got
			cmp.Fields = withoutLines(got.Fields)
			if !reflect.DeepEqual(cmp, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			checkAgainstNetHTTP(t, tc.raw, &got)
		})
	}
}

func manyFields(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-F%d: %d\r\n", i, i)
	}
	return b.String()
}

func manyFieldsList(n int) []Field {
	var f []Field
	for i := range n {
		f = append(f, Field{Name: fmt.Sprintf("X-F%d", i), Value: fmt.Sprint(i)})
	}
	return f
}

func TestParseRequestUnsupported(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: h\r\n\r\n"},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n"},
		{"lowercase version", "GET / http/1.1\r\nHost: h\r\n\r\n"},
		{"HTTP/1.1 with trailing space", "GET / HTTP/1.1 \r\nHost: h\r\n\r\n"},
		{"missing Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"},
		{"no fields", "GET / HTTP/1.1\r\n\r\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"},
		{"two Hosts different case", "GET / HTTP/1.1\r\nHost: a\r\nhOST: b\r\n\r\n"},
		{"invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"},
		{"invalid Host byte", "GET / HTTP/1.1\r\nHost: a\xffb\r\n\r\n"},
		{"two Content-Lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"},
		{"two Content-Lengths different", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"},
		{"Content-Length empty", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"},
		{"Content-Length negative", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"},
		{"Content-Length plus", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n"},
		{"Content-Length hex", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n"},
		{"Content-Length inner space", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n"},
		{"Content-Length 19 digits", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000000000\r\n\r\n"},
		{"Transfer-Encoding chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"Transfer-Encoding other case", "POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: identity\r\n\r\n"},
		{"Transfer-Encoding and Content-Length", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"Expect", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"},
		{"Upgrade", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"},
		{"Connection upgrade", "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n\r\n"},
		{"Connection upgrade in list", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, upgrade\r\n\r\n"},
		{"Connection empty element", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close,,x\r\n\r\n"},
		{"Connection non-token", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close x\r\n\r\n"},
		{"Connection non-ASCII close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: clo\u017fe\r\n\r\n"},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
		{"CONNECT with path", "CONNECT /rpc HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"absolute-form target", "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
		{"authority-form target", "GET example.com:80 HTTP/1.1\r\nHost: example.com\r\n\r\n"},
		{"asterisk target", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"empty target", "GET  HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"fragment", "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"bad escape", "GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"short escape", "GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"non-ASCII target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"tab in target", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"three spaces in request line", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"double space after method", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"no version", "GET /\r\nHost: h\r\n\r\n"},
		{"empty method", " / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"invalid method", "G(T / HTTP/1.1\r\nHost: h\r\n\r\n"},
		{"control byte in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n"},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n"},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n"},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"},
		{"CR before CRLF", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\r\n\r\n"},
		{"control byte in name", "GET / HTTP/1.1\r\nHost: h\r\nX\x01: a\r\n\r\n"},
		{"non-ASCII name", "GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: a\r\n\r\n"},
		{"obs-fold space", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"},
		{"obs-fold tab", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"},
		{"first field line starts with space", "GET / HTTP/1.1\r\n Host: h\r\n\r\n"},
		{"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n"},
		{"space before colon other field", "GET / HTTP/1.1\r\nHost: h\r\nX-A : v\r\n\r\n"},
		{"tab before colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A\t: v\r\n\r\n"},
		{"no colon", "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"},
		{"empty name", "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"},
		{"bare LF line endings", "GET / HTTP/1.1\nHost: h\n\n\r\n\r\n"},
		{"bare LF after request line", "GET / HTTP/1.1\nHost: h\r\n\r\n"},
		{"bare LF in fields", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"},
		{"bare LF end of head", "GET / HTTP/1.1\r\nHost: h\r\n\n\r\n\r\n"},
		{"101 fields", "GET / HTTP/1.1\r\nHost: h\r\n" + manyFields(100) + "\r\n"},
		{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := readRequest(tc.raw)
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("err = %v (request %+v), want ErrUnsupported", err, r)
			}
		})
	}
}

// TestReadHeadUnsupported checks the heads ReadHead itself refuses, and
// that it consumes nothing of them.
func TestReadHeadUnsupported(t *testing.T) {
	big := "GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + strings.Repeat("a", 200) + "\r\n\r\n"
	for _, tc := range []struct {
		name string
		raw  string
		size int
	}{
		{"TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + strings.Repeat("\x00", 64), 4096},
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 4096},
		{"leading space", " GET / HTTP/1.1\r\nHost: h\r\n\r\n", 4096},
		{"head larger than buffer", big, 64},
		{"head larger than buffer by one", "GET / HTTP/1.1\r\nHost: hhh\r\n\r\n", 28},
		{"bare LF line endings", "GET / HTTP/1.1\nHost: h\n\n", 4096},
		{"bare LF in a field line", "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 4096},
		{"bare LF ending the head", "GET / HTTP/1.1\r\nHost: h\r\n\n", 4096},
		{"bare LF then a CRLF end", "GET / HTTP/1.1\r\nHost: h\r\n\n\r\n\r\n", 4096},
		{"no end larger than buffer", "GET / HTTP/1.1\r\n" + strings.Repeat("X-A: b\r\n", 100), 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, oneByte := range []bool{false, true} {
				var rd io.Reader = strings.NewReader(tc.raw)
				if oneByte {
					rd = iotest.OneByteReader(rd)
				}
				br := bufio.NewReaderSize(rd, tc.size)
				head, err := ReadHead(br)
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("oneByte=%v: ReadHead = %q, %v; want ErrUnsupported", oneByte, head, err)
				}
				rest, _ := io.ReadAll(br)
				if string(rest) != tc.raw {
					t.Errorf("oneByte=%v: consumed something: rest %q", oneByte, rest)
				}
			}
		})
	}
}

// TestReadHeadH2CPreface: the h2c preface's first "head" is read, and
// ParseRequest refuses it, so the caller hands on the head and the rest.
func TestReadHeadH2CPreface(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	head, err := ReadHead(br)
	if err != nil || head != "PRI * HTTP/2.0\r\n\r\n" {
		t.Fatalf("ReadHead = %q, %v", head, err)
	}
	var r Request
	if err := ParseRequest(head, &r); err != ErrUnsupported {
		t.Errorf("ParseRequest = %v", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "SM\r\n\r\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestHeadBuffered(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	for i := 0; i <= len(raw); i++ {
		br := bufio.NewReader(strings.NewReader(raw[:i]))
		_, _ = br.Peek(1)
		if got := HeadBuffered(br); got != (i == len(raw)) {
			t.Errorf("HeadBuffered with %q = %v", raw[:i], got)
		}
	}
}

func TestReadHeadFitsBufferExactly(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: hhh\r\n\r\n"
	br := bufio.NewReaderSize(strings.NewReader(raw+"next"), len(raw))
	head, err := ReadHead(br)
	if err != nil || head != raw {
		t.Fatalf("ReadHead = %q, %v", head, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "next" {
		t.Errorf("rest %q", rest)
	}
}

// TestReadHeadPipelined reads pipelined requests, with bodies, from one
// stream in pieces of every size.
func TestReadHeadPipelined(t *testing.T) {
	reqs := []string{
		"POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
		"GET /two HTTP/1.1\r\nHost: h\r\n\r\n",
		"PUT /three HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n\r\n\r\n",
		"GET /four HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
	}
	stream := strings.Join(reqs, "")
	for piece := 1; piece <= len(stream); piece++ {
		br := bufio.NewReaderSize(&pieceReader{data: []byte(stream), piece: piece}, 128)
		var r Request
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		for i, want := range reqs {
			head, err := ReadHead(br)
			if err != nil {
				t.Fatalf("piece %d: request %d: ReadHead: %v", piece, i, err)
			}
			if !strings.HasPrefix(want, head) {
				t.Fatalf("piece %d: request %d: head %q", piece, i, head)
			}
			if err := ParseRequest(head, &r); err != nil {
				t.Fatalf("piece %d: request %d: ParseRequest: %v", piece, i, err)
			}
			out.Reset()
			bw.Reset(&out)
			if _, err := CopyN(bw, br, r.ContentLength, bw); err != nil {
				t.Fatalf("piece %d: request %d: CopyN: %v", piece, i, err)
			}
			_ = bw.Flush()
			if got := head + out.String(); got != want {
				t.Fatalf("piece %d: request %d: got %q, want %q", piece, i, got, want)
			}
		}
		if _, err := ReadHead(br); err != io.EOF {
			t.Errorf("piece %d: after the last request: %v, want io.EOF", piece, err)
		}
		if !r.Close || r.Path != "/four" {
			t.Errorf("piece %d: last request %+v", piece, r)
		}
	}
}

func TestReadHeadErrors(t *testing.T) {
	// A client that closes mid-head is the connection's error, not
	// ErrUnsupported.
	for _, raw := range []string{"", "GET / HTTP/1.1\r\nHost: h\r\n", "GET / HTTP/1.1\r\nHost: h\r\n\r"} {
		br := bufio.NewReader(strings.NewReader(raw))
		if _, err := ReadHead(br); err != io.EOF {
			t.Errorf("ReadHead(%q) = %v, want io.EOF", raw, err)
		}
	}
	errBoom := errors.New("boom")
	br := bufio.NewReader(io.MultiReader(strings.NewReader("GET / HT"), iotest.ErrReader(errBoom)))
	if _, err := ReadHead(br); err != errBoom {
		t.Errorf("ReadHead = %v, want %v", err, errBoom)
	}
}

// TestParseRequestReuse checks that ParseRequest resets r, reusing its
// slices.
func TestParseRequestReuse(t *testing.T) {
	var r Request
	first := "GET /a?q HTTP/1.1\r\nHost: a\r\nUser-Agent: ua\r\nConnection: close, x-a\r\nContent-Length: 3\r\n\r\n"
	if err := ParseRequest(first, &r); err != nil {
		t.Fatal(err)
	}
	fields := &r.Fields[:1][0]
	second := "GET /b HTTP/1.1\r\nHost: b\r\n\r\n"
	if err := ParseRequest(second, &r); err != nil {
		t.Fatal(err)
	}
	want := Request{Head: second, Method: "GET", Target: "/b", Path: "/b", Host: "b", Fields: []Field{{Name: "Host", Value: "b"}}}
	got := r
	got.ConnectionTokens = nil
	got.Fields = withoutLines(got.Fields)
	if !reflect.DeepEqual(got, want) || len(r.ConnectionTokens) != 0 {
		t.Errorf("got %+v, want %+v", r, want)
	}
	if &r.Fields[0] != fields {
		t.Error("Fields not reused")
	}
	if err := ParseRequest("GET / HTTP/1.0\r\nHost: a\r\n\r\n", &r); err != ErrUnsupported {
		t.Fatal(err)
	}
}

// checkLines checks each field's Line: the line as it came when that is
// the field written as Name + ": " + Value + CRLF, for writing it on.
func checkLines(t *testing.T, head string, fields []Field) {
	t.Helper()
	for _, f := range fields {
		canonical := f.Name + ": " + f.Value + "\r\n"
		if f.Line != "" && f.Line != canonical {
			t.Errorf("field %q: Line %q, want %q or none", f.Name, f.Line, canonical)
		}
		if f.Line == "" && strings.Count(head, "\r\n"+canonical) == 1 && strings.Count(head, f.Name+":") == 1 {
			t.Errorf("field %q: no Line, though %q is in the head as is", f.Name, canonical)
		}
	}
}

func withoutLines(fields []Field) []Field {
	out := make([]Field, len(fields))
	for i, f := range fields {
		out[i] = Field{Name: f.Name, Value: f.Value}
	}
	return out
}

// checkAgainstNetHTTP parses head with net/http's request parser and the
// checks its server adds, and reports where it disagrees with r. It fails
// t if net/http refuses the head.
func checkAgainstNetHTTP(t *testing.T, head string, r *Request) {
	t.Helper()
	checkLines(t, head, r.Fields)
	nr := strings.NewReader(head + "NEXT")
	br := bufio.NewReader(nr)
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("net/http refuses %q, which h1 accepts: %v", head, err)
	}
	if consumed := len(head) + 4 - br.Buffered() - nr.Len(); consumed != len(head) {
		t.Errorf("net/http's head is %d bytes, h1's %d", consumed, len(head))
	}
	// The checks net/http's server makes after http.ReadRequest, which
	// takes the Host field out of req.Header: one Host field (counted
	// here on the head's lines), a valid one, valid field names and
	// values.
	hosts := 0
	for line := range strings.SplitSeq(head, "\r\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Host") {
			hosts++
		}
	}
	if hosts != 1 {
		t.Errorf("net/http's server refuses %q: %d Host fields", head, hosts)
	}
	if !httpguts.ValidHostHeader(req.Host) {
		t.Errorf("net/http's server refuses %q: Host %q", head, req.Host)
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Errorf("net/http's server refuses %q: field name %q", head, k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Errorf("net/http's server refuses %q: value %q", head, v)
			}
		}
	}
	// What both parse, by h1's name for it.
	for _, c := range []struct {
		name        string
		netHTTP, h1 any
	}{
		{"Method", req.Method, r.Method},
		{"Target", req.RequestURI, r.Target},
		{"Path", req.URL.Path, r.Path},
		{"RawQuery", req.URL.RawQuery, r.RawQuery},
		{"Host", req.Host, r.Host},
		{"ContentLength", req.ContentLength, r.ContentLength},
		{"Close", req.Close, r.Close},
		{"UserAgent", req.UserAgent(), r.UserAgent},
	} {
		if c.netHTTP != c.h1 {
			t.Errorf("%s: net/http %#v, h1 %#v", c.name, c.netHTTP, c.h1)
		}
	}
	if req.URL.Host != "" || req.URL.Scheme != "" || req.URL.Opaque != "" {
		t.Errorf("net/http's URL is not origin-form: %#v", req.URL)
	}
	if _, ok := req.Header["Content-Length"]; ok != r.HasContentLength {
		t.Errorf("HasContentLength: net/http's header %v, h1 %v", req.Header["Content-Length"], r.HasContentLength)
	}
	if _, ok := req.Header["X-Forwarded-For"]; ok != r.HasForwardedFor {
		t.Errorf("HasForwardedFor: net/http's header %v, h1 %v", req.Header["X-Forwarded-For"], r.HasForwardedFor)
	}
	if len(req.TransferEncoding) != 0 {
		t.Errorf("net/http's TransferEncoding %q", req.TransferEncoding)
	}
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 {
		t.Errorf("net/http's version %d.%d", req.ProtoMajor, req.ProtoMinor)
	}
	// Every field, in order, and nothing else (but the Cache-Control
	// net/http derives from "Pragma: no-cache").
	ours := make(http.Header)
	for _, f := range r.Fields {
		if !strings.EqualFold(f.Name, "Host") {
			ours.Add(f.Name, f.Value)
		}
	}
	theirs := req.Header.Clone()
	if p := theirs["Pragma"]; len(p) > 0 && p[0] == "no-cache" && ours["Cache-Control"] == nil {
		delete(theirs, "Cache-Control")
	}
	if !reflect.DeepEqual(ours, theirs) {
		t.Errorf("fields: net/http %q, h1 %q", theirs, ours)
	}
	// The connection options net/http would see.
	var tokens []string
	for _, v := range req.Header["Connection"] {
		for opt := range strings.SplitSeq(v, ",") {
			opt = strings.Trim(opt, " \t")
			if opt != "" && !strings.EqualFold(opt, "close") && !strings.EqualFold(opt, "keep-alive") {
				tokens = append(tokens, opt)
			}
		}
	}
	if len(tokens) != 0 || len(r.ConnectionTokens) != 0 {
		if !reflect.DeepEqual(tokens, r.ConnectionTokens) {
			t.Errorf("ConnectionTokens: net/http's Connection gives %q, h1 %q", tokens, r.ConnectionTokens)
		}
	}
}

// pieceReader returns data in reads of at most piece bytes.
type pieceReader struct {
	data  []byte
	piece int
}

func (p *pieceReader) Read(b []byte) (int, error) {
	if len(p.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(b), p.piece, len(p.data))
	copy(b, p.data[:n])
	p.data = p.data[n:]
	return n, nil
}
