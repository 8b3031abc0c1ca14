package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// -dump writes every measured request once, in the timetable's order,
// whichever connection sent it.
func TestWriteDump(t *testing.T) {
	recs := []*recorder{
		{lat: []time.Duration{3 * time.Millisecond, 1500 * time.Microsecond}, index: []int{4, 7}, port: []uint16{40000, 40001}, late: []time.Duration{10 * time.Microsecond, 2 * time.Millisecond}},
		{lat: []time.Duration{250 * time.Microsecond}, index: []int{5}, port: []uint16{40002}, late: []time.Duration{0}},
	}
	start := time.UnixMicro(1_000_000)
	path := filepath.Join(t.TempDir(), "dump")
	if err := writeDump(path, recs, start, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# due_ms due_unix_us latency_ms conn local_port sent_late_ms\n" +
		"4.000 1004000 3.000 0 40000 0.010\n" +
		"5.000 1005000 0.250 1 40002 0.000\n" +
		"7.000 1007000 1.500 0 40001 2.000\n"
	if got := string(b); got != want {
		t.Errorf("dump:\n%s\nwant:\n%s", got, want)
	}
	if err := writeDump(filepath.Join(path, "x"), recs, start, time.Millisecond); err == nil || !strings.HasPrefix(err.Error(), "-dump") {
		t.Errorf("dump into a file's path: %v, want an error", err)
	}
}
