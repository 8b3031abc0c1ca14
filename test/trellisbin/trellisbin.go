// Package trellisbin builds the trellis binary once for a test package that
// runs it as a real process. Test support only; nothing in the product
// imports it.
package trellisbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds cmd/trellis into a temporary directory, stores its path in
// *path, runs the package's tests, removes the directory and exits with the
// tests' code. Call it from TestMain.
func Main(m *testing.M, path *string) {
	dir, err := os.MkdirTemp("", "trellis-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*path = filepath.Join(dir, "trellis")
	build := exec.Command("go", "build", "-o", *path, "trellis.dev/trellis/cmd/trellis")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building trellis:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
