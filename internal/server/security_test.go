package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// In these tests east is cluster A, the victim, and west is cluster B.

func loginService(name, network string, hosts ...string) *model.Service {
	return &model.Service{
		Meta: model.Meta{Name: name}, Network: network, CustomDomains: hosts,
		Listeners: []model.Listener{{Name: "http", Port: 80, Protocol: model.ProtocolHTTP}},
		Rules: []model.Rule{{
			Matches: []model.Match{{Path: &model.PathMatch{Type: model.PathExact, Value: "/login"}}},
			Action:  model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{TargetGroup: name, Weight: 1}}}},
		}},
	}
}

// fieldsOf returns the fields an API error names.
func fieldsOf(err error) []string {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return nil
	}
	var out []string
	for _, f := range ae.Body.Fields {
		out = append(out, f.Field)
	}
	return out
}

// setUpShop has east serve shop.example, Exact /login, in its network a-net.
func setUpShop(t *testing.T, east *client.Client) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range []model.Object{network("a-net"), targetGroup("shop", 8080), loginService("shop", "a-net", "shop.example")} {
		if err := east.Put(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// The attack of issue 10: with west's token, a target group whose target
// claims east's cluster, then a service in east's network on east's host
// name. Every way of writing it is refused, naming the fields.
func TestAnotherClusterCannotTakeOverTraffic(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	setUpShop(t, east)

	// A target in another cluster, by PUT, apply and txn.
	evil := targetGroup("evil", 9999) // its target claims cluster east
	if err := west.Put(ctx, evil); apiStatus(err) != http.StatusUnprocessableEntity || !slices.Equal(fieldsOf(err), []string{"targets[0].cluster"}) {
		t.Errorf("west puts a target in east's cluster: %v, want 422 naming targets[0].cluster", err)
	}
	if _, err := west.Apply(ctx, &model.Objects{TargetGroups: []model.TargetGroup{*targetGroup("evil", 9999)}}); !slices.Equal(fieldsOf(err), []string{"objects.targetGroups[0].targets[0].cluster"}) {
		t.Errorf("west applies a target in east's cluster: %v", err)
	}
	if _, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{TargetGroups: []model.TargetGroup{*targetGroup("evil", 9999)}}}); !slices.Equal(fieldsOf(err), []string{"puts.targetGroups[0].targets[0].cluster"}) {
		t.Errorf("west sends a target in east's cluster in a txn: %v", err)
	}

	// West's own backend is fine; joining east's network on east's name is not.
	if err := west.Put(ctx, inCluster("west", targetGroup("evil", 9999))); err != nil {
		t.Fatal(err)
	}
	hijack := loginService("evil", "a-net", "shop.example")
	err := west.Put(ctx, hijack)
	if apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"network", "customDomains[0]"}) {
		t.Fatalf("west's service in east's network on shop.example: %v, want 403 naming network and customDomains[0]", err)
	}
	if msg := err.Error(); !strings.Contains(msg, `service "shop" of cluster "east"`) {
		t.Errorf("the refusal does not name the service it conflicts with: %s", msg)
	}
	if _, err := west.Apply(ctx, &model.Objects{Services: []model.Service{*loginService("evil", "a-net", "shop.example")}}); apiStatus(err) != http.StatusForbidden ||
		!slices.Equal(fieldsOf(err), []string{"objects.services[0].network", "objects.services[0].customDomains[0]"}) {
		t.Errorf("west applies the hijack: %v", err)
	}
	if _, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{*loginService("evil", "a-net", "shop.example")}}}); apiStatus(err) != http.StatusForbidden ||
		!slices.Equal(fieldsOf(err), []string{"puts.services[0].network", "puts.services[0].customDomains[0]"}) {
		t.Errorf("west sends the hijack in a txn: %v", err)
	}

	// In west's own network, east's name (or a wildcard over it, or a
	// name under east's wildcard) is still east's.
	if err := west.Put(ctx, network("b-net")); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"shop.example", "*.example"} {
		err := west.Put(ctx, loginService("evil", "b-net", "fine.example", host))
		if apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"customDomains[1]"}) {
			t.Errorf("west's service in its own network on %s: %v, want 403 naming customDomains[1]", host, err)
		}
	}
	// A name in east's network's domain is east's before east serves it.
	squat := loginService("evil", "b-net")
	squat.DNSName = "login.a-net.trellis.internal"
	squat.CustomDomains = []string{"*.trellis.internal"}
	if err := west.Put(ctx, squat); !slices.Equal(fieldsOf(err), []string{"dnsName", "customDomains[0]"}) {
		t.Errorf("west's service on names in east's domain: %v, want 403 naming dnsName and customDomains[0]", err)
	}
	// On a listener's host names too.
	onListener := loginService("evil", "b-net")
	onListener.Listeners[0].Hostnames = []string{"shop.example"}
	if err := west.Put(ctx, onListener); !slices.Equal(fieldsOf(err), []string{"listeners[0].hostnames[0]"}) {
		t.Errorf("west's service with shop.example on a listener: %v, want 403 naming listeners[0].hostnames[0]", err)
	}
	// A network that does not exist has no owner to allow anyone.
	if err := west.Put(ctx, loginService("evil", "nowhere")); apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"network"}) {
		t.Errorf("west's service in a network that does not exist: %v, want 403 naming network", err)
	}

	// Nothing of west's reached east's name: shop.example is served by east alone.
	objs, _, err := east.List(ctx, model.KindService)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if s := o.(*model.Service); s.Owner != "east" && slices.Contains(s.CustomDomains, "shop.example") {
			t.Errorf("service %s of %s serves shop.example", s.Name, s.Owner)
		}
	}
}

