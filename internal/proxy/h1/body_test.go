package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http/httputil"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// nopFlusher counts the flushes of nothing.
type nopFlusher struct{ n int }

func (f *nopFlusher) Flush() error { f.n++; return nil }

// copyChunked runs CopyChunked on in, followed by after, and returns what
// it wrote, its count and error, and what it left in the reader.
func copyChunked(in, after string, size int) (out string, n int64, rest string, err error) {
	src := bufio.NewReaderSize(strings.NewReader(in+after), size)
	var b bytes.Buffer
	dst := bufio.NewWriter(&b)
	n, err = CopyChunked(dst, src, dst)
	if ferr := dst.Flush(); ferr != nil {
		panic(ferr)
	}
	r, _ := io.ReadAll(src)
	return b.String(), n, string(r), err
}

func TestCopyChunkedValid(t *testing.T) {
	long := strings.Repeat("0123456789abcdef", 300) // 4800 bytes
	for _, tc := range []struct {
		name string
		body string
		data string
	}{
		{"empty", "0\r\n\r\n", ""},
		{"one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"},
		{"several chunks", "5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n", "hello, world"},
		{"uppercase hex", "A\r\n0123456789\r\n1F\r\n" + strings.Repeat("x", 31) + "\r\n0\r\n\r\n", "0123456789" + strings.Repeat("x", 31)},
		{"mixed case hex", "1a\r\n" + strings.Repeat("y", 26) + "\r\n0\r\n\r\n", strings.Repeat("y", 26)},
		{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", "hello"},
		{"15 hex digits", "000000000000005\r\nhello\r\n0\r\n\r\n", "hello"},
		{"extensions", "5;name=value\r\nhello\r\n3;a;b=\"q r\"\r\nabc\r\n0;last\r\n\r\n", "helloabc"},
		{"extension with spaces", "5; name = value \r\nhello\r\n0\r\n\r\n", "hello"},
		{"trailing whitespace", "5 \t\r\nhello\r\n0 \r\n\r\n", "hello"},
		{"data with CRLF", "4\r\n\r\n\r\n\r\n0\r\n\r\n", "\r\n\r\n"},
		{"data with zero chunk look-alike", "5\r\n0\r\n\r\n\r\n0\r\n\r\n", "0\r\n\r\n"},
		{"trailers", "3\r\nabc\r\n0\r\nX-Checksum: 123\r\nExpires:never\r\nX-Empty:\r\n\r\n", "abc"},
		{"trailer with obs-text and tabs", "0\r\nX-A: \tcaf\xc3\xa9 \t\r\n\r\n", ""},
		{"long chunk", "12c0\r\n" + long + "\r\n0\r\n\r\n", long},
		{"long chunk uppercase", "12C0\r\n" + long + "\r\n12c0\r\n" + long + "\r\n0\r\n\r\n", long + long},
		{"size line 4096 bytes", "5;" + strings.Repeat("x", 4092) + "\r\nhello\r\n0\r\n\r\n", "hello"},
		{"trailer line 4096 bytes", "0\r\nX: " + strings.Repeat("x", 4091) + "\r\n\r\n", ""},
		{"much non-data for its data", strings.Repeat("1;"+strings.Repeat("e", 4000)+"\r\nx\r\n", 4) + "0\r\n\r\n", "xxxx"},
		{"one byte chunks", "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, after := range []string{"", "NEXT", "HTTP/1.1 200 OK\r\n\r\n", "\r\n"} {
				for _, size := range []int{16, 64, 4096, 8192} {
					out, n, rest, err := copyChunked(tc.body, after, size)
					if size < maxLine(tc.body) {
						continue // CopyChunked needs its lines to fit in src's buffer
					}
					if err != nil {
						t.Fatalf("after %q, size %d: CopyChunked: %v", after, size, err)
					}
					if out != tc.body {
						t.Fatalf("after %q, size %d: wrote %q, want %q", after, size, out, tc.body)
					}
					if n != int64(len(tc.data)) {
						t.Errorf("after %q, size %d: n = %d, want %d", after, size, n, len(tc.data))
					}
					if rest != after {
						t.Errorf("after %q, size %d: left %q", after, size, rest)
					}
				}
			}
			// What it copied is what httputil's chunked reader decodes.
			data, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(tc.body)))
			if err != nil || string(data) != tc.data {
				t.Errorf("NewChunkedReader = %q, %v; want %q", data, err, tc.data)
			}
		})
	}
}

