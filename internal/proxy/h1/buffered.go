package h1

import (
	"bufio"
	"bytes"
)

// HeadBuffered reports whether br holds a whole request head already, so
// that ReadHead will return without reading.
func HeadBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	return bytes.Contains(buf, crlfcrlf)
}
