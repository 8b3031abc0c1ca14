// Package netns gives tests network namespaces of their own: a fresh
// loopback, 198.18.0.0/15 made local (so tests can use many addresses
// without any of them leaving the machine), processes started inside, and
// dialing and listening from the test process inside it. Namespaces and
// processes are removed when the test ends, pass or fail.
//
// It needs root (CAP_SYS_ADMIN) and the `ip` command from iproute2. It is
// test support only; nothing in the product imports it.
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LocalRange is made local inside every namespace: any address in it can be
// bound and dialed there, and nowhere else.
const LocalRange = "198.18.0.0/15"

// NS is one network namespace.
type NS struct {
	Name string
	// jobs carries functions to the namespace's OS thread (see loop);
	// closed is closed when the namespace goes away.
	jobs   chan func()
	closed chan struct{}
}

// New creates a namespace with loopback up and LocalRange local, removed at
// the end of the test. It fails the test (never skips) when it cannot.
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netns: these tests create network namespaces and must run as root")
	}
	sweepOnce.Do(sweepStale)
	b := make([]byte, 4)
	rand.Read(b)
	name := fmt.Sprintf("%s%d-%s", namePrefix, os.Getpid(), hex.EncodeToString(b))
	ns := &NS{Name: name, jobs: make(chan func()), closed: make(chan struct{})}
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.Name).Run() })
	run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns.Name, "route", "add", "local", LocalRange, "dev", "lo")

	ready := make(chan error, 1)
	go ns.loop(ready)
	if err := <-ready; err != nil {
		t.Fatalf("netns: entering %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { close(ns.closed) })
	return ns
}

// namePrefix begins every namespace's name, followed by the PID of the
// test binary that made it.
const namePrefix = "trellis-test-"

var sweepOnce sync.Once

// sweepStale removes the namespaces of test binaries that are gone: a
// binary killed by -timeout or a signal runs no cleanup, and its
// namespaces would stay until the machine restarts. Names without a PID
// (made before it was part of the name) are left alone.
func sweepStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		pid, ok := stalePID(e.Name())
		if !ok || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
}

// stalePID returns the PID in a namespace name this package made.
func stalePID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	return pid, err == nil && pid > 0
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("netns: %s %v: %v: %s", name, args, err, out)
	}
}

// Command returns a command that runs inside the namespace. The process is
// the program itself (`ip netns exec` execs it), so killing cmd.Process
// kills the program. Start it with ns.Start to tie its life to the test
// binary's.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Start starts cmd from the namespace's OS thread, so the process begins
// life inside the namespace even when cmd is a plain exec.Command, and sets
// its parent-death signal to SIGKILL: the kernel kills the process when that
// thread ends, which is when the test binary exits for any reason (a failed
// test, a panic, a -timeout) and, normally, when the namespace is removed.
// Use it for processes that must never outlive the test.
func (ns *NS) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	var err error
	if doErr := ns.Do(context.Background(), func() { err = cmd.Start() }); doErr != nil {
		return doErr
	}
	return err
}

// StartUntilCleanup is Start, and stops cmd when the test ends: it sends
// sig, then kills cmd if it has not exited within grace. The returned
// channel is closed once cmd has exited (cmd.ProcessState says how). A
// cleanup the caller registered before the call runs after cmd has
// stopped: the place to log its output.
func (ns *NS) StartUntilCleanup(t testing.TB, cmd *exec.Cmd, sig os.Signal, grace time.Duration) <-chan struct{} {
	t.Helper()
	if err := ns.Start(cmd); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(sig)
		select {
		case <-exited:
		case <-time.After(grace):
			cmd.Process.Kill()
			<-exited
		}
	})
	return exited
}

// Do runs f on the namespace's OS thread and waits for it. A socket belongs
// to the namespace of the thread that creates it, so sockets (and processes)
// that f creates synchronously are inside the namespace; goroutines f starts
// are not. Calls are serialized, so f should not block for long. Do returns
// an error without running f when ctx ends first or the namespace is gone.
func (ns *NS) Do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	job := func() { defer close(done); f() }
	select {
	case ns.jobs <- job:
	case <-ns.closed:
		return fmt.Errorf("netns %s: namespace removed", ns.Name)
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

// loop runs on an OS thread moved into the namespace and executes Do's
// functions there. The thread never leaves the namespace: when the loop ends
// the goroutine exits still locked, and the runtime discards the thread
// (which also fires the parent-death signal of processes started by Start).
func (ns *NS) loop(ready chan<- error) {
	runtime.LockOSThread()
	f, err := os.Open("/var/run/netns/" + ns.Name)
	if err != nil {
		ready <- err
		return
	}
	err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	f.Close()
	ready <- err
	if err != nil {
		return
	}
	for {
		select {
		case job := <-ns.jobs:
			job()
		case <-ns.closed:
			return
		}
	}
}

// DialContext connects from inside the namespace. addr must be a literal
// IP address and port.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := literal(addr); err != nil {
		return nil, fmt.Errorf("netns: dial %s: %w", addr, err)
	}
	var d net.Dialer
	var conn net.Conn
	var err error
	// A literal address is dialed on the calling goroutine (no resolver, no
	// parallel attempts), so the socket is created on the namespace's thread.
	if doErr := ns.Do(ctx, func() { conn, err = d.DialContext(ctx, network, addr) }); doErr != nil {
		return nil, doErr
	}
	return conn, err
}

// Listen announces on a local address inside the namespace, like net.Listen.
// addr must be a literal IP address (any in LocalRange, or loopback) and
// port; port 0 picks a free one. Use it to serve from the test process to
// clients inside the namespace.
func (ns *NS) Listen(network, addr string) (net.Listener, error) {
	if err := literal(addr); err != nil {
		return nil, fmt.Errorf("netns: listen %s: %w", addr, err)
	}
	var ln net.Listener
	var err error
	if doErr := ns.Do(context.Background(), func() { ln, err = net.Listen(network, addr) }); doErr != nil {
		return nil, doErr
	}
	return ln, err
}

// literal checks that addr is host:port with a literal IP host: a name would
// be resolved on other goroutines, outside the namespace.
func literal(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("only literal IP addresses can be used inside a namespace")
	}
	return nil
}

// HTTPClient returns a client whose connections are made inside the namespace.
func (ns *NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         ns.DialContext,
			MaxIdleConnsPerHost: 16,
			DisableCompression:  true,
		},
	}
}
