package file_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/testsync"
)

// BenchmarkProviderChange is the file provider's part of one change at n
// routes (issue 15): bench/scale's directory (100 routes, with their
// Services and EndpointSlices, a file), one route's hostname changed by
// renaming a new file over its file, until the provider hands over the
// translation that has it. It reports the process's CPU time per change
// (cpu-ms/op), which load inflates less than the wall time.
func BenchmarkProviderChange(b *testing.B) {
	for _, n := range []int{2000, 10000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) { benchmarkProviderChange(b, n) })
	}
}

func benchmarkProviderChange(b *testing.B, n int) {
	dir := b.TempDir()
	gen := exec.Command("go", "run", "../../../bench/scale", "gen", "-dir", dir, "-services", fmt.Sprint(n))
	if out, err := gen.CombinedOutput(); err != nil {
		b.Fatalf("generating: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &file.Provider{Dir: dir, Debounce: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	applied := make(chan *translate.Output, 1)
	go func() {
		_ = p.Run(ctx, func(_ context.Context, out *translate.Output) error { applied <- out; return nil })
	}()
	if out := <-applied; len(out.Services) != n {
		b.Fatalf("%d services, want %d", len(out.Services), n)
	}
	hosts := map[int]string{} // each changed route's hostname now
	start := testsync.CPUTime()
	i := 0
	for b.Loop() {
		i++
		route := (i * 7919) % n
		path := filepath.Join(dir, fmt.Sprintf("routes-%05d.yaml", route/100))
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		old, ok := hosts[route]
		if !ok {
			old = fmt.Sprintf("r-%d.example.com", route)
		}
		host := fmt.Sprintf("r-%d.v%d.example.com", route, i)
		hosts[route] = host
		data = bytes.Replace(data, []byte("- "+old+"\n"), []byte("- "+host+"\n"), 1)
		if !bytes.Contains(data, []byte(host)) {
			b.Fatalf("%s has no %q", path, old)
		}
		tmp := filepath.Join(dir, ".change.tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("r-%d-default.web-default", route)
		for served := false; !served; {
			out := <-applied
			for k := range out.Services {
				if s := &out.Services[k]; s.Name == name {
					served = slices.Contains(s.Listeners[0].Hostnames, host)
				}
			}
		}
	}
	b.ReportMetric(float64(testsync.CPUTime()-start)/float64(b.N)/1e6, "cpu-ms/change")
}
