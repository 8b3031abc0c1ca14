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

// writeRequest sends a request without header edits on with the head the
// forwarding rules make (docs/reference/headers.md), byte for byte: the
// fields that came canonical as they came, the others remade, hop-by-hop
// and the proxy's own fields dropped, X-Forwarded-For appended to, TE kept
// as trailers, the framing, the request's and the rule's fields, and the
// connection's.
func TestWriteRequestHead(t *testing.T) {
	ri := &ruleInfo{rule: "r", targetGroup: "g"}
	ri.headers.Store(&ruleHeaders{wire: "X-Trellis-Network: N\r\nX-Trellis-Target: T\r\n"})
	const fixed = "X-Forwarded-Proto: http\r\nX-Trellis-Identity: Type=Anonymous\r\n"
	tests := []struct {
		name, head string
		info       *ruleInfo
		want       string
	}{
		{"plain", "GET /a?b HTTP/1.1\r\nHost: h.example\r\nUser-Agent: wrk\r\nx-env: prod\r\n\r\n", ri,
			"GET /a?b HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-For: 192.0.2.1\r\nUser-Agent: wrk\r\nx-env: prod\r\n" +
				"X-Forwarded-Host: h.example\r\nX-Trellis-Request-Id: id-1\r\nX-Trellis-Network: N\r\nX-Trellis-Target: T\r\n" + fixed + "\r\n"},
		{"dropped and remade", "POST / HTTP/1.1\r\nHOST: h\r\nA:1\r\nConnection: x-hop, TE\r\nX-Hop: 2\r\nTE: trailers\r\n" +
			"X-Forwarded-For: 198.51.100.7\r\nX-Trellis-Identity: forged\r\nKeep-Alive: 5\r\nContent-Length: 0\r\nB:  3 \r\n\r\n", nil,
			"POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.7, 192.0.2.1\r\nA: 1\r\nB: 3\r\nTe: trailers\r\nContent-Length: 0\r\n" +
				"X-Forwarded-Host: h\r\nX-Trellis-Request-Id: id-1\r\n" + fixed + "\r\n"},
	}
	for _, tt := range tests {
		fc := &fastConn{ip: "192.0.2.1", fixedFields: fixed}
		if err := h1.ParseRequest(tt.head, &fc.req); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		fc.x = exchange{id: "id-1", info: tt.info}
		var out strings.Builder
		tc := &targetConn{bw: bufio.NewWriter(&out)}
		if err := fc.writeRequest(tc); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if out.String() != tt.want {
			t.Errorf("%s: sent\n%q, want\n%q", tt.name, out.String(), tt.want)
		}
	}
}
