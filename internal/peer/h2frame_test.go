package peer

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// readAll reads frames from stream until an error, as x/net's Framer with
// ReadMetaHeaders does (xnet) or through headerReader, and describes each
// result: what a header block decoded to, or the error's kind and code.
func readAll(stream []byte, maxList uint32, xnet bool) []string {
	fr := http2.NewFramer(nil, bytes.NewReader(stream))
	read := fr.ReadFrame
	if xnet {
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.MaxHeaderListSize = maxList
	} else {
		read = newHeaderReader(fr, maxList).readFrame
	}
	var out []string
	for range 100 {
		f, err := read()
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			out = append(out, fmt.Sprintf("stream error %d %v", se.StreamID, se.Code))
			continue
		case errors.As(err, &ce):
			return append(out, fmt.Sprintf("connection error %v", http2.ErrCode(ce)))
		case err != nil:
			return append(out, "error")
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			out = append(out, fmt.Sprintf("headers %d end=%v truncated=%v %v", mh.StreamID, mh.StreamEnded(), mh.Truncated, mh.Fields))
			continue
		}
		out = append(out, fmt.Sprintf("%T %d", f, f.Header().StreamID))
	}
	return out
}

// fieldEncoder encodes the header blocks a test's client or peer sends,
// all with one HPACK encoder, as one connection's are. The zero value is
// ready.
type fieldEncoder struct {
	buf bytes.Buffer
	enc *hpack.Encoder
}

// block encodes fields, given as name, value pairs, as a header block the
// caller keeps.
func (e *fieldEncoder) block(fields ...string) []byte {
	if e.enc == nil {
		e.enc = hpack.NewEncoder(&e.buf)
	}
	e.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		e.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(e.buf.Bytes())
}

// headerStream returns the frames write writes, its header blocks encoded
// by a fresh fieldEncoder.
func headerStream(write func(fr *http2.Framer, block func(fields ...string) []byte)) []byte {
	var buf bytes.Buffer
	var fe fieldEncoder
	write(http2.NewFramer(&buf, nil), fe.block)
	return buf.Bytes()
}

var headerReaderSeeds = map[string][]byte{
	"requests, one split in CONTINUATIONs": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		b := block(":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a", "x-one", "1", "x-two", "2")
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b, EndStream: true, EndHeaders: true})
		b = block(":method", "POST", ":scheme", "https", ":path", "/p", ":authority", "a", "trailer", "x-a, x-b", "x-one", "1")
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:3], EndHeaders: false})
		fr.WriteContinuation(3, false, b[3:5])
		fr.WriteContinuation(3, false, nil)
		fr.WriteContinuation(3, true, b[5:])
		fr.WriteData(3, false, []byte("body"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("x-trailer", "t"), EndStream: true, EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: block(":status", "200", "content-length", "0"), EndStream: true, EndHeaders: true})
	}),
	"invalid fields": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		for i, fields := range [][]string{
			{":method", "GET", "Upper", "x"},
			{":method", "GET", "x-a", "bad\x00value"},
			{"x-a", "1", ":method", "GET"},
			{":method", "GET", ":method", "GET"},
			{":method", "GET", ":status", "200"},
			{":bogus", "1"},
			{":method", "GET", "x-ok", "1"},
		} {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block(fields...), EndStream: true, EndHeaders: true})
		}
	}),
	"a list over the bound, then a CONTINUATION": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		v := string(bytes.Repeat([]byte("v"), 100))
		b := block(":method", "GET", "x-a", v, "x-b", v, "x-c", v, "x-after", "1")
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b, EndStream: true, EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b, EndHeaders: false})
		fr.WriteContinuation(3, true, []byte{0x82})
	}),
	"an invalid field, then a CONTINUATION": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":method", "GET", "X-Up", "1"), EndHeaders: false})
		fr.WriteContinuation(1, true, block("x-a", "1"))
	}),
	"bad HPACK": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff}, EndStream: true, EndHeaders: true})
	}),
	"a block ending mid-field": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		b := block(":method", "GET", "x-a", "value")
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:len(b)-2], EndStream: true, EndHeaders: true})
	}),
	"a CONTINUATION out of place": headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":method", "GET"), EndHeaders: false})
		fr.WriteData(1, true, nil)
	}),
}

