package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
	"trellis.dev/trellis/test/teststore"
)

// clusterPlane is a control plane with a CA, served over TLS on loopback,
// with clients of its admin and of cluster east's bearer token.
type clusterPlane struct {
	*plane.Plane
	admin *client.Client
	east  *client.Client // bearer token of cluster east
}

func newClusterPlane(t *testing.T) *clusterPlane { return newClusterPlaneWith(t, 0) }

// newClusterPlaneWith is newClusterPlane with leases of lease (0: the
// default).
func newClusterPlaneWith(t *testing.T, lease time.Duration) *clusterPlane {
	t.Helper()
	p := plane.Start(t, server.Config{Tokens: map[string]string{tokenA: "east"}, Heartbeat: 100 * time.Millisecond, LeaseDuration: lease})
	return &clusterPlane{Plane: p, admin: p.Admin(t), east: p.Client(t, tokenA)}
}

func TestJoinAuthenticatesByCertificate(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	id, west := p.Join(t, "west")
	if id.Cluster() != "west" {
		t.Fatalf("identity names %q", id.Cluster())
	}

	// Objects written with the certificate belong to the cluster it names.
	n := network("harbour")
	if err := west.Put(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n.Owner != "west" {
		t.Errorf("owner %q, want west", n.Owner)
	}
	// ... and the certificate cannot write as another cluster.
	other := network("dock")
	other.Owner = "east"
	if err := west.Put(ctx, other); apiStatus(err) != http.StatusForbidden {
		t.Errorf("put as east with west's certificate: %v", err)
	}

	// A renewal with the certificate gives a new one for the same cluster.
	keyPEM, csr, _ := pki.NewKey()
	certPEM, err := west.Renew(ctx, csr)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := pki.NewIdentity(certPEM, keyPEM)
	if err != nil || renewed.Cluster() != "west" {
		t.Fatalf("renewed: %v, %v", renewed, err)
	}
	// A bearer token mints no certificates, not even its own cluster's.
	if _, err := p.east.Renew(ctx, csr); apiStatus(err) != http.StatusUnauthorized {
		t.Errorf("renewal with a bearer token: %v", err)
	}

	clusters, err := west.Clusters(ctx)
	if err != nil || len(clusters) != 1 || clusters[0].Name != "west" {
		t.Errorf("clusters: %+v, %v", clusters, err)
	}
}

func TestJoinTokenRules(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	anon := p.Client(t, "")
	_, csr, _ := pki.NewKey()

	// Only an administrator admits clusters.
	if _, err := p.east.AddCluster(ctx, "west", 0); apiStatus(err) != http.StatusForbidden {
		t.Errorf("add by a cluster's token: %v", err)
	}
	if _, err := p.admin.AddCluster(ctx, "West_1", 0); apiStatus(err) != http.StatusUnprocessableEntity {
		t.Errorf("bad name: %v", err)
	}

	added, err := p.admin.AddCluster(ctx, "west", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Join(ctx, added.JoinToken, csr); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		token, want string
	}{
		"reused":    {added.JoinToken, "already used"},
		"malformed": {"hello", "not a join token"},
		"unknown":   {mustToken(t), "unknown or revoked"},
	} {
		_, err := anon.Join(ctx, tc.token, csr)
		if apiStatus(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "trellis cluster add") {
			t.Errorf("%s token: %v, want 401 saying %q and how to get a new one", name, err, tc.want)
		}
	}

	short, err := p.admin.AddCluster(ctx, "north", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(short.Expires) + 10*time.Millisecond)
	if _, err := anon.Join(ctx, short.JoinToken, csr); apiStatus(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}

	// A certificate request that is not one is named.
	fresh, _ := p.admin.AddCluster(ctx, "south", 0)
	if _, err := anon.Join(ctx, fresh.JoinToken, []byte("junk")); apiStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "CERTIFICATE REQUEST") {
		t.Errorf("junk CSR: %v", err)
	}
	// ... and did not spend the token.
	if _, err := anon.Join(ctx, fresh.JoinToken, csr); err != nil {
		t.Errorf("token after a refused CSR: %v", err)
	}
}

