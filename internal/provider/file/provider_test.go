package file

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/testsync"
)

// wait bounds how long a test waits for something that should happen.
const wait = 5 * time.Second

// harness runs a Provider on a temporary directory holding the quick start.
type harness struct {
	t       *testing.T
	dir     string
	p       *Provider
	applied chan *translate.Output
	results chan error
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// start runs a provider on a copy of the quick start; applyErr, if set,
// decides what each apply returns.
func start(t *testing.T, debounce time.Duration, applyErr func() error) *harness {
	t.Helper()
	return startWith(t, nil, func(p *Provider) { p.Debounce = debounce }, applyErr)
}

// startWith runs a provider on a copy of the quick start to which
// prepare, if set, adds; configure, if set, changes the provider before it
// runs.
func startWith(t *testing.T, prepare func(h *harness), configure func(p *Provider), applyErr func() error) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), applied: make(chan *translate.Output, 100), results: make(chan error, 100)}
	files, err := filepath.Glob("../../../examples/quickstart/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("quick start files: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.write(filepath.Base(f), string(data))
	}
	if prepare != nil {
		prepare(h)
	}
	h.p = &Provider{
		Dir:      h.dir,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnResult: func(err error) { h.results <- err },
	}
	if configure != nil {
		configure(h.p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() {
		h.done <- h.p.Run(ctx, func(_ context.Context, out *translate.Output) error {
			if applyErr != nil {
				if err := applyErr(); err != nil {
					return err
				}
			}
			h.applied <- held(out)
			return nil
		})
	}()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Run and waits for it to return, once; it reports how long
// that took.
func (h *harness) stop() time.Duration {
	h.t.Helper()
	if h.stopped {
		return 0
	}
	h.stopped = true
	start := time.Now()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(wait):
		h.t.Error("Run did not return after cancel")
	}
	return time.Since(start)
}

func (h *harness) write(name, content string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, name), []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// edit rewrites a file of the directory, replacing old with new.
func (h *harness) edit(name, old, new string) {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.dir, name))
	if err != nil {
		h.t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		h.t.Fatalf("%s does not contain %q", name, old)
	}
	h.write(name, strings.Replace(string(data), old, new, 1))
}

// result waits for the outcome of the next attempt.
func (h *harness) result() error {
	h.t.Helper()
	return testsync.Receive(h.t, h.results, wait, "an attempt to load the directory")
}

// nextApply waits for the next apply.
func (h *harness) nextApply() *translate.Output {
	h.t.Helper()
	return testsync.Receive(h.t, h.applied, wait, "an apply")
}

// quiet checks that nothing is attempted for a while.
func (h *harness) quiet(d time.Duration) {
	h.t.Helper()
	select {
	case err := <-h.results:
		h.t.Fatalf("unexpected attempt (err %v)", err)
	case <-time.After(d):
	}
}

// inventoryWeights returns the weights of the inventory service's backends.
func inventoryWeights(t *testing.T, out *translate.Output) []int32 {
	t.Helper()
	for _, s := range out.Services {
		if s.Source.Name == "inventory" {
			var w []int32
			for _, b := range s.Rules[0].Action.Forward.Backends {
				w = append(w, b.Weight)
			}
			return w
		}
	}
	t.Fatal("no inventory service")
	return nil
}

func TestProviderAppliesAtStart(t *testing.T) {
	h := start(t, 0, nil)
	out := h.ready()
	if len(out.Networks) != 1 || len(out.Services) != 3 || len(out.TargetGroups) != 4 {
		t.Errorf("applied %d networks, %d services, %d target groups; want 1, 3, 4", len(out.Networks), len(out.Services), len(out.TargetGroups))
	}
	if out.Services[0].Owner != DefaultCluster {
		t.Errorf("owner %q, want %q", out.Services[0].Owner, DefaultCluster)
	}
	if err := h.p.LastError(); err != nil {
		t.Errorf("LastError = %v", err)
	}
}

