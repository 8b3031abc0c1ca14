package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// The proxy's limits are set from the command line: a body over
// --max-request-body-bytes gets 413 before it reaches a target, and one
// within it is served.
func TestUpRequestLimitsFromFlags(t *testing.T) {
	ns := netns.New(t)
	up := start(t, ns, "up", "up", "--config", copyDir(t, "../../examples/quickstart"), "--demo",
		"--max-request-body-bytes", "64", "--request-body-idle-timeout", "2s", "--settle-period", "1s")
	up.waitOutput(t, 15*time.Second, "proxy: listening on 127.0.0.1:8080")
	c := ns.HTTPClient(5 * time.Second)
	post := func(n int) int {
		req, _ := http.NewRequest(http.MethodPost, proxyURL, strings.NewReader(strings.Repeat("x", n)))
		req.Host = inventoryHost
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testsync.WaitFor(t, 10*time.Second, "the inventory service to answer", func() bool { return post(10) == http.StatusOK })
	if got := post(65); got != http.StatusRequestEntityTooLarge {
		t.Errorf("a 65-byte body with --max-request-body-bytes 64: %d, want 413", got)
	}
}