// What the network's owner allows works: west joins east's network, and
// serves east's host name, once east names west in allowedClusters.
func TestNetworkOwnerAllowsAnotherCluster(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	setUpShop(t, east)
	if err := west.Put(ctx, inCluster("west", targetGroup("login", 9999))); err != nil {
		t.Fatal(err)
	}
	if err := west.Put(ctx, network("b-net")); err != nil {
		t.Fatal(err)
	}
	n := allowClusters(t, east, "a-net", "west")
	in := loginService("login", "a-net", "shop.example")
	if err := west.Put(ctx, in); err != nil {
		t.Fatalf("west's service in east's network, allowed: %v", err)
	}
	// Allowed into a-net, west may serve a-net's names in its own network too.
	if _, err := west.Apply(ctx, &model.Objects{
		Networks:     []model.ServiceNetwork{*network("b-net")},
		TargetGroups: []model.TargetGroup{*inCluster("west", targetGroup("login", 9999))},
		Services:     []model.Service{*loginService("login", "a-net", "shop.example"), *loginService("mirror", "b-net", "shop.example")},
	}); err != nil {
		t.Fatalf("west's apply, allowed: %v", err)
	}
	// A third cluster is not allowed by east's list: every other cluster
	// serving shop.example is in a network that must allow it.
	n.AllowedClusters = []string{"*"}
	if err := east.Put(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := west.Put(ctx, loginService("any", "a-net")); err != nil {
		t.Errorf("west's service in a network allowing every cluster: %v", err)
	}
	// Invalid lists name the field.
	n.AllowedClusters = []string{"*", "Bad Name"}
	if err := east.Put(ctx, n); apiStatus(err) != http.StatusUnprocessableEntity || !slices.Equal(fieldsOf(err), []string{"allowedClusters[0]", "allowedClusters[1]"}) {
		t.Errorf("invalid allow list: %v", err)
	}
}

// watchAs opens a watch with token and returns the next message after
// heartbeats.
func watchAs(t *testing.T, url, token string) func() api.WatchMessage {
	return watchFrom(t, url, token, 0)
}

// watchFrom is watchAs resuming from revision rev.
func watchFrom(t *testing.T, url, token string, rev int64) func() api.WatchMessage {
	t.Helper()
	return watchQuery(t, url, token, fmt.Sprintf("revision=%d", rev))
}

// watchQuery is watchAs with the query query.
func watchQuery(t *testing.T, url, token, query string) func() api.WatchMessage {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/watch?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	msgs := make(chan api.WatchMessage, 16)
	go func() {
		defer close(msgs)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m api.WatchMessage
			if json.Unmarshal(sc.Bytes(), &m) == nil && m.Type != api.WatchHeartbeat {
				msgs <- m
			}
		}
	}()
	return func() api.WatchMessage {
		t.Helper()
		return testsync.Receive(t, msgs, 5*time.Second, "watch message")
	}
}

