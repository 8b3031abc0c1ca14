// Package netns gives tests network namespaces of their own: a fresh
// loopback, 198.18.0.0/15 made local (so tests can use many addresses
// without any of them leaving the machine), processes started inside, and a
// dialer that connects from inside. Namespaces and processes are removed
// when the test ends, pass or fail.
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
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LocalRange is made local inside every namespace: any address in it can be
// bound and dialed there, and nowhere else.
const LocalRange = "198.18.0.0/15"

// NS is one network namespace.
type NS struct {
	Name  string
	dials chan dialReq
}

// New creates a namespace with loopback up and LocalRange local, removed at
// the end of the test. It fails the test (never skips) when it cannot.
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netns: these tests create network namespaces and must run as root")
	}
	b := make([]byte, 4)
	rand.Read(b)
	ns := &NS{Name: "trellis-test-" + hex.EncodeToString(b), dials: make(chan dialReq)}
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.Name).Run() })
	run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns.Name, "route", "add", "local", LocalRange, "dev", "lo")

	ready := make(chan error, 1)
	go ns.dialLoop(ready)
	if err := <-ready; err != nil {
		t.Fatalf("netns: entering %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { close(ns.dials) })
	return ns
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("netns: %s %v: %v: %s", name, args, err, out)
	}
}

// Command returns a command that runs inside the namespace. The process is
// the program itself (`ip netns exec` execs it), so killing cmd.Process
// kills the program.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	reply         chan dialResult
}

type dialResult struct {
	conn net.Conn
	err  error
}

// dialLoop runs on an OS thread moved into the namespace. A socket belongs
// to the namespace of the thread that creates it, so every dial happens
// here. The thread never leaves the namespace: when the loop ends the
// goroutine exits still locked, and the runtime discards the thread.
func (ns *NS) dialLoop(ready chan<- error) {
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
	var d net.Dialer
	for req := range ns.dials {
		// A literal address is dialed on this goroutine (no resolver, no
		// parallel attempts), so the socket is created on this thread.
		conn, err := d.DialContext(req.ctx, req.network, req.addr)
		req.reply <- dialResult{conn, err}
	}
}

// DialContext connects from inside the namespace. addr must be a literal
// IP address and port.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("netns: dial %s: only literal IP addresses can be dialed inside a namespace", addr)
	}
	req := dialReq{ctx: ctx, network: network, addr: addr, reply: make(chan dialResult, 1)}
	select {
	case ns.dials <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-req.reply
	return res.conn, res.err
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
