package model

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeAndValidate feeds arbitrary JSON, as an API client could send
// it, through decoding and validation of every kind: neither may panic, and
// an object that validates must survive a JSON round trip unchanged.
func FuzzDecodeAndValidate(f *testing.F) {
	seed, _ := json.Marshal(validService())
	f.Add(seed)
	f.Add([]byte(`{"name":"tg","owner":"east","protocol":"HTTP","protocolVersion":"HTTP1","targets":[{"address":"::1","port":1,"cluster":"e","state":"Active"}]}`))
	f.Add([]byte(`{"name":"n","owner":"e","mode":"ServiceNetwork","domain":"n.trellis.internal"}`))
	f.Add([]byte(`{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"(a+)+"}}]}]}`))
	f.Add([]byte(`{"name":"west","owner":"control-plane","added":"2026-12-01T00:00:00Z","exportNamespaces":["shop","web"]}`))
	f.Add([]byte(`{"name":"shop.cart.west","owner":"west","namespace":"shop","service":"cart","type":"ClusterSetIP","ports":[{"protocol":"TCP","port":80}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range Kinds {
			obj, _ := New(k)
			if json.Unmarshal(data, obj) != nil {
				continue
			}
			if obj.Validate() != nil {
				continue
			}
			b, err := json.Marshal(obj)
			if err != nil {
				t.Fatalf("%s: marshal of a valid object: %v", k, err)
			}
			again, _ := New(k)
			if err := json.Unmarshal(b, again); err != nil {
				t.Fatalf("%s: unmarshal of own output: %v", k, err)
			}
			if err := again.Validate(); err != nil {
				t.Fatalf("%s: valid object invalid after a round trip: %v", k, err)
			}
		}
	})
}
