package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http/httputil"
	"net/textproto"
	"reflect"
	"strings"
	"testing"
)

var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
	"GET /index.html?lang=en&q=a%20b HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/125.0\r\nAccept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: session=abc123; theme=dark\r\nUpgrade-Insecure-Requests: 1\r\n\r\n",
	"POST /api/v1/items HTTP/1.1\r\nHost: api.example.com:8443\r\nContent-Type: application/json\r\nContent-Length: 13\r\nAuthorization: Bearer eyJhbGciOi\r\n\r\n{\"name\":\"x\"}",
	"PUT /a%2Fb/c%20d HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
	"DELETE /x HTTP/1.1\r\nHost: [::1]:80\r\nConnection: X-Trace, keep-alive\r\nX-Trace: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n",
	"HEAD /status HTTP/1.1\r\nHost: h\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\n\r\n",
	"OPTIONS /cors HTTP/1.1\r\nHost: h\r\nOrigin: https://o.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
	"GET /p HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
	"GET /p HTTP/1.1\r\nHost: h\r\nTrailer: X-A\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
	"GET /p?a?b HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET //double/slash HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\n\n",
	"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
}

// FuzzParseRequest checks that what ReadHead and ParseRequest accept,
// net/http's server accepts and parses alike, and that
// ReadBufferedRequest takes nothing else, to the same Request.
func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		qbr := bufio.NewReaderSize(bytes.NewReader(data), 1024)
		_, _ = qbr.Peek(1)
		var quick Request
		qhead, quickOK := ReadBufferedRequest(qbr, &quick)
		rd := bytes.NewReader(data)
		br := bufio.NewReaderSize(rd, 1024)
		_, _ = br.Peek(1)
		// What the quick path took, the slow one must take alike.
		if !quickOK && qbr.Buffered() != br.Buffered() {
			t.Fatalf("ReadBufferedRequest consumed bytes of %q and reported false", data)
		}
		if quickOK {
			head, err := ReadHead(br)
			var r Request
			if err != nil || head != qhead || ParseRequest(head, &r) != nil {
				t.Fatalf("ReadBufferedRequest took %q of %q; ReadHead: %q, %v", qhead, data, head, err)
			}
			if !reflect.DeepEqual(quick, r) || qbr.Buffered() != br.Buffered() {
				t.Fatalf("ReadBufferedRequest: %+v; ReadHead and ParseRequest: %+v", quick, r)
			}
			rd.Reset(data)
			br.Reset(rd)
		}
		head, err := ReadHead(br)
		consumed := len(data) - br.Buffered() - rd.Len()
		switch {
		case errors.Is(err, ErrUnsupported):
			if consumed != 0 {
				t.Fatalf("ReadHead consumed %d bytes and returned ErrUnsupported", consumed)
			}
			return
		case err == io.EOF:
			return
		case err != nil:
			t.Fatalf("ReadHead: %v", err)
		}
		if consumed != len(head) || !bytes.HasPrefix(data, []byte(head)) {
			t.Fatalf("ReadHead returned %q and consumed %d bytes", head, consumed)
		}
		if i := strings.Index(head, "\r\n\r\n"); i != len(head)-4 {
			t.Fatalf("ReadHead returned %q", head)
		}
		var r Request
		if err := ParseRequest(head, &r); err != nil {
			if err != ErrUnsupported {
				t.Fatalf("ParseRequest: %v", err)
			}
			return
		}
		checkAgainstNetHTTP(t, head, &r)
	})
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 5\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\nhello",
	"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n",
	"HTTP/1.1 304\r\nETag: \"abc\"\r\n\r\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.0 200 OK\r\n\r\nuntil close",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 03\r\n\r\n",
	"HTTP/1.1 502 Bad Gateway\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nCache-Control: no-store\r\nPragma: no-cache\r\n\r\n",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	"HTTP/1.1 200 OK\nX: a\n\n",
}

