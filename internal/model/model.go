// Package model is the service-network model: the intermediate representation
// that every provider (Kubernetes, files) translates into, that the control
// plane stores and validates, and that every proxy compiles into a route table.
//
// It owns the types, their defaults and their validation. It must not know
// about Kubernetes, storage or the wire: those live in translate, store and
// server. Every object carries its owner (the cluster that wrote it), so that
// the control plane can refuse writes from anyone else and proxies can tell
// which targets are reachable directly and which need a peer hop.
package model

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Kind names a type of stored object.
type Kind string

// The kinds of object the control plane stores.
const (
	KindServiceNetwork Kind = "ServiceNetwork"
	KindService        Kind = "Service"
	KindTargetGroup    Kind = "TargetGroup"
	KindCertificate    Kind = "Certificate"
	KindWorkloadSet    Kind = "WorkloadSet"
	KindServiceExport  Kind = "ServiceExport"
	KindPeer           Kind = "Peer"
	KindCluster        Kind = "Cluster"
)

// Meta is carried by every stored object.
type Meta struct {
	// Name is unique within the object's kind.
	Name string `json:"name"`
	// Owner is the cluster (or host group) that wrote the object. Only that
	// cluster may change or delete it.
	Owner string `json:"owner"`
	// Revision is the store revision at which the object last changed. The
	// control plane sets it; a writer sends the revision it read to make an
	// update conditional (optimistic concurrency), or 0 for an unconditional write.
	Revision int64 `json:"revision,omitempty"`
}

// SourceRef names the user-facing object a model object was translated from,
// so that errors, logs and status can point back at it.
type SourceRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// File is set by the file provider: the file the object was read from.
	File string `json:"file,omitempty"`
}

// NetworkMode says how a network's services are exposed.
type NetworkMode string

const (
	// ModeServiceNetwork is east-west (the `trellis` GatewayClass): every
	// service gets a generated DNS name and is reachable from every cluster
	// associated with the network through that cluster's proxy.
	ModeServiceNetwork NetworkMode = "ServiceNetwork"
	// ModeEdge is north-south (the `trellis-edge` GatewayClass): services are
	// reached at the Gateway's own address by their hostnames only.
	ModeEdge NetworkMode = "Edge"
)

// ServiceNetwork is a logical boundary that services join and clusters
// associate with. In Gateway API terms it is one Gateway.
type ServiceNetwork struct {
	Meta
	Mode NetworkMode `json:"mode"`
	// Domain is the DNS suffix of the generated service names, for example
	// "my-hotel.trellis.internal". Empty in edge mode.
	Domain string `json:"domain,omitempty"`
	// Addresses are the IP addresses an edge network's listeners are served
	// on (its Gateway's status.addresses). Empty in service-network mode,
	// and in edge mode when the provider assigns none: a proxy then serves
	// the network on its own configured bind address.
	Addresses []string `json:"addresses,omitempty"`
	// Auth, when set, turns auth on for the whole network: every request
	// to any of its services must be allowed by its policy too.
	Auth *Auth `json:"auth,omitempty"`
	// AllowedClusters are the clusters besides the owner allowed to
	// associate with the network: to add services to it, to serve host
	// names its services claim, and to read the private keys of the
	// certificates its services serve. The owner always is; empty allows
	// only the owner; "*" (alone) allows every cluster. See Allows.
	AllowedClusters []string `json:"allowedClusters,omitempty"`
	// ForwardedFor is what the network's proxies do with a client's
	// X-Forwarded-For: append its address (the default, also when empty),
	// preserve it as sent, or remove it.
	ForwardedFor ForwardedForMode `json:"forwardedFor,omitempty"`
	// AccessLogs name access-log sinks that get an entry for every request
	// to the network's services (see ValidAccessLog).
	AccessLogs []string   `json:"accessLogs,omitempty"`
	Source     *SourceRef `json:"source,omitempty"`
}

// MaxAccessLogs bounds the sinks of one network or service.
const MaxAccessLogs = 8

// AnyCluster in ServiceNetwork.AllowedClusters allows every cluster.
const AnyCluster = "*"

