package runner_test

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/pki"
	"trellis.dev/trellis/internal/proxy/runner"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/plane"
	"trellis.dev/trellis/test/testsync"
)

func named(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
}

func export(t *testing.T, cluster string, srv *httptest.Server) model.ServiceExport {
	t.Helper()
	host, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return model.ServiceExport{Meta: model.Meta{Name: model.ExportName(cluster, "shop", "cart")},
		Namespace: "shop", Service: "cart", Type: model.ExportClusterSetIP, ExportedAt: time.Now(),
		Ports: []model.ExportPort{{Protocol: "TCP", Port: 80, Targets: []model.Target{{Address: host, Port: int32(n), Cluster: cluster, State: model.TargetActive}}}}}
}

// freePort is a port free on ip now.
func freePort(t *testing.T, ip string) int32 {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return int32(ln.Addr().(*net.TCPAddr).Port)
}

// runProxy runs a proxy of cluster with the peer hop until the test ends.
func runProxy(t *testing.T, ca *pki.CA, id *pki.Identity, cl *client.Client, cluster, bind, holder string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runner.Run(ctx, runner.Config{Client: cl, Cluster: cluster, Bind: bind, LeaseHolder: holder,
			Follow: client.FollowOptions{IdleTimeout: 2 * time.Second},
			Peer:   &runner.PeerConfig{Listen: bind + ":0", Name: "proxy", Identity: id, Roots: ca.Pool()},
			Logger: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s proxy: %v", cluster, err)
		}
	})
}

// A cluster that stops renewing its lease, its proxy still answering,
// leaves the other cluster's picks within its lease duration and a
// second, and comes back when it renews again; while the control plane is
// out of reach, and when it comes back, nothing leaves the picks.
func TestLeaseLapseAndControlPlaneOutage(t *testing.T) {
	const lease = 2 * time.Second
	p := plane.Start(t, server.Config{LeaseDuration: lease, Heartbeat: 200 * time.Millisecond})
	ctx := context.Background()
	eastID, east := p.Join(t, "east")
	westID, west := p.Join(t, "west")
	net3 := rand.IntN(200) + 20
	eastIP, westIP := "127.0."+strconv.Itoa(net3)+".1", "127.0."+strconv.Itoa(net3)+".2"
	port := freePort(t, eastIP)
	eastCart, westCart := named("east-cart"), named("west-cart")
	defer eastCart.Close()
	defer westCart.Close()

	if _, err := east.Apply(ctx, &model.Objects{
		Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "edge"}, Mode: model.ModeEdge}},
		Services: []model.Service{{Meta: model.Meta{Name: "shop"}, Network: "edge",
			Listeners: []model.Listener{{Name: "http", Port: port, Protocol: model.ProtocolHTTP}},
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{Backends: []model.WeightedTargetGroup{{Weight: 1,
				Import: &model.ImportRef{Namespace: "shop", Name: "cart", Port: 80, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}}}}}}}}},
		Exports: []model.ServiceExport{export(t, "east", eastCart)},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := west.Apply(ctx, &model.Objects{Exports: []model.ServiceExport{export(t, "west", westCart)}}); err != nil {
		t.Fatal(err)
	}
	// West's lease is renewed by its "controller", here the test, so that
	// it can stop renewing while west's proxy keeps answering.
	renewing, stopRenewing := context.WithCancel(ctx)
	go client.KeepLease(renewing, west, "controller", nil, slog.New(slog.DiscardHandler))
	defer stopRenewing()
	runProxy(t, p.CA, westID, west, "west", westIP, "")
	runProxy(t, p.CA, eastID, east, "east", eastIP, "proxy")

	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	shopURL := "http://" + net.JoinHostPort(eastIP, strconv.Itoa(int(port))) + "/"
	get := func() string {
		resp, err := hc.Get(shopURL)
		if err != nil {
			return "error"
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return strconv.Itoa(resp.StatusCode)
		}
		return string(b)
	}
	testsync.WaitForAnswers(t, 10*time.Second, "east's proxy to send to both clusters", 10, get, "east-cart", "west-cart")

	// West stops renewing; its proxy still answers.
	stopRenewing()
	stopped := time.Now()
	lastWest, settled := testsync.LastSeen(t, lease+5*time.Second, "west-cart", "east-cart", get)
	if !settled {
		t.Fatalf("west still picked %v after it stopped renewing", time.Since(stopped))
	}
	left := lastWest.Sub(stopped)
	t.Logf("west left the pick %v after it stopped renewing (lease %v)", left.Round(time.Millisecond), lease)
	if left > lease+time.Second {
		t.Errorf("west left the pick %v after it stopped renewing, more than its lease %v and a second", left, lease)
	}
	if left < lease-lease/5-200*time.Millisecond {
		t.Errorf("west left the pick %v after it stopped renewing, before its lease could lapse", left)
	}
	if got := reportedPeers(t, p); got != 1 {
		t.Errorf("west's peers reached, as east's proxy reports them: %d, want 1", got)
	}

	// West renews again: it is back in the pick.
	renewingAgain, stopRenewingAgain := context.WithCancel(ctx)
	defer stopRenewingAgain()
	go client.KeepLease(renewingAgain, west, "controller", nil, slog.New(slog.DiscardHandler))
	back := time.Now()
	// Two requests: round robin gives west one of them once it is back.
	testsync.WaitForAnswers(t, 3*time.Second, "west back in the pick", 2, get, "west-cart")
	t.Logf("west back in the pick %v after it renewed again", time.Since(back).Round(time.Millisecond))

	// The control plane goes away for longer than a lease, then comes
	// back: every request succeeds and west keeps its share throughout.
	checkShare := func(what string, d time.Duration) {
		t.Helper()
		end := time.Now().Add(d)
		counts := map[string]int{}
		windowWest := 0
		window := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(end) {
			got := get()
			counts[got]++
			if got == "west-cart" {
				windowWest++
			}
			if time.Now().After(window) {
				if windowWest == 0 {
					t.Errorf("%s: half a second without a request to west (%v so far)", what, counts)
				}
				windowWest, window = 0, time.Now().Add(500*time.Millisecond)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if counts["east-cart"]+counts["west-cart"] != sum(counts) {
			t.Errorf("%s: %v, want every request answered by a cart", what, counts)
		}
		t.Logf("%s: %v", what, counts)
	}
	p.Stop()
	if _, err := p.Admin(t).Leases(ctx); err == nil {
		t.Fatal("the control plane still answers after it was stopped")
	}
	checkShare("control plane out of reach", lease+2*time.Second)
	p.Restart(t)
	checkShare("control plane back", lease+time.Second)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// reportedPeers waits for east's proxy's report on west's peers and
// returns how many it reached.
func reportedPeers(t *testing.T, p *plane.Plane) int {
	t.Helper()
	var west api.Cluster
	testsync.WaitFor(t, 15*time.Second, "east's proxy to report on west's peer", func() bool {
		clusters, err := p.Admin(t).Clusters(context.Background())
		if err != nil {
			return false
		}
		for _, c := range clusters {
			if c.Name == "west" && len(c.Reports) > 0 {
				west = c
				return true
			}
		}
		return false
	})
	if west.RTTMicros <= 0 || !strings.HasPrefix(west.Reports[0].Reporter, "east/") {
		t.Errorf("west's status: %+v", west)
	}
	return west.PeersReached
}
