package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/test/testsync"
)

// A client's faults are never held against a target: a malformed chunked
// body is answered 400, a body the client cuts short is recorded as 499,
// both are logged as the client's, and however many there are, no healthy
// target is ejected. On both request paths, and for a large body the fast
// path hands to net/http.
func TestClientFaultsDoNotEjectTargets(t *testing.T) {
	const rounds = 12 // enough, round robin over two targets, to eject both
	cases := []struct {
		name   string
		raw    string
		cut    bool // the client closes after raw
		status int
		reason accesslog.FailureReason
	}{
		{
			name:   "malformed chunked body",
			raw:    "POST /up HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
			status: http.StatusBadRequest, reason: accesslog.MalformedRequestBody,
		},
		{
			name:   "small body cut short",
			raw:    "POST /up HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 100\r\n\r\n0123456789",
			cut:    true,
			status: statusClientClosed, reason: accesslog.ClientClosedRequest,
		},
		{
			name:   "large body cut short",
			raw:    "POST /up HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 1000000\r\n\r\n" + strings.Repeat("x", 70<<10),
			cut:    true,
			status: statusClientClosed, reason: accesslog.ClientClosedRequest,
		},
	}
	for _, disable := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/netHTTPOnly=%v", tc.name, disable), func(t *testing.T) {
				echo1, echo2 := bodyEcho(t), bodyEcho(t)
				var logs testsync.Buffer
				p := newProxyWith(t, Config{
					DisableFastPath: disable,
					AccessLog:       &logs,
					test: testKnobs{
						outlier:   health.Outlier{BaseEjection: time.Minute},
						accessLog: accesslog.Options{FlushInterval: 5 * time.Millisecond},
					},
				})
				t1, t2 := target(t, echo1, model.TargetActive), target(t, echo2, model.TargetActive)
				update(t, p, oneRoute(1, []model.TargetGroup{group("g", t1, t2)}, to("g", 1)))
				addr := addrOf(p, webPort)
				for i := range rounds {
					status := sendClientFault(t, addr, tc.raw, tc.cut)
					if !tc.cut && status != tc.status {
						t.Fatalf("request %d: status %d, want %d", i, status, tc.status)
					}
				}
				var lines []map[string]any
				testsync.WaitFor(t, 5*time.Second, fmt.Sprintf("%d access log lines", rounds), func() bool { lines = logLines(t, &logs); return len(lines) >= rounds })
				for _, l := range lines {
					if l["responseCode"] != float64(tc.status) || l["failureReason"] != string(tc.reason) {
						t.Errorf("access log: %v %v, want %d %s", l["responseCode"], l["failureReason"], tc.status, tc.reason)
						break
					}
				}
				for _, tg := range []model.Target{t1, t2} {
					a := net.JoinHostPort(tg.Address, fmt.Sprint(tg.Port))
					if _, ejected := targetStatus(p, "g", a); ejected {
						t.Errorf("healthy target %s ejected after %d client faults", a, rounds)
					}
				}
				// And the targets still serve.
				resp, body := exchangeRaw(t, addr, "GET /after HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
				if resp.StatusCode != http.StatusOK {
					t.Errorf("after the faults: %d %s", resp.StatusCode, body)
				}
			})
		}
	}
}

// sendClientFault writes raw on a connection of its own and, when cut is
// set, closes it; else it returns the response's status.
func sendClientFault(t *testing.T, addr, raw string, cut bool) int {
	t.Helper()
	conn := dialRaw(t, addr, raw)
	defer conn.Close()
	if cut {
		// Let the proxy start forwarding before the client goes.
		time.Sleep(20 * time.Millisecond)
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
