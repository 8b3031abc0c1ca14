package sameyaml_test

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// difference is one documented difference between the file provider and an
// apiserver (docs/reference/translation.md, "Differences from an
// apiserver"): something the file provider reads that an apiserver refuses.
type difference struct {
	name string
	// remove changes an object of a case so that it no longer shows the
	// difference, and reports whether it changed anything.
	remove func(u *unstructured.Unstructured) bool
	// refused reports whether r is the apiserver's refusal of it.
	refused func(r refusal) bool
}

var differences = []difference{
	{
		// The file provider serves on the host, where backends listen on
		// loopback; an EndpointSlice in a cluster may not name it.
		name: "loopback endpoints",
		remove: func(u *unstructured.Unstructured) bool {
			if u.GetKind() != "EndpointSlice" {
				return false
			}
			eps, _, _ := unstructured.NestedSlice(u.Object, "endpoints")
			changed := false
			for _, ep := range eps {
				m, _ := ep.(map[string]any)
				addrs, _ := m["addresses"].([]any)
				for i, a := range addrs {
					s, _ := a.(string)
					if ip, err := netip.ParseAddr(s); err == nil && ip.IsLoopback() {
						if ip.Is4() {
							b := ip.As4()
							addrs[i] = netip.AddrFrom4([4]byte{198, 18, b[2], b[3]}).String()
						} else {
							addrs[i] = "fd00::1"
						}
						changed = true
					}
				}
			}
			if changed {
				_ = unstructured.SetNestedSlice(u.Object, eps, "endpoints")
			}
			return changed
		},
		refused: func(r refusal) bool {
			return stripIndexes(r.field) == "endpoints.addresses" && strings.Contains(r.message, "loopback")
		},
	},
	{
		// Host names are case-insensitive; the file provider lower-cases
		// them, where the CRDs' pattern refuses upper case.
		name: "upper-case host names",
		remove: func(u *unstructured.Unstructured) bool {
			changed := false
			lower := func(v any) any {
				s, ok := v.(string)
				if ok && s != strings.ToLower(s) {
					changed = true
					return strings.ToLower(s)
				}
				return v
			}
			if hs, ok, _ := unstructured.NestedSlice(u.Object, "spec", "hostnames"); ok {
				for i := range hs {
					hs[i] = lower(hs[i])
				}
				_ = unstructured.SetNestedSlice(u.Object, hs, "spec", "hostnames")
			}
			if u.GetKind() == "Gateway" {
				ls, _, _ := unstructured.NestedSlice(u.Object, "spec", "listeners")
				for _, l := range ls {
					if m, ok := l.(map[string]any); ok && m["hostname"] != nil {
						m["hostname"] = lower(m["hostname"])
					}
				}
				if len(ls) > 0 {
					_ = unstructured.SetNestedSlice(u.Object, ls, "spec", "listeners")
				}
			}
			return changed
		},
		refused: func(r refusal) bool {
			f := stripIndexes(r.field)
			return (f == "spec.hostnames" || f == "spec.listeners.hostname") && strings.Contains(r.message, "should match") &&
				strings.ToLower(r.message) != r.message
		},
	},
}

// withoutDifferences returns tc with every documented difference removed,
// and the differences it showed.
func withoutDifferences(t *testing.T, tc sameCase) (sameCase, []difference) {
	t.Helper()
	docs := documents(t, tc.yaml)
	var shown []difference
	for _, d := range differences {
		changed := false
		for _, u := range docs {
			if d.remove(u) {
				changed = true
			}
		}
		if changed {
			shown = append(shown, d)
		}
	}
	if len(shown) == 0 {
		return tc, nil
	}
	var b bytes.Buffer
	for _, u := range docs {
		data, err := yaml.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n")
		b.Write(data)
	}
	return sameCase{name: tc.name + " (without documented differences)", yaml: b.String()}, shown
}
