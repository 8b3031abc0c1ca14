package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
	testpki "trellis.dev/trellis/test/pki"
	"trellis.dev/trellis/test/testsync"
)

// podBackend is an identityBackend listening on addr (a loopback address
// of its own, so that a hostname's address names it alone).
func podBackend(t *testing.T, name, addr string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.Host)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// dbExport is cluster's Headless export of shop/db, its "http" port
// webPort served by each hostname's backend.
func dbExport(t *testing.T, cluster string, pods map[string]*httptest.Server) model.ServiceExport {
	e := model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "db"), Owner: cluster},
		Namespace: "shop", Service: "db", Type: model.ExportHeadless, ExportedAt: time.Now()}
	p := model.ExportPort{Name: "http", Protocol: "TCP", Port: webPort}
	for h, srv := range pods {
		tt := clusterTarget(t, srv, cluster)
		p.Targets = append(p.Targets, tt)
		e.Hostnames = append(e.Hostnames, model.ExportHostname{Hostname: h, Addresses: []string{tt.Address}})
	}
	e.Ports = []model.ExportPort{p}
	return e
}

// A per-pod name reaches that pod of that cluster and no other: east's
// own pod directly, west's through the peer hop (west's proxy delivers it
// because it serves the same per-pod name); a pod that is not ready or
// not known answers 503 NoTarget, logged, and never another pod.
func TestPodHostAcrossClusters(t *testing.T) {
	w := newHopWorldWith(t, true)
	east0 := podBackend(t, "east-web-0", "127.0.0.11")
	west0, west1 := podBackend(t, "west-web-0", "127.0.0.12"), podBackend(t, "west-web-1", "127.0.0.13")
	snap := &model.Snapshot{Objects: model.Objects{Networks: testNetworks, Exports: []model.ServiceExport{
		dbExport(t, "east", map[string]*httptest.Server{"web-0": east0}),
		dbExport(t, "west", map[string]*httptest.Server{"web-0": west0, "web-1": west1}),
	}}}
	w.update(t, snap)
	cl := newClient(t)
	addr := addrOf(w.east, webPort)
	for _, tc := range []struct{ hostname, cluster, want string }{
		{"web-0", "east", "east-web-0"}, {"web-0", "west", "west-web-0"}, {"web-1", "west", "west-web-1"},
	} {
		host := mcs.PodHost(tc.hostname, tc.cluster, "shop", "db")
		for range 10 {
			if r := cl.get(addr, host, "/"); r.status != 200 || r.body != tc.want+" "+host {
				t.Fatalf("%s: %d %q, want %s", host, r.status, r.body, tc.want)
			}
		}
	}
	for _, host := range []string{mcs.PodHost("web-1", "east", "shop", "db"), mcs.PodHost("web-0", "north", "shop", "db")} {
		if r := cl.get(addr, host, "/"); r.status != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %q, want 503", host, r.status, r.body)
		}
		testsync.WaitFor(t, 5*time.Second, "east's access log records "+host+" as NoTarget", func() bool {
			for _, line := range strings.Split(w.eastLog.String(), "\n") {
				if strings.Contains(line, `"`+host+`"`) && strings.Contains(line, `"NoTarget"`) {
					return true
				}
			}
			return false
		})
	}

	// West's web-1 loses its name (a pod that stops being ready loses its
	// target too; here the target stays, the harder case): its name's
	// requests get 503, neither web-1 nor web-0.
	west := dbExport(t, "west", map[string]*httptest.Server{"web-0": west0})
	west.Ports[0].Targets = append(west.Ports[0].Targets, clusterTarget(t, west1, "west"))
	w.update(t, &model.Snapshot{Revision: 2, Objects: model.Objects{Networks: testNetworks, Exports: []model.ServiceExport{snap.Exports[0], west}}})
	if r := cl.get(addr, mcs.PodHost("web-1", "west", "shop", "db"), "/"); r.status != http.StatusServiceUnavailable {
		t.Errorf("west's web-1 not ready: %d %q, want 503", r.status, r.body)
	}
	// The Service's own name reaches every ready endpoint.
	got := map[string]int{}
	for range 60 {
		r := cl.get(addr, mcs.ClustersetHost("shop", "db"), "/")
		got[strings.Fields(r.body + " ?")[0]]++
	}
	if len(got) != 3 {
		t.Errorf("the Service's name: %v, want all three backends", got)
	}
}

