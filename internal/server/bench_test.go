package server_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"trellis.dev/trellis/internal/api"
	"trellis.dev/trellis/internal/client"
	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/server"
	"trellis.dev/trellis/test/teststore"
	"trellis.dev/trellis/test/testsync"
)

// BenchmarkTxnOneService is the server's part of one change at n services
// (issue 15): a txn putting one service whose host name changed, with n
// services and their target groups (ten targets each) stored. It reports
// the process's CPU time per txn (cpu-ms/op), which load inflates less
// than the wall time; the bolt store's fsync is in the wall time only.
func BenchmarkTxnOneService(b *testing.B) {
	for _, n := range []int{2000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchmarkTxnOneService(b, n) })
	}
}

func benchmarkTxnOneService(b *testing.B, n int) {
	st := teststore.Bolt(b)
	srv := httptest.NewServer(server.New(st, server.Config{Tokens: map[string]string{"tok": "local"}}))
	defer srv.Close()
	cl, err := client.New(srv.URL, "tok", client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	service := func(i int, host string) model.Service {
		return model.Service{Meta: model.Meta{Name: fmt.Sprintf("r-%d", i), Owner: "local"}, Network: "web",
			Listeners: []model.Listener{{Name: "http", Port: 8080, Protocol: model.ProtocolHTTP, Hostnames: []string{host}}},
			Rules: []model.Rule{{Action: model.Action{Forward: &model.ForwardAction{
				Backends: []model.WeightedTargetGroup{{TargetGroup: fmt.Sprintf("svc-%d", i), Weight: 1}}}}}}}
	}
	objs := model.Objects{Networks: []model.ServiceNetwork{{Meta: model.Meta{Name: "web", Owner: "local"}, Mode: model.ModeEdge}}}
	for i := range n {
		objs.Services = append(objs.Services, service(i, fmt.Sprintf("r-%d.example.com", i)))
		tg := model.TargetGroup{Meta: model.Meta{Name: fmt.Sprintf("svc-%d", i), Owner: "local"}, Protocol: model.ProtocolHTTP, ProtocolVersion: model.HTTP1}
		for j := range 10 {
			tg.Targets = append(tg.Targets, model.Target{Address: fmt.Sprintf("127.%d.%d.%d", i/250, i%250, j+1), Port: 9000, Cluster: "local", State: model.TargetActive})
		}
		objs.TargetGroups = append(objs.TargetGroups, tg)
	}
	if _, err := cl.Apply(ctx, &objs); err != nil {
		b.Fatal(err)
	}
	start := testsync.CPUTime()
	i := 0
	for b.Loop() {
		i++
		k := (i * 7919) % n
		res, err := cl.Txn(ctx, &api.TxnRequest{Puts: model.Objects{Services: []model.Service{service(k, fmt.Sprintf("r-%d.v%d.example.com", k, i))}}})
		if err != nil || res.Updated != 1 {
			b.Fatalf("txn: %+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(testsync.CPUTime()-start)/float64(b.N)/1e6, "cpu-ms/op")
}
