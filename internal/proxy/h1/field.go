package h1

// Byte classes of a header line, for cutField.
const (
	classToken = 1 << iota // a field name's byte
	classValue             // a field value's byte: not a control byte but HTAB
)

var byteClass = func() (t [256]uint8) {
	for c := range 256 {
		if isTokenByte(byte(c)) {
			t[c] |= classToken
		}
		if c >= ' ' && c != 0x7f || c == '\t' {
			t[c] |= classValue
		}
	}
	return t
}()

// cutField reads the header line at the start of s in one pass: a field
// name (a token), a colon, the value (no control bytes but HTAB; the
// whitespace around it, SP and HTAB, trimmed off) and the CRLF. It returns
// the rest after the CRLF; ok is false when the line is not such a line, a
// bare LF or CR included. It decides as cutLine, bytes.Cut at the first
// colon, validName, trimOWS and validValue one after the other would.
func cutField[T string | []byte](s T) (name, value, rest T, ok bool) {
	name, value, rest, _, ok = cutFieldLine(s)
	return name, value, rest, ok
}

// cutFieldLine is cutField that also returns the whole line, CRLF
// included, when it reads exactly as name + ": " + value + CRLF (so that
// it can be written on as it came); empty otherwise.
func cutFieldLine[T string | []byte](s T) (name, value, rest, line T, ok bool) {
	i := 0
	for i < len(s) && byteClass[s[i]]&classToken != 0 {
		i++
	}
	if i == 0 || i == len(s) || s[i] != ':' {
		return name, value, rest, line, false
	}
	name = s[:i]
	i++
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	start := i
	for i < len(s) && byteClass[s[i]]&classValue != 0 {
		i++
	}
	if i+1 >= len(s) || s[i] != '\r' || s[i+1] != '\n' {
		return name, value, rest, line, false
	}
	end := i
	for end > start && (s[end-1] == ' ' || s[end-1] == '\t') {
		end--
	}
	if end == i && start == len(name)+2 && s[len(name)+1] == ' ' {
		line = s[:i+2]
	}
	return name, s[start:end], s[i+2:], line, true
}
