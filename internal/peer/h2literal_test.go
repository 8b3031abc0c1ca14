package peer

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// decodeBlock decodes an HPACK header block with a fresh decoder, failing
// the test on an error.
func decodeBlock(t testing.TB, block []byte) []hpack.HeaderField {
	t.Helper()
	dec := hpack.NewDecoder(4096, nil)
	dec.SetMaxStringLength(1 << 20)
	fields, err := dec.DecodeFull(block)
	if err != nil {
		t.Fatalf("decoding %x: %v", block, err)
	}
	return fields
}

// Literal fields and status codes decode to what was encoded: names of the
// static table and others, values around the integer prefixes' limits,
// never-indexed fields; the block touches no dynamic table.
func TestAppendLiteralField(t *testing.T) {
	var want []hpack.HeaderField
	var b []byte
	for _, n := range []int{0, 1, 126, 127, 128, 254, 255, 16383, 16384, 70000} {
		for _, name := range []string{"content-type", "server", "x-custom", ":status", "www-authenticate", strings.Repeat("n", n%300)} {
			if name == "" {
				continue
			}
			f := hpack.HeaderField{Name: name, Value: strings.Repeat("v", n), Sensitive: n%2 == 1}
			want = append(want, f)
			b = appendLiteralField(b, f)
		}
	}
	got := decodeBlock(t, b)
	if len(got) != len(want) {
		t.Fatalf("%d fields decoded, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: got %q=%.20q (sensitive %v), want %q=%.20q (sensitive %v)", i,
				got[i].Name, got[i].Value, got[i].Sensitive, want[i].Name, want[i].Value, want[i].Sensitive)
		}
	}
	for _, c := range []byte{b[0]} {
		if c&0xe0 == 0x20 || c&0x40 != 0 {
			t.Errorf("first byte %#x: a table size update or an indexed literal", c)
		}
	}
	// Every status code, alone in its block: the static table's as one
	// byte.
	for status := 100; status <= 999; status++ {
		b := appendStatusField(nil, status)
		got := decodeBlock(t, b)
		if len(got) != 1 || got[0].Name != ":status" || got[0].Value != strconv.Itoa(status) {
			t.Fatalf("status %d decodes to %v", status, got)
		}
		if static := status == 200 || status == 204 || status == 206 || status == 304 || status == 400 || status == 404 || status == 500; static != (len(b) == 1) {
			t.Errorf("status %d encoded in %d bytes", status, len(b))
		}
	}
	// Every name of the static table is found there.
	for i, name := range []string{":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme", ":status"} {
		if got := staticNameIndex(name); got != i+1 && got != i {
			t.Errorf("staticNameIndex(%q) = %d", name, got)
		}
	}
}

func FuzzAppendLiteralField(f *testing.F) {
	f.Add("content-type", "text/plain", false)
	f.Add("x-a", strings.Repeat("é", 200), true)
	f.Add(":status", "200", false)
	f.Add("", "", false)
	f.Fuzz(func(t *testing.T, name, value string, sensitive bool) {
		in := hpack.HeaderField{Name: name, Value: value, Sensitive: sensitive}
		b := appendLiteralField(nil, in)
		b = appendLiteralField(b, in)
		got := decodeBlock(t, b)
		if len(got) != 2 || got[0] != in || got[1] != in {
			t.Fatalf("%+v decodes to %+v", in, got)
		}
	})
}

// After a client lowers SETTINGS_HEADER_TABLE_SIZE, the server's next
// header block starts with the dynamic table size update its decoder
// waits for (RFC 7541 §4.2), and the blocks after it with none; the
// response's fields, the handler's ResponseFields, header map and
// trailers, decode to what the handler wrote.
func TestH2ServerHeaderBlocksAfterTableSize(t *testing.T) {
	rc, _ := rawServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fs := ResponseFields(w); fs != nil {
			*fs = append(*fs, hpack.HeaderField{Name: "server", Value: "target/1"},
				hpack.HeaderField{Name: "x-long", Value: strings.Repeat("l", 300)})
		}
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Map", "m")
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(201)
		w.Write([]byte("body"))
		w.Header().Set("X-Sum", "7")
	}), nil)
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	rc.fr.ReadMetaHeaders = nil
	rc.next(func(f http2.Frame) bool {
		return f.Header().Type == http2.FrameSettings && f.Header().Flags.Has(http2.FlagSettingsAck)
	})
	dec := hpack.NewDecoder(4096, nil)
	dec.SetAllowedMaxDynamicTableSize(0)
	for i, id := range []uint32{1, 3} {
		rc.get(id, true)
		var blocks [][]byte
		for len(blocks) < 2 {
			f := rc.next(func(f http2.Frame) bool { _, ok := f.(*http2.HeadersFrame); return ok }).(*http2.HeadersFrame)
			if f.StreamID != id || !f.HeadersEnded() {
				t.Fatalf("HEADERS of stream %d (ended %v), want %d", f.StreamID, f.HeadersEnded(), id)
			}
			blocks = append(blocks, bytes.Clone(f.HeaderBlockFragment()))
		}
		if update := blocks[0][0]&0xe0 == 0x20; update != (i == 0) {
			t.Errorf("request %d: head starts with a table size update: %v", i, update)
		}
		head, err := dec.DecodeFull(blocks[0])
		if err != nil {
			t.Fatalf("request %d: head: %v", i, err)
		}
		// The header map's fields come in the map's order.
		slices.SortFunc(head[3:], func(a, b hpack.HeaderField) int { return strings.Compare(a.Name, b.Name) })
		want := []hpack.HeaderField{{Name: ":status", Value: "201"}, {Name: "server", Value: "target/1"},
			{Name: "x-long", Value: strings.Repeat("l", 300)}, {Name: "content-type", Value: "text/plain"},
			{Name: "trailer", Value: "X-Sum"}, {Name: "x-map", Value: "m"}}
		if !slices.Equal(head, want) {
			t.Errorf("request %d: head %v, want %v", i, head, want)
		}
		trailers, err := dec.DecodeFull(blocks[1])
		if err != nil || !slices.Equal(trailers, []hpack.HeaderField{{Name: "x-sum", Value: "7"}}) {
			t.Errorf("request %d: trailers %v, %v", i, trailers, err)
		}
	}
}
