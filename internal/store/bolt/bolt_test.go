package bolt_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/internal/store/bolt"
	"trellis.dev/trellis/internal/store/storetest"
	"trellis.dev/trellis/test/testsync"
)

const timeout = 10 * time.Second

var quiet = slog.New(slog.DiscardHandler)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openStore(t, filepath.Join(t.TempDir(), "store.db"), bolt.Options{Logger: quiet})
	})
}

// openStore opens a store that is closed when the test ends.
func openStore(tb testing.TB, path string, opts bolt.Options) *bolt.Store {
	tb.Helper()
	s, err := bolt.Open(path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := bolt.Open(path, bolt.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for _, ops := range [][]store.Op{
		{store.Put("a", []byte("1"))},                        // 1
		{store.Put("b", []byte("2"))},                        // 2
		{store.Put("a", []byte("3")), store.Put("c", nil)},   // 3
		{store.Delete("b")},                                  // 4
		{store.Delete("missing")},                            // no change
		{{Type: store.OpPut, Key: "a", IfRevision: 1}},       // conflict
		{store.Put("d", []byte("4")), store.Delete("c")},     // 5
		{{Type: store.OpDelete, Key: "d", IfRevision: 1234}}, // conflict
	} {
		if _, err := s.Txn(ctx, ops...); err != nil && !errors.Is(err, store.ErrConflict) {
			t.Fatal(err)
		}
	}
	id := s.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path, bolt.Options{Logger: quiet})
	if s.ID() != id {
		t.Errorf("ID after reopen = %q, want %q: the store's identity must outlive restarts", s.ID(), id)
	}
	if rev, err := s.Revision(ctx); err != nil || rev != 5 {
		t.Errorf("Revision after reopen = %d, %v; want 5", rev, err)
	}
	kvs, rev, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.KeyValue{
		{Key: "a", Value: []byte("3"), CreateRevision: 1, ModRevision: 3},
		{Key: "d", Value: []byte("4"), CreateRevision: 5, ModRevision: 5},
	}
	if rev != 5 || !equalKVs(kvs, want) {
		t.Errorf("List after reopen = %v at %d, want %v at 5", kvs, rev, want)
	}

	// History survives too: a watcher can resume from before the restart.
	events, err := s.Watch(ctx, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents := []string{
		"2: put b=2@2",
		"3: put a=3@1 put c=@3",
		"4: delete b=@0",
		"5: put d=4@5 delete c=@0",
	}
	for _, w := range wantEvents {
		if got := fmtEvent(recv(t, events)); got != w {
			t.Errorf("replayed %q, want %q", got, w)
		}
	}
	if rev, err := s.Txn(ctx, store.Put("e", nil)); err != nil || rev != 6 {
		t.Errorf("first txn after reopen = %d, %v; want 6", rev, err)
	}
	if got := fmtEvent(recv(t, events)); got != "6: put e=@6" {
		t.Errorf("live event after replay = %q, want %q", got, "6: put e=@6")
	}
}

func TestHistoryTrim(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := bolt.Open(path, bolt.Options{HistoryLimit: 5, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 12; i++ {
		if _, err := s.Txn(ctx, store.Put(fmt.Sprintf("k/%02d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Revisions 8..12 are retained: watching from 7 or later works.
	tests := []struct {
		after     int64
		compacted bool
		first     int64 // first replayed revision; 13 means none
		events    <-chan store.Event
	}{
		{after: 0, compacted: true},
		{after: 6, compacted: true},
		{after: 7, first: 8},
		{after: 10, first: 11},
		{after: 12, first: 13},
	}
	for i, tc := range tests {
		events, err := s.Watch(ctx, "", tc.after)
		switch {
		case tc.compacted && !errors.Is(err, store.ErrCompacted):
			t.Errorf("Watch from %d: error = %v, want ErrCompacted", tc.after, err)
		case !tc.compacted && err != nil:
			t.Fatalf("Watch from %d: %v", tc.after, err)
		}
		tests[i].events = events
	}
	// Take the replays before writing again: a write trims the oldest
	// revision, and a replay that had not read it yet would be closed.
	for _, tc := range tests {
		if tc.compacted {
			continue
		}
		for want := tc.first; want <= 12; want++ {
			if ev := recv(t, tc.events); ev.Revision != want {
				t.Fatalf("Watch from %d: got revision %d, want %d", tc.after, ev.Revision, want)
			}
		}
	}
	rev, err := s.Txn(ctx, store.Put("live", nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		if tc.compacted {
			continue
		}
		if ev := recv(t, tc.events); ev.Revision != rev {
			t.Errorf("Watch from %d: got live revision %d, want %d", tc.after, ev.Revision, rev)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The compaction point is persisted: 9..13 are retained.
	s = openStore(t, path, bolt.Options{HistoryLimit: 5, Logger: quiet})
	if _, err := s.Watch(ctx, "", 7); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("after reopen, Watch from 7: error = %v, want ErrCompacted", err)
	}
	if _, err := s.Watch(ctx, "", 8); err != nil {
		t.Errorf("after reopen, Watch from 8: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A smaller limit takes effect on the next write.
	s = openStore(t, path, bolt.Options{HistoryLimit: 2, Logger: quiet})
	if rev, err = s.Txn(ctx, store.Put("shrink", nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Watch(ctx, "", rev-3); !errors.Is(err, store.ErrCompacted) {
		t.Errorf("with limit 2, Watch from %d: error = %v, want ErrCompacted", rev-3, err)
	}
	events, err := s.Watch(ctx, "", rev-2)
	if err != nil {
		t.Fatalf("with limit 2, Watch from %d: %v", rev-2, err)
	}
	for want := rev - 1; want <= rev; want++ {
		if ev := recv(t, events); ev.Revision != want {
			t.Errorf("with limit 2: replayed %d, want %d", ev.Revision, want)
		}
	}
}

// TestHistoryTrimBySize: the history keeps the newest revisions whose
// entries fit in HistoryBytes, always the newest one, and the size
// retained is read again at open.
func TestHistoryTrimBySize(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	// An entry of one put of key "k/NN" and a 300-byte value is 311
	// bytes: three fit in 1,000.
	opts := bolt.Options{HistoryBytes: 1000, Logger: quiet}
	s := openStore(t, path, opts)
	value := bytes.Repeat([]byte("v"), 300)
	for i := 1; i <= 10; i++ {
		if _, err := s.Txn(ctx, store.Put(fmt.Sprintf("k/%02d", i), value)); err != nil {
			t.Fatal(err)
		}
	}
	watchable := func(s *bolt.Store, after int64) bool {
		t.Helper()
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err := s.Watch(wctx, "", after)
		if err != nil && !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("Watch from %d: %v", after, err)
		}
		return err == nil
	}
	if watchable(s, 6) || !watchable(s, 7) {
		t.Errorf("after 10 entries of 311 bytes in 1,000: watchable from 6 %v, from 7 %v; want revisions 8-10 kept", watchable(s, 6), watchable(s, 7))
	}
	events, err := s.Watch(ctx, "", 7)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(8); want <= 10; want++ {
		if ev := recv(t, events); ev.Revision != want || len(ev.Changes) != 1 || !bytes.Equal(ev.Changes[0].KV.Value, value) {
			t.Fatalf("replayed %s, want revision %d with the value", fmtEvent(ev), want)
		}
	}

	// An entry larger than the bound is kept alone.
	if _, err := s.Txn(ctx, store.Put("big", bytes.Repeat([]byte("b"), 5000))); err != nil {
		t.Fatal(err)
	}
	if watchable(s, 9) || !watchable(s, 10) {
		t.Errorf("after an entry over the bound: watchable from 9 %v, from 10 %v; want revision 11 alone", watchable(s, 9), watchable(s, 10))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened, the store knows the history's size: the next write trims
	// the large entry.
	s = openStore(t, path, opts)
	if _, err := s.Txn(ctx, store.Put("k/12", value)); err != nil {
		t.Fatal(err)
	}
	if watchable(s, 10) || !watchable(s, 11) {
		t.Errorf("after reopen: watchable from 10 %v, from 11 %v; want revision 12 alone", watchable(s, 10), watchable(s, 11))
	}
}

// TestHistoryBytesBoundsTheFile: rewriting a large value over and over
// (as a proxy's health report is) leaves a file of about the bound, not
// one that grows with every write, as it did with history bounded by
// count alone.
func TestHistoryBytesBoundsTheFile(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	s := openStore(t, path, bolt.Options{HistoryBytes: 1 << 20, Logger: quiet})
	value := bytes.Repeat([]byte("h"), 512<<10)
	for range 200 { // 100 MiB written
		if _, err := s.Txn(ctx, store.Put("health/a", value)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt grows a file 16 MiB at a time.
	if info.Size() > 32<<20 {
		t.Errorf("file is %d bytes after 200 writes of 512 KiB with 1 MiB of history; want at most 32 MiB", info.Size())
	}
}

func TestSlowWatcher(t *testing.T) {
	const buffer, writes = 4, 30
	var logs testsync.Buffer
	s := openStore(t, filepath.Join(t.TempDir(), "store.db"), bolt.Options{
		WatchBuffer: buffer,
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx := t.Context()
	slow, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}

	// Keep the fast watcher in step with the writes, so only the slow one
	// falls behind; each write must finish although the slow one never reads.
	for i := range writes {
		written := make(chan error, 1)
		go func() {
			_, err := s.Txn(ctx, store.Put(fmt.Sprintf("k/%d", i), nil))
			written <- err
		}()
		select {
		case err := <-written:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(timeout):
			t.Fatal("a write blocked behind a watcher that does not read")
		}
		if ev := recv(t, fast); ev.Revision != int64(i+1) {
			t.Fatalf("fast watcher: got %d, want %d", ev.Revision, i+1)
		}
	}

	// The slow watcher gets what was queued, in order, then its channel closes.
	var last int64
	for _, ev := range drain(t, slow) {
		if ev.Revision != last+1 {
			t.Errorf("slow watcher: got %d after %d", ev.Revision, last)
		}
		last = ev.Revision
	}
	if last < buffer || last >= writes {
		t.Errorf("slow watcher received up to revision %d, want it dropped after %d..%d", last, buffer, buffer+1)
	}
	if !strings.Contains(logs.String(), "fell behind") {
		t.Errorf("no warning logged for the dropped watcher; logs: %q", logs.String())
	}
	// Re-watching from the last revision seen loses nothing.
	again, err := s.Watch(ctx, "", last)
	if err != nil {
		t.Fatal(err)
	}
	for want := last + 1; want <= writes; want++ {
		if ev := recv(t, again); ev.Revision != want {
			t.Fatalf("re-watch: got %d, want %d", ev.Revision, want)
		}
	}
}

func TestWatchFromFuture(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "store.db"), bolt.Options{Logger: quiet})
	ctx := t.Context()
	events, err := s.Watch(ctx, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.Txn(ctx, store.Put(fmt.Sprint(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if ev := recv(t, events); ev.Revision != 3 {
		t.Errorf("Watch from 2 on an empty store: first event at %d, want 3", ev.Revision)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		opts bolt.Options
	}{
		{"negative history limit", filepath.Join(dir, "a.db"), bolt.Options{HistoryLimit: -1}},
		{"negative watch buffer", filepath.Join(dir, "b.db"), bolt.Options{WatchBuffer: -1}},
		{"negative history size", filepath.Join(dir, "e.db"), bolt.Options{HistoryBytes: -1}},
		{"missing directory", filepath.Join(dir, "no", "such", "c.db"), bolt.Options{}},
		{"not a bbolt file", writeFile(t, filepath.Join(dir, "d.db"), bytes.Repeat([]byte("junk"), 4096)), bolt.Options{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := bolt.Open(tc.path, tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name the file %s", err, tc.path)
			}
		})
	}
}

// TestCloseEndsWatchers checks that Close closes every watch channel, even
// ones whose reader has stopped reading, and leaves no goroutine behind.
func TestCloseEndsWatchers(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for i := range 3 {
		if _, err := s.Txn(ctx, store.Put(fmt.Sprint(i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	var watchers []<-chan store.Event
	for _, w := range []struct {
		ctx   context.Context
		after int64
	}{
		{ctx, 0},       // blocked handing over its replay
		{ctx, 3},       // idle, waiting for live events
		{canceled, 0},  // canceled below, before Close
		{canceled, 10}, // canceled while waiting for a future revision
	} {
		events, err := s.Watch(w.ctx, "", w.after)
		if err != nil {
			t.Fatal(err)
		}
		watchers = append(watchers, events)
	}
	cancel()
	for _, events := range watchers[2:] {
		drain(t, events)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, events := range watchers[:2] {
		drain(t, events)
	}
	if err := s.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: error = %v, want ErrClosed", err)
	}

	if !testsync.Poll(timeout, func() bool { return runtime.NumGoroutine() <= before }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
	}
}

// helperEnv names the database a TestHelperWriter child writes to.
const helperEnv = "TRELLIS_BOLT_HELPER_DB"

// TestHelperWriter is the writer process of TestKillDurability, which runs
// this test binary with only this test selected and helperEnv set. It writes
// key/N=value-N in sequential transactions and prints "ack REV KEY" for
// each as soon as Txn returns. Without helperEnv it does nothing.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		return
	}
	s, err := bolt.Open(path, bolt.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 100000 {
		key := fmt.Sprintf("key/%d", i)
		rev, err := s.Txn(context.Background(), store.Put(key, []byte("value-"+key)))
		if err != nil {
			t.Fatal(err)
		}
		// os.Stdout is unbuffered: once the parent can read this line, the
		// write was acknowledged.
		fmt.Printf("ack %d %s\n", rev, key)
	}
}

// TestKillDurability kills a writer process with SIGKILL in the middle of a
// stream of transactions and checks that every transaction it acknowledged
// is in the file.
func TestKillDurability(t *testing.T) {
	const killAfter = 200
	path := filepath.Join(t.TempDir(), "kill.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Never leave the child running, whatever happens below.
	watchdog := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer watchdog.Stop()

	type ack struct {
		rev int64
		key string
	}
	var acks []ack
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var a ack
		if _, err := fmt.Sscanf(sc.Text(), "ack %d %s", &a.rev, &a.key); err != nil {
			continue // test framework output
		}
		acks = append(acks, a)
		if len(acks) == killAfter {
			// Mid-stream: the child is inside its next Txn or about to be.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != -1 {
		t.Fatalf("writer was not killed by a signal (%v); stderr:\n%s", err, stderr.Bytes())
	}
	if len(acks) < killAfter {
		t.Fatalf("writer acknowledged only %d writes before dying; stderr:\n%s", len(acks), stderr.Bytes())
	}
	t.Logf("writer killed after %d acknowledged writes", len(acks))

	s := openStore(t, path, bolt.Options{Logger: quiet})
	ctx := t.Context()
	for i, a := range acks {
		if want := fmt.Sprintf("key/%d", i); a.key != want || a.rev != int64(i+1) {
			t.Fatalf("ack %d = %d %s, want %d %s", i, a.rev, a.key, i+1, want)
		}
		kv, err := s.Get(ctx, a.key)
		if err != nil {
			t.Fatalf("acknowledged write %s at %d lost: %v", a.key, a.rev, err)
		}
		if string(kv.Value) != "value-"+a.key || kv.ModRevision != a.rev {
			t.Errorf("%s = %q at %d, want %q at %d", a.key, kv.Value, kv.ModRevision, "value-"+a.key, a.rev)
		}
	}
	// The file is consistent, not just holding the acknowledged keys: each
	// revision created exactly one key, and history covers every revision.
	kvs, rev, err := s.List(ctx, "key/")
	if err != nil {
		t.Fatal(err)
	}
	if last := acks[len(acks)-1].rev; rev < last {
		t.Errorf("revision after kill = %d, want >= %d (last acknowledged)", rev, last)
	}
	if int64(len(kvs)) != rev {
		t.Errorf("%d keys at revision %d, want one per revision", len(kvs), rev)
	}
	events, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= rev; want++ {
		if ev := recv(t, events); ev.Revision != want || len(ev.Changes) != 1 || ev.Changes[0].KV.Key != fmt.Sprintf("key/%d", want-1) {
			t.Fatalf("history: got %s, want revision %d putting key/%d", fmtEvent(ev), want, want-1)
		}
	}
	if next, err := s.Txn(ctx, store.Put("after-crash", nil)); err != nil || next != rev+1 {
		t.Errorf("write after recovery = %d, %v; want %d", next, err, rev+1)
	}
}

func BenchmarkTxnPut(b *testing.B) {
	s := openStore(b, filepath.Join(b.TempDir(), "bench.db"), bolt.Options{Logger: quiet})
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 256)
	keys := benchKeys(1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Txn(ctx, store.Put(keys[i%len(keys)], value)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s := openStore(b, filepath.Join(b.TempDir(), "bench.db"), bolt.Options{Logger: quiet})
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 256)
	keys := benchKeys(1024)
	var ops []store.Op
	for _, k := range keys {
		ops = append(ops, store.Put(k, value))
	}
	if _, err := s.Txn(ctx, ops...); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Get(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("/services/default/svc-%04d", i)
	}
	return keys
}

// Helpers.

func recv(t *testing.T, events <-chan store.Event) store.Event {
	t.Helper()
	return testsync.Receive(t, events, timeout, "watch event")
}

// drain returns the events left on the channel once it closes, failing the
// test if it does not close in time.
func drain(t *testing.T, events <-chan store.Event) []store.Event {
	t.Helper()
	var got []store.Event
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-deadline:
			t.Fatal("watch channel not closed within", timeout)
		}
	}
}

// fmtEvent renders an event compactly: "REV: put KEY=VALUE@CREATE ...".
func fmtEvent(ev store.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d:", ev.Revision)
	for _, c := range ev.Changes {
		fmt.Fprintf(&b, " %s %s=%s@%d", c.Type, c.KV.Key, c.KV.Value, c.KV.CreateRevision)
	}
	return b.String()
}

func equalKVs(a, b []store.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !bytes.Equal(a[i].Value, b[i].Value) ||
			a[i].CreateRevision != b[i].CreateRevision || a[i].ModRevision != b[i].ModRevision {
			return false
		}
	}
	return true
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
