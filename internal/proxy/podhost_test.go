package proxy

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/mcs"
	"trellis.dev/trellis/internal/model"
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
