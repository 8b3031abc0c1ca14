package proxy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/accesslog"
	"trellis.dev/trellis/test/testsync"
)

// logLines parses the JSON lines written so far.
func logLines(t *testing.T, b *testsync.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// logsAgree waits for n access log lines in each of logs, the fast path's
// and net/http's, and returns each log's lines by request path; it fails t
// for a path the two log differently, but for what differs from run to
// run (times, request IDs, client and listener addresses).
func logsAgree(t *testing.T, logs *[2]testsync.Buffer, n int) [2]map[string]map[string]any {
	t.Helper()
	var lines, same [2]map[string]map[string]any
	for i := range logs {
		var ls []map[string]any
		testsync.WaitFor(t, 5*time.Second, fmt.Sprintf("%d access log lines", n), func() bool { ls = logLines(t, &logs[i]); return len(ls) == n })
		lines[i], same[i] = map[string]map[string]any{}, map[string]map[string]any{}
		for _, l := range ls {
			path := l["requestPath"].(string)
			lines[i][path], same[i][path] = l, maps.Clone(l)
			for _, k := range []string{"startTime", "duration", "requestToTargetDuration", "responseFromTargetDuration", "requestId", "sourceIpPort", "destinationIpPort"} {
				delete(same[i][path], k)
			}
		}
	}
	for path, f := range same[0] {
		if a, b := fmt.Sprint(f), fmt.Sprint(same[1][path]); a != b {
			t.Errorf("%s: access log\nfast     %s\nnet/http %s", path, a, b)
		}
	}
	return lines
}

func TestAccessLog(t *testing.T) {
	echo := headerEcho(t)
	var out testsync.Buffer
	p := newProxyWith(t, Config{AccessLog: &out, test: testKnobs{accessLog: accesslog.Options{FlushInterval: 5 * time.Millisecond}}})
	echoTarget := target(t, echo, model.TargetActive)
	down := refusingTarget(t)
	svc := edgeService("svc", []string{"shop.example.com"},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/echo"}}}, Action: forward(to("echo", 1))},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/down"}}}, Action: forward(to("down", 1))},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/invalid"}}}, Action: forward(to("", 1))},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathPrefix, Value: "/drained"}}}, Action: forward(to("drained", 1))},
		model.Rule{Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: "/teapot"}}}, Action: model.Action{FixedResponse: &model.FixedResponseAction{StatusCode: 418}}},
	)
	update(t, p, &model.Snapshot{Objects: model.Objects{
		Networks: testNetworks, Services: []model.Service{svc},
		TargetGroups: []model.TargetGroup{
			group("echo", echoTarget), group("down", down),
			group("drained", target(t, echo, model.TargetDraining)),
		},
	}, Revision: 1})
	addr := addrOf(p, webPort)
	c := newClient(t)

	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/echo/x?secret=1", strings.NewReader("hello"))
	req.Host = "shop.example.com"
	req.Header.Set("User-Agent", "test-agent/1.0")
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var seen http.Header
	json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	for _, path := range []string{"/down", "/invalid", "/drained", "/teapot"} {
		c.get(addr, "shop.example.com", path)
	}
	c.get(addr, "unknown.example.com", "/nowhere")

	var lines []map[string]any
	testsync.WaitFor(t, 5*time.Second, "6 access log lines", func() bool { lines = logLines(t, &out); return len(lines) == 6 })
	byPath := map[string]map[string]any{}
	for _, l := range lines {
		byPath[l["requestPath"].(string)] = l
	}
	echoAddr := echo.Listener.Addr().String()
	tests := []struct {
		path string
		want map[string]any
	}{
		{"/echo/x", map[string]any{
			"serviceNetwork": "edge", "service": "svc", "targetGroup": "echo", "targetIpPort": echoAddr,
			"sourceCluster": cluster, "destinationCluster": cluster, "destinationIpPort": addr,
			"listenerType": "HTTP", "listenerPort": float64(webPort),
			"requestMethod": "POST", "protocol": "HTTP/1.1", "responseCode": 200.0,
			"bytesReceived": 5.0, "userAgent": "test-agent/1.0", "hostHeader": "shop.example.com",
			"failureReason": "-", "requestId": seen.Get(headerRequestID), "callerPrincipal": "-",
			"resolvedUser": "-", "authDeniedReason": "-", "sslCipher": "-", "tlsVersion": "-", "serverNameIndication": "-",
		}},
		{"/down", map[string]any{"service": "svc", "targetGroup": "down", "responseCode": 502.0, "failureReason": "TargetConnectionError",
			"targetIpPort": fmt.Sprintf("%s:%d", down.Address, down.Port)}},
		{"/invalid", map[string]any{"service": "svc", "targetGroup": "-", "responseCode": 500.0, "failureReason": "InvalidBackend", "targetIpPort": "-"}},
		{"/drained", map[string]any{"service": "svc", "responseCode": 503.0, "failureReason": "NoTarget", "targetIpPort": "-"}},
		{"/teapot", map[string]any{"service": "svc", "targetGroup": "-", "responseCode": 418.0, "failureReason": "-", "targetIpPort": "-", "requestToTargetDuration": 0.0}},
		{"/nowhere", map[string]any{"service": "-", "serviceNetwork": "-", "targetGroup": "-", "responseCode": 404.0, "failureReason": "NoMatchingRoute"}},
	}
	for _, tt := range tests {
		l := byPath[tt.path]
		if l == nil {
			t.Errorf("no access log line for %s in %v", tt.path, lines)
			continue
		}
		for k, v := range tt.want {
			if l[k] != v {
				t.Errorf("%s: %s = %#v, want %#v", tt.path, k, l[k], v)
			}
		}
		if id, _ := l["requestId"].(string); !uuidRE.MatchString(id) {
			t.Errorf("%s: requestId %q", tt.path, id)
		}
		if src, _ := l["sourceIpPort"].(string); !strings.HasPrefix(src, "127.0.0.1:") {
			t.Errorf("%s: sourceIpPort %q", tt.path, src)
		}
		if _, err := time.Parse(time.RFC3339, l["startTime"].(string)); err != nil {
			t.Errorf("%s: startTime: %v", tt.path, err)
		}
	}
	echoLine := byPath["/echo/x"]
	if sent := echoLine["bytesSent"].(float64); sent < 10 {
		t.Errorf("bytesSent = %v, want the echoed headers' size", sent)
	}
	total, toTarget, fromTarget := echoLine["duration"].(float64), echoLine["requestToTargetDuration"].(float64), echoLine["responseFromTargetDuration"].(float64)
	if toTarget <= 0 || toTarget+fromTarget > total {
		t.Errorf("durations: total %v ms, to target %v, from target %v", total, toTarget, fromTarget)
	}
}

