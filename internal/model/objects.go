package model

import (
	"encoding/json"
	"fmt"
	"iter"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Objects is a set of objects of every kind: the one list the snapshot,
// the API's apply and txn requests and the translator's output share, so
// that a new kind is added here (a list, and its row in kinds below) and
// nowhere else. The JSON names are the wire's and the stored caches'; they
// do not change.
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

// kinds is the one table of the stored kinds, a row each, in the order of
// Objects' lists: New, Kinds, Objects' methods and its List go by it.
// Adding a kind is its constant, its list in Objects and its row here.
var kinds = []kindRow{
	row("networks", func(o *Objects) *[]ServiceNetwork { return &o.Networks }),
	row("services", func(o *Objects) *[]Service { return &o.Services }),
	row("targetGroups", func(o *Objects) *[]TargetGroup { return &o.TargetGroups }),
	row("certificates", func(o *Objects) *[]Certificate { return &o.Certificates }),
	row("workloadSets", func(o *Objects) *[]WorkloadSet { return &o.WorkloadSets }),
	row("exports", func(o *Objects) *[]ServiceExport { return &o.Exports }),
	row("peers", func(o *Objects) *[]Peer { return &o.Peers }),
	row("clusters", func(o *Objects) *[]Cluster { return &o.Clusters }),
}

// kindRow is what the table knows of one kind.
type kindRow struct {
	kind  Kind
	field string                // the JSON name of its list in Objects
	new   func() Object         // an empty one
	list  func(o *Objects) List // its list in o
}

// row is the row of the kind whose objects are *T, listed in Objects at
// field, which list reaches.
func row[T any, P interface {
	*T
	Object
}](field string, list func(o *Objects) *[]T) kindRow {
	return kindRow{
		kind:  P(nil).ObjectKind(),
		field: field,
		new:   func() Object { return P(new(T)) },
		list:  func(o *Objects) List { return listOf[T, P]{list(o)} },
	}
}

// rowOf is the row of kind k.
func rowOf(k Kind) (kindRow, bool) {
	for _, r := range kinds {
		if r.kind == k {
			return r, true
		}
	}
	return kindRow{}, false
}

// Kinds lists every stored kind, in the order of Objects' lists.
var Kinds = func() []Kind {
	ks := make([]Kind, len(kinds))
	for i, r := range kinds {
		ks[i] = r.kind
	}
	return ks
}()

// New returns an empty object of kind k.
func New(k Kind) (Object, error) {
	r, ok := rowOf(k)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q", k)
	}
	return r.new(), nil
}

// Each yields every object, by kind in the order of kinds and then in list
// order, with its JSON path in o ("services[2]"). The objects are o's own,
// not copies.
func (o *Objects) Each() iter.Seq2[string, Object] {
	return func(yield func(string, Object) bool) {
		for _, r := range kinds {
			l := r.list(o)
			for i := range l.Len() {
				if !yield(fmt.Sprintf("%s[%d]", r.field, i), l.At(i)) {
					return
				}
			}
		}
	}
}

// All yields every object in the order of Each, without the paths Each
// formats (a cost per object a caller that names none need not pay).
func (o *Objects) All() iter.Seq[Object] {
	return func(yield func(Object) bool) {
		for _, r := range kinds {
			l := r.list(o)
			for i := range l.Len() {
				if !yield(l.At(i)) {
					return
				}
			}
		}
	}
}

// Len is how many objects o holds, of every kind.
func (o *Objects) Len() int {
	n := 0
	for _, r := range kinds {
		n += r.list(o).Len()
	}
	return n
}

// Add appends a copy of obj to the list of its kind.
func (o *Objects) Add(obj Object) {
	l, ok := o.List(obj.ObjectKind())
	if !ok || !l.add(obj) {
		panic(fmt.Sprintf("model: Objects.Add of unknown kind %T", obj))
	}
}

// AppendJSON appends o as json.Marshal writes it, marshalling one object
// at a time. json.Marshal of the whole grows one buffer of encoding/json's
// pool to the size of every object (16 MB at 10,000 services), and the
// pool keeps that buffer for as long as the process marshals anything now
// and then: for ever, in a process that reports health every second.
func (o *Objects) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	first := true
	for _, r := range kinds {
		l := r.list(o)
		if l.Len() == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, r.field...)
		b = append(b, `":[`...)
		for i := range l.Len() {
			if i > 0 {
				b = append(b, ',')
			}
			j, err := json.Marshal(l.At(i))
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", r.field, i, err)
			}
			b = append(b, j...)
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// List is o's list of kind k, false for no such kind.
func (o *Objects) List(k Kind) (List, bool) {
	r, ok := rowOf(k)
	if !ok {
		return nil, false
	}
	return r.list(o), true
}

