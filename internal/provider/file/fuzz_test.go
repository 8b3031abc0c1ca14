package file

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
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

// FuzzHeaderOf checks that the header read from a decoded document is the
// one json.Unmarshal gives, whenever headerOf does not defer to it; and
// that the strict decoder's quick check for an unknown field agrees with
// the walk that names them.
func FuzzHeaderOf(f *testing.F) {
	for _, s := range []string{
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"b"}}`,
		`{"kind":5,"metadata":"x"}`,
		`{"Kind":"Service","kind":"Gateway"}`,
		`{"metadata":{"Name":"a","name":"b"}}`,
		`{"apiVersion":"v1","kind":"Service","spec":{"ports":[{"port":80,"Port":81,"bogus":1}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, j []byte) {
		var raw any
		if json.Unmarshal(j, &raw) != nil {
			return
		}
		m, ok := raw.(map[string]any)
		if !ok {
			return
		}
		if h, ok := headerOf(m); ok {
			var want header
			_ = json.Unmarshal(j, &want)
			if h != want {
				t.Errorf("headerOf %+v, json.Unmarshal %+v", h, want)
			}
		}
		for _, k := range kinds {
			var errs []error
			unknownFields("", raw, reflect.TypeOf(k.new()), &errs)
			if got := anyUnknown(raw, reflect.TypeOf(k.new())); got != (len(errs) > 0) {
				t.Errorf("%s: anyUnknown %v, unknownFields %v", k.kind, got, errs)
			}
		}
	})
}
