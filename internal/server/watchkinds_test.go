package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/model"
)

// A watch with ?kind= carries those kinds alone: in its snapshot, in its
// changes, and when it resumes; a transaction that changed none of them
// sends nothing.
func TestWatchKindFilter(t *testing.T) {
	url, east, _ := newServer(t)
	ctx := context.Background()
	for _, obj := range []model.Object{network("a-net"), targetGroup("a", 1), loginService("a", "a-net")} {
		if err := east.Put(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// Kinds in any case, singular or plural, repeated or joined.
	const query = "kind=ServiceNetworks&kind=targetgroup,TargetGroups"
	watch := watchQuery(t, url, tokenA, query)
	m := watch()
	if s := m.Snapshot; s == nil || len(s.Networks) != 1 || len(s.TargetGroups) != 1 || len(s.Services) != 0 {
		t.Fatalf("snapshot %+v: want a-net and a, not the service", s)
	}
	start := m.Revision

	// A service alone sends nothing; the next message is the next
	// target group's.
	svc := loginService("a", "a-net")
	svc.CustomDomains = []string{"a.example"}
	if err := east.Put(ctx, svc); err != nil {
		t.Fatal(err)
	}
	b := targetGroup("b", 2)
	if err := east.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	if m := watch(); m.Type != api.WatchChanges || m.Revision != b.Revision || len(m.Changes) != 1 || m.Changes[0].Name != "b" {
		t.Fatalf("after a service and a target group: %+v, want the target group's change alone", m)
	}
	// One transaction of a service and a target group sends the group.
	c := targetGroup("c", 3)
	svc.CustomDomains = []string{"a2.example"}
	res, err := east.Txn(ctx, &api.TxnRequest{Puts: objectsOf(svc, c)})
	if err != nil {
		t.Fatal(err)
	}
	if m := watch(); m.Revision != res.Revision || len(m.Changes) != 1 || m.Changes[0].Kind != model.KindTargetGroup || m.Changes[0].Name != "c" {
		t.Fatalf("a transaction of a service and a target group: %+v, want c alone", m)
	}

	// Resumed with the filter: the changes of those kinds after the
	// revision, no snapshot.
	m = watchQuery(t, url, tokenA, query+"&revision="+strconv.FormatInt(start, 10))()
	if m.Type != api.WatchChanges || m.Revision != b.Revision || len(m.Changes) != 1 || m.Changes[0].Name != "b" {
		t.Fatalf("resumed from %d: %+v, want b's change", start, m)
	}
	// Without a filter the same resume sends the service's change first.
	if m := watchFrom(t, url, tokenA, start)(); len(m.Changes) != 1 || m.Changes[0].Kind != model.KindService {
		t.Fatalf("resumed from %d without a filter: %+v, want the service's change", start, m)
	}
}

// An unknown or empty kind is refused with a 400 that names it.
func TestWatchKindFilterRefusesUnknownKinds(t *testing.T) {
	url, _, _ := newServer(t)
	for query, want := range map[string]string{
		"kind=bogus":                            `"bogus"`,
		"kind=services,nope":                    `"nope"`,
		"kind=":                                 `unknown kind ""`,
		"kind=services,":                        `unknown kind ""`,
		"kind=" + strings.Repeat("&kind=x", 64): "at most 64",
	} {
		req, _ := http.NewRequest(http.MethodGet, url+"/v1/watch?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+tokenA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body api.Error
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || err != nil || !strings.Contains(body.Message, want) || !strings.Contains(body.Message, "kind") {
			t.Errorf("?%.40s: %d %q (%v), want 400 naming %s", query, resp.StatusCode, body.Message, err, want)
		}
	}
}

func objectsOf(objs ...model.Object) model.Objects {
	var o model.Objects
	for _, obj := range objs {
		o.Add(obj)
	}
	return o
}
