package file

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/testsync"
)

// maxFile is the size limit of the special file tests: over every quick
// start file.
const maxFile = 4096

// special makes, in dir, a config file that must not be read; want is what
// the log says about it.
type special struct {
	name string
	make func(t *testing.T, path string)
	want string
}

var specials = []special{
	{"named pipe", func(t *testing.T, path string) {
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}, "not a regular file (a named pipe)"},
	{"link to /dev/zero", func(t *testing.T, path string) {
		if err := os.Symlink("/dev/zero", path); err != nil {
			t.Fatal(err)
		}
	}, "not a regular file (a character device)"},
	{"device", func(t *testing.T, path string) {
		// /dev/null's numbers; without the right to make a device, a link
		// to one.
		if err := syscall.Mknod(path, syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
			if err := os.Symlink("/dev/null", path); err != nil {
				t.Fatal(err)
			}
		}
	}, "not a regular file (a character device)"},
	{"socket", func(t *testing.T, path string) {
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}, "not a regular file (a socket)"},
	{"directory", func(t *testing.T, path string) {
		if err := os.Mkdir(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}, "a directory; subdirectories are not read"},
	{"oversize", func(t *testing.T, path string) {
		if err := os.WriteFile(path, []byte(strings.Repeat("# padding\n", maxFile/10+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}, "over the limit of 4096"},
	{"dangling link", func(t *testing.T, path string) {
		if err := os.Symlink("nowhere.yaml", path); err != nil {
			t.Fatal(err)
		}
	}, "no such file or directory"},
}

// Each file that is not a regular one, or is too big, is reported by name;
// the others apply, later edits apply, and the provider stops promptly.
func TestProviderSpecialFiles(t *testing.T) {
	for _, sp := range specials {
		t.Run(sp.name, func(t *testing.T) {
			var logs testsync.Buffer
			h := startWith(t, func(h *harness) { sp.make(t, filepath.Join(h.dir, "special.yaml")) }, func(p *Provider) {
				logTo(&logs)(p)
				p.MaxFileSize = maxFile
			}, nil)
			if out := h.ready(); len(out.Services) != 3 {
				t.Errorf("applied %d services, want the quick start's 3", len(out.Services))
			}
			waitLog(t, &logs, "file="+filepath.Join(h.dir, "special.yaml"), sp.want)
			h.edit("inventory.yaml", "weight: 50", "weight: 90")
			h.waitInventoryWeight(90)
			if took := h.stop(); took > 5*time.Second {
				t.Errorf("Run took %v to stop", took)
			}
		})
	}
}

// A file replaced by one that cannot be read keeps what it last defined,
// and applies again once it is readable.
func TestProviderUnreadableKeepsLastGood(t *testing.T) {
	for _, sp := range specials {
		if sp.name == "directory" || sp.name == "socket" {
			continue // a directory is not a file; a socket is made in place
		}
		t.Run(sp.name, func(t *testing.T) {
			var logs testsync.Buffer
			h := startWith(t, nil, func(p *Provider) {
				logTo(&logs)(p)
				p.MaxFileSize = maxFile
			}, nil)
			h.ready()
			path := filepath.Join(h.dir, "parking.yaml")
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(t.TempDir(), "parking.yaml")
			sp.make(t, tmp)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			keepsParking := func(out *translate.Output) {
				if !hasService(out, "parking") {
					t.Fatal("the parking route went away when its file became unreadable")
				}
			}
			h.step(keepsParking)
			waitLog(t, &logs, "file="+path, sp.want)
			fixed := filepath.Join(t.TempDir(), "parking.yaml")
			if err := os.WriteFile(fixed, []byte(strings.Replace(string(good), "port: 18081", "port: 18082", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(fixed, path); err != nil {
				t.Fatal(err)
			}
			for {
				if err := h.result(); err != nil {
					continue // an intermediate state of the write
				}
				out := h.nextApply()
				keepsParking(out)
				if tgs, _ := json.Marshal(out.TargetGroups); strings.Contains(string(tgs), "18082") {
					break
				}
			}
		})
	}
}

// A mounted ConfigMap's keys are links into "..data", itself a link to a
// timestamped directory: each key is read once, and swapping "..data"
// applies the new content.
func TestProviderConfigMapVolume(t *testing.T) {
	var logs testsync.Buffer
	h := startWith(t, func(h *harness) {
		entries, err := os.ReadDir(h.dir)
		if err != nil {
			t.Fatal(err)
		}
		ts := filepath.Join(h.dir, "..2026_12_06_00_00_00.1")
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.Rename(filepath.Join(h.dir, e.Name()), filepath.Join(ts, e.Name())); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join("..data", e.Name()), filepath.Join(h.dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(filepath.Base(ts), filepath.Join(h.dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}, logTo(&logs), nil)
	if out := h.ready(); len(out.Services) != 3 {
		t.Fatalf("applied %d services, want 3", len(out.Services))
	}
	// The kubelet's update: a new directory, then "..data" renamed over.
	old := filepath.Join(h.dir, "..2026_12_06_00_00_00.1")
	ts := filepath.Join(h.dir, "..2026_12_06_00_01_00.2")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(old, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "inventory.yaml" {
			data = []byte(strings.Replace(string(data), "weight: 50", "weight: 90", 1))
		}
		if err := os.WriteFile(filepath.Join(ts, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(h.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(h.dir, "..data_tmp"), filepath.Join(h.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for {
		if err := h.result(); err != nil {
			t.Fatal(err)
		}
		if w := inventoryWeights(t, h.nextApply()); w[0] == 90 {
			break
		}
	}
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("the log reports trouble with a ConfigMap volume:\n%s", &logs)
	}
}

func TestLoadSpecialFiles(t *testing.T) {
	for _, sp := range specials {
		t.Run(sp.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{"svc.yaml": service})
			sp.make(t, filepath.Join(dir, "special.yaml"))
			in, err := Load(dir)
			if sp.name == "directory" || sp.name == "oversize" {
				// Load skips a directory, and its limit is DefaultMaxFileSize.
				if err != nil || len(in.Services) != 1 {
					t.Fatalf("Load = %v; want the one Service", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "special.yaml")+": not read: ") {
				t.Fatalf("Load = %v; want an error naming the file", err)
			}
		})
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"big.yaml": "# " + strings.Repeat("x", DefaultMaxFileSize) + "\n"})
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "over the limit of 16777216") {
		t.Errorf("Load of a file over DefaultMaxFileSize = %v", err)
	}
}

// blockingRead makes a provider's directory reads wait for gate, counting
// them.
func blockingRead(gate <-chan struct{}, calls *atomic.Int32) func(p *Provider) {
	return func(p *Provider) {
		p.readDir = func(dir string, limit int64) ([]fileData, error) {
			calls.Add(1)
			<-gate
			return readDir(dir, limit)
		}
	}
}

// A read that does not finish (a hung mount) is reported after ReadTimeout
// and waited for, not started again; once it finishes, it applies.
func TestProviderReadTimeout(t *testing.T) {
	gate := make(chan struct{})
	var calls atomic.Int32
	h := startWith(t, nil, func(p *Provider) {
		blockingRead(gate, &calls)(p)
		p.ReadTimeout = 200 * time.Millisecond
	}, nil)
	for range 2 { // the first attempt and its retry
		if err := h.result(); !errors.Is(err, errNoAnswer) || !strings.Contains(err.Error(), "within 200ms") {
			t.Fatalf("attempt: %v, want no answer within 200ms", err)
		}
	}
	close(gate)
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	if out := h.nextApply(); len(out.Services) != 3 {
		t.Errorf("applied %d services, want 3", len(out.Services))
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d reads started, want 1", n)
	}
}

// Run returns at once on cancel even while a read hangs.
func TestProviderStopsDuringRead(t *testing.T) {
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	var calls atomic.Int32
	h := startWith(t, nil, func(p *Provider) {
		blockingRead(gate, &calls)(p)
		p.ReadTimeout = time.Hour
	}, nil)
	for deadline := time.Now().Add(wait); calls.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no read started")
		}
	}
	if took := h.stop(); took > 5*time.Second {
		t.Errorf("Run took %v to stop", took)
	}
}