// tlsEchoAt is tlsEcho listening on addr (a loopback address of its own),
// as a target.
func tlsEchoAt(t *testing.T, cert tls.Certificate, name, addr string) *model.Target {
	t.Helper()
	_, port, err := net.SplitHostPort(tlsEchoOn(t, cert, name, addr))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	return &model.Target{Address: addr, Port: int32(n), State: model.TargetActive}
}

// By SNI too: a TLS passthrough route over "*.db.shop.svc.clusterset.local"
// to the import sends a connection for a per-pod name to that pod only,
// west's through the peer hop as a tunnel; a pod that is not known gets
// no target (the connection is closed), never another pod.
func TestPodHostBySNIAcrossClusters(t *testing.T) {
	w := newHopWorld(t)
	ca := testpki.NewCA(t)
	cert := ca.Issue(t, "*.east.db.shop.svc.clusterset.local", "*.west.db.shop.svc.clusterset.local").TLS(t)
	export := func(cluster string, pods map[string]*model.Target) model.ServiceExport {
		e := model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "db"), Owner: cluster},
			Namespace: "shop", Service: "db", Type: model.ExportHeadless, ExportedAt: time.Now()}
		p := model.ExportPort{Name: "tls", Protocol: "TCP", Port: 5432}
		for h, tt := range pods {
			tt.Cluster = cluster
			p.Targets = append(p.Targets, *tt)
			e.Hostnames = append(e.Hostnames, model.ExportHostname{Hostname: h, Addresses: []string{tt.Address}})
		}
		e.Ports = []model.ExportPort{p}
		return e
	}
	svc := model.Service{Meta: model.Meta{Name: "db-tls", Owner: "east"}, Network: "edge",
		Listeners: []model.Listener{{Name: "tls", Port: 9443, Protocol: model.ProtocolTLSPassthrough, Hostnames: []string{"*.db.shop.svc.clusterset.local"}}},
		Rules: []model.Rule{{Action: forward(model.WeightedTargetGroup{Weight: 1,
			Import: &model.ImportRef{Namespace: "shop", Name: "db", Port: 5432, Protocol: model.ProtocolTCP, ProtocolVersion: model.HTTP1}})}},
	}
	w.update(t, &model.Snapshot{Revision: 1, Objects: model.Objects{Networks: testNetworks, Services: []model.Service{svc}, Exports: []model.ServiceExport{
		export("east", map[string]*model.Target{"web-0": tlsEchoAt(t, cert, "east-web-0", "127.0.0.21")}),
		export("west", map[string]*model.Target{"web-0": tlsEchoAt(t, cert, "west-web-0", "127.0.0.22"), "web-1": tlsEchoAt(t, cert, "west-web-1", "127.0.0.23")}),
	}}})
	dial := func(host string) (string, error) {
		conn, err := tls.Dial("tcp", addrOf(w.east, 9443), &tls.Config{ServerName: host, RootCAs: ca.Pool()})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte("ping"))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		return string(buf[:n]), err
	}
	for _, tc := range []struct{ hostname, cluster string }{{"web-0", "east"}, {"web-0", "west"}, {"web-1", "west"}} {
		host := mcs.PodHost(tc.hostname, tc.cluster, "shop", "db")
		for range 5 {
			if got, err := dial(host); err != nil || got != tc.cluster+"-"+tc.hostname+":ping" {
				t.Fatalf("%s: %q %v", host, got, err)
			}
		}
	}
	if got, err := dial(mcs.PodHost("web-1", "east", "shop", "db")); err == nil {
		t.Errorf("east's web-1, no such pod: answered %q", got)
	}
}
