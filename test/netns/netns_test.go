package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"trellis.dev/trellis/test/testsync"
)

// A server inside the namespace is reachable through the namespace's dialer
// and not from the host, proving the dialer really dials from inside.
func TestDialReachesOnlyInside(t *testing.T) {
	ns := New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := ns.Command(ctx, "python3", "-m", "http.server", "--bind", "198.18.0.7", "18080")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); cmd.Wait() }()

	c := ns.HTTPClient(2 * time.Second)
	var resp *http.Response
	testsync.Eventually(t, 10*time.Second, "GET inside the namespace", func() (err error) {
		resp, err = c.Get("http://198.18.0.7:18080/")
		return err
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Directory listing") {
		t.Fatalf("status %d, body %.80q", resp.StatusCode, body)
	}

	// From the host's own namespace the same address must not be local: a
	// listen on it fails (we never dial it from here — it would leave the machine).
	if ln, err := net.Listen("tcp", "198.18.0.7:0"); err == nil {
		ln.Close()
		t.Fatal("198.18.0.7 is bindable in the host namespace; the range must be local only inside the test namespace")
	}
}

// A listener from Listen is inside the namespace: it binds an address of
// LocalRange (which the host cannot) and the namespace's dialer reaches it;
// its loopback is the namespace's, not the host's.
func TestListenServesInside(t *testing.T) {
	ns := New(t)
	ln, err := ns.Listen("tcp", "198.18.0.9:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from inside")
	})}
	go srv.Serve(ln)
	defer srv.Close()

	resp, err := ns.HTTPClient(2 * time.Second).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("GET %s through the namespace: %v", ln.Addr(), err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello from inside" {
		t.Fatalf("body %q", body)
	}

	lo, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen on the namespace's loopback: %v", err)
	}
	defer lo.Close()
	// Dialing the same port on the host's loopback must not reach it
	// (it is refused, or reaches an unrelated host process).
	if c, err := net.DialTimeout("tcp", lo.Addr().String(), time.Second); err == nil {
		c.Close()
	}
	lo.(*net.TCPListener).SetDeadline(time.Now().Add(300 * time.Millisecond))
	if c, err := lo.Accept(); err == nil {
		c.Close()
		t.Fatal("a dial on the host's loopback reached a listener inside the namespace")
	}

	if _, err := ns.Listen("tcp", "localhost:0"); err == nil || !strings.Contains(err.Error(), "literal IP") {
		t.Fatalf("Listen on a host name: got %v, want an error about literal IP addresses", err)
	}
}

// Start puts the process in the namespace, and the process dies with the
// test binary even when the binary exits without any cleanup (as on a
// -timeout panic). The test re-runs itself as a helper that starts a
// process and exits abruptly.
func TestStartKillsWithTestBinary(t *testing.T) {
	if os.Getenv("TRELLIS_NETNS_START_HELPER") == "1" {
		startAndExit(t)
		return
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestStartKillsWithTestBinary$", "-test.count=1")
	helper.Env = append(os.Environ(), "TRELLIS_NETNS_START_HELPER=1")
	out, err := helper.CombinedOutput()
	var pid int
	var name string
	for _, line := range strings.Split(string(out), "\n") {
		if _, scanErr := fmt.Sscanf(line, "started pid=%d ns=%s", &pid, &name); scanErr == nil {
			break
		}
	}
	if name != "" {
		// The helper exited without its cleanups; remove its namespace.
		defer exec.Command("ip", "netns", "del", name).Run()
	}
	if pid == 0 || helper.ProcessState.ExitCode() != 3 {
		t.Fatalf("helper: %v, output:\n%s", err, out)
	}
	if !testsync.Poll(5*time.Second, func() bool { return !alive(pid, "sleep") }) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("process %d outlived the test binary that started it", pid)
	}
}

// startAndExit is the helper's side: start a long sleep with Start, check
// it is inside the namespace, report it and exit without cleaning up.
func startAndExit(t *testing.T) {
	ns := New(t)
	cmd := exec.Command("sleep", "600")
	if err := ns.Start(cmd); err != nil {
		t.Fatalf("Start: %v", err)
	}
	var procNS, wantNS syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &procNS); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat("/var/run/netns/"+ns.Name, &wantNS); err != nil {
		t.Fatal(err)
	}
	if procNS.Ino != wantNS.Ino || procNS.Dev != wantNS.Dev {
		cmd.Process.Kill()
		t.Fatalf("process is in network namespace inode %d, want %d (%s)", procNS.Ino, wantNS.Ino, ns.Name)
	}
	fmt.Printf("started pid=%d ns=%s\n", cmd.Process.Pid, ns.Name)
	os.Exit(3)
}

// alive reports whether pid is a running (not zombie) process named comm.
func alive(pid int, comm string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(stat)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < 0 || rp+2 >= len(s) {
		return false
	}
	return s[lp+1:rp] == comm && s[rp+2] != 'Z'
}

// A namespace left by a test binary that is gone (killed by -timeout, say)
// is removed by the next binary's first New; one whose binary still runs,
// and one without a PID in its name, stay.
func TestStaleNamespacesSwept(t *testing.T) {
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("%s%d-%s", namePrefix, done.Process.Pid, "0badc0de")
	alive := fmt.Sprintf("%s%d-%s", namePrefix, os.Getppid(), "0badc0de")
	other := namePrefix + "0badc0de"
	for _, n := range []string{stale, alive, other} {
		run(t, "ip", "netns", "add", n)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	}
	sweepStale()
	for n, want := range map[string]bool{stale: false, alive: true, other: true} {
		_, err := os.Stat("/run/netns/" + n)
		if got := err == nil; got != want {
			t.Errorf("%s: present %v after the sweep, want %v", n, got, want)
		}
	}
}

// A process StartUntilCleanup started is stopped when its test ends: by
// the signal when it exits on it, by a kill after the grace period when it
// ignores it.
func TestStartUntilCleanupStops(t *testing.T) {
	ns := New(t)
	for _, tc := range []struct {
		name, script string
		killed       bool
	}{
		{"exits on the signal", "sleep 60", false},
		{"ignores the signal", "trap '' TERM; while :; do sleep 0.1; done", true},
	} {
		var cmd *exec.Cmd
		var exited <-chan struct{}
		t.Run(tc.name, func(t *testing.T) {
			cmd = exec.Command("sh", "-c", tc.script)
			exited = ns.StartUntilCleanup(t, cmd, syscall.SIGTERM, time.Second)
			select {
			case <-exited:
				t.Fatalf("exited before the test ended: %v", cmd.ProcessState)
			case <-time.After(200 * time.Millisecond):
			}
		})
		select {
		case <-exited:
		default:
			t.Fatalf("%s: still running after its test's cleanup", tc.name)
		}
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if want := map[bool]syscall.Signal{false: syscall.SIGTERM, true: syscall.SIGKILL}[tc.killed]; !ws.Signaled() || ws.Signal() != want {
			t.Errorf("%s: ended %v, want by %v", tc.name, cmd.ProcessState, want)
		}
	}
}
