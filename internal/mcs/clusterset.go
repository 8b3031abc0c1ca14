package mcs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"trellis.dev/trellis/internal/model"
)

// ClustersetHost is the clusterset name of Service namespace/name:
// "<name>.<namespace>.svc.clusterset.local".
func ClustersetHost(namespace, name string) string {
	return name + "." + namespace + ".svc.clusterset.local"
}

// PodHost is the per-pod name of the endpoint with hostname in cluster of
// Service namespace/name (a StatefulSet's pod of a headless Service):
// "<hostname>.<cluster>.<name>.<namespace>.svc.clusterset.local", as the
// MCS API names it. Every proxy resolves it to itself and sends its
// requests to that endpoint only.
func PodHost(hostname, cluster, namespace, name string) string {
	return hostname + "." + cluster + "." + ClustersetHost(namespace, name)
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

// ClusterWeightsAnnotation on a ServiceImport splits each route's share of
// the import among the exporting clusters by weight: "east=90,west=10".
// A cluster it does not list gets no share. Without it every exporting
// cluster's endpoints are picked alike. At the clusterset name (served
// without a route) the weights are the merged import's exported
// annotation, the same in every cluster.
const ClusterWeightsAnnotation = "trellis.dev/cluster-weights"

// maxClusterWeight is the largest per-cluster weight, as for backends.
const maxClusterWeight = 1_000_000

// ParseClusterWeights reads the ClusterWeightsAnnotation of a
// ServiceImport's annotations: comma-separated cluster=weight pairs, each
// cluster a valid cluster name named once, each weight in 0-1000000, and at
// least one weight above 0. It returns nil when the annotation is absent.
func ParseClusterWeights(annotations map[string]string) (map[string]int32, error) {
	v, ok := annotations[ClusterWeightsAnnotation]
	if !ok {
		return nil, nil
	}
	if strings.TrimSpace(v) == "" {
		return nil, errors.New(`is empty; write cluster=weight pairs ("east=90,west=10") or remove it`)
	}
	out := map[string]int32{}
	positive := false
	for i, pair := range strings.Split(v, ",") {
		cluster, weight, ok := strings.Cut(strings.TrimSpace(pair), "=")
		cluster, weight = strings.TrimSpace(cluster), strings.TrimSpace(weight)
		switch {
		case !ok:
			return nil, fmt.Errorf("entry %d %q is not cluster=weight", i+1, strings.TrimSpace(pair))
		case !model.ValidClusterName(cluster):
			return nil, fmt.Errorf("entry %d: %q is not a valid cluster name", i+1, cluster)
		}
		if _, dup := out[cluster]; dup {
			return nil, fmt.Errorf("entry %d: cluster %q is named twice", i+1, cluster)
		}
		w, err := strconv.ParseInt(weight, 10, 32)
		if err != nil || w < 0 || w > maxClusterWeight {
			return nil, fmt.Errorf("entry %d: weight %q of cluster %q is not a whole number in 0-%d", i+1, weight, cluster, maxClusterWeight)
		}
		out[cluster] = int32(w)
		positive = positive || w > 0
	}
	if !positive {
		return nil, errors.New("every weight is 0; at least one cluster needs a weight above 0")
	}
	return out, nil
}