// Of many joins racing with one token, exactly one gets a certificate.
func TestJoinTokenWorksOnce(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	added, err := p.admin.AddCluster(ctx, "west", 0)
	if err != nil {
		t.Fatal(err)
	}
	anon := p.Client(t, "")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, csr, _ := pki.NewKey()
			if _, err := anon.Join(ctx, added.JoinToken, csr); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if apiStatus(err) != http.StatusUnauthorized {
				t.Errorf("losing join: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d joins succeeded with one token, want 1", wins)
	}
}

// Removing a cluster cuts it off: new requests with its certificate are
// refused and its open watch stream ends within seconds.
func TestRemoveClusterCutsItOff(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	id, west := p.Join(t, "west")
	if err := west.Put(ctx, network("harbour")); err != nil {
		t.Fatal(err)
	}

	tr := &http.Transport{TLSClientConfig: id.ClientConfig(p.Roots)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(p.URL() + "/v1/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %s", resp.Status)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	if first := <-lines; !strings.Contains(first, `"snapshot"`) {
		t.Fatalf("first watch line: %s", first)
	}

	if _, err := p.admin.RemoveCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	ended := false
	for !ended {
		select {
		case line, ok := <-lines:
			ended = !ok // heartbeats until the server ends the stream
			// The removal deletes west's network too; west's own stream
			// ends before it would tell west's proxies to drop it.
			if strings.Contains(line, `"changes"`) {
				t.Errorf("the removed cluster's stream carried its removal: %s", line)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the removed cluster's watch stream still runs 5 s after removal")
		}
	}
	t.Logf("watch stream ended %v after removal", time.Since(removed).Round(time.Millisecond))

	err = west.Put(ctx, network("dock"))
	if apiStatus(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "removed") {
		t.Errorf("put after removal: %v", err)
	}
	if _, err := p.admin.RemoveCluster(ctx, "west"); apiStatus(err) != http.StatusNotFound {
		t.Errorf("second removal: %v", err)
	}
}

// A certificate from another CA, or one naming no cluster, authenticates
// nobody.
func TestForeignCertificateRefused(t *testing.T) {
	p := newClusterPlane(t)
	foreign, _ := pki.NewCA(time.Now())
	keyPEM, csr, _ := pki.NewKey()
	certPEM, _ := foreign.Sign(csr, "east", time.Now(), time.Hour)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.Roots, Certificates: []tls.Certificate{cert}}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(p.URL() + "/v1/ServiceNetwork")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate of another CA was accepted: %s", resp.Status)
	}
}

func TestEnsureCA(t *testing.T) {
	st := teststore.Bolt(t)
	ctx := context.Background()
	supplied, _ := pki.NewCA(time.Now())
	first, err := server.EnsureCA(ctx, st, supplied)
	if err != nil || string(first.CertPEM()) != string(supplied.CertPEM()) {
		t.Fatalf("first start with a supplied CA: %v", err)
	}
	again, err := server.EnsureCA(ctx, st, nil)
	if err != nil || string(again.CertPEM()) != string(first.CertPEM()) {
		t.Fatalf("restart: %v", err)
	}
	other, _ := pki.NewCA(time.Now())
	if _, err := server.EnsureCA(ctx, st, other); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("another supplied CA: %v", err)
	}
	// The CA's key never leaves through the model's API.
	kvs, _, err := st.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if strings.Contains(string(kv.Value), "PRIVATE KEY") {
			t.Errorf("%s holds a private key", kv.Key)
		}
	}
	key, _ := first.KeyPEM()
	if b, _ := pem.Decode(key); b == nil {
		t.Fatal("no CA key")
	}
}

