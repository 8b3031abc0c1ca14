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
	binary  string
	logFile string
	proc    *os.Process
	exited  chan struct{} // closed when the process has exited
	err     error         // how it exited; read only after exited is closed
}

// start runs a binary from the bin directory inside the namespace, logging
// to name.log. It is killed at the end of the test (and, through
// netns.Start, whenever the test binary exits).
func (c *Cluster) start(t testing.TB, name, binary string, args ...string) *process {
	t.Helper()
	p := &process{name: name, binary: binary, logFile: filepath.Join(c.dir, name+".log"), exited: make(chan struct{})}
	log, err := os.Create(p.logFile)
	if err != nil {
		t.Fatalf("test/kube: %s: %v", name, err)
	}
	cmd := c.NS.Command(context.Background(), filepath.Join(c.bin, binary), args...)
	cmd.Stdout, cmd.Stderr = log, log
	err = c.NS.Start(cmd)
	log.Close()
	if err != nil {
		t.Fatalf("test/kube: starting %s: %v", name, err)
	}
	p.proc = cmd.Process
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
		if err := p.stop(os.Kill, 10*time.Second); err != nil && p.running() == nil {
			t.Errorf("test/kube: %v", err)
		}
	})
	return p
}

// stop signals the process and waits for it to exit. It returns how the
// process exited (so a clean stop of a program that exits 0 on sig is nil),
// or an error while it is still running.
func (p *process) stop(sig os.Signal, timeout time.Duration) error {
	if err := p.proc.Signal(sig); err != nil && p.running() == nil {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit %v after %v", p.name, timeout, sig)
	}
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
	t.Helper()
	for _, p := range c.processes() {
		data, err := os.ReadFile(p.logFile)
		if err != nil {
			t.Logf("test/kube: %s log: %v", p.name, err)
			continue
		}
		t.Logf("test/kube: last %d lines of %s's log (pid %d):\n%s", logTailLines, p.name, p.proc.Pid, tail(data, logTailLines))
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
