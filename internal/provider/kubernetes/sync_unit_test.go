package kubernetes

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"trellis.dev/trellis/internal/api"
	tclient "trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/translate"
	"trellis.dev/trellis/test/plane"
)

// syncInput is an edge Gateway with n routes, each to its own Service;
// route changed (when not negative) has a second hostname.
func syncInput(t *testing.T, n, changed int) *translate.Input {
	t.Helper()
	var b strings.Builder
	b.WriteString(`
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: edge}
spec: {controllerName: trellis.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec: {gatewayClassName: edge, listeners: [{name: http, protocol: HTTP, port: 8080}]}
`)
	for i := range n {
		hosts := fmt.Sprintf("[r-%d.example]", i)
		if i == changed {
			hosts = fmt.Sprintf("[r-%d.example, r-%d-b.example]", i, i)
		}
		fmt.Fprintf(&b, `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-%[1]d, namespace: default}
spec: {parentRefs: [{name: web}], hostnames: %[2]s, rules: [{backendRefs: [{name: svc-%[1]d, port: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc-%[1]d, namespace: default}
spec: {ports: [{port: 80, targetPort: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-%[1]d, namespace: default, labels: {kubernetes.io/service-name: svc-%[1]d}}
addressType: IPv4
ports: [{port: 9000}]
endpoints: [{addresses: [198.18.1.%[3]d], conditions: {ready: true}}]
`, i, hosts, i+1)
	}
	in, err := file.Parse("sync.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	in.Cluster = "east"
	return in
}

// held returns the stored form of every object the control plane holds.
func held(t *testing.T, r *Reconciler) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, kind := range []model.Kind{model.KindServiceNetwork, model.KindService, model.KindTargetGroup} {
		objs, _, err := r.cp.List(context.Background(), kind)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			b, err := model.Encode(o)
			if err != nil {
				t.Fatal(err)
			}
			out[key(o)] = string(b)
		}
	}
	return out
}

// want returns the stored form of every object of out.
func want(t *testing.T, out *model.Objects) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, o := range objects(out) {
		b, err := model.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		m[key(o)] = string(b)
	}
	return m
}

