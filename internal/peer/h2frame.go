package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// writeHeaderBlock writes block, an encoded header block, for stream id as
// one HEADERS frame and as many CONTINUATION frames as it takes, each at
// most maxFrame bytes (the peer's SETTINGS_MAX_FRAME_SIZE). The client
// and the server both send their header blocks through it.
func writeHeaderBlock(fr *http2.Framer, id uint32, block []byte, endStream bool, maxFrame int) error {
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0})
	for err == nil && len(block) > 0 {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		err = fr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}

// headerReader reads frames as a Framer with ReadMetaHeaders does, a
// HEADERS frame and its CONTINUATIONs coming back as one
// *http2.MetaHeadersFrame with the same checks (RFC 9113 §8.2 and §8.3
// field rules, the header list bound, HPACK errors), but decodes every
// block into the same fields array: x/net's grows a new one for each
// block, several allocations per request. The frame returned, its fields
// included, is valid until the next read.
type headerReader struct {
	fr  *http2.Framer // its ReadMetaHeaders nil
	dec *hpack.Decoder
	// maxList bounds a block's header list (SETTINGS_MAX_HEADER_LIST_SIZE).
	maxList uint32

	mh     http2.MetaHeadersFrame
	fields []hpack.HeaderField
	// The block being decoded (emit's state).
	headersLeft, trailersLeft uint32
	sawRegular                bool
	invalid                   error
}

func newHeaderReader(fr *http2.Framer, maxList uint32) *headerReader {
	hr := &headerReader{fr: fr, dec: hpack.NewDecoder(4096, nil), maxList: maxList}
	hr.dec.SetMaxStringLength(int(min(maxList, 1<<31-1)))
	hr.dec.SetEmitFunc(hr.emit)
	return hr
}

// emit takes one decoded field of the block under way.
func (hr *headerReader) emit(hf hpack.HeaderField) {
	if !validWireValue(hf.Value) {
		hr.invalid = fmt.Errorf("invalid value of header field %q", hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if hr.sawRegular {
			hr.invalid = errors.New("pseudo header field after a regular one")
		}
	} else {
		hr.sawRegular = true
		if !validWireName(hf.Name) {
			hr.invalid = fmt.Errorf("invalid header field name %q", hf.Name)
		}
	}
	if hr.invalid != nil {
		hr.dec.SetEmitEnabled(false)
		return
	}
	left, size := &hr.headersLeft, hf.Size()
	if hf.Name == "trailer" {
		// As x/net counts a trailer declaration: each name it lists as a
		// field of its own.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		left, size = &hr.trailersLeft, uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size()
	}
	if size > *left {
		hr.dec.SetEmitEnabled(false)
		hr.mh.Truncated = true
		hr.headersLeft, hr.trailersLeft = 0, 0
		return
	}
	*left -= size
	hr.fields = append(hr.fields, hf)
}

// Byte classes of a field on the wire, for validWireName and
// validWireValue.
const (
	wireName  = 1 << iota // a token's byte, not upper case
	wireValue             // not a control byte but HTAB
)

var wireClass = func() (t [256]uint8) {
	for c := range 256 {
		if c < utf8.RuneSelf && httpguts.IsTokenRune(rune(c)) && !('A' <= c && c <= 'Z') {
			t[c] |= wireName
		}
		if c >= ' ' && c != 0x7f || c == '\t' {
			t[c] |= wireValue
		}
	}
	return t
}()

// validWireName reports whether name is a valid HTTP/2 field name: a
// token, in lower case.
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if wireClass[name[i]]&wireName == 0 {
			return false
		}
	}
	return true
}

// validWireValue is httpguts.ValidHeaderFieldValue: no control bytes but
// HTAB. Every field of every request goes through it (a client's cookies
// and tokens come again with each request, from its HPACK table), so it
// looks at eight bytes at a time while none of them is below 0x20 or 0x7f,
// and by table at the rest.
func validWireValue(v string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(v); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(v[i : i+8]))
		// A byte below 0x20 (x-0x20 borrows into its high bit where x's
		// is clear), or one equal to 0x7f (a zero byte in x^0x7f...).
		y := x ^ 0x7f*ones
		if (x-0x20*ones)&^x&highs|(y-ones)&^y&highs != 0 {
			break
		}
	}
	for ; i < len(v); i++ {
		if wireClass[v[i]]&wireValue == 0 {
			return false
		}
	}
	return true
}

// readFrame reads the next frame.
func (hr *headerReader) readFrame() (http2.Frame, error) {
	f, err := hr.fr.ReadFrame()
	if err != nil {
		return f, err
	}
	hf, ok := f.(*http2.HeadersFrame)
	if !ok {
		return f, nil
	}
	clear(hr.fields)
	hr.fields = hr.fields[:0]
	hr.mh = http2.MetaHeadersFrame{HeadersFrame: hf}
	hr.headersLeft, hr.trailersLeft, hr.sawRegular, hr.invalid = hr.maxList, hr.maxList, false, nil
	hr.dec.SetEmitEnabled(true)
	var frag []byte = hf.HeaderBlockFragment()
	ended := hf.HeadersEnded()
	for {
		// A fragment far beyond what is left of the list, or any after
		// the list overflowed or a field was invalid, ends the
		// connection rather than being decoded (as x/net does).
		if int64(len(frag)) > 2*int64(hr.headersLeft+hr.trailersLeft) || hr.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := hr.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := hr.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // the Framer checks the order
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := hr.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if hr.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: hr.invalid}
	}
	hr.mh.Fields = hr.fields
	if err := checkPseudos(hr.mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return &hr.mh, nil
}