func certIn(t *testing.T, ch api.Change) *model.Certificate {
	t.Helper()
	var c model.Certificate
	if err := json.Unmarshal(ch.Object, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

// A private key is readable by its owner and by the clusters that serve
// it; everyone else gets the certificate with the key redacted, on get,
// list and watch.
func TestPrivateKeysOnlyReachTheirServers(t *testing.T) {
	url, east, west := newServer(t)
	ctx := context.Background()
	leaf := pki.NewCA(t).Issue(t, "shop.example")
	cert := &model.Certificate{Meta: model.Meta{Name: "a-cert"}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}
	shop := loginService("shop", "a-net", "shop.example")
	shop.Listeners = []model.Listener{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS, Certificates: []string{"a-cert"}}}
	for _, obj := range []model.Object{network("a-net"), targetGroup("shop", 8080), cert, shop} {
		if err := east.Put(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	// West names east's certificate in its own network: that grants nothing.
	steal := loginService("steal", "b-net")
	steal.Listeners = shop.Listeners
	for _, obj := range []model.Object{network("b-net"), inCluster("west", targetGroup("steal", 1)), steal} {
		if err := west.Put(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	key := string(leaf.KeyPEM)
	keyOf := func(c *client.Client) string {
		t.Helper()
		got := &model.Certificate{Meta: model.Meta{Name: "a-cert"}}
		if err := c.Get(ctx, got); err != nil {
			t.Fatal(err)
		}
		objs, _, err := c.List(ctx, model.KindCertificate)
		if err != nil || len(objs) != 1 {
			t.Fatalf("list: %v, %v", objs, err)
		}
		if listed := objs[0].(*model.Certificate).KeyPEM; listed != got.KeyPEM {
			t.Errorf("get says key %.20q, list %.20q", got.KeyPEM, listed)
		}
		return got.KeyPEM
	}
	if got := keyOf(east); got != key {
		t.Errorf("the owner reads key %.20q", got)
	}
	if got := keyOf(west); got != model.RedactedKey {
		t.Errorf("another cluster reads key %.20q, want it redacted", got)
	}

	westWatch := watchAs(t, url, tokenB)
	// A stream of certificates alone follows what makes them readable.
	westCerts := watchQuery(t, url, tokenB, "kind=certificates")
	if m := westCerts(); m.Snapshot == nil || len(m.Snapshot.Certificates) != 1 || m.Snapshot.Certificates[0].KeyPEM != model.RedactedKey ||
		len(m.Snapshot.Networks)+len(m.Snapshot.Services)+len(m.Snapshot.TargetGroups) != 0 {
		t.Fatalf("west's snapshot of certificates: %+v, want a-cert redacted and nothing else", m.Snapshot)
	}
	snap := westWatch().Snapshot
	if snap == nil || len(snap.Certificates) != 1 || snap.Certificates[0].KeyPEM != model.RedactedKey {
		t.Fatalf("west's snapshot: %+v, want a-cert redacted", snap)
	}
	if east := watchAs(t, url, tokenA)().Snapshot; east == nil || len(east.Certificates) != 1 || east.Certificates[0].KeyPEM != key {
		t.Fatalf("east's snapshot: %+v, want a-cert with its key", east)
	}

	// A rotation reaches west redacted.
	cert.Source = &model.SourceRef{Kind: "Secret", Name: "rotated"}
	if err := east.Put(ctx, cert); err != nil {
		t.Fatal(err)
	}
	m := westWatch()
	if len(m.Changes) != 1 || certIn(t, m.Changes[0]).KeyPEM != model.RedactedKey {
		t.Fatalf("west's change: %+v, want a-cert redacted", m)
	}

	// Once east allows west into a-net, west's proxies serve a-cert: the
	// network's change re-sends it with its key, and get says the same.
	n := allowClusters(t, east, "a-net", "west")
	m = westWatch()
	if len(m.Changes) != 2 || m.Changes[0].Kind != model.KindCertificate || certIn(t, m.Changes[0]).KeyPEM != key {
		t.Fatalf("west's change after being allowed: %+v, want a-cert with its key and the network", m)
	}
	if m := westCerts(); len(m.Changes) != 1 || m.Changes[0].Kind != model.KindCertificate || certIn(t, m.Changes[0]).KeyPEM != model.RedactedKey {
		t.Fatalf("west's certificates, the rotation: %+v, want a-cert redacted", m)
	}
	if m := westCerts(); len(m.Changes) != 1 || m.Changes[0].Kind != model.KindCertificate || certIn(t, m.Changes[0]).KeyPEM != key {
		t.Fatalf("west's certificates after being allowed: %+v, want a-cert with its key alone", m)
	}
	if got := keyOf(west); got != key {
		t.Errorf("an allowed cluster reads key %.20q", got)
	}
	// And taken back, the key is redacted again.
	n.AllowedClusters = nil
	if err := east.Put(ctx, n); err != nil {
		t.Fatal(err)
	}
	m = westWatch()
	if len(m.Changes) != 2 || certIn(t, m.Changes[0]).KeyPEM != model.RedactedKey {
		t.Fatalf("west's change after being disallowed: %+v, want a-cert redacted", m)
	}

	// A resumed stream cannot know which keys it missed becoming readable:
	// with another cluster's certificates about, it starts over from a
	// snapshot; with only the caller's own, it resumes.
	if m := watchFrom(t, url, tokenB, m.Revision-1)(); m.Type != api.WatchSnapshot || m.Snapshot.Certificates[0].KeyPEM != model.RedactedKey {
		t.Errorf("west resuming: %s, want a snapshot with a-cert redacted", m.Type)
	}
	if m := watchFrom(t, url, tokenA, m.Revision-1)(); m.Type != api.WatchChanges {
		t.Errorf("east resuming: %s, want changes", m.Type)
	}
}

// Two clusters claiming one new host name at once: exactly one gets it.
// The check reads the other services and the write commits without a
// write in between.
func TestRacingClaimsOfOneHostname(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	for _, c := range []*client.Client{east, west} {
		if err := c.Put(ctx, network(map[*client.Client]string{east: "a-net", west: "b-net"}[c])); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		host := fmt.Sprintf("h%d.example", i)
		errs := make(chan error, 2)
		var wg sync.WaitGroup
		wg.Go(func() { errs <- east.Put(ctx, loginService(fmt.Sprintf("east-%d", i), "a-net", host)) })
		wg.Go(func() { errs <- west.Put(ctx, loginService(fmt.Sprintf("west-%d", i), "b-net", host)) })
		wg.Wait()
		close(errs)
		won := 0
		for err := range errs {
			switch {
			case err == nil:
				won++
			case apiStatus(err) != http.StatusForbidden:
				t.Fatalf("%s: %v", host, err)
			}
		}
		if won != 1 {
			t.Fatalf("%s: %d clusters got it, want 1", host, won)
		}
	}
}

// allowClusters has c, the network's owner, name clusters in the
// allowedClusters of network name, and returns the network as written.
func allowClusters(t *testing.T, c *client.Client, name string, clusters ...string) *model.ServiceNetwork {
	t.Helper()
	ctx := context.Background()
	n := &model.ServiceNetwork{Meta: model.Meta{Name: name}}
	if err := c.Get(ctx, n); err != nil {
		t.Fatal(err)
	}
	n.AllowedClusters = clusters
	if err := c.Put(ctx, n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The host names judged are those of the services stored now, through
// every kind of change between writes (the server keeps their index from
// one write to the next): a name its service stops naming, or whose
// service is deleted, is free; one a write takes in the same transaction
// as it frees it is the writer's.
func TestHostnameClaimsFollowTheStore(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	setUpShop(t, east)
	if err := west.Put(ctx, network("b-net")); err != nil {
		t.Fatal(err)
	}
	if err := west.Put(ctx, inCluster("west", targetGroup("evil", 9999))); err != nil {
		t.Fatal(err)
	}
	take := func(who *client.Client, svc *model.Service) error {
		_, err := who.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{*svc}}})
		return err
	}
	if err := take(west, loginService("evil", "b-net", "shop.example")); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("west takes east's shop.example: %v, want 403", err)
	}
	// East moves shop to another name: shop.example is free.
	if err := take(east, loginService("shop", "a-net", "other.example")); err != nil {
		t.Fatal(err)
	}
	if err := take(west, loginService("evil", "b-net", "shop.example")); err != nil {
		t.Fatalf("west takes shop.example once east left it: %v", err)
	}
	// Now it is west's, and east is refused.
	if err := take(east, loginService("shop", "a-net", "shop.example")); apiStatus(err) != http.StatusForbidden {
		t.Fatalf("east takes west's shop.example: %v, want 403", err)
	}
	// West deletes its service; in one transaction east frees
	// other.example and takes it under another service.
	if _, err := west.Txn(ctx, &api.TxnRequest{Deletes: []api.ObjectRef{{Kind: model.KindService, Name: "evil"}}}); err != nil {
		t.Fatal(err)
	}
	if err := take(east, loginService("shop", "a-net", "shop.example")); err != nil {
		t.Fatalf("east takes shop.example back once west's service is gone: %v", err)
	}
	if err := east.Put(ctx, targetGroup("cart", 8081)); err != nil {
		t.Fatal(err)
	}
	if _, err := east.Txn(ctx, &api.TxnRequest{
		Puts:    model.Objects{Services: []model.Service{*loginService("cart", "a-net", "other.example")}},
		Deletes: []api.ObjectRef{{Kind: model.KindService, Name: "shop"}},
	}); err != nil {
		t.Fatalf("east moves its name to another service in one transaction: %v", err)
	}
	// shop.example went with the deleted service; other.example is
	// east's again and refused to west.
	if err := take(west, loginService("evil", "b-net", "other.example")); apiStatus(err) != http.StatusForbidden {
		t.Errorf("west takes east's other.example: %v, want 403", err)
	}
	if err := take(west, loginService("evil", "b-net", "shop.example")); err != nil {
		t.Errorf("west takes shop.example, which no service names now: %v", err)
	}
}

// A cluster that east allows into one of its networks cannot read the key
// of a certificate east serves elsewhere by naming it on a listener of its
// own service in that network: only east's own services make east's keys
// readable to others.
func TestAllowedClusterCannotNameItselfIntoAKey(t *testing.T) {
	url, east, west := newServer(t)
	ctx := context.Background()
	leaf := pki.NewCA(t).Issue(t, "bank.example")
	bankCert := &model.Certificate{Meta: model.Meta{Name: "bank-cert"}, CertPEM: string(leaf.CertPEM), KeyPEM: string(leaf.KeyPEM)}
	// East's bank is served in p-net, which allows nobody else; a-net is
	// shared with west.
	bank := loginService("bank", "p-net", "bank.example")
	bank.Listeners = []model.Listener{{Name: "https", Port: 443, Protocol: model.ProtocolHTTPS, Certificates: []string{"bank-cert"}}}
	for _, obj := range []model.Object{network("p-net"), network("a-net"), targetGroup("bank", 8443), bankCert, bank} {
		if err := east.Put(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	allowClusters(t, east, "a-net", "west")
	westCerts := watchQuery(t, url, tokenB, "kind=certificates")
	if m := westCerts(); m.Snapshot == nil || len(m.Snapshot.Certificates) != 1 || m.Snapshot.Certificates[0].KeyPEM != model.RedactedKey {
		t.Fatalf("west's first snapshot: %+v, want bank-cert redacted", m.Snapshot)
	}

	// West's own service in a-net names bank-cert.
	steal := loginService("steal", "a-net")
	steal.Listeners = bank.Listeners
	for _, obj := range []model.Object{inCluster("west", targetGroup("steal", 1)), steal} {
		if err := west.Put(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	got := &model.Certificate{Meta: model.Meta{Name: "bank-cert"}}
	if err := west.Get(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got.KeyPEM != model.RedactedKey {
		t.Errorf("west reads bank-cert's key %.30q after naming it in a-net, want it redacted", got.KeyPEM)
	}
	if snap := watchAs(t, url, tokenB)().Snapshot; snap == nil || len(snap.Certificates) != 1 || snap.Certificates[0].KeyPEM != model.RedactedKey {
		t.Errorf("west's snapshot after naming bank-cert in a-net has its key, want it redacted")
	}
	// East itself serving bank-cert in a-net lends it to west.
	shared := loginService("bank-shared", "a-net")
	shared.Listeners = bank.Listeners
	if err := east.Put(ctx, shared); err != nil {
		t.Fatal(err)
	}
	if err := west.Get(ctx, got); err != nil || got.KeyPEM != string(leaf.KeyPEM) {
		t.Errorf("west reads bank-cert's key %.30q (%v) once east serves it in a-net, want it", got.KeyPEM, err)
	}
}

// West cannot route its own service to east's target group: east's
// targets take what east's services send them, judged by east's policies,
// and what east exports. By PUT, apply and txn, on a forward or a mirror,
// the refusal names the field; west's own target group of the same
// service is fine.
func TestServiceCannotForwardToAnotherClustersTargetGroup(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	setUpShop(t, east) // east's target group "shop"
	if err := west.Put(ctx, network("b-net")); err != nil {
		t.Fatal(err)
	}
	evil := loginService("evil", "b-net")
	evil.Rules[0].Action.Forward.Backends = []model.WeightedTargetGroup{{TargetGroup: "shop", Weight: 1}}
	err := west.Put(ctx, evil)
	if apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"rules[0].action.forward.backends[0].targetGroup"}) {
		t.Fatalf("west's service forwarding to east's target group: %v, want 403 naming the backend's targetGroup", err)
	}
	if !strings.Contains(err.Error(), `target group "shop" is cluster "east"'s`) {
		t.Errorf("the refusal does not name the group's owner: %v", err)
	}
	if _, err := west.Apply(ctx, &model.Objects{Networks: []model.ServiceNetwork{*network("b-net")}, Services: []model.Service{*evil}}); !slices.Equal(fieldsOf(err),
		[]string{"objects.services[0].rules[0].action.forward.backends[0].targetGroup"}) {
		t.Errorf("west applies it: %v", err)
	}
	mirror := loginService("evil", "b-net")
	mirror.Rules[0].Filters = []model.Filter{{Mirror: &model.MirrorFilter{TargetGroup: "shop", Numerator: 1, Denominator: 1}}}
	if err := west.Put(ctx, inCluster("west", targetGroup("evil", 9999))); err != nil {
		t.Fatal(err)
	}
	if _, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{*mirror}}}); !slices.Equal(fieldsOf(err),
		[]string{"puts.services[0].rules[0].filters[0].mirror.targetGroup"}) {
		t.Errorf("west mirrors to east's target group in a txn: %v", err)
	}
	// Its own group, or one that does not exist yet, is west's business.
	if err := west.Put(ctx, loginService("evil", "b-net")); err != nil {
		t.Errorf("west's service to its own target group: %v", err)
	}
	dangling := loginService("later", "b-net")
	if err := west.Put(ctx, dangling); err != nil {
		t.Errorf("west's service to a target group not written yet: %v", err)
	}
}

// Every proxy of every other cluster dials and probes each Peer a
// cluster publishes (every 5 s, all at once): a cluster publishing
// without bound would have all of them open TLS connections to any
// addresses it likes, as often. A cluster publishes at most 256 Peers;
// past that a write is refused, naming the Peers beyond, and the others'
// are not affected.
func TestClusterPublishesBoundedPeers(t *testing.T) {
	_, east, west := newServer(t)
	ctx := context.Background()
	peerOf := func(cluster string, i int) model.Peer {
		return model.Peer{Meta: model.Meta{Name: model.PeerName(cluster, fmt.Sprintf("p%03d", i))}, Address: fmt.Sprintf("127.0.0.1:%d", 10000+i)}
	}
	var req api.TxnRequest
	for i := range 250 {
		req.Puts.Peers = append(req.Puts.Peers, peerOf("west", i))
	}
	if _, err := west.Txn(ctx, &req); err != nil {
		t.Fatal(err)
	}
	req = api.TxnRequest{}
	for i := 250; i < 258; i++ {
		req.Puts.Peers = append(req.Puts.Peers, peerOf("west", i))
	}
	_, err := west.Txn(ctx, &req)
	if apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"puts.peers[6].name", "puts.peers[7].name"}) {
		t.Fatalf("west's peers 251 to 258: %v, want 403 naming the last two", err)
	}
	// Six more fit, one at a time too; not a seventh.
	for i := 250; i < 256; i++ {
		p := peerOf("west", i)
		if err := west.Put(ctx, &p); err != nil {
			t.Fatalf("west's peer %d: %v", i, err)
		}
	}
	p := peerOf("west", 256)
	if err := west.Put(ctx, &p); apiStatus(err) != http.StatusForbidden || !slices.Equal(fieldsOf(err), []string{"name"}) {
		t.Errorf("west's 257th peer: %v, want 403 naming name", err)
	}
	// Updating one it has is fine, and so is replacing one in a txn.
	p = peerOf("west", 0)
	p.Address = "127.0.0.2:1"
	if err := west.Put(ctx, &p); err != nil {
		t.Errorf("west updates a peer: %v", err)
	}
	if _, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Peers: []model.Peer{peerOf("west", 300)}},
		Deletes: []api.ObjectRef{{Kind: model.KindPeer, Name: peerOf("west", 1).Name}}}); err != nil {
		t.Errorf("west replaces a peer: %v", err)
	}
	e := peerOf("east", 0)
	if err := east.Put(ctx, &e); err != nil {
		t.Errorf("east's first peer: %v", err)
	}
	// An apply replaces west's peers: 256 new ones fit, the old going.
	var all model.Objects
	for i := 400; i < 656; i++ {
		all.Peers = append(all.Peers, peerOf("west", i))
	}
	if _, err := west.Apply(ctx, &all); err != nil {
		t.Errorf("west applies 256 other peers: %v", err)
	}
}