// TestSendComparesWhatChanged holds the controller's diff to
// translate.Output.Changed: after a full first send, a send encodes only
// the objects Changed names, sends their changes and deletions, and is
// whole again after a failed send.
func TestSendComparesWhatChanged(t *testing.T) {
	const routes = 20
	p := plane.Start(t, server.Config{Tokens: map[string]string{"tok": "east"}})
	r := &Reconciler{cp: p.Client(t, "tok"), cluster: "east", log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	var x translate.Incremental

	// The first send compares everything.
	out := x.Translate(syncInput(t, routes, -1))
	if _, sent, err := r.send(ctx, &out.Objects, out.Changed); err != nil || !sent {
		t.Fatalf("first send: sent %v, %v", sent, err)
	}
	x.Acknowledge()
	all := out.Len()
	if got := r.Stats().Encoded; got != all {
		t.Errorf("first send encoded %d objects; want all %d", got, all)
	}
	if got, w := held(t, r), want(t, &out.Objects); !maps.Equal(got, w) {
		t.Fatalf("control plane holds %d objects; want %d", len(got), len(w))
	}

	// One route changed: only what Changed names is encoded.
	out = x.Translate(syncInput(t, routes, 7))
	if out.Changed == nil || len(out.Changed) >= all/4 {
		t.Fatalf("Changed = %v; want a few keys of %d", out.Changed, all)
	}
	if _, sent, err := r.send(ctx, &out.Objects, out.Changed); err != nil || !sent {
		t.Fatalf("second send: sent %v, %v", sent, err)
	}
	x.Acknowledge()
	if got := r.Stats().Encoded; got > len(out.Changed) || got == 0 {
		t.Errorf("second send encoded %d objects; want at most the %d Changed names", got, len(out.Changed))
	}
	if got, w := held(t, r), want(t, &out.Objects); !maps.Equal(got, w) {
		t.Fatal("control plane does not hold the changed route's objects")
	}

	// An object Changed does not name is not compared (the translator
	// vouches for it); a named one that is gone is deleted.
	before := held(t, r)
	out = x.Translate(syncInput(t, routes, 7))
	out.Services = slices.Clone(out.Services) // the translator's list, not to be changed in place
	gone := key(&out.Services[3])
	untouched := key(&out.Services[4])
	out.Services[4].RulesInOrder = !out.Services[4].RulesInOrder
	out.Services = slices.Delete(out.Services, 3, 4)
	changed := map[string]bool{gone: true}
	if _, sent, err := r.send(ctx, &out.Objects, changed); err != nil || !sent {
		t.Fatalf("third send: sent %v, %v", sent, err)
	}
	h := held(t, r)
	if _, ok := h[gone]; ok {
		t.Errorf("%s named in Changed and gone from the output is still held", gone)
	}
	if h[untouched] != before[untouched] {
		t.Errorf("%s was not in Changed but the send changed it", untouched)
	}
	if got := r.Stats().Encoded; got != 0 {
		t.Errorf("third send encoded %d objects; want 0", got)
	}

	// A failed send forgets what was sent: the next compares everything.
	p.Stop()
	out = x.Translate(syncInput(t, routes, 8))
	if _, _, err := r.send(ctx, &out.Objects, out.Changed); err == nil {
		t.Fatal("send to a stopped control plane succeeded")
	}
	p.Restart(t)
	out = x.Translate(syncInput(t, routes, 8))
	if _, _, err := r.send(ctx, &out.Objects, out.Changed); err != nil {
		t.Fatal(err)
	}
	if got := r.Stats().Encoded; got != out.Len() {
		t.Errorf("send after a failure encoded %d objects; want all %d", got, out.Len())
	}
	if got, w := held(t, r), want(t, &out.Objects); !maps.Equal(got, w) {
		t.Fatalf("after a failed send the control plane holds %d objects; want %d", len(got), len(w))
	}
}

// Only a 403 whose every field names a put of the request lets a send
// drop puts: anything else (another status, a field naming a delete or
// no object of the request, a path past a list's end) leaves the request
// whole, to fail as before.
func TestRefusedPutsOnlyWhatA403Names(t *testing.T) {
	req := &api.TxnRequest{Deletes: []api.ObjectRef{{Kind: model.KindService, Name: "gone"}}}
	req.Puts.Add(&model.TargetGroup{Meta: model.Meta{Name: "a"}})
	req.Puts.Add(&model.TargetGroup{Meta: model.Meta{Name: "b"}})
	req.Puts.Add(&model.Service{Meta: model.Meta{Name: "s"}})
	refusal := func(status int, fields ...string) error {
		ae := &tclient.APIError{Status: status}
		for _, f := range fields {
			ae.Body.Fields = append(ae.Body.Fields, &model.FieldError{Field: f, Detail: "why " + f})
		}
		return fmt.Errorf("sending: %w", ae)
	}
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"two owned elsewhere", refusal(http.StatusForbidden, "puts.targetGroups[1].name", "puts.services[0].rules[0].action.forward.backends[0].targetGroup"),
			[]string{model.Key(model.KindService, "s"), model.Key(model.KindTargetGroup, "b")}},
		{"a 403 without fields", refusal(http.StatusForbidden), nil},
		{"a 422", refusal(http.StatusUnprocessableEntity, "puts.targetGroups[0].port"), nil},
		{"a delete named too", refusal(http.StatusForbidden, "puts.targetGroups[0].name", "deletes[0].name"), nil},
		{"past the list's end", refusal(http.StatusForbidden, "puts.targetGroups[2].name"), nil},
		{"no index", refusal(http.StatusForbidden, "puts.targetGroups.name"), nil},
		{"not an API error", fmt.Errorf("connection refused"), nil},
		{"no error", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drop := refusedPuts(tt.err, req)
			if got := slices.Sorted(maps.Keys(drop)); !slices.Equal(got, tt.want) {
				t.Errorf("refusedPuts = %v, want %v", got, tt.want)
			}
			for k, why := range drop {
				if !strings.HasPrefix(why, "why puts.") {
					t.Errorf("%s refused for %q, want the 403's detail", k, why)
				}
			}
		})
	}
	rest := without(&req.Puts, refusedPuts(tests[0].err, req))
	if rest.Len() != 1 || rest.TargetGroups[0].Name != "a" {
		t.Errorf("without the refused: %+v, want target group a alone", rest)
	}
}
