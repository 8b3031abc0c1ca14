package h1

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// benchRequest is a realistic request head: 259 bytes, 8 fields.
const benchRequest = "GET /api/v1/users/42?fields=name HTTP/1.1\r\n" +
	"Host: api.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux)\r\n" +
	"Accept: application/json\r\n" +
	"Accept-Encoding: gzip, br\r\n" +
	"Accept-Language: en-US\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=0123456789\r\n" +
	"X-Request-Id: 7f3c9a2e\r\n" +
	"\r\n"

func BenchmarkParseRequest(b *testing.B) {
	var r Request
	if err := ParseRequest(benchRequest, &r); err != nil || len(r.Fields) != 8 {
		b.Fatalf("ParseRequest: %v, %d fields", err, len(r.Fields))
	}
	b.SetBytes(int64(len(benchRequest)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseRequest(benchRequest, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadHeadParseRequest includes ReadHead, whose head string is the
// one allocation per request.
func BenchmarkReadHeadParseRequest(b *testing.B) {
	var r Request
	rd := strings.NewReader(benchRequest)
	br := bufio.NewReaderSize(rd, 4096)
	b.SetBytes(int64(len(benchRequest)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(benchRequest)
		br.Reset(rd)
		head, err := ReadHead(br)
		if err != nil {
			b.Fatal(err)
		}
		if err := ParseRequest(head, &r); err != nil {
			b.Fatal(err)
		}
	}
}

const benchResponse = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: application/json; charset=utf-8\r\n" +
	"Content-Length: 27\r\n" +
	"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n" +
	"Cache-Control: no-store\r\n" +
	"Connection: keep-alive\r\n" +
	"Vary: Accept-Encoding\r\n" +
	"X-Request-Id: 7f3c9a2e\r\n" +
	"\r\n" +
	`{"name":"x","email":"y@z"}` + "\n"

func benchmarkResponse(b *testing.B, size int) {
	var r Response
	data := []byte(benchResponse)
	rd := bytes.NewReader(data)
	br := bufio.NewReaderSize(rd, size)
	buf := make([]byte, 0, 1024)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(data)
		br.Reset(rd)
		head, err := ReadResponseHead(br, buf, 64<<10)
		if err != nil {
			b.Fatal(err)
		}
		if err := ParseResponse(head, &r); err != nil {
			b.Fatal(err)
		}
		if r.ContentLength != 27 || len(r.Fields) != 7 {
			b.Fatalf("%+v", r)
		}
	}
}

func BenchmarkReadResponseHead(b *testing.B) { benchmarkResponse(b, 4096) }

// BenchmarkReadResponseHeadLarge has a head larger than the reader's
// buffer, collected in buf.
func BenchmarkReadResponseHeadLarge(b *testing.B) { benchmarkResponse(b, 64) }

func BenchmarkCopyChunked(b *testing.B) {
	var body bytes.Buffer
	for range 16 {
		body.WriteString("400\r\n")
		body.WriteString(strings.Repeat("x", 0x400))
		body.WriteString("\r\n")
	}
	body.WriteString("0\r\n\r\n")
	data := body.Bytes()
	rd := bytes.NewReader(data)
	src := bufio.NewReaderSize(rd, 4096)
	dst := bufio.NewWriterSize(io.Discard, 4096)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(data)
		src.Reset(rd)
		if n, err := CopyChunked(dst, src, dst); err != nil || n != 16<<10 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkParseBufferedResponse is the fast path's usual way to a
// response head: parsed where it lies in the read buffer, in one pass.
func BenchmarkParseBufferedResponse(b *testing.B) {
	var r Response
	data := []byte(benchResponse)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n, ok := ParseBufferedResponse(data, &r)
		if !ok || n != len(data)-len(`{"name":"x","email":"y@z"}`+"\n") || r.ContentLength != 27 || len(r.Fields) != 7 {
			b.Fatalf("%d %v %+v", n, ok, r)
		}
	}
}
