// Command goroutine is the goroutine-per-connection forwarder of package
// ceiling: goroutine ADDR TARGET... forwards every request on ADDR to the
// targets in turn. With GOMINIMAL_DEBUG=ADDR it also serves net/http/pprof
// on ADDR, so that its runtime traces can be read beside Trellis's
// (bench/gotrace-waits).
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

type targetConn struct {
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
}

// pool keeps idle connections to one target.
type pool struct {
	addr string
	mu   sync.Mutex
	idle []*targetConn
}

func (p *pool) get() (*targetConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &targetConn{conn: conn, br: bufio.NewReaderSize(conn, 8<<10), bw: bufio.NewWriterSize(conn, 8<<10)}, nil
}

func (p *pool) put(c *targetConn) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

var contentLength = []byte("content-length:")

func serve(conn net.Conn, pools []*pool, next *atomic.Uint32) {
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 8<<10)
	bw := bufio.NewWriterSize(conn, 8<<10)
	var head []byte
	for {
		head = head[:0]
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			head = append(head, line...)
			if len(line) <= 2 {
				break
			}
		}
		p := pools[int(next.Add(1))%len(pools)]
		tc, err := p.get()
		if err != nil {
			return
		}
		tc.bw.Write(head[:len(head)-2])
		tc.bw.WriteString("X-Forwarded-For: 127.0.0.1\r\n\r\n")
		if tc.bw.Flush() != nil {
			return
		}
		if answer(tc, bw) != nil {
			return
		}
		p.put(tc)
		if br.Buffered() == 0 && bw.Flush() != nil {
			return
		}
	}
}

// answer copies the target's response into bw. A function of its own so
// that a runtime trace tells its waits from those for the client
// (bench/gotrace-waits).
//
//go:noinline
func answer(tc *targetConn, bw *bufio.Writer) error {
	n := 0
	for {
		line, err := tc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(line[len(contentLength):])))
		}
		bw.Write(line)
		if len(line) <= 2 {
			break
		}
	}
	_, err := io.CopyN(bw, tc.br, int64(n))
	return err
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: goroutine ADDR TARGET...")
		os.Exit(2)
	}
	var pools []*pool
	for _, t := range os.Args[2:] {
		pools = append(pools, &pool{addr: t})
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if addr := os.Getenv("GOMINIMAL_DEBUG"); addr != "" {
		go func() { fmt.Fprintln(os.Stderr, http.ListenAndServe(addr, nil)) }()
	}
	var next atomic.Uint32
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serve(conn, pools, &next)
	}
}
