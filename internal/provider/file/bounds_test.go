package file

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file whose stat says less than it holds (a link to a /proc file, whose
// size is 0, or a file that grows while it is read) is read no further
// than the limit and refused naming the file, not read whole.
func TestReadDirFileLargerThanItsStat(t *testing.T) {
	const src = "/proc/self/smaps"
	info, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(src); err != nil || info.Size() != 0 || len(data) <= maxFile {
		t.Fatalf("%s: stat size %d, %d bytes (%v): want a size of 0 and more than %d bytes", src, info.Size(), len(data), err, maxFile)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"svc.yaml": service})
	path := filepath.Join(dir, "proc.yaml")
	if err := os.Symlink(src, path); err != nil {
		t.Fatal(err)
	}
	files, err := readDir(dir, maxFile)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range files {
		if f.path != path {
			continue
		}
		found = true
		if f.err == nil || !strings.Contains(f.err.Error(), path+": not read: over the limit of 4096 bytes") || len(f.data) != 0 {
			t.Errorf("%s: %d bytes, %v; want none, refused over the limit naming the file", path, len(f.data), f.err)
		}
	}
	if !found {
		t.Errorf("readDir did not report %s", path)
	}
}
