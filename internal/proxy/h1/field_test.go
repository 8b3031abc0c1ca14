package h1

import (
	"strings"
	"testing"
)

// cutFieldSteps is what cutField replaces: the line cut at its CRLF, the
// name at the first colon, then each part checked.
func cutFieldSteps(s string) (name, value, rest string, ok bool) {
	line, rest, ok := cutLine(s)
	if !ok {
		return "", "", "", false
	}
	name, value, ok = strings.Cut(line, ":")
	if !ok || !validName(name) {
		return "", "", "", false
	}
	value = trimOWS(value)
	if !validValue(value) {
		return "", "", "", false
	}
	return name, value, rest, true
}

func TestCutField(t *testing.T) {
	for _, tc := range []struct {
		in, name, value, rest string
		ok                    bool
	}{
		{"Host: a\r\nrest", "Host", "a", "rest", true},
		{"X:\r\n", "X", "", "", true},
		{"X: \t a b \t\r\n\r\n", "X", "a b", "\r\n", true},
		{"X: a:b\r\n", "X", "a:b", "", true},
		{"X: caf\xc3\xa9\r\n", "X", "caf\xc3\xa9", "", true},
		{"X: a long value, of more than eight bytes \t\r\n", "X", "a long value, of more than eight bytes", "", true},
		{"X: \xff\xfe\x80\x80 0123456789~\r\n", "X", "\xff\xfe\x80\x80 0123456789~", "", true},
		{"X: 01234567\x7f89abcdef\r\n", "", "", "", false},
		{"X: 0123456789abcde\x01\r\n", "", "", "", false},
		{"X: 0123456789abcdef\n\r\n", "", "", "", false},
		{": a\r\n", "", "", "", false},
		{"X : a\r\n", "", "", "", false},
		{" X: a\r\n", "", "", "", false},
		{"X a\r\n", "", "", "", false},
		{"X: a\n", "", "", "", false},
		{"X: a\rb\r\n", "", "", "", false},
		{"X: a\x00\r\n", "", "", "", false},
		{"X: a\x7f\r\n", "", "", "", false},
		{"X: a\r", "", "", "", false},
		{"X: a", "", "", "", false},
		{"X", "", "", "", false},
		{"", "", "", "", false},
	} {
		name, value, rest, ok := cutField(tc.in)
		if name, value, rest = pick(ok, name), pick(ok, value), pick(ok, rest); name != tc.name || value != tc.value || rest != tc.rest || ok != tc.ok {
			t.Errorf("cutField(%q) = %q, %q, %q, %v; want %q, %q, %q, %v", tc.in, name, value, rest, ok, tc.name, tc.value, tc.rest, tc.ok)
		}
	}
}

func pick(ok bool, s string) string {
	if !ok {
		return ""
	}
	return s
}

// FuzzCutField holds cutField to the steps it replaces, for strings and
// bytes alike, and cutFieldLine's line to the field written out.
func FuzzCutField(f *testing.F) {
	for _, s := range []string{"Host: a\r\n\r\n", "X:\r\n", "X: a\n", "X : a\r\n", "X: a\rb\r\n", "X: \ta \r\nY: b\r\n", "X\r\n",
		"X: 01234567\x7f89abcdef\r\n", "X: 0123456789abcdef0123\t45\r\n", "X: \x80\x81\x82\x83\x84\x85\x86\x87\x88\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, value, rest, ok := cutField(s)
		wname, wvalue, wrest, wok := cutFieldSteps(s)
		if ok != wok || ok && (name != wname || value != wvalue || rest != wrest) {
			t.Fatalf("cutField(%q) = %q, %q, %q, %v; the steps give %q, %q, %q, %v", s, name, value, rest, ok, wname, wvalue, wrest, wok)
		}
		_, _, _, line, _ := cutFieldLine(s)
		canonical := name + ": " + value + "\r\n"
		if ok && (line != "") != strings.HasPrefix(s, canonical) || line != "" && line != canonical {
			t.Fatalf("cutFieldLine(%q): line %q, the field written out is %q", s, line, canonical)
		}
		bname, bvalue, brest, bok := cutField([]byte(s))
		if bok != ok || ok && (string(bname) != name || string(bvalue) != value || string(brest) != rest) {
			t.Fatalf("cutField([]byte(%q)) differs from cutField(%q)", s, s)
		}
	})
}

// TestFieldLines checks which lines the parsers hand on as they came: those
// that read exactly name + ": " + value + CRLF.
func TestFieldLines(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: h\r\nA:  two spaces\r\nB:none\r\nC: trailing \r\nD: \r\nE:\r\nF:\ttab\r\nG: ok\r\n\r\n"
	want := map[string]string{"Host": "Host: h\r\n", "D": "D: \r\n", "G": "G: ok\r\n"}
	var r Request
	if err := ParseRequest(head, &r); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := ParseResponse([]byte("HTTP/1.1 200 OK"+head[len("GET / HTTP/1.1"):]), &resp); err != nil {
		t.Fatal(err)
	}
	if len(r.Fields) != 8 || len(resp.Fields) != 8 {
		t.Fatalf("%d and %d fields, want 8", len(r.Fields), len(resp.Fields))
	}
	for i, f := range r.Fields {
		if f.Line != want[f.Name] {
			t.Errorf("request field %q: Line %q, want %q", f.Name, f.Line, want[f.Name])
		}
		if rf := resp.Fields[i]; string(rf.Line) != want[f.Name] || (rf.Line == nil) != (want[f.Name] == "") {
			t.Errorf("response field %q: Line %q, want %q", rf.Name, rf.Line, want[f.Name])
		}
	}
}

// TestEqualFold checks equalFold's shortcut for every byte that can be in
// a parsed field name or value against every byte its constants hold.
func TestEqualFold(t *testing.T) {
	for c := range 256 {
		if c < ' ' && c != '\t' || c == 0x7f {
			continue
		}
		for _, k := range "abcdefghijklmnopqrstuvwxyz-" {
			want := strings.EqualFold(string([]byte{byte(c)}), string(k))
			if got := equalFold([]byte{byte(c)}, string(k)); got != want {
				t.Errorf("equalFold(%q, %q) = %v, want %v", byte(c), k, got, want)
			}
		}
	}
	if !equalFold([]byte("Content-LENGTH"), "content-length") || equalFold([]byte("Content_Length"), "content-length") {
		t.Error("equalFold on a whole name")
	}
}

// TestEqualFoldWords checks equalFold on names of one to twenty bytes,
// eight at a time and the rest, against a byte-by-byte fold: each byte of
// a name replaced by every byte a parsed name or value can hold.
func TestEqualFoldWords(t *testing.T) {
	const letters = "abcdefghij-klmnopqrst"
	for n := 1; n <= 20; n++ {
		s := letters[:n]
		for at := range n {
			for c := range 256 {
				if c < ' ' && c != '\t' || c == 0x7f {
					continue
				}
				b := []byte(strings.ToUpper(s))
				b[at] = byte(c)
				want := strings.EqualFold(string(b), s)
				if got := equalFold(b, s); got != want {
					t.Fatalf("equalFold(%q, %q) = %v, want %v", b, s, got, want)
				}
				if got := equalFold(string(b), s); got != want {
					t.Fatalf("equalFold(string %q, %q) = %v, want %v", b, s, got, want)
				}
			}
		}
	}
}
