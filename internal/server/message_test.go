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
