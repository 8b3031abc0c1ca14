package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/test/netns"
	"trellis.dev/trellis/test/testsync"
)

// `trellis up --config examples/health-checks`: the proxy checks the
// target at the path the TargetGroupPolicy sets (a real listener records
// what the checks ask for); an edit of the policy file moves the checks to
// the new path; a policy out of bounds is refused naming the field, and the
// checks keep the last good configuration's path.
func TestUpTargetGroupPolicy(t *testing.T) {
	ns := netns.New(t)
	dir := copyDir(t, "../../examples/health-checks")
	var mu sync.Mutex
	seen := map[string]int{}
	ln, err := ns.Listen("tcp", "127.0.0.1:8091")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.UserAgent(), "Trellis-HealthChecker") {
			mu.Lock()
			seen[r.URL.Path]++
			mu.Unlock()
		}
		w.Write([]byte("rates"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	checks := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[path]
	}
	checked := func(path string) func() bool {
		return func() bool { return checks(path) > 0 }
	}

	up := start(t, ns, "up", "up", "--config", dir, "--admin-listen", "")
	up.waitOutput(t, 15*time.Second, "proxy: listening on 127.0.0.1:8080")
	testsync.WaitFor(t, 15*time.Second, "a health check of /healthz", checked("/healthz"))
	if n := checks("/"); n > 0 {
		t.Errorf("%d checks of /, the default path, with the policy in place", n)
	}

	policy := filepath.Join(dir, "policy.yaml")
	data, err := os.ReadFile(policy)
	if err != nil {
		t.Fatal(err)
	}
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(policy, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(strings.Replace(string(data), "path: /healthz", "path: /ready", 1))
	testsync.WaitFor(t, 25*time.Second, "a health check of /ready", checked("/ready"))

	// Out of bounds: refused naming the field; the checks stay at /ready.
	before := len(up.stderr.String())
	write(strings.Replace(string(data), "intervalSeconds: 10", "intervalSeconds: 3", 1))
	testsync.WaitFor(t, 10*time.Second, "an error naming spec.healthCheck.intervalSeconds", func() bool {
		fresh := up.stderr.String()[before:]
		return strings.Contains(fresh, "policy.yaml") && strings.Contains(fresh, "spec.healthCheck.intervalSeconds")
	})
	n := checks("/ready")
	testsync.WaitFor(t, 25*time.Second, "another health check of /ready", func() bool { return checks("/ready") > n })
}