// maxLine returns the length of the longest CRLF-terminated line of s that
// CopyChunked reads as a line, CRLF included. (It counts data too, which is
// only ever more.)
func maxLine(s string) int {
	m := 0
	for line := range strings.SplitAfterSeq(s, "\r\n") {
		m = max(m, len(line))
	}
	return m
}

func TestCopyChunkedMalformed(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"bad hex", "5g\r\nhello\r\n0\r\n\r\n"},
		{"not hex", "x\r\n"},
		{"empty size", "\r\nhello\r\n0\r\n\r\n"},
		{"negative size", "-5\r\nhello\r\n0\r\n\r\n"},
		{"hex prefix", "0x5\r\nhello\r\n0\r\n\r\n"},
		{"leading space", " 5\r\nhello\r\n0\r\n\r\n"},
		{"space inside size", "1 0\r\n"},
		{"space before extension", "5 ;ext\r\nhello\r\n0\r\n\r\n"},
		{"tab before extension", "0\t;ext\r\n\r\n"},
		{"16 hex digits", "0000000000000005\r\nhello\r\n0\r\n\r\n"},
		{"bare LF size line", "5\nhello\r\n0\r\n\r\n"},
		{"bare CR in size line", "5\r;\r\nhello\r\n0\r\n\r\n"},
		{"bare CR in extension", "5;a\rb\r\nhello\r\n0\r\n\r\n"},
		{"control byte in extension", "5;a\x01b\r\nhello\r\n0\r\n\r\n"},
		{"data longer than size", "5\r\nhelloX\r\n0\r\n\r\n"},
		{"no CRLF after data", "5\r\nhello0\r\n\r\n"},
		{"bare LF after data", "5\r\nhello\n0\r\n\r\n"},
		{"CR CR LF after data", "5\r\nhello\r\r\n0\r\n\r\n"},
		{"size line too long", "5;" + strings.Repeat("x", 5000) + "\r\nhello\r\n0\r\n\r\n"},
		{"size line 4097 bytes", "5;" + strings.Repeat("x", 4093) + "\r\nhello\r\n0\r\n\r\n"},
		{"trailer line too long", "0\r\nX: " + strings.Repeat("x", 5000) + "\r\n\r\n"},
		{"trailer without colon", "0\r\nNoColon\r\n\r\n"},
		{"trailer with space in name", "0\r\nX Y: z\r\n\r\n"},
		{"trailer with space before colon", "0\r\nX : z\r\n\r\n"},
		{"trailer with empty name", "0\r\n: z\r\n\r\n"},
		{"folded trailer", "0\r\nX: a\r\n b\r\n\r\n"},
		{"trailer with NUL", "0\r\nX: a\x00b\r\n\r\n"},
		{"trailer with bare LF", "0\r\nX: a\nY: b\r\n\r\n"},
		{"trailer end with bare LF", "0\r\nX: a\r\n\n"},
		{"too much non-data", strings.Repeat("1;"+strings.Repeat("e", 4000)+"\r\nx\r\n", 5) + "0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := copyChunked(tc.body, "", 4096)
			if !errors.Is(err, ErrMalformed) || !errors.Is(err, errChunked) {
				t.Errorf("err = %v, want ErrMalformed and errChunked", err)
			}
		})
	}
}