// At is the object of o at the start of path, a path as Each makes it
// ("services[2]") followed by anything (".rules[0].forward"): what an
// error's field path names. False when path names no object of o.
func (o *Objects) At(path string) (Object, bool) {
	field, rest, ok := strings.Cut(path, "[")
	if !ok {
		return nil, false
	}
	digits, _, ok := strings.Cut(rest, "]")
	i, err := strconv.Atoi(digits)
	if !ok || err != nil || i < 0 || strconv.Itoa(i) != digits {
		return nil, false
	}
	for _, r := range kinds {
		if r.field == field {
			if l := r.list(o); i < l.Len() {
				return l.At(i), true
			}
			return nil, false
		}
	}
	return nil, false
}

// A List is the list of one kind in an Objects, for code that treats
// every kind alike. Find, Put and Merge need it sorted by name, as the
// translator makes its lists and the client's cache keeps them. Put and
// Merge replace the list's array rather than write to it (snapshots share
// their arrays), unless told that it is a copy already.
type List interface {
	// Len is how many objects the list holds.
	Len() int
	// At is the list's i'th object: its own, not a copy.
	At(i int) Object
	// Find is the list's object named name, or nil.
	Find(name string) Object
	// Put puts a copy of obj, whose name is name, in the list, in place of
	// the object of that name or inserted in order; a nil obj deletes
	// name. It copies the list first unless *copied says it is a copy
	// already, and sets *copied when it copied.
	Put(name string, obj Object, copied *bool) error
	// Merge replaces the list by a new one, sorted by name, with the
	// objects of byName (nil to delete) in place of those of the same name.
	Merge(byName map[string]Object) error
	// add appends a copy of obj when it is of the list's kind.
	add(obj Object) bool
}

// listOf is the List of Ts at list.
type listOf[T any, P interface {
	*T
	Object
}] struct{ list *[]T }

func (l listOf[T, P]) Len() int { return len(*l.list) }

func (l listOf[T, P]) At(i int) Object { return P(&(*l.list)[i]) }

func (l listOf[T, P]) add(obj Object) bool {
	v, ok := obj.(P)
	if ok {
		*l.list = append(*l.list, *v)
	}
	return ok
}

// search is where name is or would go in the list, and whether it is there.
func (l listOf[T, P]) search(name string) (int, bool) {
	s := *l.list
	i := sort.Search(len(s), func(i int) bool { return P(&s[i]).ObjectMeta().Name >= name })
	return i, i < len(s) && P(&s[i]).ObjectMeta().Name == name
}

func (l listOf[T, P]) Find(name string) Object {
	if i, found := l.search(name); found {
		return l.At(i)
	}
	return nil
}

// typed is obj as a P, or an error naming the change of name it came in.
func (l listOf[T, P]) typed(name string, obj Object) (P, error) {
	v, ok := obj.(P)
	if !ok {
		return nil, fmt.Errorf("change of %s %s holds a %T", P(nil).ObjectKind(), name, obj)
	}
	return v, nil
}

func (l listOf[T, P]) Put(name string, obj Object, copied *bool) error {
	var v P
	if obj != nil {
		var err error
		if v, err = l.typed(name, obj); err != nil {
			return err
		}
	}
	i, found := l.search(name)
	if obj == nil && !found {
		return nil
	}
	if !*copied {
		*l.list = append(make([]T, 0, len(*l.list)+1), *l.list...)
		*copied = true
	}
	switch {
	case obj == nil:
		*l.list = slices.Delete(*l.list, i, i+1)
	case found:
		(*l.list)[i] = *v
	default:
		*l.list = slices.Insert(*l.list, i, *v)
	}
	return nil
}

func (l listOf[T, P]) Merge(byName map[string]Object) error {
	out := make([]T, 0, len(*l.list)+len(byName))
	for i := range *l.list {
		if _, edited := byName[P(&(*l.list)[i]).ObjectMeta().Name]; !edited {
			out = append(out, (*l.list)[i])
		}
	}
	for name, obj := range byName {
		if obj == nil {
			continue
		}
		v, err := l.typed(name, obj)
		if err != nil {
			return err
		}
		out = append(out, *v)
	}
	// By index: the elements' addresses stay in the list, unlike those of
	// compared copies, which would each be allocated.
	sort.Slice(out, func(i, j int) bool { return P(&out[i]).ObjectMeta().Name < P(&out[j]).ObjectMeta().Name })
	*l.list = out
	return nil
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
