package proxy

import (
	"bufio"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/proxy/h1"
)

// writeResponseHead writes a target's head on without its hop-by-hop
// fields and those its Connection names: the lines that came canonical
// together where they lay together, the others remade, the status line as
// it came only when it is HTTP/1.1's with a reason.
func TestWriteResponseHead(t *testing.T) {
	tests := []struct {
		name, head string
		keep       bool
		want       string
	}{
		{"plain", "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n"},
		{"hop-by-hop between", "HTTP/1.1 200 OK\r\nA: 1\r\nKeep-Alive: timeout=5\r\nB: 2\r\nConnection: x-hop\r\nX-Hop: 3\r\nC: 4\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 4\r\n\r\n"},
		{"remade lines", "HTTP/1.1 404 Not Found\r\nA:1\r\nB:  2 \r\nC: 3\r\nD:\t4\r\n\r\n", false,
			"HTTP/1.1 404 Not Found\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nConnection: close\r\n\r\n"},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nA: 1\r\n\r\n", true, "HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"},
		{"no reason", "HTTP/1.1 204\r\nA: 1\r\n\r\n", true, "HTTP/1.1 204 No Content\r\nA: 1\r\n\r\n"},
		{"empty reason", "HTTP/1.1 599 \r\nA: 1\r\n\r\n", true, "HTTP/1.1 599 \r\nA: 1\r\n\r\n"},
		{"own reason", "HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\nA: 1\r\n\r\n", true,
			"HTTP/1.1 200 Fine\r\nA: 1\r\nTransfer-Encoding: chunked\r\n\r\n"},
	}
	for _, tt := range tests {
		var resp h1.Response
		buf := []byte(tt.head + "body")
		if _, ok := h1.ParseBufferedResponse(buf, &resp); !ok {
			t.Fatalf("%s: head not parsed", tt.name)
		}
		var out strings.Builder
		fc := &fastConn{bw: bufio.NewWriter(&out)}
		fc.writeResponseHead(&resp, tt.keep, nil)
		fc.bw.Flush()
		if out.String() != tt.want {
			t.Errorf("%s: wrote %q, want %q", tt.name, out.String(), tt.want)
		}
	}
}
