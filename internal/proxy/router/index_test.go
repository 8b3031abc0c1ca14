package router

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
)

// linearMatch is the reference the indexed vhost.match must agree with: a
// scan of every entry in precedence order, restating path matching from the
// Gateway API (a prefix matches itself and anything below it, segment by
// segment).
func linearMatch(vh *vhost, r *Request) *Rule {
	path := r.Path
	for i := range vh.entries {
		e := &vh.entries[i]
		var ok bool
		switch e.kind {
		case pathExact:
			ok = path == e.path
		case pathRegex:
			ok = e.pathRE.MatchString(path)
		case pathPrefix:
			ok = path == e.path || strings.HasPrefix(path, e.path+"/")
		}
		if ok && e.matchesRest(r) {
			return e.route
		}
	}
	return nil
}

// matchRequest is what Table.Match makes of r.
func matchRequest(r *http.Request) *Request {
	return &Request{Host: r.Host, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: HTTPHeader(r.Header)}
}

// overlapTable is one host with overlapping rules of every kind across
// services of different ages: the first n of its services (at most 8, 16
// entries).
func overlapTable(t testing.TB, n int) *Table {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	hdr := []model.ValueMatch{{Type: model.ValueExact, Name: "x-a", Value: "1"}}
	hdrRE := []model.ValueMatch{{Type: model.ValueRegularExpression, Name: "x-a", Value: "[0-9]+"}}
	qry := []model.ValueMatch{{Type: model.ValueExact, Name: "q", Value: "1"}}
	var services []model.Service
	matchSets := [][]model.Match{
		{{Path: prefix("/")}, {Path: exact("/a")}},
		{{Path: prefix("/a")}, {Path: prefix("/a/"), Method: http.MethodPost}},
		{{Path: prefix("/a/b"), Headers: hdr}, {Path: prefix("/a//")}},
		{{Path: exact("/a/b")}, {Path: exact("/a/b"), Headers: hdrRE}},
		{{Path: regex("/a/.*"), Headers: hdr}, {Path: regex("/(a|b)/b")}},
		{{Path: prefix("/ab"), QueryParams: qry}, {Path: prefix("/a/b/c")}},
		{{Method: http.MethodGet, Headers: hdrRE}},
		{{Path: prefix("/a/b"), Method: http.MethodGet}},
	}
	for i, ms := range matchSets[:n] {
		var rules []model.Rule
		for j, m := range ms {
			rules = append(rules, rule(200+10*i+j, m))
		}
		services = append(services, model.Service{
			Meta: model.Meta{Name: string(rune('a' + i))}, Network: "edge", CustomDomains: []string{"p.example.com"},
			Listeners: http80(), Rules: rules,
			// Some services share a creation time so that names break ties.
			CreatedAt: t0.Add(time.Duration(i/2) * time.Minute),
		})
	}
	return mustCompile(t, &model.Snapshot{Objects: model.Objects{Networks: networks, Services: services}})
}

// TestIndexAgreesWithScan: a virtual host's match, indexed (more than
// scanEntries entries) or scanned (as many or fewer), agrees with a scan
// restating the Gateway API's path matching.
func TestIndexAgreesWithScan(t *testing.T) {
	for _, tc := range []struct {
		services int
		scan     bool
		routes   int
	}{{8, false, 12}, {4, true, 6}} {
		t.Run(fmt.Sprintf("%d services", tc.services), func(t *testing.T) {
			vh := overlapTable(t, tc.services).ports[Bind{Port: 80}].exact["p.example.com"]
			if vh.scan != tc.scan || tc.scan && (vh.exact != nil || vh.prefix != nil || vh.regex != nil) {
				t.Fatalf("%d entries: scan = %v (maps %v), want scan = %v without maps", len(vh.entries), vh.scan, vh.exact != nil || vh.prefix != nil, tc.scan)
			}
			agreesWithScan(t, vh, tc.routes)
		})
	}
}

func agreesWithScan(t *testing.T, vh *vhost, routes int) {
	paths := []string{"", "/", "//", "/a", "/a/", "/a//", "/a//x", "/ab", "/abc", "/a/b", "/a/b/", "/a/bc",
		"/a/b/c", "/a/b/c/d", "/b/b", "/x", "/a/x/y"}
	hits := map[*Rule]bool{}
	for _, path := range paths {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			for _, h := range []string{"", "1", "22"} {
				for _, q := range []string{"", "q=1"} {
					r := &http.Request{Method: method, Host: "p.example.com", URL: &url.URL{Path: path, RawQuery: q}, Header: http.Header{}}
					if h != "" {
						r.Header.Set("X-A", h)
					}
					mr := matchRequest(r)
					got, want := vh.match(mr), linearMatch(vh, mr)
					if got != want {
						t.Errorf("%s %q x-a=%q ?%s: index = %s, scan = %s", method, path, h, q, routeName(got), routeName(want))
					}
					hits[got] = true
				}
			}
		}
	}
	// Guard against a vacuous pass: most rules must be reachable.
	if len(hits) < routes {
		t.Errorf("only %d distinct routes matched; the table does not exercise precedence", len(hits))
	}
}

