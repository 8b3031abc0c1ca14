// Package api holds the JSON shapes of the control plane's HTTP API, shared by
// the server that speaks it and the client that calls it. It holds types
// only: behaviour lives in server and client.
//
// Endpoints (all under a bearer token):
//
//	GET    /v1/{kind}              list        → List
//	GET    /v1/{kind}/{name}       get         → the object
//	PUT    /v1/{kind}/{name}       create/update (conditional when the body's revision is set)
//	DELETE /v1/{kind}/{name}?revision=N
//	POST   /v1/apply               replace everything the caller owns → ApplyResult
//	POST   /v1/txn                 put and delete some of the caller's objects atomically → TxnResult
//	GET    /v1/watch?revision=N&store=ID&kind=K    newline-delimited WatchMessage stream
//
// {kind} is a model.Kind in any case, singular or plural ("services"), and so
// is each kind of a watch's kind filter: ?kind= once per kind or kinds
// separated by commas ("kind=serviceexports,clusters"). A filtered watch's
// snapshot and messages carry only those kinds, and a transaction that
// changed none of them sends no message (a stream that resumes sends the
// later ones of those kinds); without ?kind= it carries every kind. An
// unknown kind is a 400 naming it. A list (GET /v1/{kind}) is of one kind.
// Errors are an Error body with an HTTP status: 400 malformed (bad JSON,
// an unknown field, data after the JSON object, a revision that is not a
// non-negative integer), 401 no or bad token, 403 owned by another cluster
// or not allowed by another cluster's network (Fields names each refused
// field; for objects another cluster owns, every such object's name in the
// request, "puts.targetGroups[3].name"), 404 not found, 409 revision conflict, 413 body larger than the
// server's limit (8 MiB for a PUT, 64 MiB for apply and txn, by default),
// 422 invalid object (Fields names each invalid field).
//
// A write without revisions (a PUT or txn put whose object has none, a
// DELETE without ?revision, every apply) is unconditional: the server
// retries it when a concurrent writer changes the object between its read
// and its write, so it does not fail with 409.
//
// What one cluster may do to another's traffic (403 otherwise, on PUT,
// apply and txn alike):
//
//   - a target group's targets are in its owner's cluster (422,
//     "targets[0].cluster");
//   - a service joins a network only if the network exists and allows the
//     service's owner: its owner, a cluster its allowedClusters names, or
//     any cluster for "*" ("network");
//   - a host name (dnsName, customDomains, a listener's hostnames) that a
//     service of another owner already answers to, equal or overlapping by
//     wildcard, may be named only by a cluster that service's network
//     allows ("customDomains[0]", naming the other service), and a host name
//     within a network's domain only by a cluster that network allows.
//
// A certificate's private key is readable by its owner and by the clusters
// whose proxies serve it (allowed into a network where a service of the
// certificate's owner, or of the network's owner, names it on a listener).
// Every other caller, on get, list and watch, gets keyPEM as
// model.RedactedKey. A watch that resumes while another cluster's
// certificates exist starts with a snapshot.
package api

import (
	"encoding/json"
	"time"

	"trellis.dev/trellis/internal/model"
)

// Error is the body of every non-2xx response.
type Error struct {
	Message string `json:"message"`
	// Fields is set for 422 responses (every invalid field of the object)
	// and for 403s that refuse an object or a field of one (every refused
	// one, by its path in the request).
	Fields model.FieldErrors `json:"fields,omitempty"`
}

// List is the body of a list response.
type List struct {
	Revision int64             `json:"revision"`
	Items    []json.RawMessage `json:"items"`
}

// ApplyRequest replaces the whole set of objects the caller's cluster owns
// with Objects: missing objects are created, changed ones updated, unchanged
// ones left alone (their revision does not move) and owned objects absent
// from the request deleted — all in one transaction at one revision.
type ApplyRequest struct {
	Objects model.Objects `json:"objects"`
}