func TestCopyChunkedEOF(t *testing.T) {
	for _, body := range []string{
		"",
		"5",
		"5\r",
		"5\r\n",
		"5\r\nhel",
		"5\r\nhello",
		"5\r\nhello\r",
		"5\r\nhello\r\n",
		"5\r\nhello\r\n0",
		"5\r\nhello\r\n0\r\n",
		"5\r\nhello\r\n0\r\n\r",
		"0\r\nX: y\r\n",
		"0\r\nX: y",
	} {
		out, _, _, err := copyChunked(body, "", 4096)
		if err != io.ErrUnexpectedEOF {
			t.Errorf("CopyChunked(%q) = %v, want io.ErrUnexpectedEOF", body, err)
		}
		if !strings.HasPrefix(body, out) {
			t.Errorf("CopyChunked(%q) wrote %q", body, out)
		}
	}
}

func TestCopyChunkedErrors(t *testing.T) {
	errBoom := errors.New("boom")
	body := "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"
	// The reader's error.
	src := bufio.NewReader(io.MultiReader(strings.NewReader(body[:12]), errReader{errBoom}))
	dst := bufio.NewWriter(io.Discard)
	if _, err := CopyChunked(dst, src, dst); err != errBoom {
		t.Errorf("reader error: %v", err)
	}
	// The flusher's.
	src = bufio.NewReader(iotest.OneByteReader(strings.NewReader(body)))
	if _, err := CopyChunked(dst, src, errFlusher{errBoom}); err != errBoom {
		t.Errorf("flusher error: %v", err)
	}
	// The writer's.
	src = bufio.NewReader(strings.NewReader(body))
	dst = bufio.NewWriterSize(errWriter{errBoom}, 16)
	if _, err := CopyChunked(dst, src, &nopFlusher{}); err != errBoom {
		t.Errorf("writer error: %v", err)
	}
}

type errFlusher struct{ err error }

func (e errFlusher) Flush() error { return e.err }

type errWriter struct{ err error }

func (e errWriter) Write([]byte) (int, error) { return 0, e.err }

func TestCopyN(t *testing.T) {
	for _, size := range []int{16, 4096} {
		for _, tc := range []struct {
			in   string
			n    int64
			want string
			err  error
		}{
			{"hello world", 5, "hello", nil},
			{"hello", 5, "hello", nil},
			{"hello", 0, "", nil},
			{"", 0, "", nil},
			{"hel", 5, "hel", io.ErrUnexpectedEOF},
			{"", 1, "", io.ErrUnexpectedEOF},
			{strings.Repeat("a", 100) + "rest", 100, strings.Repeat("a", 100), nil},
		} {
			src := bufio.NewReaderSize(iotest.HalfReader(strings.NewReader(tc.in)), size)
			var b bytes.Buffer
			dst := bufio.NewWriter(&b)
			n, err := CopyN(dst, src, tc.n, dst)
			_ = dst.Flush()
			if err != tc.err || b.String() != tc.want || n != int64(len(tc.want)) {
				t.Errorf("CopyN(%q, %d) = %d, %v, wrote %q", tc.in, tc.n, n, err, b.String())
			}
			rest, _ := io.ReadAll(src)
			if tc.err == nil && string(rest) != tc.in[len(tc.want):] {
				t.Errorf("CopyN(%q, %d) left %q", tc.in, tc.n, rest)
			}
		}
	}
	// CopyN of nothing does not read.
	src := bufio.NewReader(errReader{errors.New("read")})
	f := &nopFlusher{}
	if n, err := CopyN(bufio.NewWriter(io.Discard), src, 0, f); n != 0 || err != nil || f.n != 0 {
		t.Errorf("CopyN(0) = %d, %v, %d flushes", n, err, f.n)
	}
}

func TestCopyToEOF(t *testing.T) {
	in := strings.Repeat("0123456789", 100)
	src := bufio.NewReaderSize(iotest.HalfReader(strings.NewReader(in)), 16)
	var b bytes.Buffer
	dst := bufio.NewWriter(&b)
	n, err := CopyToEOF(dst, src, dst)
	_ = dst.Flush()
	if err != nil || n != int64(len(in)) || b.String() != in {
		t.Errorf("CopyToEOF = %d, %v", n, err)
	}
	errBoom := errors.New("boom")
	src = bufio.NewReader(io.MultiReader(strings.NewReader("abc"), errReader{errBoom}))
	b.Reset()
	n, err = CopyToEOF(dst, src, dst)
	_ = dst.Flush()
	if err != errBoom || n != 3 || b.String() != "abc" {
		t.Errorf("CopyToEOF = %d, %v, wrote %q", n, err, b.String())
	}
}

