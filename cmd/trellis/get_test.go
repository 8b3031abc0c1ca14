package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/internal/store/bolt"
)

// `trellis get clusters` shows each admitted cluster's lease, peers, RTT
// and last sync, as a table or as JSON; `get clusters NAME` one of them.
func TestGetClusters(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	ca, err := server.EnsureCA(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(st, server.Config{AdminTokens: map[string]struct{}{"admin": {}}, CA: ca})
	srv := httptest.NewUnstartedServer(s)
	srv.TLS = s.TLSConfig(&tls.Config{})
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	admin, _ := client.New(srv.URL, "admin", client.Options{HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}})

	joined := map[string]*client.Client{}
	for _, name := range []string{"east", "west"} {
		added, err := admin.AddCluster(ctx, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, csr, _ := pki.NewKey()
		res, err := admin.Join(ctx, added.JoinToken, csr)
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity([]byte(res.Certificate), keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		joined[name], _ = client.New(srv.URL, "", client.Options{HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: id.ClientConfig(roots)}}})
	}
	east, west := joined["east"], joined["west"]
	if err := west.Put(ctx, &model.Peer{Meta: model.Meta{Name: model.PeerName("west", "proxy")}, Address: "127.0.0.2:9443"}); err != nil {
		t.Fatal(err)
	}
	if _, err := east.RenewLease(ctx, api.LeaseRenewal{Holder: "proxy", Peers: []api.PeerReport{
		{Cluster: "west", Address: "127.0.0.2:9443", Reached: true, RTTMicros: 1500}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := west.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Networks: []model.ServiceNetwork{
		{Meta: model.Meta{Name: "harbour"}, Mode: model.ModeServiceNetwork, Domain: "harbour.trellis.internal"}}}}); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRoot()
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--server", srv.URL, "--token", "admin", "--ca-file", caFile))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	table, err := run("get", "clusters")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^NAME\s+ADMITTED\s+LEASE\s+PEERS\s+RTT\s+LAST SYNC$`).MatchString(lines[0]) {
		t.Fatalf("table:\n%s", table)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`^east\s+\S+ ago\s+alive \(\S+ ago\)\s+0/0\s+-\s+never$`),
		regexp.MustCompile(`^west\s+\S+ ago\s+alive \(never renewed\)\s+1/1\s+1.5ms\s+\S+ ago$`),
	} {
		if !slices.ContainsFunc(lines[1:], want.MatchString) {
			t.Errorf("no row matching %s in:\n%s", want, table)
		}
	}

	out, err := run("get", "clusters", "west", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []api.Cluster
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if len(got) != 1 || got[0].Name != "west" || got[0].PeersPublished != 1 || got[0].PeersReached != 1 || got[0].RTTMicros != 1500 ||
		got[0].LastSync.IsZero() || time.Since(got[0].LastSync) > time.Minute || len(got[0].Reports) != 1 || got[0].Reports[0].Reporter != "east/proxy" {
		t.Errorf("get clusters west -o json: %+v", got)
	}
	if _, err := run("get", "clusters", "north"); err == nil || !strings.Contains(err.Error(), `"north" is not admitted`) {
		t.Errorf("get clusters north: %v", err)
	}
	if _, err := run("get", "clusters", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "output format") {
		t.Errorf("-o xml: %v", err)
	}
}
