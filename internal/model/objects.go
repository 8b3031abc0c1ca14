package model

import (
	"encoding/json"
	"fmt"
	"iter"
	"reflect"
	"strings"
)

// Objects is a set of objects of every kind: the one list the snapshot,
// the API's apply and txn requests and the translator's output share, so
// that a new kind is added here and nowhere else. The JSON names are the
// wire's and the stored caches'; they do not change.
type Objects struct {
	Networks     []ServiceNetwork `json:"networks,omitempty"`
	Services     []Service        `json:"services,omitempty"`
	TargetGroups []TargetGroup    `json:"targetGroups,omitempty"`
	Certificates []Certificate    `json:"certificates,omitempty"`
	WorkloadSets []WorkloadSet    `json:"workloadSets,omitempty"`
	Exports      []ServiceExport  `json:"exports,omitempty"`
	Peers        []Peer           `json:"peers,omitempty"`
	Clusters     []Cluster        `json:"clusters,omitempty"`
}

// Each yields every object, by kind in the order above and then in list
// order, with its JSON path in o ("services[2]"). The objects are o's own,
// not copies.
func (o *Objects) Each() iter.Seq2[string, Object] {
	return func(yield func(string, Object) bool) {
		_ = each(yield, "networks", o.Networks) &&
			each(yield, "services", o.Services) &&
			each(yield, "targetGroups", o.TargetGroups) &&
			each(yield, "certificates", o.Certificates) &&
			each(yield, "workloadSets", o.WorkloadSets) &&
			each(yield, "exports", o.Exports) &&
			each(yield, "peers", o.Peers) &&
			each(yield, "clusters", o.Clusters)
	}
}

// each yields &list[i] for every i; T's pointer must be an Object.
func each[T any, P interface {
	*T
	Object
}](yield func(string, Object) bool, field string, list []T) bool {
	for i := range list {
		if !yield(fmt.Sprintf("%s[%d]", field, i), P(&list[i])) {
			return false
		}
	}
	return true
}

// Len is how many objects o holds, of every kind.
func (o *Objects) Len() int {
	return len(o.Networks) + len(o.Services) + len(o.TargetGroups) + len(o.Certificates) + len(o.WorkloadSets) + len(o.Exports) + len(o.Peers) + len(o.Clusters)
}

// Add appends a copy of obj to the list of its kind.
func (o *Objects) Add(obj Object) {
	added := add(&o.Networks, obj) || add(&o.Services, obj) || add(&o.TargetGroups, obj) ||
		add(&o.Certificates, obj) || add(&o.WorkloadSets, obj) || add(&o.Exports, obj) ||
		add(&o.Peers, obj) || add(&o.Clusters, obj)
	if !added {
		panic(fmt.Sprintf("model: Objects.Add of unknown kind %T", obj))
	}
}

// add appends a copy of obj to list when it is a *T.
func add[T any, P interface {
	*T
	Object
}](list *[]T, obj Object) bool {
	v, ok := obj.(P)
	if ok {
		*list = append(*list, *v)
	}
	return ok
}

// Encode is the stored form of an object: its JSON without its revision,
// which the store tracks itself. Encoding is deterministic, so objects
// with equal content have equal bytes: the control plane stores this, and
// a provider compares what it would send with what it read back by it.
// obj is only read (a shallow copy drops the revision): snapshots share
// their objects between readers.
func Encode(obj Object) ([]byte, error) {
	if obj.ObjectMeta().Revision == 0 {
		return json.Marshal(obj)
	}
	v := reflect.ValueOf(obj).Elem()
	c := reflect.New(v.Type())
	c.Elem().Set(v)
	co := c.Interface().(Object)
	co.ObjectMeta().Revision = 0
	return json.Marshal(co)
}

// Unchanged reports whether a and b, two snapshots' versions of an object,
// are the same: of one name, owner and revision when either has a revision
// (the control plane advances it on every change of the object), else of
// equal content. A consumer of successive snapshots uses it to redo only
// what changed.
func Unchanged[T any, P interface {
	*T
	Object
}](a, b *T) bool {
	ma, mb := P(a).ObjectMeta(), P(b).ObjectMeta()
	if ma.Revision != 0 || mb.Revision != 0 {
		return ma.Name == mb.Name && ma.Revision == mb.Revision && ma.Owner == mb.Owner
	}
	return reflect.DeepEqual(*a, *b)
}

// SameList reports whether a and b are one list of the control plane's
// objects: the same array, of the same length, whose objects carry
// revisions (the first is checked). Snapshots are never modified once
// made, and the client's follow hands on the lists of the kinds a revision
// did not change, so a list that two successive snapshots share is
// unchanged. Objects without revisions are made by hand (tests), and may
// be edited in place: their lists are never taken as the same.
func SameList[T any, P interface {
	*T
	Object
}](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0] && P(&a[0]).ObjectMeta().Revision != 0
}

// LatticeSourcePrefix starts the Source.Kind of every object the VPC
// Lattice API (package lattice) made from its own records.
const LatticeSourcePrefix = "VPCLattice"

// FromLattice reports whether the VPC Lattice API made obj. Such objects
// are that API's to change: an owner's apply, or its Kubernetes
// controller, which replace the objects they no longer want, leave them
// alone.
func FromLattice(obj Object) bool {
	var src *SourceRef
	switch o := obj.(type) {
	case *ServiceNetwork:
		src = o.Source
	case *Service:
		src = o.Source
	case *TargetGroup:
		src = o.Source
	}
	return src != nil && strings.HasPrefix(src.Kind, LatticeSourcePrefix)
}