// watchedReader returns data in the pieces given, and checks before each
// read, which could block, that dst holds nothing that was not flushed.
type watchedReader struct {
	t      *testing.T
	pieces []string
	dst    *bufio.Writer
	what   string
	failed bool
}

func watch(t *testing.T, pieces []string, dst *bufio.Writer, what string) *watchedReader {
	return &watchedReader{t: t, pieces: append([]string(nil), pieces...), dst: dst, what: what}
}

func (w *watchedReader) Read(b []byte) (int, error) {
	if n := w.dst.Buffered(); n > 0 && !w.failed {
		w.failed = true
		w.t.Errorf("%s: read with %d bytes copied but not flushed", w.what, n)
	}
	if len(w.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(b, w.pieces[0])
	if w.pieces[0] = w.pieces[0][n:]; w.pieces[0] == "" {
		w.pieces = w.pieces[1:]
	}
	return n, nil
}

// countingFlusher flushes a bufio.Writer, counting.
type countingFlusher struct {
	w *bufio.Writer
	n int
}

func (c *countingFlusher) Flush() error { c.n++; return c.w.Flush() }

// TestCopyFlushes checks that the copies flush what they copied before
// they read, and so may block, whatever the pieces the input arrives in.
func TestCopyFlushes(t *testing.T) {
	body := "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: v\r\n\r\n"
	splits := func(s string, f func(pieces []string, what string)) {
		for i := 1; i < len(s); i++ {
			f([]string{s[:i], s[i:]}, "split at "+strconv.Itoa(i))
			for j := i + 1; j < len(s); j++ {
				f([]string{s[:i], s[i:j], s[j:]}, "split at "+strconv.Itoa(i)+", "+strconv.Itoa(j))
			}
		}
		one := make([]string, len(s))
		for i := range s {
			one[i] = s[i : i+1]
		}
		f(one, "one byte at a time")
	}
	splits(body, func(pieces []string, what string) {
		var out bytes.Buffer
		dst := bufio.NewWriter(&out)
		fl := &countingFlusher{w: dst}
		src := bufio.NewReaderSize(watch(t, pieces, dst, "CopyChunked "+what), 16)
		n, err := CopyChunked(dst, src, fl)
		_ = dst.Flush()
		if err != nil || n != 8 || out.String() != body {
			t.Errorf("CopyChunked %s = %d, %v, wrote %q", what, n, err, out.String())
		}
		if fl.n == 0 {
			t.Errorf("CopyChunked %s: no flush", what)
		}
	})
	plain := "0123456789abcdefghijklmnopqrstuvwxyz"
	splits(plain, func(pieces []string, what string) {
		var out bytes.Buffer
		dst := bufio.NewWriter(&out)
		fl := &countingFlusher{w: dst}
		src := bufio.NewReaderSize(watch(t, pieces, dst, "CopyN "+what), 16)
		n, err := CopyN(dst, src, int64(len(plain)), fl)
		_ = dst.Flush()
		if err != nil || n != int64(len(plain)) || out.String() != plain {
			t.Errorf("CopyN %s = %d, %v, wrote %q", what, n, err, out.String())
		}

		out.Reset()
		src = bufio.NewReaderSize(watch(t, pieces, dst, "CopyToEOF "+what), 16)
		n, err = CopyToEOF(dst, src, fl)
		_ = dst.Flush()
		if err != nil || n != int64(len(plain)) || out.String() != plain {
			t.Errorf("CopyToEOF %s = %d, %v, wrote %q", what, n, err, out.String())
		}
	})
}
