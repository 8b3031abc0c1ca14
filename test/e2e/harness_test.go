// Package e2e drives the built trellis binary as a user would: real
// processes, real files, real HTTP clients, each test in a network namespace
// of its own so the quick start runs exactly as the README writes it
// (127.0.0.1:8080 and all) without colliding with anything on the host.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"trellis.dev/trellis/internal/demo"
	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
	"trellis.dev/trellis/test/trellisbin"
)

// trellisBin is the binary under test, built once by TestMain.
var trellisBin string

func TestMain(m *testing.M) { trellisbin.Main(m, &trellisBin) }

// proc is a running trellis process.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr testsync.Buffer
	done           chan struct{}
}

// start runs trellis with args inside ns. The process is stopped at the end
// of the test, and its output logged if the test failed.
func start(t *testing.T, ns *netns.NS, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = ns.Command(context.Background(), trellisBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s\n--- %s stderr:\n%s", name, p.stdout.String(), name, p.stderr.String())
		}
	})
	return p
}

// trellisOutput runs trellis with args inside ns to completion and returns
// its standard output; it fails the test if the command fails.
func trellisOutput(t *testing.T, ns *netns.NS, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, trellisBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("trellis %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// stop asks the process to exit and kills it if it does not within 5 s.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once, as a crash would.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitOutput waits until the process has written substr to stdout or stderr.
func (p *proc) waitOutput(t *testing.T, timeout time.Duration, substr string) {
	t.Helper()
	testsync.WaitFor(t, timeout, fmt.Sprintf("%s to print %q", p.name, substr), func() bool {
		if strings.Contains(p.stdout.String(), substr) || strings.Contains(p.stderr.String(), substr) {
			return true
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before printing %q", p.name, p.cmd.ProcessState, substr)
		default:
		}
		return false
	})
}

// get sends one request with the given Host and returns the status and the
// demo backend that answered ("" if the answer was not from one).
func get(c *http.Client, url, host string) (int, string, error) {
	status, body, err := getBody(c, url, host)
	if err != nil {
		return 0, "", err
	}
	var r demo.Reply
	if json.Unmarshal([]byte(body), &r) != nil {
		return status, "", nil
	}
	return status, r.Backend, nil
}

// getBody sends one GET with the given Host and returns the status and body.
func getBody(c *http.Client, url, host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// split sends n requests and counts answers by backend; non-200 answers
// count under "status NNN" and transport errors under "error".
func split(t *testing.T, c *http.Client, url, host string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		status, backend, err := get(c, url, host)
		switch {
		case err != nil:
			counts["error"]++
		case status != http.StatusOK:
			counts[fmt.Sprintf("status %d", status)]++
		default:
			counts[backend]++
		}
	}
	return counts
}

// assertShare checks that backend got want±tolerance percent of n requests
// and that nothing failed.
func assertShare(t *testing.T, counts map[string]int, n int, backend string, want, tolerance float64) {
	t.Helper()
	got := 100 * float64(counts[backend]) / float64(n)
	if got < want-tolerance || got > want+tolerance {
		t.Errorf("%s got %.1f%% of %d requests, want %.0f±%.0f%% (counts %v)", backend, got, n, want, tolerance, counts)
	}
	for k, v := range counts {
		if k == "error" || strings.HasPrefix(k, "status") {
			t.Errorf("%d requests failed with %s (counts %v)", v, k, counts)
		}
	}
}

// copyDir copies the files of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
