package model

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// ServiceExport is one cluster's export of a Kubernetes Service to the
// clusters of the control plane (a Multi-Cluster Services ServiceExport):
// the Service's ports, type and properties, and its ready endpoints. The
// exports of one namespace and name from every cluster are one service
// (namespace sameness); package mcs merges them into the import every
// cluster sees, and proxies reach the endpoints of another cluster through
// that cluster's proxy. Routes reach the endpoints through backends naming
// an ImportRef, and the built-in nameserver answers the service's
// svc.clusterset.local name. Its owner is the exporting cluster.
type ServiceExport struct {
	Meta
	Namespace string `json:"namespace"`
	// Service is the exported Service's name (and the ServiceExport's).
	Service string `json:"service"`
	// Type is ClusterSetIP, or Headless for a Service without a cluster IP.
	Type ExportType `json:"type"`
	// ExportedAt is when the control plane first stored the export: the
	// oldest export wins a conflict. The control plane sets it and keeps
	// it across updates; a value the exporting cluster sends is ignored,
	// so that no cluster can make its export older than another's. Zero
	// (an export not stored yet) is younger than every stored one.
	ExportedAt time.Time    `json:"exportedAt,omitzero"`
	Ports      []ExportPort `json:"ports"`
	// The Service's properties an import copies (from the oldest export
	// when exports disagree). Empty values are Kubernetes' defaults.
	SessionAffinity        string `json:"sessionAffinity,omitempty"`
	SessionAffinityTimeout int32  `json:"sessionAffinityTimeoutSeconds,omitempty"`
	InternalTrafficPolicy  string `json:"internalTrafficPolicy,omitempty"`
	TrafficDistribution    string `json:"trafficDistribution,omitempty"`
	// ExportedLabels and ExportedAnnotations are copied onto the import.
	ExportedLabels      map[string]string `json:"exportedLabels,omitempty"`
	ExportedAnnotations map[string]string `json:"exportedAnnotations,omitempty"`
	Source              *SourceRef        `json:"source,omitempty"`
	// Hostnames are the ready endpoints of a Headless export that have a
	// hostname (a StatefulSet's pods: EndpointSlice endpoints[].hostname),
	// each with its addresses among the ports' targets. Every proxy serves
	// "<hostname>.<owner>.<service>.<namespace>.svc.clusterset.local" and
	// sends it to those addresses of the owner's cluster only; the owner is
	// in the name, so no cluster can name another cluster's pod. At most
	// MaxExportHostnames, sorted by hostname.
	Hostnames []ExportHostname `json:"hostnames,omitempty"`
}

// ExportHostname is one endpoint of an export that has a hostname: an RFC
// 1123 label, unique in the export, and the endpoint's addresses (one per
// IP family, at most MaxHostnameAddresses).
type ExportHostname struct {
	Hostname  string   `json:"hostname"`
	Addresses []string `json:"addresses"`
}

// Bounds of an export's hostnames: every proxy of every cluster serves a
// name per hostname, so one cluster's export must not make them unbounded.
const (
	MaxExportHostnames   = 1000
	MaxHostnameAddresses = 2
)

// ExportType is the type of an exported service.
type ExportType string

// Export types, as the MCS API names them.
const (
	ExportClusterSetIP ExportType = "ClusterSetIP"
	ExportHeadless     ExportType = "Headless"
)

// ExportPort is one port of an exported Service and the endpoints serving it
// in the exporting cluster.
type ExportPort struct {
	Name        string `json:"name,omitempty"`
	Protocol    string `json:"protocol"`
	AppProtocol string `json:"appProtocol,omitempty"`
	Port        int32  `json:"port"`
	// Targets are the endpoints (address and target port) in the exporting
	// cluster; their Cluster is the owner.
	Targets []Target `json:"targets,omitempty"`
}

// ExportName is the name of cluster's export of Service namespace/service.
func ExportName(cluster, namespace, service string) string {
	return namespace + "." + service + "." + cluster
}

// ObjectMeta implements Object.
func (e *ServiceExport) ObjectMeta() *Meta { return &e.Meta }

// ObjectKind implements Object.
func (*ServiceExport) ObjectKind() Kind { return KindServiceExport }