// stuckWriter blocks every Write until released, like a hung disk.
type stuckWriter struct {
	release chan struct{}
	writes  atomic.Int32
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	<-w.release
	return len(p), nil
}

// A stuck access-log destination never slows traffic: entries are dropped
// and counted.
func TestAccessLogNeverBlocksTraffic(t *testing.T) {
	a := backend(t, "a")
	w := &stuckWriter{release: make(chan struct{})}
	p := newProxyWith(t, Config{AccessLog: w, AdminAddress: "127.0.0.1:0",
		test: testKnobs{accessLog: accesslog.Options{Queue: 4, FlushInterval: time.Millisecond}}})
	t.Cleanup(func() { close(w.release) }) // before the proxy's Shutdown
	update(t, p, oneRoute(1, []model.TargetGroup{group("a", target(t, a, model.TargetActive))}, to("a", 1)))
	c := newClient(t)
	addr := addrOf(p, webPort)
	c.get(addr, "x", "/")
	testsync.WaitFor(t, 5*time.Second, "the log writer to block", func() bool { return w.writes.Load() > 0 })

	const n = 200
	start := time.Now()
	if got := tally(c, addr, n); got["a"] != n {
		t.Errorf("with a stuck access log: %v, want %d served", got, n)
	}
	t.Logf("%d requests with a stuck access log: %v", n, time.Since(start))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d requests took %v with a stuck access log", n, d)
	}
	dropped := metricValue(scrape(t, p), "trellis_access_log_dropped_total")
	if dropped < n-4-100 { // the queue, and what the 64 KiB buffer took
		t.Errorf("trellis_access_log_dropped_total = %v, want about %d", dropped, n)
	}
}
