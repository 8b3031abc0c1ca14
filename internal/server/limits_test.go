package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
)

// send makes one request with tokenA and returns its status and error message.
func send(t *testing.T, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	req.Header.Set("Authorization", "Bearer "+tokenA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Message
}

func newLimitedServer(t *testing.T, objectBytes, requestBytes int64) string {
	t.Helper()
	return serve(t, server.Config{
		Tokens: map[string]string{tokenA: "east"}, MaxObjectBytes: objectBytes, MaxRequestBytes: requestBytes,
	})
}

// padded is a JSON object with a field padded to about n bytes.
func padded(n int) string {
	return `{"mode":"ServiceNetwork","domain":"n.trellis.internal","source":{"kind":"x","name":"` + strings.Repeat("a", n) + `"}}`
}

// chunked hides a reader's length, so the request is sent without a
// Content-Length, as a client streaming a body would.
type chunked struct{ io.Reader }

// A body over the limit is 413 whether its length is announced or not; a
// PUT's limit is one object's, an apply's a whole cluster's.
func TestOversizeBodiesAre413(t *testing.T) {
	url := newLimitedServer(t, 1000, 10000)
	tests := []struct {
		method, path string
		body         string
		want         int
	}{
		{"PUT", "/v1/servicenetworks/n", padded(500), http.StatusOK},
		{"PUT", "/v1/servicenetworks/n", padded(2000), http.StatusRequestEntityTooLarge},
		{"POST", "/v1/apply", `{"objects":{"networks":[` + padded(2000)[:len(padded(2000))-1] + `,"name":"n"}]}}`, http.StatusOK},
		{"POST", "/v1/apply", `{"objects":{"networks":[` + padded(20000) + `]}}`, http.StatusRequestEntityTooLarge},
		{"POST", "/v1/txn", `{"puts":{"networks":[` + padded(20000) + `]}}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		for _, announced := range []bool{true, false} {
			var body io.Reader = strings.NewReader(tt.body)
			if !announced {
				body = chunked{body}
			}
			code, msg := send(t, tt.method, url+tt.path, body)
			if code != tt.want && (tt.want >= 300 || code >= 300) {
				t.Errorf("%s %s of %d bytes (length announced %v): %d %q, want %d", tt.method, tt.path, len(tt.body), announced, code, msg, tt.want)
			}
			if code == http.StatusRequestEntityTooLarge && !strings.Contains(msg, "larger than the limit") {
				t.Errorf("413 message %q does not say why", msg)
			}
		}
	}
}

// A request waits for body budget while others hold it: two streaming
// bodies of unknown length never are read at once when each may take the
// whole budget.
func TestBodyBudgetBoundsConcurrentReads(t *testing.T) {
	url := newLimitedServer(t, 10000, 10000)
	pr, pw := io.Pipe()
	defer pw.Close()
	first := make(chan int, 1)
	go func() {
		code, _ := send(t, "POST", url+"/v1/apply", chunked{pr})
		first <- code
	}()
	pw.Write([]byte(`{"objects":{`)) // the first apply holds the budget, mid-body
	time.Sleep(100 * time.Millisecond)
	second := make(chan int, 1)
	go func() {
		code, _ := send(t, "PUT", url+"/v1/servicenetworks/n", chunked{strings.NewReader(padded(10))})
		second <- code
	}()
	select {
	case code := <-second:
		t.Fatalf("a second body was read while the first held the whole budget: %d", code)
	case <-time.After(300 * time.Millisecond):
	}
	pw.Write([]byte(`}}`))
	pw.Close()
	if code := <-first; code != http.StatusOK {
		t.Errorf("first apply: %d", code)
	}
	if code := <-second; code != http.StatusCreated {
		t.Errorf("second put, after the first: %d", code)
	}
}

// Malformed input is 400: data after the object, a revision with junk.
func TestMalformedRequestsAre400(t *testing.T) {
	url, east, _ := newServer(t)
	if err := east.Put(context.Background(), network("n")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path, body string
	}{
		{"PUT", "/v1/servicenetworks/m", `{"mode":"ServiceNetwork","domain":"m.trellis.internal"} {"x":1}`},
		{"PUT", "/v1/servicenetworks/m", `{"mode":"ServiceNetwork","domain":"m.trellis.internal"}}`},
		{"POST", "/v1/apply", `{"objects":{}}garbage`},
		{"POST", "/v1/txn", `{} []`},
		{"DELETE", "/v1/servicenetworks/n?revision=8xyz", ``},
		{"DELETE", "/v1/servicenetworks/n?revision=-1", ``},
		{"GET", "/v1/watch?revision=8xyz", ``},
		{"GET", "/v1/watch?revision=-1", ``},
	}
	for _, tt := range tests {
		if code, msg := send(t, tt.method, url+tt.path, strings.NewReader(tt.body)); code != http.StatusBadRequest {
			t.Errorf("%s %s %q: %d %q, want 400", tt.method, tt.path, tt.body, code, msg)
		}
	}
	// Nothing was stored, and n is still there; trailing white space is fine.
	if err := east.Get(context.Background(), &model.ServiceNetwork{Meta: model.Meta{Name: "m"}}); err == nil {
		t.Error("a body with trailing data was stored")
	}
	if code, msg := send(t, "PUT", url+"/v1/servicenetworks/m", strings.NewReader(`{"mode":"ServiceNetwork","domain":"m.trellis.internal"}`+"\n\t ")); code != http.StatusCreated {
		t.Errorf("trailing white space: %d %q", code, msg)
	}
	if err := east.Get(context.Background(), &model.ServiceNetwork{Meta: model.Meta{Name: "n"}}); err != nil {
		t.Errorf("n after refused deletes: %v", err)
	}
}

// Unconditional PUTs are unconditional: twenty at once to one object all
// succeed, each a different content.
func TestConcurrentUnconditionalPutsAllSucceed(t *testing.T) {
	_, east, _ := newServer(t)
	ctx := context.Background()
	if err := east.Put(ctx, targetGroup("tg", 1)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if err := east.Put(ctx, targetGroup("tg", int32(100+i))); err != nil {
				errs <- fmt.Errorf("put %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
