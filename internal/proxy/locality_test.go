package proxy

import (
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/proxy/health"
	"trellis.dev/trellis/test/testsync"
)

// localFirstStatus is the health east's proxy sees of its own target addr
// of a LocalFirst import.
func localFirstStatus(p *Proxy, addr string) health.Status {
	for _, gr := range p.health.Report() {
		if !strings.HasSuffix(gr.Name, ";local-first="+p.cluster) {
			continue
		}
		for _, t := range gr.Targets {
			if t.Addr == addr {
				return t.Status
			}
		}
	}
	return health.Unavailable + 100
}

// A LocalFirst rule keeps an import's requests on the proxy's own cluster
// while its target is healthy, whatever the cluster weights; once the
// health checks find it down, every request goes to the other cluster,
// none failing; when it is back, requests come home.
func TestLocalFirstOverflowsToAnotherCluster(t *testing.T) {
	w := newHopWorld(t, func(c *Config) { c.test.healthSecond = healthSecond })
	eastCart, westCart := identityBackend(t, "east-cart"), identityBackend(t, "west-cart")
	eastAddr := eastCart.Listener.Addr().String()
	snap := cartImport(nil, cartExport(t, "east", eastCart), cartExport(t, "west", westCart))
	snap.Services[0].Rules[0].Locality = model.LocalityLocalFirst
	// West would get 9 of 10 requests were the rule not LocalFirst.
	snap.Services[0].Rules[0].Action.Forward.Backends[0].Import.ClusterWeights = map[string]int32{"east": 1, "west": 9}
	w.update(t, snap)
	testsync.WaitFor(t, 10*time.Second, "east's own target checked healthy", func() bool { return localFirstStatus(w.east, eastAddr) == health.Healthy })

	cl := newClient(t)
	addr := addrOf(w.east, webPort)
	if got := cl.tally(addr, 100); got["east-cart/200"] != 100 {
		t.Fatalf("all healthy: %v, want 100 to east's own target", got)
	}

	// East's target dies. Once the checks say so, west takes everything.
	eastCart.Close()
	testsync.WaitFor(t, 10*time.Second, "east's own target checked unhealthy", func() bool { return localFirstStatus(w.east, eastAddr) == health.Unhealthy })
	if got := cl.tally(addr, 100); got["west-cart/200"] != 100 {
		t.Errorf("east's target down: %v, want 100 to west, none failed", got)
	}

	// It comes back on the same address: requests come home.
	back := httptest.NewUnstartedServer(eastCart.Config.Handler)
	ln, err := net.Listen("tcp", eastAddr)
	if err != nil {
		t.Fatalf("east's target back on %s: %v", eastAddr, err)
	}
	back.Listener = ln
	back.Start()
	t.Cleanup(back.Close)
	testsync.WaitFor(t, 10*time.Second, "east's own target healthy again", func() bool { return localFirstStatus(w.east, eastAddr) == health.Healthy })
	if got := cl.tally(addr, 50); got["east-cart/200"] != 50 {
		t.Errorf("east's target back: %v, want 50 to east", got)
	}
}
