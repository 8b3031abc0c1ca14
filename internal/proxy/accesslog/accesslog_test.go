package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"trellis.dev/trellis/test/testsync"
)

func sample() *Entry {
	return &Entry{
		StartTime:          time.Date(2025, 6, 1, 11, 28, 40, 123456789, time.FixedZone("x", 3600)),
		Duration:           23456 * time.Microsecond,
		RequestToTarget:    21 * time.Millisecond,
		ResponseFromTarget: 1500 * time.Microsecond,
		ServiceNetwork:     "my-hotel",
		Service:            "inventory",
		TargetGroup:        "inventory-ver1",
		ListenerPort:       8080,
		SourceCluster:      "local",
		DestinationCluster: "local",
		SourceIPPort:       "10.0.183.56:57086",
		Destination:        &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
		TargetIPPort:       "172.31.9.231:80",
		Method:             "GET",
		Path:               "/",
		Protocol:           "HTTP/1.1",
		ResponseCode:       404,
		BytesReceived:      135,
		BytesSent:          1247,
		UserAgent:          "curl/8.5.0",
		Host:               "inventory-default.my-hotel.trellis.internal",
		RequestID:          "0b5a8c3e-1d2f-4a6b-9c8d-7e6f5a4b3c2d",
	}
}

func TestAppendJSON(t *testing.T) {
	line := AppendJSON(nil, sample())
	if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", line, err)
	}
	want := map[string]any{
		"serviceNetwork": "my-hotel", "resolvedUser": "-", "listenerType": "HTTP", "listenerPort": 8080.0,
		"authDeniedReason": "-", "targetGroup": "inventory-ver1", "sourceCluster": "local", "destinationCluster": "local",
		"sourceIpPort": "10.0.183.56:57086", "destinationIpPort": "127.0.0.1:8080", "targetIpPort": "172.31.9.231:80",
		"failureReason": "-", "service": "inventory", "startTime": "2025-06-01T10:28:40.123Z",
		"requestMethod": "GET", "requestPath": "/", "protocol": "HTTP/1.1", "responseCode": 404.0,
		"bytesReceived": 135.0, "bytesSent": 1247.0, "duration": 23.456, "userAgent": "curl/8.5.0",
		"hostHeader": "inventory-default.my-hotel.trellis.internal", "serverNameIndication": "-",
		"requestToTargetDuration": 21.0, "responseFromTargetDuration": 1.5, "sslCipher": "-", "tlsVersion": "-",
		"callerPrincipal": "-", "callerX509IssuerOU": "-", "callerX509SubjectCN": "-", "callerX509SANDNS": "-",
		"callerX509SANURI": "-", "requestId": "0b5a8c3e-1d2f-4a6b-9c8d-7e6f5a4b3c2d", "grpcResponseCode": "-",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected field %s", k)
		}
	}
	// Fields keep Lattice's order.
	if i, j := bytes.Index(line, []byte(`"serviceNetwork"`)), bytes.Index(line, []byte(`"requestId"`)); i != 1 || j < i {
		t.Errorf("field order: serviceNetwork at %d, requestId at %d", i, j)
	}
}

func TestAppendJSONMissingAndHostile(t *testing.T) {
	e := &Entry{
		StartTime: time.Unix(0, 0),
		Path:      "/a\"b\\c",
		UserAgent: "evil\n{\"forged\":1}\x00\x1f",
		Host:      "bad\xffutf8",
	}
	line := AppendJSON(nil, e)
	if bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("a header broke the line: %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", line, err)
	}
	for k, want := range map[string]any{
		"requestPath":  "/a\"b\\c",
		"userAgent":    "evil\n{\"forged\":1}\x00\x1f",
		"hostHeader":   "bad\ufffdutf8",
		"service":      "-",
		"targetIpPort": "-",
		"responseCode": 0.0,
		"forged":       nil,
	} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
}

func FuzzAppendQuoted(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x01\n\t", "\xff\xfe", "ünïcödé ✓", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendQuoted(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendQuoted(%q) = %s: %v", s, b, err)
		}
		if bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("appendQuoted(%q) has a line break", s)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); utf8.ValidString(s) && got != want {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
	})
}

// blockingWriter blocks every Write until released, like a stuck disk.
type blockingWriter struct {
	testsync.Buffer
	release chan struct{}
	writes  atomic.Int32
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.writes.Add(1)
	<-w.release
	return w.Buffer.Write(p)
}

