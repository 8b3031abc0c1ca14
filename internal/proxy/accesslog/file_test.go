package accesslog

import (
	"os"
	"path/filepath"
	"testing"
)

// After a rotation renames the file, Reopen sends later writes to a new
// file at the path; the rotated file keeps what came before.
func TestFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write([]byte("before\n"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("still old\n"))
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("after\n"))
	for file, want := range map[string]string{path + ".1": "before\nstill old\n", path: "after\n"} {
		if b, err := os.ReadFile(file); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", file, b, err, want)
		}
	}
	// A path that cannot be opened keeps the old file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	if os.Geteuid() != 0 { // root opens whatever it likes
		if err := f.Reopen(); err == nil {
			t.Error("Reopen into an unwritable directory: no error")
		}
		if _, err := f.Write([]byte("x\n")); err != nil {
			t.Errorf("write after a failed Reopen: %v", err)
		}
	}
}
