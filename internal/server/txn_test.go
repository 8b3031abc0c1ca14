package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store"
	"trellis.dev/trellis/test/teststore"
)

// A transaction puts and deletes only what it names, atomically, leaving
// everything else (the caller's other objects included) alone.
func TestTxnChangesOnlyWhatItNames(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	for _, name := range []string{"west-tg", "west-tg2"} {
		if err := west.Put(ctx, inCluster("west", targetGroup(name, 9))); err != nil {
			t.Fatal(err)
		}
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
			req: api.TxnRequest{Puts: put(targetGroup("c", 3)), Deletes: []api.ObjectRef{del("west-tg", 0)}}, status: http.StatusForbidden,
			fields: []string{"deletes[0].name"}},
		{name: "every object another cluster owns is named, not only the first",
			req: api.TxnRequest{Puts: put(targetGroup("c", 3), targetGroup("west-tg", 1), targetGroup("west-tg2", 1))}, status: http.StatusForbidden,
			fields: []string{"puts.targetGroups[1].name", "puts.targetGroups[2].name"}},
		{name: "a put claiming another owner names its owner field at its place",
			req: api.TxnRequest{Puts: put(targetGroup("c", 3), &model.TargetGroup{Meta: model.Meta{Name: "d", Owner: "west"}, Protocol: model.ProtocolHTTP,
				ProtocolVersion: model.HTTP1, Port: 80})}, status: http.StatusForbidden,
			fields: []string{"puts.targetGroups[1].owner"}},
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

	// What is left: keep (untouched), a (updated), west's; no b, no c.
	objs, _, err := east.List(ctx, model.KindTargetGroup)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.ObjectMeta().Name)
	}
	if want := []string{"a", "keep", "west-tg", "west-tg2"}; !slices.Equal(names, want) {
		t.Errorf("target groups = %v, want %v", names, want)
	}
	a := &model.TargetGroup{Meta: model.Meta{Name: "a"}}
	if err := east.Get(ctx, a); err != nil || a.Targets[0].Port != 7 {
		t.Errorf("a = %+v, %v; want port 7", a, err)
	}
}

// listings is a store that records the prefixes listed.
type listings struct {
	store.Store
	mu       sync.Mutex
	prefixes []string
}

func (l *listings) List(ctx context.Context, prefix string) ([]store.KeyValue, int64, error) {
	l.mu.Lock()
	l.prefixes = append(l.prefixes, prefix)
	l.mu.Unlock()
	return l.Store.List(ctx, prefix)
}

func (l *listings) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.prefixes
	l.prefixes = nil
	return p
}

// A txn that puts a service reads the services and networks its
// association checks judge by, not the whole store (the target groups are
// most of it), only the networks when nothing was written since the last
// (TestHostnameIndexKeptAcrossWrites), and still refuses a host name
// another owner serves.
func TestTxnOfAServiceListsServicesAndNetworksOnly(t *testing.T) {
	st := teststore.Bolt(t)
	ls := &listings{Store: st}
	srv := httptest.NewServer(server.New(ls, server.Config{Tokens: map[string]string{tokenA: "east", tokenB: "west"}}))
	t.Cleanup(srv.Close)
	east, _ := client.New(srv.URL, tokenA, client.Options{})
	west, _ := client.New(srv.URL, tokenB, client.Options{})
	ctx := context.Background()
	if _, err := east.Apply(ctx, &model.Objects{
		Networks:     []model.ServiceNetwork{*network("a-net")},
		TargetGroups: []model.TargetGroup{*targetGroup("login", 80)},
		Services:     []model.Service{*loginService("login", "a-net", "shop.example")},
	}); err != nil {
		t.Fatal(err)
	}
	if err := west.Put(ctx, network("b-net")); err != nil {
		t.Fatal(err)
	}
	ls.take()
	res, err := east.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{*loginService("login", "a-net", "shop.example", "www.shop.example")}}})
	if err != nil || res.Updated != 1 {
		t.Fatalf("txn of east's service: %+v, %v", res, err)
	}
	want := []string{model.KindPrefix(model.KindService), model.KindPrefix(model.KindServiceNetwork)}
	if got := ls.take(); !slices.Equal(got, want) {
		t.Errorf("the txn listed %q, want %q", got, want)
	}
	// Nothing written since: the server's index of the stored services
	// holds them, and only the networks are listed.
	res, err = east.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{*loginService("login", "a-net", "shop.example", "www.shop.example", "m.shop.example")}}})
	if err != nil || res.Updated != 1 {
		t.Fatalf("second txn of east's service: %+v, %v", res, err)
	}
	if got, want := ls.take(), []string{model.KindPrefix(model.KindServiceNetwork)}; !slices.Equal(got, want) {
		t.Errorf("the second txn listed %q, want %q", got, want)
	}
	_, err = west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{*loginService("copy", "b-net", "www.shop.example")}}})
	if apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"puts.services[0].customDomains[0]"}) {
		t.Errorf("west's txn of a host name east serves: %v (fields %q), want 403 naming the host name", err, fieldsOf(err))
	}
}
