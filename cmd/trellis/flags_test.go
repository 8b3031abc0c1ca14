package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// --token and --token-file name the client's own token wherever they are
// not deprecated; the server's accepted tokens have names of their own,
// and its old spellings still parse.
func TestTokenFlagsMeanOneThing(t *testing.T) {
	root := newRoot()
	clients := 0
	for _, cmd := range root.Commands() {
		for _, name := range []string{"token", "token-file"} {
			f := cmd.Flags().Lookup(name)
			switch {
			case f == nil:
			case cmd.Name() == "server":
				if f.Deprecated == "" {
					t.Errorf("server --%s is not deprecated", name)
				}
			default:
				if !strings.Contains(f.Usage, "bearer token") {
					t.Errorf("%s --%s: usage %q is not the client's token", cmd.Name(), name, f.Usage)
				}
				clients++
			}
		}
		if cmd.Name() == "server" {
			for _, name := range []string{"tokens", "tokens-file"} {
				if cmd.Flags().Lookup(name) == nil {
					t.Errorf("server has no --%s", name)
				}
			}
			if err := cmd.ParseFlags([]string{"--token-file", "f", "--token", "a=b"}); err != nil {
				t.Errorf("server's old spellings: %v", err)
			}
		}
	}
	if clients != 6 { // get, proxy and controller, two flags each
		t.Errorf("%d client token flags, want 6", clients)
	}
}

// A client's token comes from --token, else --token-file, else
// $TRELLIS_TOKEN.
func TestTokenFlagsGet(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TRELLIS_TOKEN", "from-env")
	tests := []struct {
		flags   tokenFlags
		want    string
		wantErr string
	}{
		{tokenFlags{token: "flag", file: file}, "flag", ""},
		{tokenFlags{file: file}, "from-file", ""},
		{tokenFlags{}, "from-env", ""},
		{tokenFlags{file: empty}, "", "is empty"},
		{tokenFlags{file: filepath.Join(dir, "missing")}, "", "--token-file"},
	}
	for _, tc := range tests {
		got, err := tc.flags.get()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%+v: %q, %v; want an error saying %q", tc.flags, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.flags, got, err, tc.want)
		}
	}
	t.Setenv("TRELLIS_TOKEN", "")
	if _, err := (&tokenFlags{}).get(); err == nil {
		t.Error("no token anywhere: no error")
	}
}

// --tls-key-exchange of proxy and up takes known groups and refuses any
// other name, naming it.
func TestKeyExchangeFlag(t *testing.T) {
	root := newRoot()
	for _, name := range []string{"proxy", "up"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.ParseFlags([]string{"--tls-key-exchange", "X25519, p256"}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if got := cmd.Flags().Lookup("tls-key-exchange").Value.String(); got != "X25519,CurveP256" {
			t.Errorf("%s: --tls-key-exchange is %q, want X25519,CurveP256", name, got)
		}
		err = cmd.ParseFlags([]string{"--tls-key-exchange", "X25519,X448"})
		if err == nil || !strings.Contains(err.Error(), `"X448"`) || !strings.Contains(err.Error(), "tls-key-exchange") {
			t.Errorf("%s: X448: %v, want an error naming the flag and the group", name, err)
		}
	}
}

// --memory-limit of proxy and up is refused at start, naming the flag,
// when it is not a size; nothing starts.
func TestMemoryLimitFlag(t *testing.T) {
	for _, args := range [][]string{
		{"proxy", "--memory-limit", "400MB", "--cluster", "local", "--token", "t"},
		{"up", "--memory-limit", "lots", "--config", t.TempDir()},
	} {
		root := newRoot()
		root.SetArgs(args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "--memory-limit") {
			t.Errorf("%s: %v, want an error naming --memory-limit", args[0], err)
		}
	}
}

// --procs of proxy and up is refused at start, naming the flag, when it
// is negative or GOMAXPROCS is set as well; nothing starts.
func TestProcsFlagRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
	}{
		{args: []string{"proxy", "--procs", "-1", "--cluster", "local", "--token", "t"}},
		{args: []string{"up", "--procs", "-2", "--config", t.TempDir()}},
		{args: []string{"up", "--procs", "1", "--config", t.TempDir()}, env: "2"},
	} {
		if c.env != "" {
			t.Setenv("GOMAXPROCS", c.env)
		}
		root := newRoot()
		root.SetArgs(c.args)
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), "--procs") {
			t.Errorf("%q (GOMAXPROCS=%q): %v, want an error naming --procs", c.args, c.env, err)
		}
	}
}

// --procs N sets how many threads run Go code at once; 0 leaves Go's
// default.
func TestSetProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	log := slog.New(slog.DiscardHandler)
	if err := setProcs(0, log); err != nil || runtime.GOMAXPROCS(0) != before {
		t.Fatalf("--procs 0: %v, GOMAXPROCS %d, want %d", err, runtime.GOMAXPROCS(0), before)
	}
	want := before + 1
	if err := setProcs(want, log); err != nil || runtime.GOMAXPROCS(0) != want {
		t.Fatalf("--procs %d: %v, GOMAXPROCS %d", want, err, runtime.GOMAXPROCS(0))
	}
}

// --kube-api-qps and --kube-api-burst of the controller are refused at
// start, naming the flag, when negative, and a burst without a rate is
// refused; nothing starts.
func TestKubeAPILimitFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		args       []string
		flag, says string
	}{
		{[]string{"--kube-api-qps", "-5"}, "--kube-api-qps", "not negative"},
		{[]string{"--kube-api-qps", "50", "--kube-api-burst", "-1"}, "--kube-api-burst", "not negative"},
		{[]string{"--kube-api-burst", "100"}, "--kube-api-burst", "needs --kube-api-qps"},
	} {
		root := newRoot()
		root.SetArgs(append([]string{"controller", "--kubeconfig", filepath.Join(t.TempDir(), "missing"), "--cluster", "local", "--token", "t"}, c.args...))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.flag) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: %v, want an error naming %s that says %q", c.args, err, c.flag, c.says)
		}
	}
}

// The server's watch bounds take positive values only: zero would
// otherwise fall back to the default without a word.
func TestWatchLimitFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--max-watches", "0"}, "--max-watches"},
		{[]string{"--max-snapshot-bytes", "-1"}, "--max-snapshot-bytes"},
		{[]string{"--snapshot-timeout", "0s"}, "--snapshot-timeout"},
	} {
		root := newRoot()
		root.SetArgs(append([]string{"server", "--data", t.TempDir(), "--listen", "127.0.0.1:0"}, c.args...))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.flag) || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("%q: %v, want an error naming %s", c.args, err, c.flag)
		}
	}
}
