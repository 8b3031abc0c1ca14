package lattice

import (
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzPage feeds List operations' maxResults and nextToken, which a caller
// may forge, to page: it never panics; a refusal names the parameter it
// refuses; an accepted page is at most maxResults items, in key order,
// every one after the token's key and none skipped; its next token, when
// there is one, leads on from its last item.
func FuzzPage(f *testing.F) {
	keys := make([]string, 250)
	for i := range keys {
		keys[i] = fmt.Sprintf("sn-%017d", i*7)
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, seed := range []struct{ max, token string }{
		{"", ""}, {"10", ""}, {"100", enc(keys[99])}, {"1", enc("")}, {"0", ""}, {"101", ""}, {"-1", ""},
		{"", enc("zzz")}, {"", enc("sn-")}, {"", "!!!"}, {"", strings.Repeat("A", 2049)}, {"", enc(keys[249])},
		{"5", "c24tMDAwMDAwMDAwMDAwMDAwMDc="}, {"9999999999999999999999", ""},
	} {
		f.Add(seed.max, seed.token)
	}
	f.Fuzz(func(t *testing.T, maxResults, token string) {
		q := url.Values{}
		if maxResults != "" {
			q.Set("maxResults", maxResults)
		}
		if token != "" {
			q.Set("nextToken", token)
		}
		c := &call{r: httptest.NewRequest("GET", "/servicenetworks?"+q.Encode(), nil)}
		items := slices.Clone(keys)
		got, next, err := page(c, items, func(s string) string { return s })
		if err != nil {
			ae, ok := err.(*apiError)
			if !ok || ae.status != 400 {
				t.Fatalf("refusal %v is not a 400", err)
			}
			fields, _ := ae.body["fieldList"].([]FieldError)
			if len(fields) != 1 || (fields[0].Name != "maxResults" && fields[0].Name != "nextToken") {
				t.Fatalf("refusal %v names no parameter", ae.body)
			}
			return
		}
		limit := 100
		if maxResults != "" {
			fmt.Sscan(maxResults, &limit)
		}
		if len(got) > limit {
			t.Fatalf("%d items, more than maxResults %d", len(got), limit)
		}
		after := ""
		if token != "" {
			b, _ := base64.RawURLEncoding.DecodeString(token)
			after = string(b)
		}
		start := slices.IndexFunc(keys, func(k string) bool { return k > after })
		if start < 0 {
			start = len(keys)
		}
		if want := keys[start:min(start+limit, len(keys))]; !slices.Equal(got, want) {
			t.Fatalf("after %q: %d items from %v, want %d from %v", after, len(got), got, len(want), want)
		}
		if (next != "") != (start+len(got) < len(keys)) || (next != "" && next != enc(got[len(got)-1])) {
			t.Fatalf("next token %q after %d of %d items", next, start+len(got), len(keys))
		}
	})
}
