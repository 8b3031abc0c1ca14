package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/router"
	"trellis.dev/trellis/test/testsync"
)

func TestHeaderLimits(t *testing.T) {
	a := backend(t, "a")
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, a, model.TargetActive))}, to("a", 1)))
	addr := addrOf(p, webPort)
	head := func(lines int, size int) string {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\nHost: x\n")
		for i := range lines {
			fmt.Fprintf(&b, "X-H-%d: %s\n", i, strings.Repeat("v", size))
		}
		return b.String()
	}
	tests := []struct {
		name        string
		lines, size int
		want        int
	}{
		{"at the count limit", maxHeaderCount, 1, http.StatusOK},
		{"one header line too many", maxHeaderCount + 1, 1, http.StatusRequestHeaderFieldsTooLarge},
		{"over the size limit", 2, maxHeaderBytes, http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := rawRequest(t, addr, head(tt.lines, tt.size))
			if resp.StatusCode != tt.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, body, tt.want)
			}
		})
	}
}

// A client that sends its request headers a byte at a time (slowloris) is
// cut off once the header timeout passes, and others are served meanwhile.
func TestSlowHeadersCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	a := backend(t, "a")
	p := newProxyWith(t, Config{test: testKnobs{readHeaderTimeout: timeout}})
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, a, model.TargetActive))}, to("a", 1)))
	addr := addrOf(p, webPort)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := newClient(t)
	// 100 bytes at 50 ms each would take 5 s.
	slow := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 70) + "\r\n"
	cutAfter, sent := sendSlowly(t, conn, slow, "slow client", func() {
		if r := c.get(addr, "x", "/"); r.body != "a" {
			t.Errorf("another client during the slow one: %d %q", r.status, r.body)
		}
	})
	// The proxy's clock starts when it accepts, a little before ours.
	if cutAfter < timeout/2 || cutAfter > timeout+2*time.Second {
		t.Errorf("slow client cut off after %v, want about %v", cutAfter, timeout)
	}
	t.Logf("slow client cut off after %v and %d of %d bytes", cutAfter, sent, len(slow))
	if sent >= len(slow) {
		t.Error("the slow client sent its whole header")
	}
}

// sendSlowly writes head to conn a byte at a time, one every 50 ms, until
// the proxy closes conn (what names the client in failures), and calls
// meanwhile once, after the third byte, while the proxy holds the slow
// client. It returns how long after its start the proxy closed conn and how
// many bytes were written by then.
func sendSlowly(t *testing.T, conn net.Conn, head, what string, meanwhile func()) (cutAfter time.Duration, sent int) {
	t.Helper()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, conn) // returns when the proxy closes the connection
		closed <- time.Since(start)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
loop:
	for ; sent < len(head); sent++ {
		select {
		case cutAfter = <-closed:
			break loop
		case <-tick.C:
		}
		if _, err := conn.Write([]byte{head[sent]}); err != nil {
			break
		}
		if sent == 2 {
			meanwhile()
		}
	}
	if cutAfter == 0 {
		cutAfter = testsync.Receive(t, closed, 5*time.Second, fmt.Sprintf("the proxy closing the %s after %d of %d bytes sent", what, sent, len(head)))
	}
	return cutAfter, sent
}

func TestListenerTimeouts(t *testing.T) {
	p := newTestProxy(t, nil)
	update(t, p, oneRoute(1, nil))
	p.mu.Lock()
	srv := p.listeners[router.Bind{Port: webPort}].(*listener).srv
	p.mu.Unlock()
	for name, got := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if got <= 0 {
			t.Errorf("%s not set", name)
		}
	}
	if srv.ReadTimeout != maxRequestDuration || srv.WriteTimeout != maxRequestDuration {
		t.Errorf("read/write timeouts %v/%v, want %v", srv.ReadTimeout, srv.WriteTimeout, maxRequestDuration)
	}
}