// ApplyResult says what an apply did.
type ApplyResult struct {
	// Revision is the store revision after the apply; unchanged if nothing changed.
	Revision  int64 `json:"revision"`
	Created   int   `json:"created"`
	Updated   int   `json:"updated"`
	Deleted   int   `json:"deleted"`
	Unchanged int   `json:"unchanged"`
}

// TxnRequest changes some of the caller's objects in one transaction: every
// put and delete happens, at one revision, or none does. It is how a
// provider that tracks what it sent (the Kubernetes controller) sends only
// what changed.
//
// A put whose object carries a revision succeeds only if the stored object
// is still at that revision; without one it creates or overwrites. A put of
// an object equal to the stored one is not rewritten. A delete with a
// revision succeeds only if the stored object is at that revision; without
// one, deleting an object that does not exist is not an error. Every object
// touched must be the caller's (403 otherwise) and every put valid (422,
// fields prefixed "puts.services[2]."); a failed precondition is a 409.
type TxnRequest struct {
	Puts    model.Objects `json:"puts,omitzero"`
	Deletes []ObjectRef   `json:"deletes,omitempty"`
}

// ObjectRef names one object, optionally at a revision.
type ObjectRef struct {
	Kind     model.Kind `json:"kind"`
	Name     string     `json:"name"`
	Revision int64      `json:"revision,omitempty"`
}

// TxnResult says what a transaction did.
type TxnResult struct {
	// Revision is the store revision after the transaction; unchanged if
	// nothing changed.
	Revision  int64 `json:"revision"`
	Created   int   `json:"created"`
	Updated   int   `json:"updated"`
	Deleted   int   `json:"deleted"`
	Unchanged int   `json:"unchanged"`
}

// WatchMessage types.
const (
	// WatchSnapshot carries every object at Revision. It is the first
	// message unless the client resumed from a revision still in history.
	WatchSnapshot = "snapshot"
	// WatchChanges carries one committed transaction.
	WatchChanges = "changes"
	// WatchHeartbeat is sent when idle so clients can detect a dead stream.
	WatchHeartbeat = "heartbeat"
)

// WatchMessage is one line of the watch stream.
type WatchMessage struct {
	Type     string `json:"type"`
	Revision int64  `json:"revision"`
	// Store is the identity of the store the revision belongs to
	// (store.Store.ID). A client resumes with it (?store=), so that a
	// control plane whose store was replaced sends a snapshot rather than
	// the changes after a revision of another history.
	Store    string          `json:"store,omitempty"`
	Snapshot *model.Snapshot `json:"snapshot,omitempty"`
	Changes  []Change        `json:"changes,omitempty"`
}

// Change operations.
const (
	OpPut    = "put"
	OpDelete = "delete"
)

// Change is one object put or deleted in a transaction.
type Change struct {
	Op   string     `json:"op"`
	Kind model.Kind `json:"kind"`
	Name string     `json:"name"`
	// Object is the object as stored (with its revision), for puts.
	Object json.RawMessage `json:"object,omitempty"`
}

// AddClusterRequest admits a cluster (POST /v1/clusters, administrators only).
type AddClusterRequest struct {
	Name string `json:"name"`
	// TokenTTLSeconds is how long the join token is valid (default one hour,
	// at most a week).
	TokenTTLSeconds int64 `json:"tokenTTLSeconds,omitempty"`
	// ExportNamespaces, when set, are the namespaces the cluster may
	// export Services from, or ["*"] for all (model.Cluster). A newly
	// admitted cluster without it may export from all; for one admitted
	// already it replaces the list, as SetClusterRequest does.
	ExportNamespaces []string `json:"exportNamespaces,omitempty"`
	// PodNetwork, when set, is the flat pod network the operator declares
	// the cluster part of (model.Cluster.PodNetwork; "" for its own,
	// isolated). A newly admitted cluster without it is isolated; for one
	// admitted already it replaces the network, as SetClusterRequest does.
	PodNetwork *string `json:"podNetwork,omitempty"`
}