// Allows reports whether cluster may associate with the network: it is the
// owner, or AllowedClusters names it or is "*".
func (n *ServiceNetwork) Allows(cluster string) bool {
	return cluster == n.Owner || slices.Contains(n.AllowedClusters, cluster) || slices.Contains(n.AllowedClusters, AnyCluster)
}

// ForwardedForMode is what a proxy does with the X-Forwarded-For field of
// a request it forwards, as an AWS Application Load Balancer's
// routing.http.xff_header_processing.mode.
type ForwardedForMode string

const (
	// ForwardedForAppend forwards the client's list with the address of
	// the client this proxy saw appended; without one, that address alone.
	ForwardedForAppend ForwardedForMode = "append"
	// ForwardedForPreserve forwards the client's list as sent, and none
	// when it sent none.
	ForwardedForPreserve ForwardedForMode = "preserve"
	// ForwardedForRemove forwards no X-Forwarded-For at all.
	ForwardedForRemove ForwardedForMode = "remove"
)

// Auth turns auth on at one level, a service network or a service: a
// request passes that level only if Policy explicitly allows it, and an
// explicit Deny at either level refuses it whatever the other says (Lattice's
// AWS_IAM auth type). A level without Auth lets every request through.
type Auth struct {
	// Policy is the policy document: the IAM-style JSON of internal/auth.
	Policy json.RawMessage `json:"policy"`
	// Source is the object the policy came from (a trellis.dev
	// AuthPolicy), for messages.
	Source *SourceRef `json:"source,omitempty"`
}

// Protocol is a listener or target-group protocol.
type Protocol string

// Protocols. Not every protocol is valid everywhere: see Validate.
const (
	ProtocolHTTP           Protocol = "HTTP"
	ProtocolHTTPS          Protocol = "HTTPS"
	ProtocolTLSPassthrough Protocol = "TLS_PASSTHROUGH"
	ProtocolTCP            Protocol = "TCP"
)

// ProtocolVersion is the HTTP version spoken to a target group's targets.
type ProtocolVersion string

// Protocol versions, as Lattice names them.
const (
	HTTP1 ProtocolVersion = "HTTP1"
	HTTP2 ProtocolVersion = "HTTP2"
	GRPC  ProtocolVersion = "GRPC"
)

// Service is one routable service in a network: a set of listeners sharing one
// ordered list of rules. It is the model of one route (HTTPRoute, GRPCRoute).
type Service struct {
	Meta
	// Network is the ServiceNetwork this service belongs to.
	Network string `json:"network"`
	// DNSName is the generated name clients use, e.g.
	// "inventory-default.my-hotel.trellis.internal". Empty in edge mode.
	DNSName string `json:"dnsName,omitempty"`
	// CustomDomains are further host names the service answers to. A name may
	// start with "*." to match any single-or-more-label prefix, as in the
	// Gateway API.
	CustomDomains []string   `json:"customDomains,omitempty"`
	Listeners     []Listener `json:"listeners"`
	// Rules are not matched in list order: the proxy ranks every match of
	// every rule of every service sharing a host name by Gateway API
	// precedence (path kind and length, method, header count, query count),
	// then by the oldest CreatedAt, then Source namespace/name, and only then
	// by rule order. With RulesInOrder they are.
	Rules []Rule `json:"rules"`
	// RulesInOrder matches Rules in list order, the first rule whose match
	// holds answering, as VPC Lattice ranks a listener's rules by priority
	// (the Lattice API sets it). A host name one of these services answers
	// to is matched service by service (oldest first), each service's rules
	// in its own order.
	RulesInOrder bool      `json:"rulesInOrder,omitempty"`
	CreatedAt    time.Time `json:"createdAt,omitzero"`
	// Auth, when set, turns auth on for this service (see Auth).
	Auth *Auth `json:"auth,omitempty"`
	// AccessLogs name access-log sinks that get an entry for every request
	// to this service (see ValidAccessLog), besides its network's.
	AccessLogs []string   `json:"accessLogs,omitempty"`
	Source     *SourceRef `json:"source,omitempty"`
}