// Validate checks the export's name, type, ports and targets. Targets must
// be in the exporting cluster: a cluster publishes only its own endpoints.
func (e *ServiceExport) Validate() error {
	var f fieldErrs
	validateMeta(&f, &e.Meta)
	switch {
	case !ValidLabel(e.Namespace):
		f.add("namespace", "%q is not a valid namespace name", e.Namespace)
	case !ValidLabel(e.Service):
		f.add("service", "%q is not a valid Service name", e.Service)
	case e.Owner != "" && e.Name != ExportName(e.Owner, e.Namespace, e.Service):
		f.add("name", "must be %q, the namespace, the Service and the owner", ExportName(e.Owner, e.Namespace, e.Service))
	}
	switch e.Type {
	case ExportClusterSetIP, ExportHeadless:
	default:
		f.add("type", "%q is not ClusterSetIP or Headless", e.Type)
	}
	seen := map[string]bool{}
	for i, p := range e.Ports {
		pf := fmt.Sprintf("ports[%d]", i)
		if p.Port < 1 || p.Port > 65535 {
			f.add(pf+".port", "%d is not a port", p.Port)
		}
		switch p.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			f.add(pf+".protocol", "%q is not TCP, UDP or SCTP", p.Protocol)
		}
		if p.Name != "" && !ValidLabel(p.Name) {
			f.add(pf+".name", "%q is not a valid port name", p.Name)
		}
		if key := p.Name + "/" + p.Protocol + "/" + fmt.Sprint(p.Port); seen[key] {
			f.add(pf, "duplicate port")
		} else {
			seen[key] = true
		}
		for j, t := range p.Targets {
			tf := fmt.Sprintf("%s.targets[%d]", pf, j)
			if a, err := netip.ParseAddr(t.Address); err != nil || a.Zone() != "" {
				f.add(tf+".address", "%q is not an IP address", t.Address)
			}
			if t.Port < 1 || t.Port > 65535 {
				f.add(tf+".port", "%d is not a port", t.Port)
			}
			if t.Cluster != e.Owner {
				f.add(tf+".cluster", "must be the exporting cluster %q", e.Owner)
			}
			switch t.State {
			case TargetActive, TargetDraining:
			default:
				f.add(tf+".state", "%q is not Active or Draining", t.State)
			}
		}
	}
	validateHostnames(&f, e)
	return f.list.err()
}

// validateHostnames checks an export's hostnames: only a Headless export
// has them, each a label named once with one or two IP addresses.
func validateHostnames(f *fieldErrs, e *ServiceExport) {
	switch {
	case len(e.Hostnames) == 0:
		return
	case e.Type != ExportHeadless:
		f.add("hostnames", "only a Headless export has hostnames, not a %s one", e.Type)
		return
	case len(e.Hostnames) > MaxExportHostnames:
		f.add("hostnames", "%d hostnames; at most %d", len(e.Hostnames), MaxExportHostnames)
		return
	}
	seen := make(map[string]bool, len(e.Hostnames))
	for i, h := range e.Hostnames {
		hf := fmt.Sprintf("hostnames[%d]", i)
		switch {
		case !ValidLabel(h.Hostname):
			f.add(hf+".hostname", "%q is not an RFC 1123 label", h.Hostname)
		case seen[h.Hostname]:
			f.add(hf+".hostname", "%q is named twice", h.Hostname)
		}
		seen[h.Hostname] = true
		if n := len(h.Addresses); n == 0 || n > MaxHostnameAddresses {
			f.add(hf+".addresses", "%d addresses; 1 to %d", n, MaxHostnameAddresses)
			continue
		}
		for j, a := range h.Addresses {
			if ip, err := netip.ParseAddr(a); err != nil || ip.Zone() != "" {
				f.add(fmt.Sprintf("%s.addresses[%d]", hf, j), "%q is not an IP address", a)
			}
		}
	}
}

// ValidLabel reports whether s is an RFC 1123 label, as namespace, Service
// and port names are: at most 63 lower-case alphanumerics or '-', starting
// and ending alphanumeric.
func ValidLabel(s string) bool {
	return len(s) <= 63 && !strings.Contains(s, ".") && ValidName(s)
}
