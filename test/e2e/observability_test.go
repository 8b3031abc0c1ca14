package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// `trellis up --access-log FILE` writes a JSON line per request, and the
// default admin listener serves metrics and probes on 127.0.0.1:9901.
func TestUpAccessLogAndMetrics(t *testing.T) {
	ns := netns.New(t)
	dir := copyDir(t, "../../examples/quickstart")
	logPath := filepath.Join(t.TempDir(), "access.log")
	up := start(t, ns, "up", "up", "--config", dir, "--demo", "--access-log", logPath)
	c := ns.HTTPClient(5 * time.Second)
	up.waitOutput(t, 15*time.Second, "proxy: metrics and health on http://127.0.0.1:9901")
	testsync.WaitFor(t, 10*time.Second, "the inventory service to answer", func() bool {
		status, _, err := get(c, proxyURL, inventoryHost)
		return err == nil && status == http.StatusOK
	})
	const n = 10
	if counts := split(t, c, proxyURL, inventoryHost, n); counts["error"] > 0 {
		t.Fatalf("requests failed: %v", counts)
	}

	// Entries are flushed within a second.
	var lines []map[string]any
	testsync.WaitFor(t, 5*time.Second, "access log lines for the requests", func() bool {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return false
		}
		lines = lines[:0]
		for l := range strings.Lines(string(b)) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("access log line %q: %v", l, err)
			}
			if m["hostHeader"] == inventoryHost {
				lines = append(lines, m)
			}
		}
		return len(lines) >= n
	})
	for _, m := range lines {
		if m["service"] != "inventory-default.my-hotel" || m["serviceNetwork"] != "my-hotel" || m["responseCode"] != 200.0 {
			t.Errorf("access log entry: service %v, network %v, code %v", m["service"], m["serviceNetwork"], m["responseCode"])
			break
		}
	}

	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `trellis_requests_total{code="200",rule="0",service="inventory-default.my-hotel"`,
	} {
		resp, err := c.Get("http://127.0.0.1:9901" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body without %q:\n%.2000s", path, resp.StatusCode, want, body)
		}
	}
}
