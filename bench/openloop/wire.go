package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// maxHeadLines bounds the header lines of a response.
const maxHeadLines = 100

var errFraming = errors.New("response framing not understood")

// readResponse reads one HTTP/1.1 response to a GET from br and discards
// its body, without allocating: the generator's own CPU per request is
// taken from the same cores as the proxy's. It returns the status and
// whether the server closes the connection after it.
func readResponse(br *bufio.Reader) (status int, closing bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("status line %q: %w", line, errFraming)
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false, fmt.Errorf("status line %q: %w", line, errFraming)
		}
		status = status*10 + int(d-'0')
	}
	closing = line[7] == '0' // HTTP/1.0 closes unless told otherwise; good enough here
	length, chunked := int64(-1), false
	for n := 0; ; n++ {
		if n == maxHeadLines {
			return 0, false, fmt.Errorf("more than %d header lines: %w", maxHeadLines, errFraming)
		}
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, false, fmt.Errorf("header line %q: %w", line, errFraming)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return 0, false, fmt.Errorf("content-length %q: %w", value, errFraming)
			}
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	switch {
	case chunked:
		err = discardChunked(br)
	case length >= 0:
		_, err = br.Discard(int(length))
	case status == 204 || status == 304 || status/100 == 1:
	default:
		return 0, false, fmt.Errorf("a body of no stated length: %w", errFraming)
	}
	return status, closing, err
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(line), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("chunk size %q: %w", line, errFraming)
		}
		if size == 0 {
			break
		}
		if _, err := br.Discard(int(size) + 2); err != nil {
			return err
		}
	}
	// Trailers, then the empty line.
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}
