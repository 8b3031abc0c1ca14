package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// tally runs during and meanwhile, on another goroutine, sample over and
// over, which adds what it saw to counts; it returns counts once during
// has returned and the last sample ended.
func tally[K comparable](during func(), sample func(counts map[K]int)) map[K]int {
	stop, done := make(chan struct{}), make(chan map[K]int)
	go func() {
		counts := map[K]int{}
		for {
			select {
			case <-stop:
				done <- counts
				return
			default:
			}
			sample(counts)
		}
	}()
	during()
	close(stop)
	return <-done
}

// probe sends requests for host through the proxy, one after another, while
// during runs, and counts the answers by status (0: no answer).
func probe(c *http.Client, host string, during func()) map[int]int {
	return tally(during, func(counts map[int]int) {
		status, _, _ := get(c, proxyURL, host)
		counts[status]++
	})
}

// rewriteInPlace does what `(sleep 2; cat backup) > path` does: it empties
// the file, leaves it empty for gap, then writes content.
func rewriteInPlace(t *testing.T, path string, gap time.Duration, content []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	time.Sleep(gap) // the writer's pause, with the file open and empty
	if _, err := f.Write(content); err != nil {
		t.Fatal(err)
	}
}

// A config file rewritten in place is empty for a while: the provider keeps
// what it defined, so an AuthPolicy never lapses (no 200 without the header
// it asks for) and a route never goes away (no 404).
func TestRewriteInPlaceKeepsConfig(t *testing.T) {
	_, c, dir, _ := upQuickstart(t)
	policy := inventoryPolicy(hotelTeamOnly)
	authFile := filepath.Join(dir, "inventory-auth.yaml")
	if err := os.WriteFile(authFile, policy, 0o644); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, 10*time.Second, "the policy to refuse a request without x-team", func() bool {
		status, _, err := get(c, proxyURL, inventoryHost)
		return err == nil && status == http.StatusForbidden
	})
	counts := probe(c, inventoryHost, func() {
		rewriteInPlace(t, authFile, 2*time.Second, policy)
		time.Sleep(500 * time.Millisecond) // and a while after
	})
	t.Logf("inventory without x-team while its policy file was rewritten: %v", counts)
	if counts[http.StatusOK] > 0 || counts[http.StatusForbidden] == 0 {
		t.Errorf("answers by status %v: want only 403s", counts)
	}

	const parkingHost = "parking-default.my-hotel.trellis.internal"
	routeFile := filepath.Join(dir, "parking.yaml")
	route, err := os.ReadFile(routeFile)
	if err != nil {
		t.Fatal(err)
	}
	counts = probe(c, parkingHost, func() {
		rewriteInPlace(t, routeFile, 2*time.Second, route)
		time.Sleep(500 * time.Millisecond)
	})
	t.Logf("parking while its route file was rewritten: %v", counts)
	if counts[http.StatusOK] == 0 || len(counts) > 1 {
		t.Errorf("answers by status %v: want only 200s", counts)
	}
}
