package file

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/parallel"
	"trellis.dev/trellis/internal/translate"
)

// reading is one reading of the directory, ready to translate.
type reading struct {
	config *config
	// contents are the contents of the files read in full and used as read,
	// by path: what commit records as applied.
	contents map[string][]byte
	// wake is when a settling file should be read again; zero if none is.
	wake time.Time
	// index numbers the reading's index (config.where): a reading that
	// defines the objects of the last one made in full, where it did
	// (Provider.sameObjects), shares its index and number.
	index int
}

// parseKey names one content of one config file.
type parseKey struct {
	path string
	sum  [sha256.Size]byte
}

// parsedFile is what parseFile made of one content of a file. Its entries
// are shared by every reading of the same content and never modified: the
// translator does not modify its input.
type parsedFile struct {
	entries []entry
	errs    []error
}

// candidate is one config file's part of a reading.
type candidate struct {
	path    string
	entries []entry
	// held reports that entries are what the file last applied, not what
	// it holds now.
	held bool
}

// read reads the directory at time now, keeping for each file that is
// being written, or cannot be read, what it last applied (see Provider). It
// fails if the directory cannot be listed in time or a file in use does not
// decode.
func (p *Provider) read(ctx context.Context, now time.Time) (*reading, error) {
	files, err := p.readFiles(ctx)
	if err != nil {
		return nil, err
	}
	if p.files == nil {
		p.files = map[string]*fileState{}
	}
	settle := cmp.Or(p.SettlePeriod, DefaultSettlePeriod)
	log := p.logger()
	r := &reading{contents: map[string][]byte{}}
	parsed := make(map[parseKey]parsedFile, len(p.parsed))
	defer func() { p.parsed = parsed }()
	if p.docs == nil {
		p.docs = map[string]map[docKey]parsedDoc{}
	}
	// The files that changed are decoded first, side by side: at a cold
	// start that is every file, and decoding is most of its work.
	fresh := p.decodeChanged(files)
	parse := func(path string, data []byte, sum [sha256.Size]byte) ([]entry, []error) {
		k := parseKey{path, sum}
		pf, ok := parsed[k]
		if !ok {
			if pf, ok = p.parsed[k]; !ok {
				d, ok := fresh[k]
				if !ok {
					// A file that changed: only its changed documents
					// are decoded again.
					d.docs = map[docKey]parsedDoc{}
					d.entries, d.errs = parseFileCached(path, data, p.docs[path], d.docs)
				}
				pf = d.parsedFile
				p.docs[path] = d.docs
			}
			parsed[k] = pf
		}
		return pf.entries, pf.errs
	}
	hold := func(path string, st *fileState, reason string) candidate {
		// What a file applied decoded then and decodes the same now.
		entries, _ := parse(path, st.applied, sha256.Sum256(st.applied))
		if reason != "" {
			until := st.seenAt.Add(settle)
			if r.wake.IsZero() || until.Before(r.wake) {
				r.wake = until
			}
			log.Warn("config file may be partly written: what it last defined stays in force until it has not changed for the settle period",
				"file", path, "reason", reason, "settle", settle, "left", until.Sub(now).Round(time.Millisecond))
		}
		return candidate{path: path, entries: entries, held: true}
	}
	var (
		cands []candidate
		errs  []error
		// prev are the entries each settling file last applied.
		prev    = map[string][]entry{}
		present = map[string]bool{}
	)
	for _, f := range files {
		if errors.Is(f.err, errSubdirectory) {
			log.Warn("config directory entry skipped", "file", f.path, "err", f.err)
			continue
		}
		present[f.path] = true
		st := p.files[f.path]
		if f.err != nil {
			log.Error("config file not read: what it last defined stays in force", "file", f.path, "err", f.err)
			if st != nil && st.applied != nil {
				cands = append(cands, hold(f.path, st, ""))
			}
			continue
		}
		if st == nil {
			st = &fileState{}
			p.files[f.path] = st
		}
		sum := f.sum
		if sum != st.seen {
			st.seen, st.seenAt = sum, now
		}
		settling := now.Before(st.seenAt.Add(settle)) && st.applied != nil && !bytes.Equal(f.data, st.applied)
		if settling && bytes.HasPrefix(st.applied, f.data) {
			cands = append(cands, hold(f.path, st, "cut short"))
			continue
		}
		entries, ferrs := parse(f.path, f.data, sum)
		errs = append(errs, ferrs...)
		if settling {
			prev[f.path], _ = parse(f.path, st.applied, sha256.Sum256(st.applied))
		}
		cands = append(cands, candidate{path: f.path, entries: entries})
		r.contents[f.path] = f.data
	}
	for path := range p.files {
		if !present[path] {
			delete(p.files, path) // a deleted file applies at once
			delete(p.docs, path)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// The AuthPolicies and Gateways every file defines, for the removal
	// checks of files settling (the only kinds they look up).
	defined := map[objectKey]bool{}
	for _, c := range cands {
		if !c.held && len(prev) > 0 {
			for _, e := range c.entries {
				if e.key.kind == "AuthPolicy" || e.key.kind == "Gateway" {
					defined[e.key] = true
				}
			}
		}
	}
	for i, c := range cands {
		old, ok := prev[c.path]
		if !ok {
			continue
		}
		if reason := removal(old, c.entries, defined); reason != "" {
			cands[i] = hold(c.path, p.files[c.path], reason)
			delete(r.contents, c.path)
		}
	}
	if p.sameObjects(cands) {
		// The objects of the last reading, where they were: its index
		// stands (it is never modified), and the lists of the last reading
		// are kept, with the objects of the files that changed replaced.
		r.config = &config{where: p.lastWhere}
		r.index = p.lastIndex
		r.config.input = p.lists.update(cands)
		return r, nil
	}
	n := map[string]int{}
	for _, c := range cands {
		for _, e := range c.entries {
			n[e.key.kind]++
		}
	}
	r.config = newConfigSized(n)
	for _, c := range cands {
		if !c.held {
			r.config.add(c.entries)
		}
	}
	for _, c := range cands {
		if c.held {
			for _, e := range c.entries {
				// An object now defined elsewhere has moved there.
				if _, ok := r.config.where[e.key]; !ok {
					r.config.add([]entry{e})
				}
			}
		}
	}
	if err := errors.Join(r.config.errs...); err != nil {
		return nil, err
	}
	p.indexes++
	r.index = p.indexes
	p.lastWhere, p.lastIndex, p.lastOrder = r.config.where, r.index, p.lastOrder[:0]
	for _, c := range cands {
		if c.held {
			p.lastOrder = nil // held objects are placed by the index
			break
		}
		for _, e := range c.entries {
			p.lastOrder = append(p.lastOrder, placed{e.key, e.where})
		}
	}
	p.lists = nil
	if p.lastOrder != nil {
		p.lists = newInputLists(r.config.input, cands)
	}
	return r, nil
}

// inputLists are the Input lists of the last reading that was made in
// full, or kept since: the objects of Provider.lastOrder, in order. A
// reading of the same objects (sameObjects) replaces in them only the
// objects of the files whose entries changed, rather than copying tens of
// thousands of objects into new lists on every change. The translator
// keeps nothing of an Input's lists between calls (translate.Incremental),
// so replacing an element is safe once the last reading is translated.
type inputLists struct {
	input translate.Input
	// entries are each file's entries the lists hold, and counts how many
	// of each kind (the lists' positions the file takes).
	entries [][]entry
	counts  []map[string]int
}

func newInputLists(in translate.Input, cands []candidate) *inputLists {
	l := &inputLists{input: in, entries: make([][]entry, len(cands)), counts: make([]map[string]int, len(cands))}
	for i, c := range cands {
		l.entries[i], l.counts[i] = c.entries, countKinds(c.entries)
	}
	return l
}

func countKinds(entries []entry) map[string]int {
	n := map[string]int{}
	for _, e := range entries {
		n[e.key.kind]++
	}
	return n
}

// update replaces the objects of the files whose entries are not those
// the lists hold, and returns the lists. cands define the objects the lists
// hold, in the same order (Provider.sameObjects).
func (l *inputLists) update(cands []candidate) translate.Input {
	if len(l.entries) != len(cands) {
		// Files that define nothing came or went: every file's objects
		// are set again.
		l.entries, l.counts = make([][]entry, len(cands)), make([]map[string]int, len(cands))
	}
	at := map[string]int{}
	for i, c := range cands {
		if sameEntries(l.entries[i], c.entries) {
			for k, n := range l.counts[i] {
				at[k] += n
			}
			continue
		}
		for _, e := range c.entries {
			e.kind.set(&l.input, at[e.key.kind], e.obj)
			at[e.key.kind]++
		}
		l.entries[i], l.counts[i] = c.entries, countKinds(c.entries)
	}
	return l.input
}

// sameEntries reports whether a and b are one list of entries: the same
// content of a file, decoded once.
func sameEntries(a, b []entry) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// decoded is a file's content decoded by decodeChanged, with its
// documents by key (what Provider.docs keeps for the file).
type decoded struct {
	parsedFile
	docs map[docKey]parsedDoc
}

// decodeChanged decodes the files whose content the last reading did not
// decode, on up to GOMAXPROCS goroutines, each file with the documents of
// its last decoded content. It modifies nothing of p: the caller keeps what
// it uses.
func (p *Provider) decodeChanged(files []fileData) map[parseKey]decoded {
	var todo []int
	for i, f := range files {
		if f.err != nil {
			continue
		}
		if _, ok := p.parsed[parseKey{f.path, f.sum}]; !ok {
			todo = append(todo, i)
		}
	}
	results := make([]decoded, len(todo))
	parallel.Do(len(todo), 2, func(n int) {
		f := &files[todo[n]]
		d := &results[n]
		d.docs = map[docKey]parsedDoc{}
		d.entries, d.errs = parseFileCached(f.path, f.data, p.docs[f.path], d.docs)
	})
	out := make(map[parseKey]decoded, len(todo))
	for n, i := range todo {
		out[parseKey{files[i].path, files[i].sum}] = results[n]
	}
	return out
}

// placed is an object of a reading and where it was defined.
type placed struct {
	key   objectKey
	where location
}

// sameObjects reports whether cands define the objects of the last
// reading that was made in full, in the same order and at the same places,
// none of them held: a change within objects (the usual edit) leaves them
// so, and then the last reading's index stands.
func (p *Provider) sameObjects(cands []candidate) bool {
	if p.lastOrder == nil {
		return false
	}
	i := 0
	for _, c := range cands {
		if c.held {
			return false
		}
		for _, e := range c.entries {
			if i >= len(p.lastOrder) || p.lastOrder[i].key != e.key || p.lastOrder[i].where != e.where {
				return false
			}
			i++
		}
	}
	return i == len(p.lastOrder)
}

// commit records r as applied, logging every object that went away.
func (p *Provider) commit(r *reading) {
	for path, data := range r.contents {
		if st := p.files[path]; st != nil {
			// Contents read are never modified, so they are kept, not
			// copied.
			if data == nil {
				data = []byte{} // non-nil: applied
			}
			st.applied = data
		}
	}
	// The reading's index is never modified after the read: it is kept.
	for k, l := range p.applied {
		if r.index == p.appliedIndex {
			break // the index applied: the same objects
		}
		if _, ok := r.config.where[k]; !ok {
			p.logger().Info("configuration object removed", "kind", k.kind, "namespace", k.namespace, "name", k.name, "file", l.file)
		}
	}
	p.applied, p.appliedIndex = r.config.where, r.index
}

// removal says what a file's change from the objects old to the objects cur
// takes away that a partial write could have: everything, an AuthPolicy or
// Gateway that no file defines now (defined), a Gateway's listener, or an
// AuthPolicy's target or statement. It returns "" if it takes none of these.
func removal(old, cur []entry, defined map[objectKey]bool) string {
	if len(cur) == 0 && len(old) > 0 {
		return "it defines nothing now"
	}
	now := make(map[objectKey]any, len(cur))
	for _, e := range cur {
		now[e.key] = e.obj
	}
	for _, e := range old {
		if e.key.kind != "AuthPolicy" && e.key.kind != "Gateway" {
			continue
		}
		obj, ok := now[e.key]
		if !ok {
			if !defined[e.key] {
				return "it no longer defines " + e.key.String()
			}
			continue
		}
		switch o := e.obj.(type) {
		case *gatewayv1.Gateway:
			names := map[gatewayv1.SectionName]bool{}
			for _, l := range obj.(*gatewayv1.Gateway).Spec.Listeners {
				names[l.Name] = true
			}
			for _, l := range o.Spec.Listeners {
				if !names[l.Name] {
					return fmt.Sprintf("%s no longer has listener %s", e.key, l.Name)
				}
			}
		case *v1alpha1.AuthPolicy:
			n := obj.(*v1alpha1.AuthPolicy)
			if len(n.Spec.TargetRefs) < len(o.Spec.TargetRefs) {
				return fmt.Sprintf("%s has fewer targetRefs", e.key)
			}
			if statements(n) < statements(o) {
				return fmt.Sprintf("%s has fewer statements", e.key)
			}
		}
	}
	return ""
}

// statements counts the statements of an AuthPolicy's policy document, which
// IAM writes as one object or a list of them.
func statements(p *v1alpha1.AuthPolicy) int {
	var doc struct{ Statement json.RawMessage }
	if json.Unmarshal(p.Spec.Policy.Raw, &doc) != nil || len(doc.Statement) == 0 {
		return 0
	}
	var list []json.RawMessage
	if json.Unmarshal(doc.Statement, &list) == nil {
		return len(list)
	}
	return 1
}
