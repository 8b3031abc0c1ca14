package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/test/teststore"
	"trellis.dev/trellis/test/testsync"
)

// A body that stalls while it holds the whole body budget is cut off
// (408, saying what did not come in time) once its time is up, and the
// budget goes back: a write waiting behind it then gets through.
func TestStalledBodyGivesTheBudgetBack(t *testing.T) {
	base := bodyTimeoutBase
	bodyTimeoutBase = 2 * time.Second
	t.Cleanup(func() { bodyTimeoutBase = base })
	s := New(teststore.Bolt(t), Config{Tokens: map[string]string{"tok": "east"}, MaxRequestBytes: 1 << 10})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	do := func(method, path string, body io.Reader) (int, api.Error) {
		req, _ := http.NewRequest(method, srv.URL+path, body)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, api.Error{}
		}
		defer resp.Body.Close()
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	stalled := make(chan int, 1)
	go func() {
		code, e := do("POST", "/v1/apply", struct{ io.Reader }{pr}) // no Content-Length: reserves all
		if !strings.Contains(e.Message, "not received within") {
			t.Errorf("the stalled body's refusal %q does not say why", e.Message)
		}
		stalled <- code
	}()
	pw.Write([]byte(`{"objects":{`))
	testsync.WaitFor(t, 10*time.Second, "the stalled body to hold the budget", func() bool {
		if s.bodies.TryAcquire(1) {
			s.bodies.Release(1)
			return false
		}
		return true
	})
	code, e := do("PUT", "/v1/servicenetworks/n", strings.NewReader(`{"mode":"ServiceNetwork","domain":"n.trellis.internal"}`))
	if code != http.StatusCreated && code != http.StatusOK {
		t.Errorf("a write behind the stalled body: %d %q", code, e.Message)
	}
	select {
	case code := <-stalled:
		if code != http.StatusRequestTimeout {
			t.Errorf("the stalled body: %d, want 408", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the stalled body was never cut off")
	}
}
