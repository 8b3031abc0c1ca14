package client

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"unsafe"

	"trellis.dev/trellis/internal/model"
)

// TestCompact: a decoded target group's and export's target lists are
// trimmed to their length, their targets' cluster and state strings are
// one copy each, and the objects are equal to what was decoded.
func TestCompact(t *testing.T) {
	tg := model.TargetGroup{Meta: model.Meta{Name: "g", Revision: 3}, Port: 80}
	e := model.ServiceExport{Meta: model.Meta{Name: "e", Revision: 4}, Ports: []model.ExportPort{{Port: 80}, {Port: 81}}}
	for i := range 10 {
		tg.Targets = append(tg.Targets, model.Target{Address: fmt.Sprintf("10.0.0.%d", i), Cluster: "east", State: model.TargetActive})
		e.Ports[i%2].Targets = append(e.Ports[i%2].Targets, model.Target{Address: fmt.Sprintf("10.1.0.%d", i), Port: 8080, Cluster: "east", State: model.TargetActive})
	}
	for _, obj := range []model.Object{&tg, &e} {
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := model.New(obj.ObjectKind())
		if err := json.Unmarshal(b, got); err != nil {
			t.Fatal(err)
		}
		compact(got)
		if !reflect.DeepEqual(got, obj) {
			t.Errorf("%s changed: %+v, want %+v", obj.ObjectKind(), got, obj)
		}
		var lists [][]model.Target
		switch o := got.(type) {
		case *model.TargetGroup:
			lists = append(lists, o.Targets)
		case *model.ServiceExport:
			for _, p := range o.Ports {
				lists = append(lists, p.Targets)
			}
		}
		first := lists[0][0]
		for _, ts := range lists {
			if cap(ts) != len(ts) {
				t.Errorf("%s: a list of %d targets has capacity %d", obj.ObjectKind(), len(ts), cap(ts))
			}
			for _, tt := range ts {
				if unsafe.StringData(tt.Cluster) != unsafe.StringData(first.Cluster) || unsafe.StringData(string(tt.State)) != unsafe.StringData(string(first.State)) {
					t.Errorf("%s: target %s has a cluster or state string of its own", obj.ObjectKind(), tt.Address)
				}
			}
		}
	}
}