// Hostnames returns every name the service answers to: its DNS name first,
// then its custom domains.
func (s *Service) Hostnames() []string {
	names := make([]string, 0, 1+len(s.CustomDomains))
	if s.DNSName != "" {
		names = append(names, s.DNSName)
	}
	return append(names, s.CustomDomains...)
}

// HostnameClaim is one host name a service answers to, and the field of
// the service that names it ("dnsName", "customDomains[1]",
// "listeners[0].hostnames[2]").
type HostnameClaim struct {
	Field string
	Name  string
}

// HostnameClaims returns every host name the service names, on any
// listener, with the field naming it.
func (s *Service) HostnameClaims() []HostnameClaim {
	var out []HostnameClaim
	if s.DNSName != "" {
		out = append(out, HostnameClaim{"dnsName", s.DNSName})
	}
	for i, d := range s.CustomDomains {
		out = append(out, HostnameClaim{fmt.Sprintf("customDomains[%d]", i), d})
	}
	for i, l := range s.Listeners {
		for j, h := range l.Hostnames {
			out = append(out, HostnameClaim{fmt.Sprintf("listeners[%d].hostnames[%d]", i, j), h})
		}
	}
	return out
}

// HostnamesOverlap reports whether some host name matches both a and b:
// they are equal, or one is a wildcard covering the other.
func HostnamesOverlap(a, b string) bool { return HostnameWithin(a, b) || HostnameWithin(b, a) }

// Listener is a port and protocol on which a service is served.
type Listener struct {
	Name     string   `json:"name"`
	Port     int32    `json:"port"`
	Protocol Protocol `json:"protocol"`
	// Certificates names the Certificate objects an HTTPS listener serves,
	// chosen by SNI. Required for HTTPS, empty for other protocols.
	Certificates []string `json:"certificates,omitempty"`
	// Hostname is the Gateway listener's own host name (edge mode), which
	// may start with "*.". A request is served by the most specific
	// listener of its port whose Hostname matches its Host, as the Gateway
	// API's listener isolation requires: an exact name first, then the
	// longest wildcard, then the listeners with no Hostname. Empty takes
	// every host the port's other listeners do not.
	Hostname string `json:"hostname,omitempty"`
	// Hostnames are the host names the service answers to on this
	// listener (edge mode: the route's hostnames intersected with the
	// listener's Hostname). Empty means the service's Hostnames(); an edge
	// service with neither answers to every host its listener takes.
	Hostnames []string `json:"hostnames,omitempty"`
}

// Rule is an ordered list of matches (any one may match), filters and an
// action. A rule with no matches matches every request.
type Rule struct {
	Name    string  `json:"name,omitempty"`
	Matches []Match `json:"matches,omitempty"`
	// Filters run in order on every request the rule matches, before the
	// action.
	Filters []Filter `json:"filters,omitempty"`
	// Action is what the rule does after its filters. It may be empty only
	// when a redirect filter answers every request.
	Action             Action              `json:"action,omitzero"`
	Timeouts           *Timeouts           `json:"timeouts,omitempty"`
	Retry              *Retry              `json:"retry,omitempty"`
	SessionPersistence *SessionPersistence `json:"sessionPersistence,omitempty"`
	// Locality is how the rule's import backends pick among clusters:
	// empty spreads requests over every exporting cluster (by the
	// import's cluster weights); LocalFirst keeps them on the proxy's own
	// cluster's healthy targets while there are any.
	Locality Locality `json:"locality,omitempty"`
}

// Locality is how a rule's import backends choose a cluster.
type Locality string

// LocalityLocalFirst sends a rule's requests for an import to the proxy's
// own cluster's targets while any is healthy, and only otherwise to other
// clusters', by the import's cluster weights among them.
const LocalityLocalFirst Locality = "LocalFirst"

// Match is a conjunction: every condition set in it must hold.
type Match struct {
	Path        *PathMatch   `json:"path,omitempty"`
	Method      string       `json:"method,omitempty"`
	Headers     []ValueMatch `json:"headers,omitempty"`
	QueryParams []ValueMatch `json:"queryParams,omitempty"`
}

// PathMatchType is how a path is compared.
type PathMatchType string

