package manifest

import (
	"reflect"
	"testing"
)

// The documents decode to the objects they name, field for field, and
// concatenated ones stay apart.
func TestDocuments(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []map[string]any
	}{
		{"doc", Doc("v1", "Secret", "name: s, namespace: ns", "type: kubernetes.io/tls\n"), []map[string]any{
			{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s", "namespace": "ns"}, "type": "kubernetes.io/tls"},
		}},
		{"spec", Spec("v1", "Service", "name: svc", "  ports: [{port: 80}]\n"), []map[string]any{
			{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "svc"}, "spec": map[string]any{"ports": []any{map[string]any{"port": float64(80)}}}},
		}},
		{"service network in a namespace", ServiceNetwork("mesh", "shop", "[{name: http, protocol: HTTP, port: 80}]"), []map[string]any{
			{"apiVersion": GatewayAPI, "kind": "GatewayClass", "metadata": map[string]any{"name": "trellis"}, "spec": map[string]any{"controllerName": ServiceNetworkController}},
			{"apiVersion": GatewayAPI, "kind": "Gateway", "metadata": map[string]any{"name": "mesh", "namespace": "shop"}, "spec": map[string]any{
				"gatewayClassName": "trellis",
				"listeners":        []any{map[string]any{"name": "http", "protocol": "HTTP", "port": float64(80)}},
			}},
		}},
		{"edge gateway, block listeners", Class("edge", GatewayController) + Gateway("web", "", "edge", "\n  - name: a\n    protocol: TCP\n    port: 9\n"), []map[string]any{
			{"apiVersion": GatewayAPI, "kind": "GatewayClass", "metadata": map[string]any{"name": "edge"}, "spec": map[string]any{"controllerName": GatewayController}},
			{"apiVersion": GatewayAPI, "kind": "Gateway", "metadata": map[string]any{"name": "web"}, "spec": map[string]any{
				"gatewayClassName": "edge",
				"listeners":        []any{map[string]any{"name": "a", "protocol": "TCP", "port": float64(9)}},
			}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode(tt.yaml)
			if err != nil {
				t.Fatalf("decoding %q: %v", tt.yaml, err)
			}
			var got []map[string]any
			for _, o := range objs {
				got = append(got, o.Object)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%q decodes to\n%v\nwant\n%v", tt.yaml, got, tt.want)
			}
		})
	}
}
