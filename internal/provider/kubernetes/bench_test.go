package kubernetes_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/internal/model"
	"trellis.dev/trellis/internal/provider/file"
	"trellis.dev/trellis/test/testsync"
)

// BenchmarkThousandRoutes creates 1,000 HTTPRoutes on one edge Gateway (16
// clients at once) and measures the time from the first create until every
// route is Accepted in its status and served by the proxy (issue 15's goal:
// under 3 s). It reports the apiserver's share apart, the creates
// themselves (first create to last create returned: s-created), and the
// controller's, from the last create returned to every route Accepted
// (s-ctl-accepted) and served (s-ctl-served). Run it with
//
//	go test ./internal/provider/kubernetes -run '^$' -bench ThousandRoutes -benchtime 1x
func BenchmarkThousandRoutes(b *testing.B) {
	const routes = 1000
	for range b.N {
		b.StopTimer()
		e := newEnv(b)
		e.proxy(b, proxyBind)
		serveName(b, e, "198.18.63.1:8080", "bench")
		e.create(b, classes+edgeGateway("bench")+backend("bench", "web", "198.18.63.1"))
		url := e.gatewayURL(b, "bench", "web")

		var docs []client.Object
		for i := range routes {
			in, err := file.Parse("route.yaml", fmt.Appendf(nil, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-%d, namespace: bench}
spec:
  parentRefs: [{name: web}]
  hostnames: [r-%d.bench.example]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`, i, i))
			if err != nil {
				b.Fatal(err)
			}
			docs = append(docs, &in.HTTPRoutes[0])
		}
		b.StartTimer()
		begin := time.Now()
		var wg sync.WaitGroup
		work := make(chan client.Object)
		for range 16 {
			wg.Go(func() {
				for o := range work {
					if err := e.kc.Create(context.Background(), o); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for _, o := range docs {
			work <- o
		}
		close(work)
		wg.Wait()
		created := time.Since(begin)
		lastCreate := time.Now()

		testsync.Eventually(b, 60*time.Second, "every route Accepted", func() error {
			var list gatewayv1.HTTPRouteList
			if err := e.kc.List(context.Background(), &list, client.InNamespace("bench")); err != nil {
				return err
			}
			n := 0
			for _, r := range list.Items {
				for _, p := range r.Status.Parents {
					if hasCondition(p.Conditions, "Accepted", True, "Accepted", r.Generation) == nil {
						n++
					}
				}
			}
			if n != routes {
				return fmt.Errorf("%d of %d accepted", n, routes)
			}
			return nil
		})
		accepted := time.Since(begin)
		ctlAccepted := time.Since(lastCreate)
		hc := e.NS.HTTPClient(5 * time.Second)
		for i := routes - 1; i >= 0; i-- {
			host := fmt.Sprintf("r-%d.bench.example", i)
			testsync.Eventually(b, 60*time.Second, host+" served", func() error { _, err := get(hc, url, host); return err })
		}
		served := time.Since(begin)
		ctlServed := time.Since(lastCreate)
		b.StopTimer()
		objs, _, err := e.cp.List(context.Background(), model.KindService)
		if err != nil || len(objs) != routes {
			b.Fatalf("control plane holds %d services (%v)", len(objs), err)
		}
		st := e.rec.Stats()
		b.ReportMetric(created.Seconds(), "s-created")
		b.ReportMetric(accepted.Seconds(), "s-accepted")
		b.ReportMetric(served.Seconds(), "s-served")
		b.ReportMetric(ctlAccepted.Seconds(), "s-ctl-accepted")
		b.ReportMetric(ctlServed.Seconds(), "s-ctl-served")
		b.ReportMetric(float64(st.Translate.Microseconds())/1000, "ms-translate")
		b.Logf("1,000 routes: created in %v (the apiserver's share); then all Accepted after %v more, all served after %v more (the controller's and proxy's share); "+
			"%d reconciles, %d transactions, %d status writes, last translation %v",
			created.Round(time.Millisecond), ctlAccepted.Round(time.Millisecond), ctlServed.Round(time.Millisecond),
			st.Reconciles, st.Sent, st.StatusWrites, st.Translate)
	}
}