func TestProviderAppliesChanges(t *testing.T) {
	tests := []struct {
		name   string
		change func(h *harness)
	}{
		{"write in place", func(h *harness) {
			h.edit("inventory.yaml", "weight: 50", "weight: 90")
		}},
		{"write a temporary file and rename it over", func(h *harness) {
			data, err := os.ReadFile(filepath.Join(h.dir, "inventory.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(h.dir, ".inventory.yaml.swp")
			if err := os.WriteFile(tmp, []byte(strings.Replace(string(data), "weight: 50", "weight: 90", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(h.dir, "inventory.yaml")); err != nil {
				t.Fatal(err)
			}
		}},
		{"rename in from outside", func(h *harness) {
			data, err := os.ReadFile(filepath.Join(h.dir, "inventory.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(t.TempDir(), "inventory.yaml")
			if err := os.WriteFile(tmp, []byte(strings.Replace(string(data), "weight: 50", "weight: 90", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(h.dir, "inventory.yaml")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t, 0, nil)
			h.ready()
			changed := time.Now()
			tt.change(h)
			h.waitInventoryWeight(90)
			t.Logf("applied %v after the change", time.Since(changed))
		})
	}
}

// waitInventoryWeight waits for an applied configuration in which the
// inventory route's first backend has weight w. Failed attempts are passed
// over: they are an edit's intermediate states.
func (h *harness) waitInventoryWeight(w int32) {
	h.t.Helper()
	for {
		if err := h.result(); err != nil {
			continue
		}
		if got := inventoryWeights(h.t, h.nextApply()); got[0] == w {
			return
		}
	}
}

func TestProviderKeepsLastGoodConfig(t *testing.T) {
	h := start(t, 0, nil)
	h.ready()

	h.edit("inventory.yaml", "weight: 50", "weigth: 50")
	err := h.result()
	if err == nil {
		t.Fatal("a misspelt field was accepted")
	}
	for _, want := range []string{filepath.Join(h.dir, "inventory.yaml"), `unknown field "spec.rules[0].backendRefs[0].weigth"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if len(h.applied) != 0 {
		t.Error("a configuration that failed to load was applied")
	}
	if h.p.LastError() == nil {
		t.Error("LastError is nil after a failed load")
	}

	h.edit("inventory.yaml", "weigth: 50", "weight: 70")
	h.waitInventoryWeight(70)
	if err := h.p.LastError(); err != nil {
		t.Errorf("LastError = %v after the fix", err)
	}
}

func TestProviderProblemsNotApplied(t *testing.T) {
	h := start(t, 0, nil)
	h.ready()

	h.edit("parking.yaml", "- name: parking\n          port: 80", "- name: parkin\n          port: 80")
	var problems *ProblemsError
	if err := h.result(); !errors.As(err, &problems) {
		t.Fatalf("got %v, want a *ProblemsError", err)
	}
	if len(problems.Problems) != 1 {
		t.Fatalf("got %d problems, want 1: %v", len(problems.Problems), problems)
	}
	p := problems.Problems[0]
	if p.Object.File != filepath.Join(h.dir, "parking.yaml") || p.Field != "spec.rules[0].backendRefs[0].name" || p.Reason != "BackendNotFound" {
		t.Errorf("problem %+v does not name parking.yaml, the backendRef and BackendNotFound", p)
	}
	if !strings.Contains(problems.Error(), "parking.yaml: HTTPRoute default/parking: spec.rules[0].backendRefs[0].name: Service default/parkin not found") {
		t.Errorf("error message %q does not name file, object and field", problems.Error())
	}
	if len(h.applied) != 0 {
		t.Error("a configuration with problems was applied")
	}
}

func TestProviderRetriesFailedApply(t *testing.T) {
	var calls atomic.Int32
	h := start(t, 0, func() error {
		if calls.Add(1) == 1 {
			return errors.New("store unavailable")
		}
		return nil
	})
	if err := h.result(); err == nil || !strings.Contains(err.Error(), "store unavailable") {
		t.Fatalf("first attempt: %v, want the apply error", err)
	}
	// No change to the directory: the retry comes from the backoff.
	if err := h.result(); err != nil {
		t.Fatalf("retry: %v", err)
	}
	h.nextApply()
}

func TestProviderIgnoresOtherFiles(t *testing.T) {
	h := start(t, 0, nil)
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	h.write(".inventory.yaml.swp", "junk")
	h.write("README.md", "notes")
	h.quiet(300 * time.Millisecond)
}

func TestProviderDebounces(t *testing.T) {
	// MaxDelay out of the way: however slowly a loaded machine makes the
	// five writes, they come within one debounce of each other.
	h := startWith(t, nil, func(p *Provider) { p.Debounce, p.MaxDelay = 300*time.Millisecond, time.Hour }, nil)
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		h.write("extra.yaml", "# edit "+strings.Repeat("x", i)+"\n")
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	h.quiet(600 * time.Millisecond)
}

// TestProviderOnChange: OnChange hears of a burst of changes once, before
// the reading it brings is applied.
func TestProviderOnChange(t *testing.T) {
	var changes, atApply atomic.Int32
	h := startWith(t, nil, func(p *Provider) {
		p.Debounce, p.MaxDelay = 300*time.Millisecond, time.Hour
		p.OnChange = func() { changes.Add(1) }
	}, func() error { atApply.Store(changes.Load()); return nil })
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	if n := changes.Load(); n != 0 {
		t.Fatalf("first reading, no change: OnChange called %d times, want 0", n)
	}
	for i := range 5 {
		h.write("extra.yaml", "# edit "+strings.Repeat("x", i)+"\n")
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	if n, at := changes.Load(), atApply.Load(); n != 1 || at != 1 {
		t.Errorf("a burst of five writes: OnChange called %d times, %d before the apply; want 1, 1", n, at)
	}
}

// TestProviderMaxDelay: a directory that never stays quiet for the
// debounce is still read, within MaxDelay of the first change.
func TestProviderMaxDelay(t *testing.T) {
	h := startWith(t, nil, func(p *Provider) { p.Debounce, p.MaxDelay = time.Hour, 50*time.Millisecond }, nil)
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := os.WriteFile(filepath.Join(h.dir, "extra.yaml"), []byte("# edit "+strings.Repeat("x", i%50)+"\n"), 0o644); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	// With an hour's debounce, only MaxDelay can bring a reading.
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
}

func TestProviderMissingDir(t *testing.T) {
	p := &Provider{Dir: filepath.Join(t.TempDir(), "nope"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := p.Run(context.Background(), func(context.Context, *translate.Output) error { return nil })
	if err == nil {
		t.Error("Run on a missing directory succeeded")
	}
}

// held returns a copy of out that the provider's next translation leaves
// as it is: an Incremental's output lends it its own lists until the next
// call (translate.Incremental.Translate), which patches them in place,
// and the tests read an output while the provider runs on.
func held(out *translate.Output) *translate.Output {
	c := *out
	c.Services = slices.Clone(out.Services)
	c.TargetGroups = slices.Clone(out.TargetGroups)
	c.Status.Routes = slices.Clone(out.Status.Routes)
	c.Status.Policies = slices.Clone(out.Status.Policies)
	c.Status.TargetGroupPolicies = slices.Clone(out.Status.TargetGroupPolicies)
	return &c
}