func mustToken(t *testing.T) string {
	tok, err := pki.NewJoinToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// Admission is published as a Cluster object that only the control plane
// writes: proxies learn from it which clusters may take peer hops.
func TestAdmissionIsPublished(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	if _, err := p.admin.AddCluster(ctx, "west", 0); err != nil {
		t.Fatal(err)
	}
	got := &model.Cluster{Meta: model.Meta{Name: "west"}}
	if err := p.east.Get(ctx, got); err != nil || got.Owner != model.ControlPlaneOwner || got.Added.IsZero() {
		t.Fatalf("published admission: %+v, %v", got, err)
	}
	if _, err := p.admin.AddCluster(ctx, model.ControlPlaneOwner, 0); apiStatus(err) != http.StatusUnprocessableEntity {
		t.Errorf("admitting the reserved name: %v", err)
	}
	forged := &model.Cluster{Meta: model.Meta{Name: "north", Owner: model.ControlPlaneOwner}, Added: time.Now()}
	if err := p.east.Put(ctx, forged); apiStatus(err) != http.StatusForbidden {
		t.Errorf("a cluster writing an admission: %v", err)
	}
	if err := p.east.Delete(ctx, &model.Cluster{Meta: model.Meta{Name: "west"}}); apiStatus(err) != http.StatusForbidden {
		t.Errorf("a cluster deleting an admission: %v", err)
	}
	if _, err := p.admin.RemoveCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	if err := p.east.Get(ctx, &model.Cluster{Meta: model.Meta{Name: "west"}}); apiStatus(err) != http.StatusNotFound {
		t.Errorf("admission after removal: %v", err)
	}
}

// The pod network is the operator's to declare: an administrator admits a
// cluster into one and moves it, keeping its export namespaces; the
// published admission and the clusters' status carry it; a cluster cannot
// set or write its own; a name that is not a label gets a 422 naming
// podNetwork.
func TestPodNetworkAdministration(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	ptr := func(s string) *string { return &s }
	published := func(name string) *model.Cluster {
		t.Helper()
		c := &model.Cluster{Meta: model.Meta{Name: name}}
		if err := p.east.Get(ctx, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := p.admin.AdmitCluster(ctx, api.AddClusterRequest{Name: "west", PodNetwork: ptr("flat"), ExportNamespaces: []string{"shop"}}); err != nil {
		t.Fatal(err)
	}
	if c := published("west"); c.PodNetwork != "flat" || !slices.Equal(c.ExportNamespaces, []string{"shop"}) {
		t.Errorf("west admitted as %+v", c)
	}
	_, west := p.Join(t, "west")
	if _, err := p.admin.AddCluster(ctx, "north", 0); err != nil {
		t.Fatal(err)
	}
	if c := published("north"); c.PodNetwork != "" {
		t.Errorf("north admitted in pod network %q, want none", c.PodNetwork)
	}

	// A member cannot claim a network: not through the cluster API, not
	// by writing its admission.
	if _, err := west.SetCluster(ctx, "north", api.SetClusterRequest{PodNetwork: ptr("flat")}); apiStatus(err) != http.StatusForbidden {
		t.Errorf("west setting north's pod network: %v", err)
	}
	if _, err := west.AdmitCluster(ctx, api.AddClusterRequest{Name: "west", PodNetwork: ptr("other")}); apiStatus(err) != http.StatusForbidden {
		t.Errorf("west admitting itself into a network: %v", err)
	}
	forged := published("west")
	forged.PodNetwork = "other"
	if err := west.Put(ctx, forged); apiStatus(err) != http.StatusForbidden {
		t.Errorf("west writing its own admission: %v", err)
	}

	for _, bad := range []string{"Flat", "a.b", "-x", "x-", strings.Repeat("n", 64), "flat net"} {
		_, err := p.admin.SetCluster(ctx, "north", api.SetClusterRequest{PodNetwork: ptr(bad)})
		if apiStatus(err) != http.StatusUnprocessableEntity || !slices.Contains(fieldsOf(err), "podNetwork") {
			t.Errorf("set %q: %v (fields %v), want 422 naming podNetwork", bad, err, fieldsOf(err))
		}
		_, err = p.admin.AdmitCluster(ctx, api.AddClusterRequest{Name: "south", PodNetwork: ptr(bad)})
		if apiStatus(err) != http.StatusUnprocessableEntity || !slices.Contains(fieldsOf(err), "podNetwork") {
			t.Errorf("add %q: %v (fields %v), want 422 naming podNetwork", bad, err, fieldsOf(err))
		}
	}
	if _, err := p.admin.SetCluster(ctx, "south", api.SetClusterRequest{PodNetwork: ptr("flat")}); apiStatus(err) != http.StatusNotFound {
		t.Errorf("south after refused adds: %v, want 404", err)
	}

	set, err := p.admin.SetCluster(ctx, "north", api.SetClusterRequest{PodNetwork: ptr("flat")})
	if err != nil || set.PodNetwork != "flat" || !slices.Equal(set.ExportNamespaces, []string{"*"}) {
		t.Fatalf("set north into flat: %+v, %v", set, err)
	}
	// Admitting again for a new token keeps the network unless one is
	// given; setting the namespaces alone keeps it too.
	if _, err := p.admin.AddCluster(ctx, "west", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.admin.SetCluster(ctx, "west", api.SetClusterRequest{ExportNamespaces: []string{"web"}}); err != nil {
		t.Fatal(err)
	}
	if c := published("west"); c.PodNetwork != "flat" || !slices.Equal(c.ExportNamespaces, []string{"web"}) {
		t.Errorf("west after a new token and new namespaces: %+v", c)
	}
	if _, err := p.admin.AdmitCluster(ctx, api.AddClusterRequest{Name: "west", PodNetwork: ptr("")}); err != nil {
		t.Fatal(err)
	}
	if c := published("west"); c.PodNetwork != "" || !slices.Equal(c.ExportNamespaces, []string{"web"}) {
		t.Errorf("west after an add isolating it: %+v", c)
	}
	clusters, err := p.admin.Clusters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	networks := map[string]string{}
	for _, c := range clusters {
		networks[c.Name] = c.PodNetwork
	}
	if networks["north"] != "flat" || networks["west"] != "" {
		t.Errorf("the clusters' status: pod networks %v", networks)
	}
}

// Peers and workload sets are named "<proxy or namespace>.<cluster>", the
// name ending with the owner. Were "b" and "x.b" both admitted, b could
// take the names of x.b's ("p.x.b", a proxy "p.x" of b's) and x.b could no
// longer publish its proxy: a cluster's name ending with "." and another's
// is refused at admission, either way round, naming the other cluster.
func TestClusterNamesDoNotNestInsideAnother(t *testing.T) {
	p := newClusterPlane(t)
	ctx := context.Background()
	if _, err := p.admin.AddCluster(ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"x.b", "y.x.b"} {
		_, err := p.admin.AddCluster(ctx, name, 0)
		if apiStatus(err) != http.StatusUnprocessableEntity || !slices.Equal(fieldsOf(err), []string{"name"}) || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("admitting %s beside b: %v, want 422 naming name and b", name, err)
		}
	}
	if _, err := p.admin.AddCluster(ctx, "x.c", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.admin.AddCluster(ctx, "c", 0); apiStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), `"x.c"`) {
		t.Errorf("admitting c beside x.c: %v, want 422 naming x.c", err)
	}
	// Names that only share a tail of characters are fine, and so is a
	// new token for a cluster admitted already.
	for _, name := range []string{"xb", "b-x", "b"} {
		if _, err := p.admin.AddCluster(ctx, name, 0); err != nil {
			t.Errorf("admitting %s: %v", name, err)
		}
	}
}
