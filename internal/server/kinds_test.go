package server

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// FuzzKindsParam: whatever query a caller sends, kindsParam returns kinds
// of model.Kinds only, or an error; never a panic, and never an unknown
// kind taken.
func FuzzKindsParam(f *testing.F) {
	for _, q := range []string{"", "kind=services", "kind=ServiceExports,clusters&kind=servicenetwork", "kind=", "kind=bogus",
		"kind=services,", "kind=%00", "kind=services&kind=services", "revision=3&kind=Certificates"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		r := &http.Request{URL: &url.URL{RawQuery: query}}
		kinds, err := kindsParam(r)
		if err != nil {
			if kinds != nil {
				t.Fatalf("%q: kinds %v with error %v", query, kinds, err)
			}
			return
		}
		_, given := r.URL.Query()["kind"]
		if given != (kinds != nil) {
			t.Fatalf("%q: kind given %v, filter %v", query, given, kinds)
		}
		for k := range kinds {
			if !slices.Contains(model.Kinds, k) {
				t.Fatalf("%q: unknown kind %q taken", query, k)
			}
		}
	})
}
