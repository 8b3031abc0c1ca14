package kube

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of /proc/<pid>/stat's CPU times: USER_HZ, 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcessCPU is the CPU time, user and system, that the process pid has
// used, from /proc/<pid>/stat (10 ms steps). Benchmarks report it beside
// wall time: a loaded machine inflates it less.
func ProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

// parseStatCPU reads utime and stime, the 14th and 15th fields of a
// /proc/<pid>/stat line. The second field, the command in parentheses, may
// hold spaces and parentheses itself, so the fields are counted from the
// last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat %.40q: no command field", stat)
	}
	// After ")": state (3rd field), ..., utime (14th), stime (15th).
	f := bytes.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc stat: CPU time %q: not a count of ticks", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// CPU is the CPU time etcd and kube-apiserver have used since they
// started (the running ones: not the template build's).
type CPU struct{ Etcd, APIServer time.Duration }

// Sub returns c - o.
func (c CPU) Sub(o CPU) CPU { return CPU{Etcd: c.Etcd - o.Etcd, APIServer: c.APIServer - o.APIServer} }

// CPU returns the CPU time the cluster's etcd and kube-apiserver have used
// so far.
func (c *Cluster) CPU() (CPU, error) {
	var out CPU
	for _, p := range c.running {
		d, err := ProcessCPU(p.proc.Pid)
		if err != nil {
			return CPU{}, fmt.Errorf("%s: %w", p.name, err)
		}
		switch p.binary {
		case "etcd":
			out.Etcd += d
		case "kube-apiserver":
			out.APIServer += d
		}
	}
	return out, nil
}

// APIServerProfile writes a CPU profile of kube-apiserver over d to w (the
// apiserver's /debug/pprof/profile, served when Options.Profiling is set).
func (c *Cluster) APIServerProfile(ctx context.Context, d time.Duration, w io.Writer) error {
	if !c.opts.Profiling {
		return fmt.Errorf("test/kube: the apiserver profiles only with Options.Profiling")
	}
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", Server, max(1, int(d.Round(time.Second)/time.Second)))
	return getBody(ctx, c.http, url, "", func(r io.Reader) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// APIServerMetrics returns the apiserver's /metrics (Prometheus text).
func (c *Cluster) APIServerMetrics(ctx context.Context) ([]byte, error) {
	var metrics []byte
	err := getBody(ctx, c.http, Server+"/metrics", "", func(r io.Reader) (err error) {
		metrics, err = io.ReadAll(r)
		return err
	})
	return metrics, err
}
