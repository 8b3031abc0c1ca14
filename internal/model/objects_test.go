package model

import (
	"encoding/json"
	"slices"
	"testing"
)

// Every kind New makes goes into Objects and comes out of Each and All, in
// Kinds' order, at its list's JSON path: a row of the kinds table that
// reaches the wrong list, or names it wrongly, fails here.
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
	var all []Object
	for field, obj := range o.Each() {
		kinds = append(kinds, obj.ObjectKind())
		fields = append(fields, field)
		all = append(all, obj)
	}
	if !slices.Equal(kinds, Kinds) {
		t.Errorf("Each yielded kinds %v, want Kinds' order %v", kinds, Kinds)
	}
	if got := slices.Collect(o.All()); !slices.Equal(got, all) {
		t.Errorf("All yielded %v, want Each's %v", got, all)
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
	// At finds each object at the path Each gave it, with or without a
	// field after it, and nothing at a path that names none.
	for i, f := range want {
		for _, path := range []string{f, f + ".name"} {
			if got, ok := o.At(path); !ok || got != all[i] {
				t.Errorf("At(%q) = %v, %v; want %v", path, got, ok, all[i])
			}
		}
	}
	for _, path := range []string{"", "services", "services[1]", "services[-0]", "services[01]", "services[x]", "bogus[0]", "services[0"} {
		if got, ok := o.At(path); ok {
			t.Errorf("At(%q) = %v, want none", path, got)
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

// Every kind's List finds, puts and merges by name, and never writes to
// the array a snapshot may share unless told it is a copy.
func TestListOfEveryKind(t *testing.T) {
	named := func(t *testing.T, k Kind, name, owner string) Object {
		t.Helper()
		obj, err := New(k)
		if err != nil {
			t.Fatal(err)
		}
		obj.ObjectMeta().Name, obj.ObjectMeta().Owner = name, owner
		return obj
	}
	names := func(l List) []string {
		var out []string
		for i := range l.Len() {
			out = append(out, l.At(i).ObjectMeta().Name)
		}
		return out
	}
	for _, k := range Kinds {
		t.Run(string(k), func(t *testing.T) {
			var o Objects
			for _, name := range []string{"a", "c"} {
				o.Add(named(t, k, name, "east"))
			}
			l, ok := o.List(k)
			if !ok {
				t.Fatal("no list")
			}
			if l.Find("c") == nil || l.Find("b") != nil || l.Find("c").ObjectKind() != k {
				t.Errorf("Find c, b: %v, %v", l.Find("c"), l.Find("b"))
			}
			shared := l.At(0)

			copied := false
			if err := l.Put("b", named(t, k, "b", "east"), &copied); err != nil || !copied {
				t.Fatalf("Put b: %v, copied %v", err, copied)
			}
			if err := l.Put("a", named(t, k, "a", "west"), &copied); err != nil {
				t.Fatal(err)
			}
			if err := l.Put("c", nil, &copied); err != nil {
				t.Fatal(err)
			}
			if err := l.Put("d", nil, &copied); err != nil {
				t.Fatal(err)
			}
			if got := names(l); !slices.Equal(got, []string{"a", "b"}) || l.Find("a").ObjectMeta().Owner != "west" {
				t.Errorf("after Put: %v, a's owner %s", got, l.Find("a").ObjectMeta().Owner)
			}
			if shared.ObjectMeta().Owner != "east" {
				t.Error("Put wrote to the array before its copy")
			}

			shared = l.At(1)
			err := l.Merge(map[string]Object{"b": nil, "e": named(t, k, "e", "east"), "0": named(t, k, "0", "east")})
			if err != nil {
				t.Fatal(err)
			}
			if got := names(l); !slices.Equal(got, []string{"0", "a", "e"}) || shared.ObjectMeta().Name != "b" {
				t.Errorf("after Merge: %v, the old array's b is now %s", got, shared.ObjectMeta().Name)
			}

			other := KindService
			if k == other {
				other = KindPeer
			}
			if err := l.Put("x", named(t, other, "x", "east"), &copied); err == nil {
				t.Errorf("Put of a %s in the %s list accepted", other, k)
			}
			if err := l.Merge(map[string]Object{"x": named(t, other, "x", "east")}); err == nil {
				t.Errorf("Merge of a %s in the %s list accepted", other, k)
			}
		})
	}
	var o Objects
	if _, ok := o.List("Nope"); ok {
		t.Error("List of an unknown kind")
	}
	if _, err := New("Nope"); err == nil {
		t.Error("New of an unknown kind")
	}
}

// AppendJSON writes what json.Marshal writes of the same Objects: empty,
// one kind, several kinds with strings json.Marshal escapes.
func TestObjectsAppendJSONIsMarshal(t *testing.T) {
	full := Objects{
		Services: []Service{{Meta: Meta{Name: "a<b>&c", Owner: "x"}, Network: "n\u2028"}, {Meta: Meta{Name: "b"}}},
		TargetGroups: []TargetGroup{{Meta: Meta{Name: "tg"}, Port: 80, Targets: []Target{
			{Address: "10.0.0.1", Cluster: "c"}, {Address: "10.0.0.2", Port: 8080, Cluster: "c"},
		}}},
		Peers: []Peer{{Meta: Meta{Name: "p"}, Address: "127.0.0.1:1"}},
	}
	for name, o := range map[string]Objects{
		"empty":       {},
		"empty lists": {Services: []Service{}, Peers: []Peer{}},
		"services":    {Services: full.Services},
		"peers":       {Peers: full.Peers},
		"several":     full,
	} {
		want, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		got, err := o.AppendJSON([]byte("prefix:"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "prefix:"+string(want) {
			t.Errorf("%s: AppendJSON = %s\nwant prefix:%s", name, got, want)
		}
	}
}
