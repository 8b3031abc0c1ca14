package mcs

import (
	"strings"

	"trellis.dev/trellis/internal/model"
)

// ClustersetHost is the clusterset name of Service namespace/name:
// "<name>.<namespace>.svc.clusterset.local".
func ClustersetHost(namespace, name string) string {
	return name + "." + namespace + ".svc.clusterset.local"
}

// HTTPVersion is how a proxy serves an import's port at its clusterset
// name without a route, and speaks to the exporting clusters' endpoints:
// only TCP ports that say they carry HTTP are served. The port's
// appProtocol decides when set ("http" and "kubernetes.io/ws": HTTP/1.1,
// "kubernetes.io/h2c": HTTP/2 without TLS, "grpc": gRPC; any other value
// is not served). Without one, the port's name does: "http" or "http-*"
// HTTP/1.1, "h2c" or "h2c-*" HTTP/2, "grpc" or "grpc-*" gRPC. A port with
// neither hint is not served: Trellis carries HTTP between clusters, not
// raw TCP, and taking an unknown port for HTTP would answer a database's
// client with HTTP errors. A route naming the import still serves any TCP
// port.
func HTTPVersion(p model.ExportPort) (model.ProtocolVersion, bool) {
	if p.Protocol != "TCP" {
		return "", false
	}
	switch p.AppProtocol {
	case "http", "kubernetes.io/ws":
		return model.HTTP1, true
	case "kubernetes.io/h2c":
		return model.HTTP2, true
	case "grpc":
		return model.GRPC, true
	case "":
	default:
		return "", false
	}
	for prefix, v := range map[string]model.ProtocolVersion{"http": model.HTTP1, "h2c": model.HTTP2, "grpc": model.GRPC} {
		if p.Name == prefix || strings.HasPrefix(p.Name, prefix+"-") {
			return v, true
		}
	}
	return "", false
}