func TestLogNeverBlocks(t *testing.T) {
	out := &blockingWriter{release: make(chan struct{})}
	l := New(out, Options{Queue: 4, FlushInterval: time.Millisecond})
	const n = 1000
	start := time.Now()
	// The first entries reach the writer, which then blocks on its flush;
	// the queue fills, and everything after is dropped.
	for range n {
		l.Log(sample())
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("%d Log calls against a stuck writer took %v", n, d)
	}
	testsync.WaitFor(t, 5*time.Second, "the writer to block", func() bool { return out.writes.Load() > 0 })
	dropped := l.Dropped()
	if dropped < n-4-100 { // the queue, plus what fit in the 64 KiB buffer before the writer blocked
		t.Errorf("dropped %d of %d entries with a queue of 4", dropped, n)
	}
	close(out.release)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := uint64(len(out.Lines())); got+dropped != n {
		t.Errorf("%d lines written + %d dropped = %d, want %d", got, dropped, got+dropped, n)
	}
}

func TestPeriodicFlush(t *testing.T) {
	var out testsync.Buffer
	l := New(&out, Options{FlushInterval: 10 * time.Millisecond})
	defer l.Close(context.Background())
	l.Log(sample())
	testsync.WaitFor(t, 5*time.Second, "the entry to be flushed without Close", func() bool { return len(out.Lines()) == 1 })
}

func TestCloseWritesQueued(t *testing.T) {
	var out testsync.Buffer
	l := New(&out, Options{FlushInterval: time.Hour})
	for range 100 {
		l.Log(sample())
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(out.Lines()); got != 100 {
		t.Errorf("%d lines after Close, want 100", got)
	}
	l.Log(sample())
	if l.Dropped() != 1 {
		t.Errorf("Log after Close: dropped %d, want 1", l.Dropped())
	}
}

func TestCloseDeadlineWithStuckWriter(t *testing.T) {
	out := &blockingWriter{release: make(chan struct{})}
	defer close(out.release)
	l := New(out, Options{FlushInterval: time.Millisecond})
	l.Log(sample())
	testsync.WaitFor(t, 5*time.Second, "the writer to block", func() bool { return out.writes.Load() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := l.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline exceeded", err)
	}
}

// flakyWriter fails while broken is set.
type flakyWriter struct {
	testsync.Buffer
	broken atomic.Bool
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	if w.broken.Load() {
		return 0, errors.New("disk full")
	}
	return w.Buffer.Write(p)
}

func TestWriteErrorsDoNotStopLogging(t *testing.T) {
	out := &flakyWriter{}
	out.broken.Store(true)
	l := New(out, Options{FlushInterval: time.Millisecond})
	l.Log(sample())
	testsync.WaitFor(t, 5*time.Second, "a write error", func() bool { return l.WriteErrors() > 0 })
	out.broken.Store(false)
	l.Log(sample())
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(out.Lines()); got != 1 {
		t.Errorf("%d lines after the writer recovered, want 1", got)
	}
}

func BenchmarkLog(b *testing.B) {
	l := New(discard{}, Options{})
	defer l.Close(context.Background())
	e := sample()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(e)
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := sample()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], e)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// writeRecorder keeps each Write's bytes apart.
type writeRecorder struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *writeRecorder) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, bytes.Clone(p))
	return len(p), nil
}

// TestWritesEndAtLineEnds: lines of every size, a buffer's worth at a time,
// reach the writer only as whole lines, never a line split across two writes
// (which a reader of the file would see as half a line until the next flush).
func TestWritesEndAtLineEnds(t *testing.T) {
	var out writeRecorder
	l := New(&out, Options{FlushInterval: time.Hour})
	const n = 600
	for i := range n {
		e := sample()
		e.Path = "/" + strings.Repeat("p", (i*997)%3000)
		if i == n/2 {
			e.Path = "/" + strings.Repeat("q", bufferSize+100) // longer than the buffer
		}
		l.Log(e)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := 0
	for i, w := range out.writes {
		if len(w) == 0 || w[len(w)-1] != '\n' {
			t.Fatalf("write %d of %d (%d bytes) does not end a line", i, len(out.writes), len(w))
		}
		lines += bytes.Count(w, []byte("\n"))
	}
	if lines != n || l.Dropped() != 0 {
		t.Errorf("%d lines written, %d dropped; want %d, 0", lines, l.Dropped(), n)
	}
	if len(out.writes) < 10 {
		t.Errorf("%d writes: the test should cross the buffer's size many times", len(out.writes))
	}
}
