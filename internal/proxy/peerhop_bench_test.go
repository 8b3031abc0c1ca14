package proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"trellis.dev/trellis/internal/model"
)

// BenchmarkPeerHop measures the latency the hop adds: the same request
// through east's proxy to a target in east (direct) and to a target in west
// (east's proxy → west's proxy → target), sequential, on reused
// connections, reporting the p50 and p99 of each. Run with
//
//	go test -run XXX -bench PeerHop -benchtime 5000x ./internal/proxy/
//
// The difference of the two p50s (and p99s) is the hop's cost;
// hop-policy.example crosses the hop to a service with an auth policy,
// which both proxies evaluate.
func BenchmarkPeerHop(b *testing.B) {
	w := newHopWorld(b)
	local, remote := identityBackend(b, "east-api"), identityBackend(b, "west-api")
	eastTG, westTG := group("east-api", clusterTarget(b, local, "east")), group("west-api", clusterTarget(b, remote, "west"))
	eastTG.Owner, westTG.Owner = "east", "west"
	snap := &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		TargetGroups: []model.TargetGroup{eastTG, westTG},
		Services: []model.Service{
			edgeService("direct", []string{"direct.example"}, model.Rule{Action: forward(to("east-api", 1))}),
			edgeService("hop", []string{"hop.example"}, model.Rule{Action: forward(to("west-api", 1))}),
			withAuth(edgeService("hop-policy", []string{"hop-policy.example"}, model.Rule{Action: forward(to("west-api", 1))}),
				`{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "trellis:Invoke", "Resource": "*",
				  "Condition": {"StringEquals": {"trellis:RequestMethod": "GET"}}}]}`),
		},
	}, Revision: 1}
	w.update(b, snap)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	addr := "http://" + addrOf(w.east, webPort) + "/"
	for _, host := range []string{"direct.example", "hop.example", "hop-policy.example"} {
		b.Run(host, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, addr, nil)
				req.Host = host
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(start))
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

func withAuth(svc model.Service, policy string) model.Service {
	svc.Auth = &model.Auth{Policy: json.RawMessage(policy)}
	return svc
}

// BenchmarkUpgradeAcrossThePeerHop measures a WebSocket message's round
// trip (1 KiB echoed) on one upgraded connection through east's proxy, to
// a target in east (direct) and to one in west (through the hop's tunnel),
// reporting the p50 and p99 of each. Run with
//
//	go test -run XXX -bench UpgradeAcross -benchtime 5000x ./internal/proxy/
func BenchmarkUpgradeAcrossThePeerHop(b *testing.B) {
	w := newHopWorld(b)
	echo := func() *httptest.Server {
		srv := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
		b.Cleanup(srv.Close)
		return srv
	}
	eastTG, westTG := group("east-ws", clusterTarget(b, echo(), "east")), group("west-ws", clusterTarget(b, echo(), "west"))
	eastTG.Owner, westTG.Owner = "east", "west"
	w.update(b, &model.Snapshot{Objects: model.Objects{
		Networks:     testNetworks,
		TargetGroups: []model.TargetGroup{eastTG, westTG},
		Services: []model.Service{
			edgeService("direct", []string{"direct.example"}, model.Rule{Action: forward(to("east-ws", 1))}),
			edgeService("hop", []string{"hop.example"}, model.Rule{Action: forward(to("west-ws", 1))}),
		},
	}, Revision: 1})
	msg := make([]byte, 1<<10)
	for _, host := range []string{"direct.example", "hop.example"} {
		b.Run(host, func(b *testing.B) {
			conn, err := net.Dial("tcp", addrOf(w.east, webPort))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			cfg, _ := websocket.NewConfig("ws://"+host+"/", "http://"+host+"/")
			c, err := websocket.NewClient(cfg, conn)
			if err != nil {
				b.Fatal(err)
			}
			got := make([]byte, len(msg))
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
