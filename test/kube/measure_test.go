package kube

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		err        bool
	}{
		{name: "plain", stat: "1234 (etcd) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 12 0 100 0 0",
			want: 3250 * time.Millisecond},
		{name: "command with spaces and parentheses", stat: "77 (a) (b c) R 1 77 77 0 -1 0 0 0 0 0 1 2 0 0",
			want: 30 * time.Millisecond},
		{name: "no command", stat: "77 a R 1", err: true},
		{name: "too short", stat: "77 (a) R 1 2 3", err: true},
		{name: "not a number", stat: "77 (a) R 1 77 77 0 -1 0 0 0 0 0 x 2 0 0", err: true},
		{name: "negative", stat: "77 (a) R 1 77 77 0 -1 0 0 0 0 0 -5 2 0 0", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.stat))
			if (err != nil) != tc.err {
				t.Fatalf("parseStatCPU(%q) = %v, %v; want an error: %v", tc.stat, got, err, tc.err)
			}
			if got != tc.want {
				t.Errorf("parseStatCPU(%q) = %v, want %v", tc.stat, got, tc.want)
			}
		})
	}
}

// TestMeasureAndStop checks what benchmarks measure a cluster with: the
// CPU time of its processes, the apiserver's metrics and CPU profile, and
// Stop.
func TestMeasureAndStop(t *testing.T) {
	c := Start(t, Options{Profiling: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cpu, err := c.CPU()
	if err != nil {
		t.Fatal(err)
	}
	if cpu.APIServer <= 0 || cpu.Etcd <= 0 {
		t.Errorf("CPU after start: %+v; want some for both", cpu)
	}
	m, err := c.APIServerMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(m, []byte("\napiserver_request_total{")) {
		t.Errorf("the apiserver's metrics have no apiserver_request_total")
	}
	var prof bytes.Buffer
	if err := c.APIServerProfile(ctx, time.Second, &prof); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(prof.Bytes(), []byte{0x1f, 0x8b}) {
		t.Errorf("the profile (%d bytes) is not gzipped pprof", prof.Len())
	}
	later, err := c.CPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := later.Sub(cpu); d.APIServer < 0 || d.Etcd < 0 {
		t.Errorf("CPU went back: %+v", d)
	}

	c.Stop(t)
	if err := c.get(ctx, Server+"/readyz"); err == nil {
		t.Error("the apiserver answers after Stop")
	}
	if _, err := c.CPU(); err == nil || !strings.Contains(err.Error(), "kube-apiserver") && !strings.Contains(err.Error(), "etcd") {
		t.Errorf("CPU after Stop: %v; want an error naming the process", err)
	}

	unprofiled := &Cluster{opts: Options{}}
	if err := unprofiled.APIServerProfile(ctx, time.Second, &prof); err == nil {
		t.Error("a profile without Options.Profiling: no error")
	}
}
