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

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
	for _, kind := range []string{"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute"} {
		var list unstructured.UnstructuredList
		list.SetAPIVersion(gatewayv1.GroupVersion.String())
		list.SetKind(kind + "List")
		if o.cl.List(ctx, &list) != nil {
			continue
		}
		for _, obj := range list.Items {
			if ns := obj.GetNamespace(); ns != "" && !strings.HasPrefix(ns, "gateway-conformance") {
				continue
			}
			data, err := yaml.Marshal(map[string]any{"generation": obj.GetGeneration(), "status": obj.Object["status"]})
			if err != nil {
				continue
			}
			o.mu.Lock()
			o.last[fmt.Sprintf("%s %s/%s", kind, obj.GetNamespace(), obj.GetName())] = string(data)
			o.mu.Unlock()
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
