package h1

import (
	"bufio"
	"bytes"
)

// HeadBuffered reports whether br holds a whole request head already, so
// that ReadHead will return without reading.
func HeadBuffered(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	// A client that waits for each answer has sent one head, which ends
	// the buffer: no search then.
	return bytes.HasSuffix(buf, crlfcrlf) || bytes.Contains(buf, crlfcrlf)
}
