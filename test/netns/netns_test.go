package netns

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A server inside the namespace is reachable through the namespace's dialer
// and not from the host, proving the dialer really dials from inside.
func TestDialReachesOnlyInside(t *testing.T) {
	ns := New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := ns.Command(ctx, "python3", "-m", "http.server", "--bind", "198.18.0.7", "18080")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()

	c := ns.HTTPClient(2 * time.Second)
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err = c.Get("http://198.18.0.7:18080/"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("GET inside the namespace: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Directory listing") {
		t.Fatalf("status %d, body %.80q", resp.StatusCode, body)
	}

	// From the host's own namespace the same address must not be local: a
	// listen on it fails (we never dial it from here — it would leave the machine).
	if ln, err := net.Listen("tcp", "198.18.0.7:0"); err == nil {
		ln.Close()
		t.Fatal("198.18.0.7 is bindable in the host namespace; the range must be local only inside the test namespace")
	}
}
