package file

import (
	"bytes"
	"slices"
	"strconv"
)

// fastJSON converts a YAML document of the plain block form that nearly
// every configuration file has (block mappings and sequences, one-line
// scalars, flow lists of scalars) into the JSON that sigs.k8s.io/yaml's
// YAMLToJSONStrict makes of it, and returns the document decoded too:
// maps, slices, strings, int64s, bools and nils (json.Unmarshal would give
// float64s for the numbers; nothing reading the decoded form looks at
// them). It is that conversion without a YAML parser's general machinery
// and the decoding of its own JSON output: at a cold start of 10,000
// routes it does in a fifth of the time what was most of the work.
//
// ok is false, and nothing is made, for a document with anything outside
// that form, or where YAML's meaning is not obvious: anchors, aliases,
// tags, block and multi-line scalars, escapes, tabs, bytes outside
// printable ASCII, duplicate keys, a key or plain scalar that YAML 1.1
// reads as other than a string, an integer or true/false ("yes", "on",
// "~", "010", "1_000", "1.5"), nesting deeper than maxFastDepth. The
// caller then converts the document the general way, which also makes the
// error messages: a document is never refused here.
func fastJSON(data []byte) (j []byte, raw map[string]any, ok bool) {
	p := fastParser{lines: fastLines(data)}
	if p.lines == nil {
		return nil, nil, false
	}
	v := p.node(p.lines[0].indent, 0)
	if p.failed || p.i != len(p.lines) {
		return nil, nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, nil, false
	}
	return appendJSON(make([]byte, 0, len(data)), m), m, true
}

// maxFastDepth bounds the nesting fastJSON follows (a line of "- - - …"
// nests once per two bytes).
const maxFastDepth = 64

// maxFastKey bounds the keys fastJSON takes; a Kubernetes label or
// annotation key is at most 317 bytes.
const maxFastKey = 512

// fastLine is one line of a document with content: its indentation and
// what follows it, without trailing spaces.
type fastLine struct {
	indent int
	text   []byte
}

// fastLines returns the lines of data that have content, leaving out
// blank lines and comment lines; nil when a line has a byte fastJSON does
// not take (a tab, a control character, a byte outside ASCII), or is a
// document marker or directive.
func fastLines(data []byte) []fastLine {
	lines := make([]fastLine, 0, bytes.Count(data, []byte("\n"))+1)
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		indent := 0
		for indent < len(line) && line[indent] == ' ' {
			indent++
		}
		text := line[indent:]
		for _, c := range text {
			if c < 0x20 || c > 0x7e {
				return nil
			}
		}
		text = bytes.TrimRight(text, " ")
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		if indent == 0 && (bytes.HasPrefix(text, []byte("---")) || bytes.HasPrefix(text, []byte("...")) || text[0] == '%') {
			return nil
		}
		lines = append(lines, fastLine{indent, text})
	}
	if len(lines) == 0 {
		return nil
	}
	return lines
}

// fastParser parses the lines of one document; failed is set at the
// first thing it does not take, after which its results mean nothing.
type fastParser struct {
	lines  []fastLine
	i      int
	failed bool
}

func (p *fastParser) fail() any {
	p.failed = true
	return nil
}

// node parses the block node whose first line, the current one, is at
// indent.
func (p *fastParser) node(indent, depth int) any {
	if depth > maxFastDepth {
		return p.fail()
	}
	if isSeqEntry(p.lines[p.i].text) {
		return p.sequence(indent, depth)
	}
	return p.mapping(indent, depth)
}

// isSeqEntry reports whether a line's text is a block sequence entry.
func isSeqEntry(text []byte) bool {
	return text[0] == '-' && (len(text) == 1 || text[1] == ' ')
}

