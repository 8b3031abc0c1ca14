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
// bytes alike.
func FuzzCutField(f *testing.F) {
	for _, s := range []string{"Host: a\r\n\r\n", "X:\r\n", "X: a\n", "X : a\r\n", "X: a\rb\r\n", "X: \ta \r\nY: b\r\n", "X\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, value, rest, ok := cutField(s)
		wname, wvalue, wrest, wok := cutFieldSteps(s)
		if ok != wok || ok && (name != wname || value != wvalue || rest != wrest) {
			t.Fatalf("cutField(%q) = %q, %q, %q, %v; the steps give %q, %q, %q, %v", s, name, value, rest, ok, wname, wvalue, wrest, wok)
		}
		bname, bvalue, brest, bok := cutField([]byte(s))
		if bok != ok || ok && (string(bname) != name || string(bvalue) != value || string(brest) != rest) {
			t.Fatalf("cutField([]byte(%q)) differs from cutField(%q)", s, s)
		}
	})
}