// FuzzParseResponse checks that what ReadResponseHead and ParseResponse
// accept, http.ReadResponse accepts and parses alike, and that
// ParseBufferedResponse takes nothing else, to the same Response.
func FuzzParseResponse(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, piece uint8) {
		var quick Response
		n, quickOK := ParseBufferedResponse(data, &quick)
		defer func() {
			if !quickOK {
				return
			}
			var r Response
			i := bytes.Index(data, crlfcrlf)
			if i+4 != n || ParseResponse(data[:n], &r) != nil {
				t.Fatalf("ParseBufferedResponse took %d bytes of %q; the head is %d bytes", n, data, i+4)
			}
			if !reflect.DeepEqual(quick, r) {
				t.Fatalf("ParseBufferedResponse: %+v, ParseResponse: %+v", quick, r)
			}
		}()
		var src io.Reader = bytes.NewReader(data)
		if piece > 0 {
			src = &pieceReader{data: data, piece: int(piece)}
		}
		// A small buffer, so that heads are collected in buf too.
		br := bufio.NewReaderSize(src, 32)
		head, err := ReadResponseHead(br, nil, 512)
		rest, _ := io.ReadAll(br)
		if err != nil {
			i := bytes.Index(data, crlfcrlf)
			switch {
			case err == io.EOF && len(data) == 0:
			case err == io.ErrUnexpectedEOF && len(data) > 0 && i < 0:
			case errors.Is(err, ErrMalformed) && (i < 0 || i+4 > 512) && len(data) > 32:
			default:
				t.Fatalf("ReadResponseHead: %v", err)
			}
			return
		}
		if i := bytes.Index(data, crlfcrlf); i < 0 || !bytes.Equal(head, data[:i+4]) || !bytes.Equal(rest, data[i+4:]) {
			t.Fatalf("ReadResponseHead returned %q and left %q", head, rest)
		}
		var r Response
		if err := ParseResponse(head, &r); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseResponse: %v", err)
			}
			return
		}
		checkResponseAgainstNetHTTP(t, head, &r)
	})
}

var chunkedSeeds = []string{
	"0\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\n",
	"5;ext=1\r\nhello\r\n6;a;b=\"c\"\r\n world\r\n0\r\n\r\n",
	"A\r\n0123456789\r\n0\r\nX-Checksum: 9\r\nExpires: never\r\n\r\n",
	"5 \r\nhello\r\n0\t\r\n\r\nNEXT",
	"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	"5 ;x\r\nhello\r\n0\r\n\r\n",
	"5\r\nhello\n0\r\n\r\n",
	"0000000000000005\r\nhello\r\n0\r\n\r\n",
	"0\r\nX: a\r\n b\r\n\r\n",
}

// FuzzCopyChunked checks that what CopyChunked copies is the body exactly
// and that net/http decodes it alike.
func FuzzCopyChunked(f *testing.F) {
	for _, s := range chunkedSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := bytes.NewReader(data)
		src := bufio.NewReaderSize(rd, 4096)
		var out bytes.Buffer
		dst := bufio.NewWriter(&out)
		n, err := CopyChunked(dst, src, dst)
		_ = dst.Flush()
		consumed := len(data) - src.Buffered() - rd.Len()
		if !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("CopyChunked wrote %q, not a prefix of its input", out.Bytes())
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && err != io.ErrUnexpectedEOF {
				t.Fatalf("CopyChunked: %v", err)
			}
			return
		}
		if consumed != out.Len() {
			t.Fatalf("CopyChunked consumed %d bytes and wrote %d", consumed, out.Len())
		}
		// net/http's reader decodes as many data bytes from the input,
		// and its trailer section ends where CopyChunked's does.
		nrd := bytes.NewReader(data)
		nbr := bufio.NewReader(nrd)
		got, err := io.ReadAll(httputil.NewChunkedReader(nbr))
		if err != nil {
			t.Fatalf("CopyChunked copied %q, which httputil.NewChunkedReader refuses: %v", out.Bytes(), err)
		}
		if int64(len(got)) != n {
			t.Fatalf("CopyChunked counted %d data bytes, httputil.NewChunkedReader %d", n, len(got))
		}
		if _, err := textproto.NewReader(nbr).ReadMIMEHeader(); err != nil {
			t.Fatalf("CopyChunked copied %q, whose trailer net/http refuses: %v", out.Bytes(), err)
		}
		if nconsumed := len(data) - nbr.Buffered() - nrd.Len(); nconsumed != consumed {
			t.Fatalf("CopyChunked consumed %d bytes, net/http %d", consumed, nconsumed)
		}
		// What CopyChunked wrote decodes to the same data.
		again, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(out.Bytes())))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("the copy decodes to %q, %v; the input to %q", again, err, got)
		}
	})
}
