package up

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
)

// The file provider's sender applies the first configuration whole (which
// deletes what an earlier run left), then sends only what changed, and
// after a failed send applies whole again.
func TestFileSenderSendsWhatChanged(t *testing.T) {
	cl := plane.Start(t, server.Config{Tokens: map[string]string{"tok": "local"}}).Client(t, "tok")
	ctx := context.Background()
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
		rev, counts, err := f.send(ctx, cl, &s.objs, nil)
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
	if _, _, err := f.send(ctx, cl, &bad, nil); err == nil {
		t.Fatal("an invalid target group was sent without an error")
	}
	if _, counts, err := f.send(ctx, cl, &steps[3].objs, nil); err != nil || counts != [4]int{2, 0, 0, 0} {
		t.Fatalf("send after a failure: counts %v, err %v; want an apply creating both", counts, err)
	}
}

// Given what changed (translate.Output.Changed), the sender encodes and
// sends only those objects, deletes those of them that are gone, and takes
// every other object as it last sent it.
func TestFileSenderSendsOnlyChanged(t *testing.T) {
	cl := plane.Start(t, server.Config{Tokens: map[string]string{"tok": "local"}}).Client(t, "tok")
	ctx := context.Background()
	key := func(name string) string { return model.Key(model.KindTargetGroup, name) }
	var f fileSender
	if _, _, err := f.send(ctx, cl, &model.Objects{TargetGroups: []model.TargetGroup{tg("a", 1), tg("b", 2), tg("c", 3)}}, nil); err != nil {
		t.Fatal(err)
	}
	// "a" differs but is not named: the sender trusts Changed and leaves
	// it; "b" changed; "c" is gone; "d" is new.
	objs := model.Objects{TargetGroups: []model.TargetGroup{tg("a", 9), tg("b", 20), tg("d", 4)}}
	rev, counts, err := f.send(ctx, cl, &objs, map[string]bool{key("b"): true, key("c"): true, key("d"): true})
	if err != nil {
		t.Fatal(err)
	}
	if rev == 0 || counts != [4]int{1, 1, 1, 1} {
		t.Errorf("revision %d, counts %v; want created 1, updated 1, deleted 1, unchanged 1", rev, counts)
	}
	got, _, err := cl.List(ctx, model.KindTargetGroup)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]int32{}
	for _, o := range got {
		ports[o.ObjectMeta().Name] = o.(*model.TargetGroup).Targets[0].Port
	}
	if want := map[string]int32{"a": 1, "b": 20, "d": 4}; !maps.Equal(ports, want) {
		t.Errorf("the server holds %v, want %v", ports, want)
	}
	// Named but equal to what was sent: nothing to send.
	if rev, _, err := f.send(ctx, cl, &objs, map[string]bool{key("b"): true}); err != nil || rev != 0 {
		t.Errorf("an unchanged object was sent: revision %d, err %v", rev, err)
	}
}

// tg is a local HTTP/1 target group with one active target on port.
func tg(name string, port int32) model.TargetGroup {
	return model.TargetGroup{Meta: model.Meta{Name: name, Owner: "local"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
		Targets: []model.Target{{Address: "127.0.0.1", Port: port, Cluster: "local", State: model.TargetActive}}}
}

// A configuration of many objects (a cold start's) is encoded side by
// side; what is sent must still be exactly what changed.
func TestFileSenderLargeConfiguration(t *testing.T) {
	cl := plane.Start(t, server.Config{Tokens: map[string]string{"tok": "local"}}).Client(t, "tok")
	ctx := context.Background()
	objs := func(changed ...int) *model.Objects {
		o := &model.Objects{}
		for i := range 600 {
			port := int32(1000 + i)
			if slices.Contains(changed, i) {
				port += 10000
			}
			o.TargetGroups = append(o.TargetGroups, tg(fmt.Sprintf("tg-%03d", i), port))
		}
		return o
	}
	var f fileSender
	for i, s := range []struct {
		objs   *model.Objects
		counts [4]int
	}{
		{objs(), [4]int{600, 0, 0, 0}},
		{objs(3, 299, 598), [4]int{0, 3, 0, 597}},
		{objs(3, 299, 598), [4]int{0, 0, 0, 600}},
	} {
		if _, counts, err := f.send(ctx, cl, s.objs, nil); err != nil || counts != s.counts {
			t.Fatalf("send %d: counts %v, err %v; want %v", i, counts, err, s.counts)
		}
	}
}
