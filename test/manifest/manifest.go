// Package manifest writes the Kubernetes YAML documents that tests feed to
// Trellis (the file provider, the translator, a test apiserver), so that a
// test states only the fields its case is about, and decodes such a stream
// into objects. It must not import Trellis packages, so that any test may
// use it.
package manifest

import (
	"errors"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// GatewayAPI is the apiVersion of the Gateway API kinds.
const GatewayAPI = "gateway.networking.k8s.io/v1"

// Doc is one YAML document: a "---" line, apiVersion, kind, metadata (the
// inside of its flow mapping, as "name: r, namespace: other") and then rest,
// the other top-level fields as written, each line ending in "\n".
func Doc(apiVersion, kind, metadata, rest string) string {
	return "---\napiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata: {" + metadata + "}\n" + rest
}

// Spec is Doc for a kind whose one other field is spec: fields are the
// lines of spec, each indented by two spaces.
func Spec(apiVersion, kind, metadata, fields string) string {
	return Doc(apiVersion, kind, metadata, "spec:\n"+fields)
}

// The controllerNames of Trellis's two GatewayClasses.
const (
	ServiceNetworkController = "trellis.dev/service-network"
	GatewayController        = "trellis.dev/gateway"
)

// Class is a GatewayClass name of controller.
func Class(name, controller string) string {
	return Spec(GatewayAPI, "GatewayClass", "name: "+name, "  controllerName: "+controller+"\n")
}

// Gateway is a Gateway of class named name, in namespace (the default one
// when ""), whose spec.listeners is the YAML value listeners (a flow
// sequence, or block lines starting with "\n").
func Gateway(name, namespace, class, listeners string) string {
	meta := "name: " + name
	if namespace != "" {
		meta += ", namespace: " + namespace
	}
	return Spec(GatewayAPI, "Gateway", meta, "  gatewayClassName: "+class+"\n  listeners: "+listeners+"\n")
}

// ServiceNetwork is the GatewayClass "trellis" of the service-network
// controller and a Gateway of it (see Gateway).
func ServiceNetwork(name, namespace, listeners string) string {
	return Class("trellis", ServiceNetworkController) + Gateway(name, namespace, "trellis", listeners)
}

// Decode reads a YAML stream into its objects, in order, leaving out empty
// documents.
func Decode(stream string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}
