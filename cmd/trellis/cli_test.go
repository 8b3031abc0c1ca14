package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"trellis.dev/trellis/test/plane"
)

// adminCLI returns a runner of the trellis command against p as its admin
// (over TLS, trusting p's roots): it returns what the command wrote to
// stdout and stderr together, and its error.
func adminCLI(t *testing.T, ctx context.Context, p *plane.Plane) func(args ...string) (string, error) {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, p.RootsPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--server", p.URL(), "--token", plane.AdminToken, "--ca-file", caFile))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
}