// headerReader decodes what x/net's Framer decodes, and fails where it
// fails, with the same error.
func TestHeaderReaderAgreesWithXNet(t *testing.T) {
	var all string
	for name, stream := range headerReaderSeeds {
		t.Run(name, func(t *testing.T) {
			want, got := readAll(stream, 256, true), readAll(stream, 256, false)
			if !slices.Equal(got, want) {
				t.Errorf("headerReader:\n%q\nx/net:\n%q", got, want)
			}
			all += fmt.Sprint(got)
		})
	}
	// The seeds reach each outcome.
	for _, outcome := range []string{"truncated=true", "stream error 3 PROTOCOL_ERROR", "connection error PROTOCOL_ERROR", "connection error COMPRESSION_ERROR", `header field ":method" = "GET"`, "x-trailer"} {
		if !strings.Contains(all, outcome) {
			t.Errorf("no seed gives %q", outcome)
		}
	}
}

func FuzzHeaderReader(f *testing.F) {
	for _, stream := range headerReaderSeeds {
		f.Add(stream)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		want, got := readAll(stream, 256, true), readAll(stream, 256, false)
		if !slices.Equal(got, want) {
			t.Errorf("headerReader:\n%q\nx/net:\n%q", got, want)
		}
	})
}

// A block of fields the HPACK table holds costs the HEADERS frame's
// allocation and nothing more: the fields array is the reader's.
func TestHeaderReaderReusesFields(t *testing.T) {
	fields := []string{":method", "GET", ":scheme", "https", ":path", "/", ":authority", "a"}
	for i := range 20 {
		fields = append(fields, fmt.Sprintf("x-field-%d", i), "value")
	}
	const blocks = 200
	stream := headerStream(func(fr *http2.Framer, block func(...string) []byte) {
		for i := range blocks {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block(fields...), EndStream: true, EndHeaders: true})
		}
	})
	hr := newHeaderReader(http2.NewFramer(nil, bytes.NewReader(stream)), 1<<20)
	if _, err := hr.readFrame(); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(blocks-10, func() {
		f, err := hr.readFrame()
		if err != nil || len(f.(*http2.MetaHeadersFrame).Fields) != len(fields)/2 {
			t.Fatalf("%v %v", f, err)
		}
	})
	if allocs > 2 {
		t.Errorf("%.1f allocations per block of %d fields, want at most 2", allocs, len(fields)/2)
	}
}

// The byte tables decide as x/net's checks: every byte alone, and at the
// end of a valid name or value.
func TestWireClassAgreesWithHttpguts(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "x-a" + string([]byte{byte(c)})} {
			wantName := true
			for _, r := range s {
				wantName = wantName && httpguts.IsTokenRune(r) && !('A' <= r && r <= 'Z')
			}
			if got := validWireName(s); got != wantName {
				t.Errorf("validWireName(%q) = %v, want %v", s, got, wantName)
			}
			if got, want := validWireValue(s), httpguts.ValidHeaderFieldValue(s); got != want {
				t.Errorf("validWireValue(%q) = %v, want %v", s, got, want)
			}
		}
	}
}

func FuzzValidWireValue(f *testing.F) {
	for _, s := range []string{"", "text/plain; charset=utf-8", "a\tb", "0123456789abcdef\x7f", "01234567\x1f", "é€ and more than eight", "\x80\x9f\xff\xfe\xa0\xc0\xe0\xf0\x7e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validWireValue(s), httpguts.ValidHeaderFieldValue(s); got != want {
			t.Fatalf("validWireValue(%q) = %v, httpguts says %v", s, got, want)
		}
	})
}
