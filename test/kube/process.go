package kube

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// process is one control-plane program running inside the namespace, its
// output going to a log file.
type process struct {
	name    string
	logFile string
	pid     int
	exited  chan struct{} // closed when the process has exited
	err     error         // how it exited; read only after exited is closed
}

// start runs the binary name from the bin directory inside the namespace.
// It is killed at the end of the test (and, through netns.Start, whenever
// the test binary exits).
func (c *Cluster) start(t testing.TB, name string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logFile: filepath.Join(c.dir, name+".log"), exited: make(chan struct{})}
	log, err := os.Create(p.logFile)
	if err != nil {
		t.Fatalf("test/kube: %s: %v", name, err)
	}
	cmd := c.NS.Command(context.Background(), filepath.Join(c.bin, name), args...)
	cmd.Stdout, cmd.Stderr = log, log
	err = c.NS.Start(cmd)
	log.Close()
	if err != nil {
		t.Fatalf("test/kube: starting %s: %v", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	t.Cleanup(func() {
		// The cluster's state is thrown away, so there is nothing to
		// shut down gracefully.
		cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("test/kube: %s (pid %d) did not exit 10 s after SIGKILL", name, p.pid)
		}
	})
	return p
}

// running returns an error when the process has exited.
func (p *process) running() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

// logTailLines is how much of each log a failed test shows.
const logTailLines = 150

// processes returns the processes started so far.
func (c *Cluster) processes() []*process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.procs)
}

// dumpLogs logs the end of every process's log.
func (c *Cluster) dumpLogs(t testing.TB) {
	for _, p := range c.processes() {
		data, err := os.ReadFile(p.logFile)
		if err != nil {
			t.Logf("test/kube: %s log: %v", p.name, err)
			continue
		}
		t.Logf("test/kube: last %d lines of %s's log (pid %d):\n%s", logTailLines, p.name, p.pid, tail(data, logTailLines))
	}
}

func tail(data []byte, lines int) []byte {
	data = bytes.TrimRight(data, "\n")
	end := len(data)
	for range lines {
		i := bytes.LastIndexByte(data[:end], '\n')
		if i < 0 {
			return data
		}
		end = i
	}
	return data[end+1:]
}

// waitFor polls check until it succeeds, failing the test when timeout
// passes or one of procs exits first (with that process's log).
func (c *Cluster) waitFor(t testing.TB, what string, timeout time.Duration, procs []*process, check func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range procs {
			if err := p.running(); err != nil {
				t.Fatalf("test/kube: waiting for %s: %v; its log ends:\n%s", what, err, c.logTail(p))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("test/kube: %s not ready after %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) logTail(p *process) []byte {
	data, err := os.ReadFile(p.logFile)
	if err != nil {
		return []byte(err.Error())
	}
	return tail(data, 40)
}
