package client

import (
	"encoding/json"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// A transaction's body, marshalled an object at a time, is what
// json.Marshal writes of the request, whichever of its parts it has.
func TestTxnBodyIsMarshal(t *testing.T) {
	puts := model.Objects{
		Services:     []model.Service{{Meta: model.Meta{Name: "s<1>"}, Network: "n"}},
		TargetGroups: []model.TargetGroup{{Meta: model.Meta{Name: "tg"}, Targets: []model.Target{{Address: "10.0.0.1", Cluster: "c"}}}},
	}
	deletes := []api.ObjectRef{{Kind: model.KindService, Name: "old&", Revision: 3}}
	for name, req := range map[string]*api.TxnRequest{
		"empty":       {},
		"puts":        {Puts: puts},
		"deletes":     {Deletes: deletes},
		"both":        {Puts: puts, Deletes: deletes},
		"empty lists": {Puts: model.Objects{Services: []model.Service{}}, Deletes: []api.ObjectRef{}},
	} {
		want, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := txnBody(req)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s: body %s\nwant %s", name, got, want)
		}
	}
}