// SetClusterRequest changes an admitted cluster (PATCH /v1/clusters/NAME,
// administrators only); at least one field is required, and a field left
// out keeps its value. Narrowing ExportNamespaces takes the cluster's
// exports outside them out of every merge and pick at once; its
// controller then stops sending them.
type SetClusterRequest struct {
	// ExportNamespaces are the namespaces the cluster may export Services
	// from, or ["*"] for all.
	ExportNamespaces []string `json:"exportNamespaces"`
	// PodNetwork is the pod network the cluster is in ("" for its own,
	// isolated); see model.Cluster.PodNetwork.
	PodNetwork *string `json:"podNetwork,omitempty"`
}

// AddClusterResult carries the one-time join token for the cluster.
type AddClusterResult struct {
	Name      string    `json:"name"`
	JoinToken string    `json:"joinToken"`
	Expires   time.Time `json:"expires"`
	// CA is the control plane's root certificate (PEM), which the joining
	// component trusts the server by.
	CA string `json:"ca"`
}

// JoinRequest exchanges a join token and a certificate request (PEM) for
// the cluster's certificate (POST /v1/join, no other credentials).
type JoinRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"`
}

// RenewRequest asks for a new certificate for the cluster the caller's
// client certificate names (POST /v1/renew, over mutual TLS).
type RenewRequest struct {
	CSR string `json:"csr"`
}