// mapping parses a block mapping whose keys are at indent.
func (p *fastParser) mapping(indent, depth int) any {
	m := map[string]any{}
	for !p.failed && p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.indent < indent {
			break
		}
		if l.indent > indent || isSeqEntry(l.text) {
			return p.fail()
		}
		key, rest, ok := splitKey(l.text)
		if !ok {
			return p.fail()
		}
		if _, dup := m[key]; dup {
			return p.fail()
		}
		p.i++
		m[key] = p.value(rest, indent, depth, true)
	}
	return m
}

// sequence parses a block sequence whose entries are at indent.
func (p *fastParser) sequence(indent, depth int) any {
	s := []any{}
	for !p.failed && p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.indent < indent || l.indent == indent && !isSeqEntry(l.text) {
			break // the end of a sequence inside a mapping at its indent
		}
		if l.indent > indent {
			return p.fail()
		}
		rest := l.text[1:]
		spaces := 0
		for spaces < len(rest) && rest[spaces] == ' ' {
			spaces++
		}
		if content := rest[spaces:]; len(content) > 0 && content[0] != '#' && (isSeqEntry(content) || isKey(content)) {
			// A mapping or sequence starting on the entry's line: its
			// further lines are at the column where it starts.
			col := indent + 1 + spaces
			p.lines[p.i] = fastLine{col, content}
			s = append(s, p.node(col, depth+1))
			continue
		}
		p.i++
		s = append(s, p.value(rest, indent, depth, false))
	}
	return s
}

// value parses what follows a key's colon, or a sequence entry's dash, on
// a line at indent: a scalar or flow list on the line, or else the block
// node on the lines after it (in a mapping, also a sequence at the key's
// own indent), or else null.
func (p *fastParser) value(rest []byte, indent, depth int, inMapping bool) any {
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) == 0 || rest[0] == '#' {
		if p.i < len(p.lines) {
			next := p.lines[p.i]
			if next.indent > indent || inMapping && next.indent == indent && isSeqEntry(next.text) {
				return p.node(next.indent, depth+1)
			}
		}
		return nil
	}
	v, ok := scalar(rest)
	// A more indented line would continue a plain scalar, or be an error.
	if !ok || p.i < len(p.lines) && p.lines[p.i].indent > indent {
		return p.fail()
	}
	return v
}

// isKeyByte reports whether c may be in a key or plain scalar fastJSON
// takes.
func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '/' || c == '-' || c == '_'
}

// plainLen is the length of the run of key bytes text starts with.
func plainLen(text []byte) int {
	n := 0
	for n < len(text) && isKeyByte(text[n]) {
		n++
	}
	return n
}

// isKey reports whether text starts with a key and its colon.
func isKey(text []byte) bool {
	_, _, ok := splitKey(text)
	return ok
}

