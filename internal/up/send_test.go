package up

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store/bolt"
)

// The file provider's sender applies the first configuration whole (which
// deletes what an earlier run left), then sends only what changed, and
// after a failed send applies whole again.
func TestFileSenderSendsWhatChanged(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(server.New(st, server.Config{Tokens: map[string]string{"tok": "local"}}))
	defer srv.Close()
	cl, err := client.New(srv.URL, "tok", client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tg := func(name string, port int32) model.TargetGroup {
		return model.TargetGroup{Meta: model.Meta{Name: name, Owner: "local"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
			Targets: []model.Target{{Address: "127.0.0.1", Port: port, Cluster: "local", State: model.TargetActive}}}
	}
	// Left behind by an earlier run: the first send deletes it.
	if _, err := cl.Apply(ctx, &model.Objects{TargetGroups: []model.TargetGroup{tg("stale", 1)}}); err != nil {
		t.Fatal(err)
	}
	var f fileSender
	steps := []struct {
		objs   model.Objects
		counts [4]int // created, updated, deleted, unchanged
		sent   bool
	}{
		{model.Objects{TargetGroups: []model.TargetGroup{tg("a", 1), tg("b", 2)}}, [4]int{2, 0, 1, 0}, true},
		{model.Objects{TargetGroups: []model.TargetGroup{tg("a", 1), tg("b", 3)}}, [4]int{0, 1, 0, 1}, true},
		{model.Objects{TargetGroups: []model.TargetGroup{tg("a", 1), tg("b", 3)}}, [4]int{0, 0, 0, 2}, false},
		{model.Objects{TargetGroups: []model.TargetGroup{tg("b", 3), tg("c", 4)}}, [4]int{1, 0, 1, 1}, true},
	}
	for i, s := range steps {
		rev, counts, err := f.send(ctx, cl, &s.objs)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if counts != s.counts || (rev != 0) != s.sent {
			t.Errorf("step %d: revision %d, counts %v; want sent %v, counts %v", i, rev, counts, s.sent, s.counts)
		}
		got, _, err := cl.List(ctx, model.KindTargetGroup)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range got {
			names = append(names, o.ObjectMeta().Name)
		}
		if len(names) != len(s.objs.TargetGroups) {
			t.Errorf("step %d: the server holds %v, want %d target groups", i, names, len(s.objs.TargetGroups))
		}
	}
	// Another writer deletes "c" behind the sender's back; a failed
	// transaction makes the next send an apply, which restores it.
	if _, err := cl.Apply(ctx, &model.Objects{}); err != nil {
		t.Fatal(err)
	}
	bad := model.Objects{TargetGroups: []model.TargetGroup{tg("b", 3), tg("c", 4), {Meta: model.Meta{Name: "Bad Name"}}}}
	if _, _, err := f.send(ctx, cl, &bad); err == nil {
		t.Fatal("an invalid target group was sent without an error")
	}
	if _, counts, err := f.send(ctx, cl, &steps[3].objs); err != nil || counts != [4]int{2, 0, 0, 0} {
		t.Fatalf("send after a failure: counts %v, err %v; want an apply creating both", counts, err)
	}
}
