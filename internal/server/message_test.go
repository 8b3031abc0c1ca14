package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// The watch writes its messages without a snapshot by hand: each line must
// be the one json.Encoder writes, for any names and objects.
func TestAppendMessageIsTheEncoders(t *testing.T) {
	names := []string{"a", "", "svc-1", `q"uote`, `back\\slash`, "<html>&", "tab\there", "é", "\u2028", "\xff", "ctl\x01"}
	var msgs []*api.WatchMessage
	msgs = append(msgs,
		&api.WatchMessage{Type: api.WatchHeartbeat, Revision: 7},
		&api.WatchMessage{Type: api.WatchHeartbeat, Revision: 0, Store: "s<1>"},
		&api.WatchMessage{Type: api.WatchChanges, Revision: 1 << 40, Store: "store", Changes: []api.Change{}},
	)
	changes := &api.WatchMessage{Type: api.WatchChanges, Revision: 12, Store: "01JX"}
	for i, name := range names {
		tg := &model.TargetGroup{Meta: model.Meta{Name: name, Owner: names[(i+3)%len(names)], Revision: int64(i)},
			Protocol: model.ProtocolHTTP, Targets: []model.Target{{Address: name, Port: int32(i)}}}
		b, err := json.Marshal(tg)
		if err != nil {
			t.Fatal(err)
		}
		changes.Changes = append(changes.Changes,
			api.Change{Op: api.OpPut, Kind: model.KindTargetGroup, Name: name, Object: b},
			api.Change{Op: api.OpDelete, Kind: model.Kind(fmt.Sprint(name, i)), Name: name})
	}
	msgs = append(msgs, changes)
	for _, m := range msgs {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(m); err != nil {
			t.Fatal(err)
		}
		if got := appendMessage([]byte("prefix"), m); !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
			t.Fatalf("appendMessage:\n%s\njson.Encoder:\n%s", got, want.Bytes())
		}
	}
}

// appendSnapshot writes a snapshot message as json.Encoder does: empty,
// with a store or not, with one kind or several, with names the encoder
// escapes.
func TestAppendSnapshotIsTheEncoders(t *testing.T) {
	names := []string{"a", `q"uote`, "<html>&", "\u2028", "\xff"}
	full := model.Objects{Peers: []model.Peer{{Meta: model.Meta{Name: "p"}, Address: "127.0.0.1:1"}}}
	for i, name := range names {
		full.Services = append(full.Services, model.Service{Meta: model.Meta{Name: name, Revision: int64(i)}, Network: names[(i+1)%len(names)]})
		full.TargetGroups = append(full.TargetGroups, model.TargetGroup{Meta: model.Meta{Name: name},
			Protocol: model.ProtocolHTTP, Targets: []model.Target{{Address: name, Port: int32(i)}}})
	}
	msgs := []*api.WatchMessage{
		{Type: api.WatchSnapshot, Revision: 0, Snapshot: &model.Snapshot{}},
		{Type: api.WatchSnapshot, Revision: 9, Store: "s<1>", Snapshot: &model.Snapshot{Revision: 9, Store: "s&", Objects: full}},
		{Type: api.WatchSnapshot, Revision: 3, Snapshot: &model.Snapshot{Revision: 3, Objects: model.Objects{Peers: full.Peers}}},
		{Type: api.WatchSnapshot, Revision: 4, Store: "x", Snapshot: &model.Snapshot{Revision: 4, Objects: model.Objects{Services: []model.Service{}}}},
	}
	for _, m := range msgs {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(m); err != nil {
			t.Fatal(err)
		}
		got, err := appendSnapshot([]byte("prefix"), m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
			t.Fatalf("appendSnapshot:\n%s\njson.Encoder:\n%s", got, want.Bytes())
		}
	}
}
