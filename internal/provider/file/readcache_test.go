package file

import (
	"errors"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"os"
	"path/filepath"
	"testing"
	"time"
	"trellis.dev/trellis/test/testsync"
)

// A file whose size, times and inode are unchanged is not read again; one
// rewritten in place, or replaced by a rename, is; and one changed within
// racyWindow is read every time, since its times may not have moved.
func TestReadDirCachedReadsOnlyChangedFiles(t *testing.T) {
	defer func(w time.Duration) { racyWindow = w }(racyWindow)
	racyWindow = 0
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "a: 1\n")
	write(b, "b: 1\n")
	read := func(prev map[string]fileData) map[string]fileData {
		t.Helper()
		files, err := readDirCached(dir, DefaultMaxFileSize, prev)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]fileData{}
		for _, f := range files {
			if f.err != nil {
				t.Fatal(f.err)
			}
			m[f.path] = f
		}
		return m
	}
	first := read(nil)
	second := read(first)
	for _, p := range []string{a, b} {
		if &second[p].data[0] != &first[p].data[0] {
			t.Errorf("%s was read again though unchanged", p)
		}
	}
	write(a, "a: 22\n") // in place, another size
	third := read(second)
	if got := string(third[a].data); got != "a: 22\n" {
		t.Errorf("a rewritten in place reads %q", got)
	}
	if &third[b].data[0] != &first[b].data[0] {
		t.Error("b was read again though unchanged")
	}
	tmp := filepath.Join(dir, ".a.tmp")
	write(tmp, "a: 33\n") // the same size, renamed over: another inode
	if err := os.Rename(tmp, a); err != nil {
		t.Fatal(err)
	}
	if got := string(read(third)[a].data); got != "a: 33\n" {
		t.Errorf("a renamed over reads %q", got)
	}

	racyWindow = time.Hour
	fresh := read(nil)
	if fresh[a].stat != (fileStat{}) {
		t.Error("a file changed within racyWindow was cached")
	}
	if again := read(fresh); &again[a].data[0] == &fresh[a].data[0] {
		t.Error("a file changed within racyWindow was not read again")
	}
}

// Every object read names its document's version in its resourceVersion:
// equal documents read alike, another document reads differently.
func TestParseSetsResourceVersion(t *testing.T) {
	doc := "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 80\n"
	one, err := Parse("one.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	two, err := Parse("two.yaml", []byte("# a comment first\n"+doc))
	if err != nil {
		t.Fatal(err)
	}
	other, err := Parse("other.yaml", []byte(doc+"  - port: 81\n"))
	if err != nil {
		t.Fatal(err)
	}
	rv := one.Services[0].ResourceVersion
	if rv == "" || two.Services[0].ResourceVersion != rv {
		t.Errorf("the same document reads as resourceVersions %q and %q", rv, two.Services[0].ResourceVersion)
	}
	if other.Services[0].ResourceVersion == rv {
		t.Errorf("another document reads as the same resourceVersion %q", rv)
	}
}

// A file's change decodes only the documents that changed: the others'
// objects are the ones decoded before.
func TestParseFileCachedDecodesOnlyChangedDocuments(t *testing.T) {
	svc := func(name string, port int) string {
		return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\nspec:\n  ports:\n  - port: " + strconv.Itoa(port) + "\n"
	}
	before := svc("a", 80) + "---\n" + svc("b", 80) + "---\n" + svc("c", 80)
	after := svc("a", 80) + "---\n" + svc("b", 81) + "---\n" + svc("c", 80)
	first := map[docKey]parsedDoc{}
	old, errs := parseFileCached("f.yaml", []byte(before), nil, first)
	if len(errs) > 0 || len(old) != 3 {
		t.Fatalf("%d entries, errors %v", len(old), errs)
	}
	now, errs := parseFileCached("f.yaml", []byte(after), first, map[docKey]parsedDoc{})
	if len(errs) > 0 || len(now) != 3 {
		t.Fatalf("%d entries, errors %v", len(now), errs)
	}
	for i, same := range []bool{true, false, true} {
		if (now[i].obj == old[i].obj) != same {
			t.Errorf("document %d: decoded again %v, want %v", i+1, now[i].obj != old[i].obj, !same)
		}
	}
	if got := now[1].obj.(*corev1.Service).Spec.Ports[0].Port; got != 81 {
		t.Errorf("the changed document reads port %d", got)
	}
}

// A reading that defines the objects of the last one shares its index;
// what went away since the configuration last applied is still logged when
// it applies, though the reading in between, which took it away, was not
// applied (it had a problem).
func TestProviderLogsRemovalsAcrossAReadingNotApplied(t *testing.T) {
	logs := &testsync.Buffer{}
	h := startWith(t, nil, func(p *Provider) { p.Debounce = 20 * time.Millisecond; logTo(logs)(p) }, nil)
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	h.nextApply()
	bad := "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: extra\nspec:\n  parentRefs:\n  - name: my-hotel\n  hostnames:\n  - BAD_HOST\n"
	h.write("extra.yaml", bad)
	var pe *ProblemsError
	if err := h.result(); !errors.As(err, &pe) {
		t.Fatalf("a route with a bad hostname: %v, want problems", err)
	}
	if err := os.Remove(filepath.Join(h.dir, "parking.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := h.result(); !errors.As(err, &pe) {
		t.Fatalf("parking.yaml removed beside the bad route: %v, want problems", err)
	}
	// The same objects at the same places, the problem fixed.
	h.write("extra.yaml", strings.Replace(bad, "BAD_HOST", "ok.example", 1))
	if err := h.result(); err != nil {
		t.Fatal(err)
	}
	out := h.nextApply()
	for _, s := range out.Services {
		if s.Source.Name == "parking" {
			t.Errorf("parking is still served after its file was removed")
		}
	}
	waitLog(t, logs, `msg="configuration object removed" kind=HTTPRoute namespace=default name=parking`)
}