// JoinResult is an issued certificate (PEM) and the CA (PEM) it chains to.
type JoinResult struct {
	Cluster     string `json:"cluster"`
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// Cluster is one admitted cluster (GET /v1/clusters): when it was
// admitted, its lease, its peers and what other clusters' proxies measured
// of them, and when it last synchronised.
type Cluster struct {
	Name  string    `json:"name"`
	Added time.Time `json:"added"`
	// ExportNamespaces are the namespaces the cluster may export from;
	// ["*"] (or empty, for a cluster admitted before the list existed)
	// is all.
	ExportNamespaces []string `json:"exportNamespaces,omitempty"`
	// PodNetwork is the pod network the operator declared the cluster
	// in; empty for its own, isolated.
	PodNetwork string `json:"podNetwork,omitempty"`
	// Lease is the cluster's lease as the answering server judges it now.
	Lease Lease `json:"lease"`
	// PeersPublished counts the cluster's Peer objects; PeersReached
	// those of them that some other cluster's proxy reached in its latest
	// fresh report. Reports lists those reports.
	PeersPublished int          `json:"peersPublished"`
	PeersReached   int          `json:"peersReached"`
	Reports        []PeerReport `json:"reports,omitempty"`
	// RTTMicros is the median round trip other clusters' proxies measured
	// to the cluster's reached peers; 0 when none was measured.
	RTTMicros int64 `json:"rttMicros,omitempty"`
	// LastSync is when the cluster last changed its objects through apply
	// or txn (its controller); zero when it has not since it was admitted.
	LastSync time.Time `json:"lastSync,omitzero"`
}

// LeaseRenewal renews the lease of the cluster the caller's certificate
// names (POST /v1/lease, over mutual TLS only). It names no cluster: a
// cluster renews its own lease and no other.
type LeaseRenewal struct {
	// Holder names the component renewing ("controller", a proxy's peer
	// name): lower-case alphanumerics, '-' or '.', at most 63.
	Holder string `json:"holder"`
	// Peers, when set, is the holder's latest report on the other
	// clusters' peers it probes. The server keeps at most one report per
	// holder every ReportEveryMillis.
	Peers []PeerReport `json:"peers,omitempty"`
}

// PeerReport is what one proxy measured of one peer of another cluster.
type PeerReport struct {
	// Reporter is the reporting cluster and holder ("east/proxy"), filled
	// in by the server from the caller's certificate.
	Reporter string `json:"reporter,omitempty"`
	Cluster  string `json:"cluster"`
	Address  string `json:"address"`
	Reached  bool   `json:"reached"`
	// RTTMicros is the probe's round trip, for a reached peer.
	RTTMicros int64 `json:"rttMicros,omitempty"`
	// Reported is when the server received the report.
	Reported time.Time `json:"reported,omitzero"`
}

// LeaseRenewed answers a renewal: the lease as it stands and how often
// to renew and report.
type LeaseRenewed struct {
	Lease             Lease `json:"lease"`
	RenewEveryMillis  int64 `json:"renewEveryMillis"`
	ReportEveryMillis int64 `json:"reportEveryMillis"`
}

// Lease is one admitted cluster's lease (GET /v1/leases), judged by the
// answering server's clock.
type Lease struct {
	Cluster string `json:"cluster"`
	// Holder is the component that last renewed it; Renewed when (the
	// server's clock), zero when never.
	Holder  string    `json:"holder,omitempty"`
	Renewed time.Time `json:"renewed,omitzero"`
	// AgeMillis is how long ago it was renewed, -1 for never.
	AgeMillis      int64 `json:"ageMillis"`
	DurationMillis int64 `json:"durationMillis"`
	// Alive is false once the lease has gone unrenewed for longer than
	// its duration while the server could take renewals (see
	// docs/multicluster.md, "Leases"); a lease never renewed is alive.
	Alive bool `json:"alive"`
	// Held is true for a lease that would have lapsed, judged alive
	// because more than half of the clusters' leases would have lapsed at
	// once (the server is likelier cut off than they all down).
	Held bool `json:"held,omitempty"`
}

// Leases is the answer of GET /v1/leases: every admitted cluster's lease.
type Leases struct {
	Leases []Lease `json:"leases"`
}

// RemoveClusterResult says what removing a cluster deleted
// (DELETE /v1/clusters/NAME).
type RemoveClusterResult struct {
	Removed string `json:"removed"`
	// Deleted counts the model objects the cluster owned that were
	// deleted; Kept names networks it owned that other clusters' services
	// still join, kept so that their traffic is not disturbed.
	Deleted int      `json:"deleted"`
	Kept    []string `json:"kept,omitempty"`
}

// HealthReport is one proxy's latest view of its own cluster's targets
// (POST /v1/health), as its active health checks see them. The server
// keeps each holder's latest report for a while; the VPC Lattice API's
// ListTargets reads them.
type HealthReport struct {
	// Holder names the reporting proxy among its cluster's.
	Holder string        `json:"holder"`
	Groups []GroupHealth `json:"groups"`
	// Part and Parts split a holder's report that is over one report's
	// bounds: the holder's whole view is Parts reports, Part 0 to
	// Parts-1, each kept on its own, so that each may be sent only when
	// it changed. Absent (0), Parts is 1: the report is the whole view.
	// A report saying Parts drops the holder's kept parts from Parts on.
	Part  int `json:"part,omitempty"`
	Parts int `json:"parts,omitempty"`
	// Digest, with no Groups, asks the server to count the part it keeps
	// as reported again, unchanged: it names the content a full report
	// of the part was kept with (HealthReported.Digest). The server
	// answers 412 Precondition Failed, keeping nothing, unless that part
	// is kept, fresh, in as many Parts and with that digest; the holder
	// then sends the part whole.
	Digest string `json:"digest,omitempty"`
}

// Bounds of one HealthReport: the server refuses a report over them, and
// a proxy sends the first groups (by name) that fit in MaxHealthParts
// reports.
const (
	MaxHealthGroups  = 1000
	MaxHealthTargets = 20000
	MaxHealthParts   = 16
)

// GroupHealth is the health of one target group's targets.
type GroupHealth struct {
	TargetGroup string         `json:"targetGroup"`
	Targets     []TargetHealth `json:"targets"`
}

// TargetHealth is one target's health: Address is "host:port", Status a
// Lattice target status (INITIAL, HEALTHY, UNHEALTHY, UNAVAILABLE,
// DRAINING).
type TargetHealth struct {
	Address string `json:"address"`
	Status  string `json:"status"`
}

// HealthReported answers a health report: how often the server keeps
// one, at most.
type HealthReported struct {
	KeepEveryMillis int64 `json:"keepEveryMillis"`
	// Digest names the content the part is kept with, for a later
	// unchanged report by digest (HealthReport.Digest). Servers that do
	// not keep digests leave it out; their holders send every part whole.
	Digest string `json:"digest,omitempty"`
}
