package conformance_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// observer remembers the last status of every Gateway API object the
// implementation reported on during a suite run. The suite deletes what it
// created when it ends, pass or fail; this keeps what the implementation
// said about it, for whoever has to find out why a test failed.
type observer struct {
	cl client.Client

	mu   sync.Mutex
	last map[string]string // "Kind ns/name" → status as YAML
}

// observe polls until the returned function is called, which writes what
// was seen to path.
func observe(t *testing.T, cl client.Client, path string) (stop func()) {
	o := &observer{cl: cl, last: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	var done sync.WaitGroup
	done.Go(func() {
		for {
			o.poll(ctx)
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	})
	return func() {
		cancel()
		done.Wait()
		if err := os.WriteFile(path, o.dump(), 0o644); err != nil {
			t.Errorf("writing observed status: %v", err)
			return
		}
		t.Logf("last status of every Gateway API object: %s", path)
	}
}

func (o *observer) poll(ctx context.Context) {
	record := func(kind string, obj client.Object, status any) {
		if !strings.HasPrefix(obj.GetNamespace(), "gateway-conformance") && obj.GetNamespace() != "" {
			return
		}
		data, err := yaml.Marshal(map[string]any{"generation": obj.GetGeneration(), "status": status})
		if err != nil {
			return
		}
		o.mu.Lock()
		o.last[fmt.Sprintf("%s %s/%s", kind, obj.GetNamespace(), obj.GetName())] = string(data)
		o.mu.Unlock()
	}
	var classes gatewayv1.GatewayClassList
	if o.cl.List(ctx, &classes) == nil {
		for i := range classes.Items {
			record("GatewayClass", &classes.Items[i], classes.Items[i].Status)
		}
	}
	var gateways gatewayv1.GatewayList
	if o.cl.List(ctx, &gateways) == nil {
		for i := range gateways.Items {
			record("Gateway", &gateways.Items[i], gateways.Items[i].Status)
		}
	}
	var https gatewayv1.HTTPRouteList
	if o.cl.List(ctx, &https) == nil {
		for i := range https.Items {
			record("HTTPRoute", &https.Items[i], https.Items[i].Status)
		}
	}
	var grpcs gatewayv1.GRPCRouteList
	if o.cl.List(ctx, &grpcs) == nil {
		for i := range grpcs.Items {
			record("GRPCRoute", &grpcs.Items[i], grpcs.Items[i].Status)
		}
	}
	var tlss gatewayv1.TLSRouteList
	if o.cl.List(ctx, &tlss) == nil {
		for i := range tlss.Items {
			record("TLSRoute", &tlss.Items[i], tlss.Items[i].Status)
		}
	}
}

// dump renders everything seen, sorted by object.
func (o *observer) dump() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	keys := make([]string, 0, len(o.last))
	for k := range o.last {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "--- # %s\n%s", k, o.last[k])
	}
	return []byte(b.String())
}
