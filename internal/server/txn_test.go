package server_test

import (
	"context"
	"net/http"
	"slices"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
)

// A transaction puts and deletes only what it names, atomically, leaving
// everything else (the caller's other objects included) alone.
func TestTxnChangesOnlyWhatItNames(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	if err := west.Put(ctx, inCluster("west", targetGroup("west-tg", 9))); err != nil {
		t.Fatal(err)
	}
	if err := east.Put(ctx, targetGroup("keep", 1)); err != nil {
		t.Fatal(err)
	}
	put := func(tgs ...*model.TargetGroup) model.Objects {
		var o model.Objects
		for _, tg := range tgs {
			o.TargetGroups = append(o.TargetGroups, *tg)
		}
		return o
	}
	del := func(name string, rev int64) api.ObjectRef {
		return api.ObjectRef{Kind: model.KindTargetGroup, Name: name, Revision: rev}
	}
	first, err := east.Txn(ctx, &api.TxnRequest{Puts: put(targetGroup("a", 1), targetGroup("b", 2))})
	if err != nil || first.Created != 2 {
		t.Fatalf("create: %+v %v", first, err)
	}
	b := &model.TargetGroup{Meta: model.Meta{Name: "b"}}
	if err := east.Get(ctx, b); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  api.TxnRequest
		// status is the HTTP status of the expected error, 0 for success.
		status int
		want   api.TxnResult
		fields []string
	}{
		{name: "same objects again change nothing",
			req: api.TxnRequest{Puts: put(targetGroup("a", 1))}, want: api.TxnResult{Unchanged: 1}},
		{name: "a stale revision is a conflict",
			req: api.TxnRequest{Puts: put(&model.TargetGroup{Meta: model.Meta{Name: "a", Revision: 1}, Protocol: model.ProtocolHTTP,
				ProtocolVersion: model.HTTP1, Port: 80})}, status: http.StatusConflict},
		{name: "a delete at a stale revision is a conflict",
			req: api.TxnRequest{Deletes: []api.ObjectRef{del("b", b.Revision-1)}}, status: http.StatusConflict},
		{name: "another cluster's object is forbidden, and nothing else happens",
			req: api.TxnRequest{Puts: put(targetGroup("c", 3)), Deletes: []api.ObjectRef{del("west-tg", 0)}}, status: http.StatusForbidden},
		{name: "invalid objects name their fields",
			req: api.TxnRequest{Puts: put(targetGroup("ok", 1), &model.TargetGroup{Meta: model.Meta{Name: "bad"}, Protocol: "UDP", ProtocolVersion: model.HTTP1}),
				Deletes: []api.ObjectRef{{Kind: "Bogus", Name: "x"}, {Kind: model.KindTargetGroup}, del("ok", 0)}},
			status: http.StatusUnprocessableEntity,
			fields: []string{"puts.targetGroups[1].protocol", "deletes[0].kind", "deletes[1].name", "deletes[2]"}},
		{name: "update, delete at the right revision and delete of a missing object",
			req:  api.TxnRequest{Puts: put(targetGroup("a", 7)), Deletes: []api.ObjectRef{del("b", b.Revision), del("gone", 0)}},
			want: api.TxnResult{Updated: 1, Deleted: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := east.Txn(ctx, &tt.req)
			if tt.status != 0 {
				if apiStatus(err) != tt.status {
					t.Fatalf("got %+v, %v; want status %d", res, err, tt.status)
				}
				var fields []string
				if ae, ok := err.(*client.APIError); ok {
					for _, f := range ae.Body.Fields {
						fields = append(fields, f.Field)
					}
				}
				if tt.fields != nil && !slices.Equal(fields, tt.fields) {
					t.Errorf("fields = %v, want %v", fields, tt.fields)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res.Revision = 0
			if res != tt.want {
				t.Errorf("result = %+v, want %+v", res, tt.want)
			}
		})
	}

	// What is left: keep (untouched), a (updated), west-tg; no b, no c.
	objs, _, err := east.List(ctx, model.KindTargetGroup)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.ObjectMeta().Name)
	}
	if want := []string{"a", "keep", "west-tg"}; !slices.Equal(names, want) {
		t.Errorf("target groups = %v, want %v", names, want)
	}
	a := &model.TargetGroup{Meta: model.Meta{Name: "a"}}
	if err := east.Get(ctx, a); err != nil || a.Targets[0].Port != 7 {
		t.Errorf("a = %+v, %v; want port 7", a, err)
	}
}
