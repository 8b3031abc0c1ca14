package model

import "reflect"

// Seen is what a consumer of successive snapshots keeps of an object to
// tell whether a later snapshot's version is the same (Unchanged): its
// meta, and a copy of the whole only for an object without a revision
// (made by hand, compared by content). For the control plane's objects it
// is 48 bytes, where a copy of the object is several hundred; it keeps no
// snapshot's list alive.
type Seen[T any, P interface {
	*T
	Object
}] struct {
	meta Meta
	full *T
}

// See returns what to keep of v.
func See[T any, P interface {
	*T
	Object
}](v *T) Seen[T, P] {
	s := Seen[T, P]{meta: *P(v).ObjectMeta()}
	if s.meta.Revision == 0 {
		c := *v
		s.full = &c
	}
	return s
}

// Unchanged reports whether v is the same as the object s was made from,
// as Unchanged says of the two.
func (s Seen[T, P]) Unchanged(v *T) bool {
	mb := P(v).ObjectMeta()
	if s.meta.Revision != 0 || mb.Revision != 0 {
		return s.meta.Name == mb.Name && s.meta.Revision == mb.Revision && s.meta.Owner == mb.Owner
	}
	return s.full != nil && reflect.DeepEqual(*s.full, *v)
}