// checkPseudos checks a block's pseudo-header fields: known ones, each at
// most once, of a request or of a response, not both.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("invalid pseudo header field %q", hf.Name)
		}
		for _, prev := range pf[:i] {
			if prev.Name == hf.Name {
				return fmt.Errorf("duplicate pseudo header field %q", hf.Name)
			}
		}
	}
	if request && response {
		return errors.New("request and response pseudo header fields mixed")
	}
	return nil
}

// appendLiteralField appends f to an HPACK header block as a literal field
// without indexing (RFC 7541 §6.2.2; never indexed, §6.2.3, when f is
// Sensitive): the name as an index of the static table when it is there,
// the value as a plain string. It reads and changes no dynamic table, so
// it costs a few instructions a byte where the Encoder's search of its
// tables costs about 300 a field; the price is the bytes a dynamic-table
// reference would have saved (the value sent again in each response), which
// HAProxy and nginx pay too. The caller writes a pending dynamic table size
// update first (the Encoder does, with the block's first field).
func appendLiteralField(b []byte, f hpack.HeaderField) []byte {
	prefix := byte(0x00)
	if f.Sensitive {
		prefix = 0x10
	}
	if i := staticNameIndex(f.Name); i > 0 {
		b = appendHpackInt(b, prefix, 4, uint64(i))
	} else {
		b = append(b, prefix)
		b = appendHpackString(b, f.Name)
	}
	return appendHpackString(b, f.Value)
}

// appendStatusField appends a response's :status to an HPACK header block:
// an indexed field when the static table has the code, a literal without
// indexing of the static table's name otherwise.
func appendStatusField(b []byte, status int) []byte {
	switch status {
	case 200:
		return append(b, 0x80|8)
	case 204:
		return append(b, 0x80|9)
	case 206:
		return append(b, 0x80|10)
	case 304:
		return append(b, 0x80|11)
	case 400:
		return append(b, 0x80|12)
	case 404:
		return append(b, 0x80|13)
	case 500:
		return append(b, 0x80|14)
	}
	b = append(b, 8)
	return appendHpackString(b, statusText(status))
}

// appendHpackString appends s as an HPACK string literal, not Huffman
// coded (RFC 7541 §5.2).
func appendHpackString(b []byte, s string) []byte {
	b = appendHpackInt(b, 0, 7, uint64(len(s)))
	return append(b, s...)
}

// appendHpackInt appends v as an HPACK integer of an n-bit prefix (RFC 7541
// §5.1), the first byte's other bits being first's.
func appendHpackInt(b []byte, first byte, n uint, v uint64) []byte {
	full := uint64(1)<<n - 1
	if v < full {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(full))
	for v -= full; v >= 128; v >>= 7 {
		b = append(b, byte(v&0x7f|0x80))
	}
	return append(b, byte(v))
}

// staticNameIndex is the index of name's first entry in HPACK's static
// table (RFC 7541 Appendix A), 0 when it has none.
func staticNameIndex(name string) int {
	switch name {
	case ":authority":
		return 1
	case ":method":
		return 2
	case ":path":
		return 4
	case ":scheme":
		return 6
	case ":status":
		return 8
	case "accept-charset":
		return 15
	case "accept-encoding":
		return 16
	case "accept-language":
		return 17
	case "accept-ranges":
		return 18
	case "accept":
		return 19
	case "access-control-allow-origin":
		return 20
	case "age":
		return 21
	case "allow":
		return 22
	case "authorization":
		return 23
	case "cache-control":
		return 24
	case "content-disposition":
		return 25
	case "content-encoding":
		return 26
	case "content-language":
		return 27
	case "content-length":
		return 28
	case "content-location":
		return 29
	case "content-range":
		return 30
	case "content-type":
		return 31
	case "cookie":
		return 32
	case "date":
		return 33
	case "etag":
		return 34
	case "expect":
		return 35
	case "expires":
		return 36
	case "from":
		return 37
	case "host":
		return 38
	case "if-match":
		return 39
	case "if-modified-since":
		return 40
	case "if-none-match":
		return 41
	case "if-range":
		return 42
	case "if-unmodified-since":
		return 43
	case "last-modified":
		return 44
	case "link":
		return 45
	case "location":
		return 46
	case "max-forwards":
		return 47
	case "proxy-authenticate":
		return 48
	case "proxy-authorization":
		return 49
	case "range":
		return 50
	case "referer":
		return 51
	case "refresh":
		return 52
	case "retry-after":
		return 53
	case "server":
		return 54
	case "set-cookie":
		return 55
	case "strict-transport-security":
		return 56
	case "transfer-encoding":
		return 57
	case "user-agent":
		return 58
	case "vary":
		return 59
	case "via":
		return 60
	case "www-authenticate":
		return 61
	}
	return 0
}
