package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// maxDepth bounds how deeply a document may nest. A valid policy nests five
// levels (document, Statement array, statement, Condition, operator) plus the
// value array; the bound only cuts pathological input short.
const maxDepth = 16

// nodeKind is the JSON type of a node.
type nodeKind uint8

const (
	kindNull nodeKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// node is one JSON value of a document. Unlike encoding/json's generic
// decoding it keeps object members in document order, repeated names
// included, so that validation can report them, and it keeps the literal
// text of numbers.
type node struct {
	kind nodeKind
	// text is a string's value, a number's literal, or "true" or "false".
	text string
	// elems are an array's elements.
	elems []*node
	// members are an object's members, in document order.
	members []member
}

// member is one name/value pair of an object.
type member struct {
	name  string
	value *node
}

// describe names n for an error message, quoting its value when it has one.
func describe(n *node) string {
	switch n.kind {
	case kindNull:
		return "null"
	case kindBool:
		return n.text
	case kindNumber:
		return "the number " + n.text
	case kindString:
		return quote(n.text)
	case kindArray:
		return "an array"
	default:
		return "an object"
	}
}

// quote quotes s for an error message, shortening it if it is long.
func quote(s string) string {
	const maxLen = 80
	if len(s) > maxLen {
		cut := maxLen
		for cut > 0 && s[cut]&0xC0 == 0x80 { // keep whole UTF-8 sequences
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// decode parses doc as exactly one JSON value.
func decode(doc []byte) (*node, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, errors.New("policy document is empty")
	}
	if err != nil {
		return nil, syntaxError(err)
	}
	n, err := decodeFrom(dec, tok, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: unexpected data after the policy document")
	}
	return n, nil
}

// decodeValue reads the next value from dec.
func decodeValue(dec *json.Decoder, depth int) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxError(err)
	}
	return decodeFrom(dec, tok, depth)
}

// decodeFrom reads the value that starts with tok, at nesting depth.
func decodeFrom(dec *json.Decoder, tok json.Token, depth int) (*node, error) {
	switch t := tok.(type) {
	case nil:
		return &node{kind: kindNull}, nil
	case bool:
		return &node{kind: kindBool, text: strconv.FormatBool(t)}, nil
	case json.Number:
		return &node{kind: kindNumber, text: string(t)}, nil
	case string:
		return &node{kind: kindString, text: t}, nil
	case json.Delim:
		if depth >= maxDepth {
			return nil, fmt.Errorf("policy document nests deeper than %d levels", maxDepth)
		}
		n := &node{kind: kindArray}
		if t == '{' {
			n.kind = kindObject
		}
		for dec.More() {
			if n.kind == kindArray {
				e, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				n.elems = append(n.elems, e)
				continue
			}
			tok, err := dec.Token()
			if err != nil {
				return nil, syntaxError(err)
			}
			name, _ := tok.(string) // the decoder allows only strings here
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			n.members = append(n.members, member{name: name, value: v})
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, syntaxError(err)
		}
		return n, nil
	}
	return nil, fmt.Errorf("invalid JSON: unexpected token %v", tok)
}

// syntaxError words a decoding error, with its byte offset when known.
func syntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("invalid JSON at byte offset %d: %v", se.Offset, se)
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("invalid JSON: unexpected end of the document")
	}
	return fmt.Errorf("invalid JSON: %v", err)
}
