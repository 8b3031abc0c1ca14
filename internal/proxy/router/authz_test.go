package router

import (
	"encoding/json"
	"reflect"
	"testing"

	"trellis.dev/trellis/internal/model"
)

// Table.Service summarizes what the receiving end of the peer hop checks a
// peer's claim against: the network, the listener ports, the target groups
// and imports the forward actions name (each once), and the compiled auth.
func TestTableService(t *testing.T) {
	fwd := func(backends ...model.WeightedTargetGroup) model.Rule {
		return model.Rule{Action: model.Action{Forward: &model.ForwardAction{Backends: backends}}}
	}
	imp := &model.ImportRef{Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}
	api := model.Service{Meta: model.Meta{Name: "api"}, Network: "mesh", DNSName: "api.mesh.trellis.internal", Listeners: http80(80, 8080, 80),
		Rules: []model.Rule{
			fwd(model.WeightedTargetGroup{TargetGroup: "a", Weight: 1}, model.WeightedTargetGroup{TargetGroup: "b", Weight: 1}),
			fwd(model.WeightedTargetGroup{TargetGroup: "a", Weight: 1}, model.WeightedTargetGroup{Import: imp, Weight: 1}),
			fwd(model.WeightedTargetGroup{Weight: 1}), // an invalid reference names nothing
			rule(404),
		},
		Auth: &model.Auth{Policy: json.RawMessage(`{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]}`)},
	}
	open := model.Service{Meta: model.Meta{Name: "open"}, Network: "edge", Listeners: http80(), Rules: []model.Rule{rule(200)}}
	tab := mustCompile(t, &model.Snapshot{Objects: model.Objects{
		Networks: networks, Services: []model.Service{api, open},
		TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "a"}}, {Meta: model.Meta{Name: "b"}}},
	}})

	got := tab.Service("api")
	if got == nil {
		t.Fatal("no service api")
	}
	if got.Network != "mesh" || !reflect.DeepEqual(got.Ports, []int32{80, 8080}) || !reflect.DeepEqual(got.TargetGroups, []string{"a", "b"}) ||
		!reflect.DeepEqual(got.Imports, []ExportRef{{"shop", "cart"}}) {
		t.Errorf("api: %+v", got)
	}
	if got.Auth == nil || got.Auth.ServicePolicy == nil || got.Auth.NetworkPolicy != nil {
		t.Errorf("api's auth: %+v", got.Auth)
	}
	if o := tab.Service("open"); o == nil || o.Auth != nil || len(o.TargetGroups) != 0 || o.Network != "edge" {
		t.Errorf("open: %+v", o)
	}
	if tab.Service("nope") != nil || (&Table{}).Service("api") != nil {
		t.Error("a service not in the snapshot was found")
	}
}
