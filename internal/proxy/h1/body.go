package h1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Flusher is what the body copies call before they wait for more input, so
// that what they copied so far reaches its reader: a streamed response
// (server-sent events, a long download) flows as it comes.
type Flusher interface {
	Flush() error
}

// CopyN copies n bytes from src to dst, flushing dst before src blocks. It
// returns how many it copied; fewer than n only with an error.
func CopyN(dst *bufio.Writer, src *bufio.Reader, n int64, flush Flusher) (int64, error) {
	var done int64
	for done < n {
		b, err := fill(src, flush)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, err
		}
		if rest := n - done; int64(len(b)) > rest {
			b = b[:rest]
		}
		if _, err := dst.Write(b); err != nil {
			return done, err
		}
		_, _ = src.Discard(len(b))
		done += int64(len(b))
	}
	return done, nil
}

// CopyToEOF copies src to dst until src ends, flushing dst before src
// blocks: a body whose end is the connection's.
func CopyToEOF(dst *bufio.Writer, src *bufio.Reader, flush Flusher) (int64, error) {
	var done int64
	for {
		b, err := fill(src, flush)
		if err == io.EOF {
			return done, nil
		}
		if err != nil {
			return done, err
		}
		if _, err := dst.Write(b); err != nil {
			return done, err
		}
		_, _ = src.Discard(len(b))
		done += int64(len(b))
	}
}

// fill returns what src has buffered, reading once if it has nothing, and
// flushing before that read.
func fill(src *bufio.Reader, flush Flusher) ([]byte, error) {
	if src.Buffered() == 0 {
		if err := flush.Flush(); err != nil {
			return nil, err
		}
		if _, err := src.Peek(1); err != nil {
			return nil, err
		}
	}
	return src.Peek(src.Buffered())
}

// errChunked is wrapped by the errors of a malformed chunked body.
var errChunked = errors.New("malformed chunked body")

func malformedChunked(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrMalformed, errChunked, fmt.Sprintf(format, args...))
}

// maxChunkLine bounds a chunk-size line (with its extensions) and a trailer
// field line.
const maxChunkLine = 4096

// maxExcess bounds the framing overhead of a chunked body beyond what its
// data allows, as net/http's chunked reader does: it refuses a body that
// spends more than this on extensions of small chunks.
const maxExcess = 16 << 10

// CopyChunked copies a chunked body from src to dst, framing and all, up to
// and including the trailer section's end, checking the framing as it goes
// so that what dst receives is one well-formed body. It returns the number
// of data bytes. A malformed body is an error wrapping ErrMalformed.
func CopyChunked(dst *bufio.Writer, src *bufio.Reader, flush Flusher) (int64, error) {
	var data, excess int64
	for {
		line, err := chunkLine(src, flush)
		if err != nil {
			return data, err
		}
		size, ok := chunkSize(line)
		if !ok {
			return data, malformedChunked("chunk size line %q", truncate(line))
		}
		// As net/http counts: the line and the CRLF after the data, less
		// 16 bytes and twice the data.
		excess = max(0, excess+int64(len(line))-16-2*size)
		if excess > maxExcess {
			return data, malformedChunked("too much framing for its data")
		}
		if _, err := dst.Write(line); err != nil {
			return data, err
		}
		if size == 0 {
			break
		}
		n, err := CopyN(dst, src, size, flush)
		data += n
		if err != nil {
			return data, err
		}
		line, err = chunkLine(src, flush)
		if err != nil {
			return data, err
		}
		if len(line) != 2 {
			return data, malformedChunked("chunk data longer than its size")
		}
		if _, err := dst.Write(line); err != nil {
			return data, err
		}
	}
	// The trailer section: field lines up to an empty line.
	for {
		line, err := chunkLine(src, flush)
		if err != nil {
			return data, err
		}
		if _, err := dst.Write(line); err != nil {
			return data, err
		}
		if len(line) == 2 {
			return data, nil
		}
		name, value, ok := bytes.Cut(line[:len(line)-2], []byte(":"))
		if !ok || !validName(name) || !validValue(bytes.Trim(value, " \t")) {
			return data, malformedChunked("trailer line %q", truncate(line))
		}
	}
}

// chunkLine returns the next line of src, CRLF included; it must fit in
// maxChunkLine and end with CRLF. It flushes when src does not hold the
// whole line, before reading the rest.
func chunkLine(src *bufio.Reader, flush Flusher) ([]byte, error) {
	if b, _ := src.Peek(src.Buffered()); bytes.IndexByte(b, '\n') < 0 {
		if err := flush.Flush(); err != nil {
			return nil, err
		}
	}
	line, err := src.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull) || len(line) > maxChunkLine:
		return nil, malformedChunked("line longer than %d bytes", maxChunkLine)
	case err == io.EOF:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	case len(line) < 2 || line[len(line)-2] != '\r':
		return nil, malformedChunked("line without CRLF")
	}
	return line, nil
}

// chunkSize parses a chunk-size line: 1 to 15 hex digits, then optionally
// extensions after ';' (passed on unread), then CRLF. Like net/http, it
// takes whitespace at the end of the line but not before the ';'.
func chunkSize(line []byte) (int64, bool) {
	line = bytes.TrimRight(line[:len(line)-2], " \t")
	digits, ext, hasExt := bytes.Cut(line, []byte(";"))
	if hasExt && !validValue(ext) {
		return 0, false
	}
	// At most 15 digits, so that the size fits in an int64.
	n, ok := parseHex(digits, 15)
	return int64(n), ok
}
