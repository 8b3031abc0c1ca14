package model

import (
	"encoding/json"
	"slices"
	"testing"
)

// Every kind goes into Objects and comes out of Each, so that a kind added
// to Kinds and New but not to Objects fails here.
func TestObjectsHoldEveryKind(t *testing.T) {
	var o Objects
	for _, k := range Kinds {
		obj, err := New(k)
		if err != nil {
			t.Fatal(err)
		}
		obj.ObjectMeta().Name = "x"
		o.Add(obj)
	}
	if o.Len() != len(Kinds) {
		t.Fatalf("Len = %d, want %d", o.Len(), len(Kinds))
	}
	var kinds []Kind
	var fields []string
	for field, obj := range o.Each() {
		kinds = append(kinds, obj.ObjectKind())
		fields = append(fields, field)
	}
	if !slices.Equal(slices.Sorted(slices.Values(kinds)), slices.Sorted(slices.Values(Kinds))) {
		t.Errorf("Each yielded kinds %v, want %v", kinds, Kinds)
	}
	want := []string{"networks[0]", "services[0]", "targetGroups[0]", "certificates[0]", "workloadSets[0]", "exports[0]", "peers[0]", "clusters[0]"}
	if !slices.Equal(fields, want) {
		t.Errorf("Each yielded fields %v, want %v", fields, want)
	}
	// The paths are the JSON names: what is stored and cached stays readable.
	b, err := json.Marshal(&o)
	if err != nil {
		t.Fatal(err)
	}
	var byName map[string]json.RawMessage
	if err := json.Unmarshal(b, &byName); err != nil {
		t.Fatal(err)
	}
	for _, f := range want {
		if _, ok := byName[f[:len(f)-3]]; !ok {
			t.Errorf("JSON %s has no %q", b, f[:len(f)-3])
		}
	}
	// Each yields o's own objects: a change through it is a change of o.
	for _, obj := range o.Each() {
		obj.ObjectMeta().Owner = "east"
	}
	if o.Services[0].Owner != "east" {
		t.Error("Each yielded a copy")
	}
}

// Encode leaves out the revision, so that an object read back compares
// equal to the one written, and does not change the object.
func TestEncodeLeavesOutTheRevision(t *testing.T) {
	a := &TargetGroup{Meta: Meta{Name: "a", Owner: "east", Revision: 7}, Protocol: ProtocolHTTP}
	b := *a
	b.Revision = 9
	ea, err := Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	eb, _ := Encode(&b)
	if string(ea) != string(eb) || a.Revision != 7 {
		t.Errorf("Encode: %s vs %s, revision after %d", ea, eb, a.Revision)
	}
}