// Path match types, named as in the Gateway API.
const (
	PathExact             PathMatchType = "Exact"
	PathPrefix            PathMatchType = "PathPrefix"
	PathRegularExpression PathMatchType = "RegularExpression"
)

// PathMatch compares the request path.
type PathMatch struct {
	Type  PathMatchType `json:"type"`
	Value string        `json:"value"`
}

// ValueMatchType is how a header or query value is compared.
type ValueMatchType string

// Value match types, named as in the Gateway API.
const (
	ValueExact             ValueMatchType = "Exact"
	ValueRegularExpression ValueMatchType = "RegularExpression"
)

// ValueMatch compares one header (name case-insensitive) or query parameter
// (name case-sensitive).
type ValueMatch struct {
	Type  ValueMatchType `json:"type"`
	Name  string         `json:"name"`
	Value string         `json:"value"`
}

// Action is what a rule does. Exactly one member is set.
type Action struct {
	Forward       *ForwardAction       `json:"forward,omitempty"`
	FixedResponse *FixedResponseAction `json:"fixedResponse,omitempty"`
}

// ForwardAction splits requests across target groups by weight.
type ForwardAction struct {
	Backends []WeightedTargetGroup `json:"backends"`
}

// WeightedTargetGroup is one share of a forward action: the targets of one
// target group of the owner's cluster (TargetGroup), or those of a
// multi-cluster import (Import). At most one is set. A backend with
// neither stands for an invalid reference: its share of requests is
// answered with 500, as the Gateway API requires.
type WeightedTargetGroup struct {
	TargetGroup string `json:"targetGroup"`
	// Import, when set, makes the backend every exporting cluster's
	// endpoints of one exported Service port (a route's ServiceImport
	// backendRef, GEP-1748). Proxies resolve it against the snapshot's
	// ServiceExports when they compile.
	Import *ImportRef `json:"import,omitempty"`
	Weight int32      `json:"weight"`
	// Filters run, after the rule's, only on requests sent to this backend.
	Filters []Filter `json:"filters,omitempty"`
}

// ImportRef names the endpoints of one port of a multi-cluster service: the
// targets of that port in every cluster's ServiceExport of Namespace/Name
// whose export has a port numbered Port. An export without the port, or no
// export at all, contributes no targets; with none at all the backend's
// share is answered as a target group without targets is.
type ImportRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port"`
	// Protocol and ProtocolVersion say how the proxy speaks to the
	// targets, as a target group's do: HTTP with HTTP1, HTTP2 or GRPC
	// (chosen by the route kind and the port's appProtocol), or TCP for
	// TLS passthrough.
	Protocol        Protocol        `json:"protocol"`
	ProtocolVersion ProtocolVersion `json:"protocolVersion"`
	// ClusterWeights, when not empty, splits the backend's share among the
	// exporting clusters by weight: a cluster not listed, or listed with
	// weight 0, gets none of it. Empty picks every exporting cluster's
	// targets alike.
	ClusterWeights map[string]int32 `json:"clusterWeights,omitempty"`
	// Hostname, when set, keeps only the targets of the endpoint of that
	// hostname in each exporting cluster (ServiceExport.Hostnames): the
	// proxies' per-pod clusterset names set it with one cluster weighted.
	Hostname string `json:"hostname,omitempty"`
}

// FixedResponseAction answers without forwarding.
type FixedResponseAction struct {
	StatusCode int `json:"statusCode"`
}

// TargetGroup is a set of targets that receive traffic the same way.
type TargetGroup struct {
	Meta
	Protocol        Protocol        `json:"protocol"`
	ProtocolVersion ProtocolVersion `json:"protocolVersion"`
	// Port is the default target port, used by targets with no port of their own.
	Port        int32       `json:"port,omitempty"`
	HealthCheck HealthCheck `json:"healthCheck"`
	Targets     []Target    `json:"targets,omitempty"`
	Source      *SourceRef  `json:"source,omitempty"`
}

// TargetState is the control plane's view of a target's lifecycle. Health as
// observed by active checks is the proxy's business, not the model's.
type TargetState string

