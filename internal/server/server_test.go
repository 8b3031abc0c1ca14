package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/teststore"
)

const (
	tokenA = "token-a"
	tokenB = "token-b"
)

// newServer runs a server over a real bolt store on loopback and returns
// clients for two clusters, "east" and "west".
func newServer(t *testing.T) (url string, east, west *client.Client) {
	t.Helper()
	url = serve(t, server.Config{
		Tokens:    map[string]string{tokenA: "east", tokenB: "west"},
		Heartbeat: 100 * time.Millisecond,
	})
	east, err := client.New(url, tokenA, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	west, _ = client.New(url, tokenB, client.Options{})
	return url, east, west
}

// serve runs a server with cfg over a real bolt store on loopback and
// returns its URL.
func serve(t *testing.T, cfg server.Config) string {
	t.Helper()
	st := teststore.Bolt(t)
	srv := httptest.NewServer(server.New(st, cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

func network(name string) *model.ServiceNetwork {
	return &model.ServiceNetwork{Meta: model.Meta{Name: name}, Mode: model.ModeServiceNetwork, Domain: name + ".trellis.internal"}
}

func targetGroup(name string, port int32) *model.TargetGroup {
	return &model.TargetGroup{
		Meta: model.Meta{Name: name}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1,
		Targets: []model.Target{{Address: "127.0.0.1", Port: port, Cluster: "east", State: model.TargetActive}},
	}
}

// inCluster moves tg's targets into cluster, for a target group that
// cluster writes.
func inCluster(cluster string, tg *model.TargetGroup) *model.TargetGroup {
	for i := range tg.Targets {
		tg.Targets[i].Cluster = cluster
	}
	return tg
}

func apiStatus(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func TestCRUDWithOptimisticConcurrencyAndOwnership(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()

	n := network("hotel")
	if err := east.Put(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n.Owner != "east" || n.Revision == 0 {
		t.Fatalf("after create: owner %q revision %d", n.Owner, n.Revision)
	}
	got := &model.ServiceNetwork{Meta: model.Meta{Name: "hotel"}}
	if err := west.Get(ctx, got); err != nil || got.Domain != "hotel.trellis.internal" || got.Revision != n.Revision {
		t.Fatalf("get: %+v, %v", got, err)
	}

	// A write based on a stale revision is refused with 409.
	stale := *n
	n.Domain = "hotel2.trellis.internal"
	if err := east.Put(ctx, n); err != nil {
		t.Fatal(err)
	}
	stale.Domain = "hotel3.trellis.internal"
	if err := east.Put(ctx, &stale); !client.IsConflict(err) {
		t.Fatalf("stale put: %v, want 409", err)
	}

	// Another cluster may read but not change or delete it.
	theirs := *n
	theirs.Owner = ""
	theirs.Revision = 0
	if err := west.Put(ctx, &theirs); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("west put of east's object: %v, want 403", err)
	}
	if err := west.Delete(ctx, &model.ServiceNetwork{Meta: model.Meta{Name: "hotel"}}); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("west delete of east's object: %v, want 403", err)
	}
	// Claiming another owner explicitly is refused too.
	other := network("other")
	other.Owner = "east"
	if err := west.Put(ctx, other); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("west writing an object owned by east: %v, want 403", err)
	}

	if err := east.Delete(ctx, &model.ServiceNetwork{Meta: model.Meta{Name: "hotel"}}); err != nil {
		t.Fatal(err)
	}
	if err := east.Get(ctx, &model.ServiceNetwork{Meta: model.Meta{Name: "hotel"}}); !client.IsNotFound(err) {
		t.Fatalf("get after delete: %v, want 404", err)
	}
}

func TestInvalidObjectsNameTheirFields(t *testing.T) {
	url, east, _ := newServer(t)
	ctx := context.Background()
	svc := &model.Service{
		Meta:      model.Meta{Name: "inventory"},
		Network:   "hotel",
		Listeners: []model.Listener{{Port: 70000, Protocol: "SMTP"}},
		Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{
			Backends: []model.WeightedTargetGroup{{TargetGroup: "a", Weight: -1}},
		}}}},
	}
	err := east.Put(ctx, svc)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity {
		t.Fatalf("put invalid service: %v, want 422", err)
	}
	want := map[string]bool{
		"listeners[0].port":                          true,
		"listeners[0].protocol":                      true,
		"rules[0].action.forward.backends[0].weight": true,
	}
	for _, f := range ae.Body.Fields {
		delete(want, f.Field)
	}
	if len(want) > 0 {
		t.Errorf("fields not named: %v (got %v)", want, ae.Body.Fields)
	}

	// Unknown JSON fields are an error naming the field, not dropped.
	req, _ := http.NewRequest(http.MethodPut, url+"/v1/services/x", strings.NewReader(`{"name":"x","netwrok":"hotel"}`))
	req.Header.Set("Authorization", "Bearer "+tokenA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown field: status %d, want 400", resp.StatusCode)
	}

	// Apply prefixes each field with the object's place in the request.
	_, err = east.Apply(ctx, &model.Objects{TargetGroups: []model.TargetGroup{*targetGroup("ok", 1), {Meta: model.Meta{Name: "Bad Name"}}}})
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || !strings.Contains(ae.Body.Message, "objects.targetGroups[1].name") {
		t.Errorf("apply invalid: %v", err)
	}
}

