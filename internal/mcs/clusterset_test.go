package mcs

import (
	"testing"

	"trellis.dev/trellis/internal/model"
)

// Only TCP ports that say they carry HTTP are served at the clusterset
// name: by appProtocol when set, else by the port's name.
func TestHTTPVersion(t *testing.T) {
	for _, tc := range []struct {
		port model.ExportPort
		want model.ProtocolVersion // "": not served
	}{
		{model.ExportPort{Name: "http", Protocol: "TCP"}, model.HTTP1},
		{model.ExportPort{Name: "http-web", Protocol: "TCP"}, model.HTTP1},
		{model.ExportPort{Name: "grpc", Protocol: "TCP"}, model.GRPC},
		{model.ExportPort{Name: "grpc-api", Protocol: "TCP"}, model.GRPC},
		{model.ExportPort{Name: "h2c", Protocol: "TCP"}, model.HTTP2},
		{model.ExportPort{Protocol: "TCP", AppProtocol: "http"}, model.HTTP1},
		{model.ExportPort{Protocol: "TCP", AppProtocol: "kubernetes.io/ws"}, model.HTTP1},
		{model.ExportPort{Protocol: "TCP", AppProtocol: "kubernetes.io/h2c"}, model.HTTP2},
		{model.ExportPort{Name: "db", Protocol: "TCP", AppProtocol: "grpc"}, model.GRPC},
		{model.ExportPort{Name: "http", Protocol: "TCP", AppProtocol: "postgresql"}, ""}, // appProtocol decides
		{model.ExportPort{Name: "http", Protocol: "UDP"}, ""},
		{model.ExportPort{Name: "tcp", Protocol: "TCP"}, ""},
		{model.ExportPort{Protocol: "TCP"}, ""},
		{model.ExportPort{Name: "httpx", Protocol: "TCP"}, ""},
		{model.ExportPort{Name: "grpcweb", Protocol: "TCP"}, ""},
	} {
		v, ok := HTTPVersion(tc.port)
		if v != tc.want || ok != (tc.want != "") {
			t.Errorf("HTTPVersion(%+v) = %q, %v; want %q", tc.port, v, ok, tc.want)
		}
	}
}