const (
	// TargetActive targets take new requests.
	TargetActive TargetState = "Active"
	// TargetDraining targets take no new requests; requests already in
	// flight to them finish.
	TargetDraining TargetState = "Draining"
)

// Target is one endpoint.
type Target struct {
	Address string `json:"address"`
	// Port overrides the target group's port when non-zero.
	Port int32 `json:"port,omitempty"`
	// Cluster is the cluster whose network the address belongs to. A proxy in
	// another cluster reaches it through that cluster's proxy (a peer hop),
	// which is what makes overlapping pod CIDRs work. It is required and
	// must be the target group's owner: a cluster names targets only in
	// its own network, so it cannot send another cluster's proxies to an
	// address of its choosing there.
	Cluster string      `json:"cluster"`
	State   TargetState `json:"state"`
}

// EffectivePort is the port to dial for t in group tg.
func (t Target) EffectivePort(tg *TargetGroup) int32 {
	if t.Port != 0 {
		return t.Port
	}
	return tg.Port
}

// HealthCheck configures active health checks of a target group's targets.
// Zero fields take the Lattice defaults (see Defaulted).
type HealthCheck struct {
	// Enabled defaults to true for HTTP1 target groups and false for HTTP2,
	// GRPC and TCP ones, as in Lattice.
	Enabled                 *bool           `json:"enabled,omitempty"`
	Protocol                Protocol        `json:"protocol,omitempty"`
	ProtocolVersion         ProtocolVersion `json:"protocolVersion,omitempty"`
	Port                    int32           `json:"port,omitempty"`
	Path                    string          `json:"path,omitempty"`
	IntervalSeconds         int32           `json:"intervalSeconds,omitempty"`
	TimeoutSeconds          int32           `json:"timeoutSeconds,omitempty"`
	HealthyThresholdCount   int32           `json:"healthyThresholdCount,omitempty"`
	UnhealthyThresholdCount int32           `json:"unhealthyThresholdCount,omitempty"`
	// Matcher lists the healthy status codes: "200", "200,202", "200-299".
	Matcher string `json:"matcher,omitempty"`
}

// The Lattice health-check defaults.
const (
	DefaultHealthCheckPath     = "/"
	DefaultHealthCheckInterval = 30
	DefaultHealthCheckTimeout  = 5
	DefaultHealthyThreshold    = 5
	DefaultUnhealthyThreshold  = 2
	DefaultHealthCheckMatcher  = "200"
	DefaultHealthCheckProtocol = ProtocolHTTP
	DefaultHealthCheckVersion  = HTTP1
)

// Defaulted returns h with every unset field given its Lattice default for a
// target group speaking version v with protocol p.
func (h HealthCheck) Defaulted(p Protocol, v ProtocolVersion) HealthCheck {
	if h.Enabled == nil {
		on := p != ProtocolTCP && (v == "" || v == HTTP1)
		h.Enabled = &on
	}
	if h.Protocol == "" {
		h.Protocol = DefaultHealthCheckProtocol
	}
	if h.ProtocolVersion == "" {
		h.ProtocolVersion = DefaultHealthCheckVersion
	}
	if h.Path == "" {
		h.Path = DefaultHealthCheckPath
	}
	if h.IntervalSeconds == 0 {
		h.IntervalSeconds = DefaultHealthCheckInterval
	}
	if h.TimeoutSeconds == 0 {
		h.TimeoutSeconds = DefaultHealthCheckTimeout
	}
	if h.HealthyThresholdCount == 0 {
		h.HealthyThresholdCount = DefaultHealthyThreshold
	}
	if h.UnhealthyThresholdCount == 0 {
		h.UnhealthyThresholdCount = DefaultUnhealthyThreshold
	}
	if h.Matcher == "" {
		h.Matcher = DefaultHealthCheckMatcher
	}
	return h
}

// Snapshot is a consistent view of every object at one store revision. It is
// what a proxy compiles: the control plane's watch stream is turned into a
// sequence of snapshots by the client, one per revision.
type Snapshot struct {
	Revision int64 `json:"revision"`
	// Store is the identity of the control-plane store the revision belongs
	// to; revisions of different stores are not comparable.
	Store string `json:"store,omitempty"`
	Objects
}
