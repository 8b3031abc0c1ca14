package client

import (
	"encoding/json"
	"reflect"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// watchLines are messages as the server writes them (json.Encoder's lines,
// which its hand-written ones equal), and lines parseChanges must leave to
// json.Unmarshal.
func watchLines(t testing.TB) [][]byte {
	tg, _ := json.Marshal(&model.TargetGroup{Meta: model.Meta{Name: "a", Owner: "east", Revision: 9},
		Protocol: model.ProtocolHTTP, Targets: []model.Target{{Address: "127.0.0.1", Port: 80}}})
	msgs := []api.WatchMessage{
		{Type: api.WatchChanges, Revision: 9, Store: "01JX", Changes: []api.Change{
			{Op: api.OpPut, Kind: model.KindTargetGroup, Name: "a", Object: tg},
			{Op: api.OpDelete, Kind: model.KindService, Name: "b"},
			{Op: api.OpPut, Kind: model.KindTargetGroup, Name: "c", Object: json.RawMessage(`{"name":"c","x":["}{",{"y":"\"]"}]}`)},
		}},
		{Type: api.WatchChanges, Revision: 1, Changes: []api.Change{{Op: api.OpDelete, Kind: model.KindService, Name: ""}}},
		{Type: api.WatchChanges, Revision: 2, Store: "s", Changes: []api.Change{{Op: api.OpDelete, Kind: "K", Name: "<é>"}}},
		{Type: api.WatchHeartbeat, Revision: 3, Store: "s"},
		{Type: api.WatchChanges, Revision: 4},
	}
	var lines [][]byte
	for _, m := range msgs {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, append(b, '\n'))
	}
	return append(lines, []byte(`{"type":"changes","revision":5,"changes":[{"op":"put","kind":"K","name":"n","object":{"a":1}}] }`),
		[]byte(`{"type":"changes","revision":05,"changes":[]}`), []byte(`{"type":"changes","revision":6,"changes":[{"op":"put","kind":"K","name":"n","object":{"a":}}]}`))
}

// checkLine fails t unless parseChanges either leaves line or reads it as
// json.Unmarshal does, when every object it delimits is valid JSON; when
// one is not, json.Unmarshal must refuse the line too. It reports whether
// parseChanges took line.
func checkLine(t testing.TB, line []byte) bool {
	t.Helper()
	got, ok := parseChanges(line)
	if !ok {
		return false
	}
	var want api.WatchMessage
	err := json.Unmarshal(line, &want)
	for _, c := range got.Changes {
		if c.Object != nil && !json.Valid(c.Object) {
			if err == nil {
				t.Fatalf("parseChanges took %q with an object json.Unmarshal accepts as part of the line but not alone: %q", line, c.Object)
			}
			return true
		}
	}
	if err != nil {
		t.Fatalf("parseChanges took %q, which json.Unmarshal refuses: %v", line, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseChanges(%q) = %+v, json.Unmarshal: %+v", line, got, want)
	}
	return true
}

func TestParseChangesIsUnmarshal(t *testing.T) {
	lines := watchLines(t)
	for i, line := range lines {
		took := checkLine(t, line)
		// The last has an object that is not JSON: taken, and refused
		// when decoded.
		if want := i < 2 || i == len(lines)-1; took != want {
			t.Errorf("line %d %q: taken %v, want %v", i, line, took, want)
		}
	}
}

func FuzzParseChanges(f *testing.F) {
	for _, line := range watchLines(f) {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line []byte) { checkLine(t, line) })
}
