package client

import (
	"bytes"
	"strconv"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// parseChanges reads a watch line holding a changes message in the form
// the server writes it (its fields in order, no spaces, strings without
// escapes or bytes outside ASCII), without encoding/json's two passes over
// the whole line: a configuration's first revision is one line of tens of
// megabytes. Each change's object is only delimited here, as a slice of
// line (valid while line is); decoding it checks it, and a line whose
// objects all decode is one json.Unmarshal takes, to the same message. ok
// is false, and msg means nothing, for any other line, which the caller
// decodes with json.Unmarshal.
func parseChanges(line []byte) (msg api.WatchMessage, ok bool) {
	p := bytes.TrimSuffix(line, []byte("\n"))
	if p, ok = cut(p, `{"type":"changes","revision":`); !ok {
		return msg, false
	}
	n := 0
	for n < len(p) && '0' <= p[n] && p[n] <= '9' {
		n++
	}
	if n == 0 || n > 18 || p[0] == '0' && n > 1 {
		return msg, false
	}
	msg.Type = api.WatchChanges
	msg.Revision, _ = strconv.ParseInt(string(p[:n]), 10, 64)
	p = p[n:]
	if rest, found := cut(p, `,"store":`); found {
		if msg.Store, p, ok = plainString(rest); !ok {
			return msg, false
		}
	}
	if p, ok = cut(p, `,"changes":[`); !ok {
		return msg, false
	}
	for {
		var c api.Change
		var kind string
		if p, ok = cut(p, `{"op":`); !ok {
			return msg, false
		}
		if c.Op, p, ok = plainString(p); !ok {
			return msg, false
		}
		if p, ok = cut(p, `,"kind":`); !ok {
			return msg, false
		}
		if kind, p, ok = plainString(p); !ok {
			return msg, false
		}
		c.Kind = model.Kind(kind)
		if p, ok = cut(p, `,"name":`); !ok {
			return msg, false
		}
		if c.Name, p, ok = plainString(p); !ok {
			return msg, false
		}
		if rest, found := cut(p, `,"object":`); found {
			end := objectEnd(rest)
			if end < 0 {
				return msg, false
			}
			c.Object, p = rest[:end], rest[end:]
		}
		if p, ok = cut(p, `}`); !ok {
			return msg, false
		}
		msg.Changes = append(msg.Changes, c)
		if rest, found := cut(p, `,`); found {
			p = rest
			continue
		}
		p, ok = cut(p, `]}`)
		return msg, ok && len(p) == 0
	}
}

// cut returns p after prefix, if p starts with it.
func cut(p []byte, prefix string) ([]byte, bool) {
	if len(p) < len(prefix) || string(p[:len(prefix)]) != prefix {
		return p, false
	}
	return p[len(prefix):], true
}

// plainString reads the JSON string p starts with, if it has no escape and
// no byte outside printable ASCII, and returns it and what follows it.
func plainString(p []byte) (s string, rest []byte, ok bool) {
	if len(p) == 0 || p[0] != '"' {
		return "", p, false
	}
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return string(p[1:i]), p[i+1:], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", p, false
		}
	}
	return "", p, false
}

// objectEnd returns the length of the JSON object p starts with, found by
// its braces outside strings; -1 when p does not start with one, or it
// does not end. It does not check the object: its decoding does.
func objectEnd(p []byte) int {
	if len(p) == 0 || p[0] != '{' {
		return -1
	}
	depth := 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '"':
			for i++; i < len(p) && p[i] != '"'; i++ {
				if p[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