// FuzzMatch checks that no request makes Match panic and that the index
// agrees with a scan for any path, method, header and query.
func FuzzMatch(f *testing.F) {
	f.Add("p.example.com", "/a/b/c", "GET", "1", "q=1")
	f.Add("P.Example.com.:80", "/a//x", "POST", "22", "q=%31")
	f.Add("[::1", "", "", "", "&&=")
	f.Add("x.p.example.com", "/ab/", "DELETE", "abc", "q")
	tab := overlapTable(f, 8)
	vh := tab.ports[Bind{Port: 80}].exact["p.example.com"]
	f.Fuzz(func(t *testing.T, host, path, method, header, query string) {
		r := &http.Request{Method: method, Host: host, URL: &url.URL{Path: path, RawQuery: query}, Header: http.Header{"X-A": {header}}}
		tab.Match(Bind{Port: 80}, r)
		mr := matchRequest(r)
		if got, want := vh.match(mr), linearMatch(vh, mr); got != want {
			t.Errorf("%s %q x-a=%q ?%s: index = %s, scan = %s", method, path, header, query, routeName(got), routeName(want))
		}
	})
}

// TestIndexLongPrefixes: prefixes of 63 bytes and more share a bit of
// prefixLens, and each is still found, as are the shorter ones beside them.
func TestIndexLongPrefixes(t *testing.T) {
	for _, lens := range [][]int{{1, 2, 5, 62, 63, 64, 65, 100}, {1, 2, 5, 62, 64, 65, 100}} {
		var matches []model.Match
		var paths []string
		for _, n := range lens {
			p := "/" + strings.Repeat("a", n-1)
			matches = append(matches, model.Match{Path: prefix(p)})
			paths = append(paths, p, p+"/", p+"/x", p+"a", p[:len(p)-1])
		}
		// Two rules a prefix, the second with a header condition: more
		// entries than a scan takes.
		var rules []model.Rule
		for i := range matches {
			m := matches[i]
			m.Headers = []model.ValueMatch{{Type: model.ValueExact, Name: "x-a", Value: "1"}}
			rules = append(rules, rule(300+i, matches[i]), rule(400+i, m))
		}
		tab := mustCompile(t, &model.Snapshot{Objects: model.Objects{Networks: networks, Services: []model.Service{{
			Meta: model.Meta{Name: "s"}, Network: "edge", CustomDomains: []string{"p.example.com"}, Listeners: http80(), Rules: rules,
		}}}})
		vh := tab.ports[Bind{Port: 80}].exact["p.example.com"]
		if vh == nil || vh.scan {
			t.Fatalf("virtual host %v not indexed", vh)
		}
		hits := 0
		for _, path := range paths {
			r := matchRequest(&http.Request{Method: http.MethodGet, Host: "p.example.com", URL: &url.URL{Path: path}, Header: http.Header{}})
			got, want := vh.match(r), linearMatch(vh, r)
			if got != want {
				t.Errorf("prefixes of %v bytes, %q: index = %s, scan = %s", lens, path, routeName(got), routeName(want))
			}
			if got != nil {
				hits++
			}
		}
		if hits < len(paths)/2 {
			t.Errorf("prefixes of %v bytes: only %d of %d paths matched", lens, hits, len(paths))
		}
	}
}

// lower agrees with strings.ToLower for every byte at every place of a
// word and of the tail, among lower-case letters.
func TestLower(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 17} {
		for at := range n {
			for c := range 256 {
				b := []byte(strings.Repeat("a", n))
				b[at] = byte(c)
				if s := string(b); lower(s) != strings.ToLower(s) {
					t.Fatalf("lower(%q) = %q, want %q", s, lower(s), strings.ToLower(s))
				}
			}
		}
	}
	for _, s := range []string{"", "bench.example.com", "Bench.example.com", "bench.example.coM", "xn--bcher-kva.example", "bücher.example", "ÄÖ.example.com"} {
		if lower(s) != strings.ToLower(s) {
			t.Errorf("lower(%q) = %q, want %q", s, lower(s), strings.ToLower(s))
		}
	}
}