// splitKey splits a mapping entry's text at the colon after its key. The
// key must start with a letter, be at most maxFastKey bytes (YAML allows an
// implicit key of at most 1024 characters) and not be a word YAML 1.1
// reads as a boolean or null.
func splitKey(text []byte) (key string, rest []byte, ok bool) {
	n := plainLen(text)
	if n == 0 || n > maxFastKey || !isLetter(text[0]) || n == len(text) || text[n] != ':' || n+1 < len(text) && text[n+1] != ' ' {
		return "", nil, false
	}
	key = string(text[:n])
	if yaml11Word(key) || key == "true" || key == "false" {
		return "", nil, false
	}
	return key, text[n+1:], true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// yaml11Word reports whether a plain scalar is one YAML 1.1 (and so
// go-yaml v2) reads as a boolean or null other than true and false.
func yaml11Word(s string) bool {
	switch s {
	case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "True", "TRUE",
		"n", "N", "no", "No", "NO", "off", "Off", "OFF", "False", "FALSE",
		"null", "Null", "NULL":
		return true
	}
	return false
}

// scalar parses a scalar or flow list that is the rest of a line.
func scalar(text []byte) (any, bool) {
	switch text[0] {
	case '"', '\'':
		s, n, ok := quoted(text)
		return s, ok && lineEnd(text[n:])
	case '[':
		return flowList(text)
	case '{':
		return map[string]any{}, len(text) >= 2 && text[1] == '}' && lineEnd(text[2:])
	}
	n := plainLen(text)
	if n == 0 || !lineEnd(text[n:]) {
		return nil, false
	}
	return plain(text[:n])
}

// quoted parses the quoted scalar text starts with: printable ASCII, no
// escapes (a backslash in double quotes, a doubled single quote), on one
// line, without a double quote or backslash in it. n is its length with
// the quotes.
func quoted(text []byte) (s string, n int, ok bool) {
	q := text[0]
	end := bytes.IndexByte(text[1:], q)
	if end < 0 {
		return "", 0, false
	}
	body := text[1 : 1+end]
	if bytes.ContainsAny(body, `"\`) || q == '\'' && 2+end < len(text) && text[2+end] == '\'' {
		return "", 0, false
	}
	return string(body), 2 + end, true
}

// lineEnd reports whether what follows a scalar on its line is nothing,
// or a comment.
func lineEnd(rest []byte) bool {
	if len(rest) == 0 {
		return true
	}
	t := bytes.TrimLeft(rest, " ")
	return len(t) < len(rest) && len(t) > 0 && t[0] == '#'
}

// plain resolves a plain scalar (key bytes only) as YAML 1.1 does: a
// string starting with a letter or a slash, true or false, a decimal
// integer without a leading zero of at most 18 digits, or digits with two
// or more dots (an IPv4 address). Anything else is not taken.
func plain(b []byte) (any, bool) {
	s := string(b)
	switch {
	case s == "true":
		return true, true
	case s == "false":
		return false, true
	case yaml11Word(s):
		return nil, false
	case isLetter(b[0]) || b[0] == '/':
		return s, true
	case b[0] == '0' && len(b) == 1:
		return int64(0), true
	case '1' <= b[0] && b[0] <= '9' && len(b) <= 18 && allDigits(b):
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	case dottedDigits(b):
		return s, true
	}
	return nil, false
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// dottedDigits reports whether b is groups of digits joined by two or more
// dots, which no YAML 1.1 number or timestamp is.
func dottedDigits(b []byte) bool {
	groups := bytes.Split(b, []byte("."))
	if len(groups) < 3 {
		return false
	}
	for _, g := range groups {
		if len(g) == 0 || !allDigits(g) {
			return false
		}
	}
	return true
}

// flowList parses a flow sequence of scalars on one line ("[a, "b"]").
func flowList(text []byte) (any, bool) {
	l := []any{}
	rest := bytes.TrimLeft(text[1:], " ")
	if len(rest) > 0 && rest[0] == ']' {
		return l, lineEnd(rest[1:])
	}
	for {
		var (
			v  any
			n  int
			ok bool
		)
		if len(rest) == 0 {
			return nil, false
		}
		if rest[0] == '"' || rest[0] == '\'' {
			v, n, ok = quoted(rest)
		} else if n = plainLen(rest); n > 0 {
			v, ok = plain(rest[:n])
		}
		if !ok {
			return nil, false
		}
		l = append(l, v)
		rest = bytes.TrimLeft(rest[n:], " ")
		if len(rest) == 0 {
			return nil, false
		}
		switch rest[0] {
		case ']':
			return l, lineEnd(rest[1:])
		case ',':
			rest = bytes.TrimLeft(rest[1:], " ")
		default:
			return nil, false
		}
	}
}

// appendJSON appends v, made by fastJSON's parser, as encoding/json
// encodes it: map keys in order, "<", ">" and "&" escaped.
func appendJSON(b []byte, v any) []byte {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSON(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e)
		}
		return append(b, ']')
	case string:
		return appendJSONString(b, v)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case bool:
		return strconv.AppendBool(b, v)
	}
	return append(b, "null"...)
}

// appendJSONString appends s, printable ASCII without a backslash or a
// double quote, as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '<':
			b = append(b, `\u003c`...)
		case '>':
			b = append(b, `\u003e`...)
		case '&':
			b = append(b, `\u0026`...)
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