func TestUnauthenticatedRequestsAreRefused(t *testing.T) {
	url, _, _ := newServer(t)
	for _, auth := range []string{"", "Bearer nope", "Basic " + tokenA} {
		req, _ := http.NewRequest(http.MethodGet, url+"/v1/services", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", auth, resp.StatusCode)
		}
	}
}

func TestApplyReplacesOnlyWhatTheCallerOwns(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	if err := west.Put(ctx, inCluster("west", targetGroup("west-tg", 9))); err != nil {
		t.Fatal(err)
	}
	objs := &model.Objects{Networks: []model.ServiceNetwork{*network("hotel")},
		TargetGroups: []model.TargetGroup{*targetGroup("a", 1), *targetGroup("b", 2)}}
	res, err := east.Apply(ctx, objs)
	if err != nil || res.Created != 3 {
		t.Fatalf("first apply: %+v %v", res, err)
	}
	// The same set again changes nothing and does not move the revision.
	again, err := east.Apply(ctx, objs)
	if err != nil || again.Unchanged != 3 || again.Created+again.Updated+again.Deleted != 0 || again.Revision != res.Revision {
		t.Fatalf("idempotent apply: %+v %v (first %+v)", again, err, res)
	}
	// Dropping b and changing a: one update, one delete, west's object untouched.
	objs.TargetGroups = []model.TargetGroup{*targetGroup("a", 5)}
	third, err := east.Apply(ctx, objs)
	if err != nil || third.Updated != 1 || third.Deleted != 1 || third.Unchanged != 1 {
		t.Fatalf("third apply: %+v %v", third, err)
	}
	if err := east.Get(ctx, &model.TargetGroup{Meta: model.Meta{Name: "west-tg"}}); err != nil {
		t.Fatalf("west's target group after east's apply: %v", err)
	}
	// Applying a name another cluster owns is refused and changes nothing.
	objs.TargetGroups = append(objs.TargetGroups, *targetGroup("west-tg", 3))
	if _, err := east.Apply(ctx, objs); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("apply over west's object: %v, want 403", err)
	}
}

// /readyz follows the store: ready while it answers, 503 with the reason
// once it does not; /healthz stays ok (the process is alive).
func TestReadyzFollowsTheStore(t *testing.T) {
	st := teststore.Bolt(t)
	srv := httptest.NewServer(server.New(st, server.Config{Tokens: map[string]string{tokenA: "east"}}))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with the store open: %d %q", code, body)
	}
	st.Close()
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store closed") {
		t.Errorf("/readyz with the store closed: %d %q, want 503 naming the store", code, body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with the store closed: %d, want 200", code)
	}
}

// The objects of a large write are checked side by side: what the server
// answers must be what checking them in order gives, every invalid field
// and duplicate named in the objects' order, and an object owned by
// another cluster refused as a whole.
func TestLargeApplyChecksObjectsInOrder(t *testing.T) {
	_, east, _ := newServer(t)
	ctx := context.Background()
	objs := &model.Objects{}
	for i := range 600 {
		tg := targetGroup(fmt.Sprintf("tg-%03d", i), int32(1000+i))
		switch i {
		case 17, 450:
			tg.Targets[0].Port = 0
		case 300:
			tg.Name = "tg-299"
		}
		objs.Add(tg)
	}
	_, err := east.Apply(ctx, objs)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity {
		t.Fatalf("apply: %v, want 422", err)
	}
	var got []string
	for _, f := range ae.Body.Fields {
		got = append(got, f.Field)
	}
	want := []string{"objects.targetGroups[17].targets[0].port", "objects.targetGroups[300].name", "objects.targetGroups[450].targets[0].port"}
	if !slices.Equal(got, want) {
		t.Fatalf("fields %v, want %v", got, want)
	}
	objs.TargetGroups[17].Targets[0].Port, objs.TargetGroups[450].Targets[0].Port = 1017, 1450
	objs.TargetGroups[300].Name = "tg-300"
	objs.TargetGroups[500].Owner = "west"
	if _, err := east.Apply(ctx, objs); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("apply with another cluster's object: %v, want 403", err)
	}
	objs.TargetGroups[500].Owner = ""
	res, err := east.Apply(ctx, objs)
	if err != nil || res.Created != 600 {
		t.Fatalf("apply: %+v, %v; want 600 created", res, err)
	}
}
