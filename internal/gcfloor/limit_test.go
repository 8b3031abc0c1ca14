package gcfloor

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// TestSetLimit: the flag's limit, nine tenths of the cgroup's, none, and
// the GOMEMLIMIT variable standing whatever the flag says; each read
// back from the runtime.
func TestSetLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	dir := t.TempDir()
	cgroup := func(content string) {
		path := filepath.Join(dir, "memory.max")
		if content == "" {
			path = filepath.Join(dir, "missing")
		} else if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		old := cgroupMemoryMax
		cgroupMemoryMax = path
		t.Cleanup(func() { cgroupMemoryMax = old })
	}
	for _, tc := range []struct {
		name, cgroup string
		limit        int64
		want         int64
		from         string
	}{
		{"flag", "1000000000\n", 400 << 20, 400 << 20, LimitFlag},
		{"cgroup", "1000000000\n", 0, 900000000, LimitCgroup},
		{"no cgroup limit", "max\n", 0, 0, LimitNone},
		{"no cgroup", "", 0, 0, LimitNone},
		{"none asked", "1000000000\n", -1, 0, LimitNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			cgroup(tc.cgroup)
			n, from := SetLimit(tc.limit)
			if n != tc.want || from != tc.from {
				t.Errorf("SetLimit(%d) = %d, %s; want %d, %s", tc.limit, n, from, tc.want, tc.from)
			}
			want := tc.want
			if want == 0 {
				want = math.MaxInt64
			}
			if got := debug.SetMemoryLimit(-1); got != want {
				t.Errorf("runtime's limit = %d, want %d", got, want)
			}
		})
	}
	t.Run("GOMEMLIMIT stands", func(t *testing.T) {
		t.Setenv("GOMEMLIMIT", "300MiB")
		debug.SetMemoryLimit(300 << 20) // as the runtime read it at start
		n, from := SetLimit(100 << 20)
		if n != 300<<20 || from != LimitEnv {
			t.Errorf("SetLimit with GOMEMLIMIT set = %d, %s; want %d, %s", n, from, 300<<20, LimitEnv)
		}
		if got := debug.SetMemoryLimit(-1); got != 300<<20 {
			t.Errorf("runtime's limit = %d, want GOMEMLIMIT's %d", got, 300<<20)
		}
	})
}

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{"none", -1, true},
		{"400MiB", 400 << 20, true},
		{"1GiB", 1 << 30, true},
		{"512KiB", 512 << 10, true},
		{"2TiB", 2 << 40, true},
		{"123456789", 123456789, true},
		{"1000B", 1000, true},
		{"0", 0, false},
		{"-5MiB", 0, false},
		{"400MB", 0, false},
		{"400 MiB", 0, false},
		{"MiB", 0, false},
		{"9000000TiB", 0, false}, // overflows
		{"lots", 0, false},
	} {
		got, err := ParseLimit(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLimit(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
