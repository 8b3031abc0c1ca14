package file

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that any file content decodes without a panic into one
// object or errors per document, each object placed on a line of the file,
// and that Parse agrees with the per-file decoder.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../../examples/quickstart/*.yaml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{route, service, authPolicy, service + "---\n" + service, "--- |\n  x\n", "---\n# only a comment\n---\n", "- a\n", "a: [", "\xef\xbb\xbfkind: Service\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs := splitDocuments(data)
		lines := bytes.Count(data, []byte("\n")) + 1
		last := 0
		for _, d := range docs {
			if d.line <= last || d.line > lines {
				t.Fatalf("document at line %d after one at line %d, in a file of %d lines", d.line, last, lines)
			}
			last = d.line
		}
		entries, errs := parseFile("f.yaml", data)
		if len(entries) > len(docs) || len(errs) == 0 && len(entries) != len(docs) {
			t.Fatalf("%d documents gave %d objects and %d errors", len(docs), len(entries), len(errs))
		}
		for _, e := range entries {
			if e.where.line < 1 || e.where.line > lines || e.key.name == "" || e.key.kind == "" {
				t.Fatalf("object %v at %v", e.key, e.where)
			}
		}
		keys := map[objectKey]bool{}
		dup := false
		for _, e := range entries {
			dup = dup || keys[e.key]
			keys[e.key] = true
		}
		if _, err := Parse("f.yaml", data); (err == nil) != (len(errs) == 0 && !dup) {
			t.Fatalf("Parse = %v, but the file decoded with %d errors (duplicates: %v)", err, len(errs), dup)
		}
	})
}
