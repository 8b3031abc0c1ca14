// Package file is the standalone provider: it reads Gateway API objects and
// the Services, EndpointSlices, ServiceImports and Secrets they use from YAML files in a directory,
// translates them, and hands every good result to its caller, re-reading the
// directory whenever it changes.
//
// It owns file decoding (strict, like the Kubernetes API server: an unknown
// field is an error) and the watch loop. It must not interpret the objects,
// which is package translate's job, nor write to the store, which is the
// apply callback's.
package file

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"trellis.dev/trellis/api/v1alpha1"
	"trellis.dev/trellis/internal/translate"
)

// DefaultNamespace is the namespace of objects that name none.
const DefaultNamespace = "default"

// Load reads every *.yaml and *.yml file directly in dir, in name order.
// Subdirectories and names starting with "." (editor temporaries, the
// "..data" links of a mounted ConfigMap) are skipped; symbolic links to
// regular files are followed. Anything else with such a name (a named pipe,
// a device, a socket, a dangling link) and a file over DefaultMaxFileSize is
// an error. It reports every error it finds, each naming its file, document
// and field, rather than stopping at the first.
func Load(dir string) (*translate.Input, error) {
	files, err := readDir(dir, DefaultMaxFileSize)
	if err != nil {
		return nil, err
	}
	c := newConfig()
	for _, f := range files {
		if errors.Is(f.err, errSubdirectory) {
			continue
		}
		if f.err != nil {
			c.errs = append(c.errs, f.err)
			continue
		}
		entries, errs := parseFile(f.path, f.data)
		c.errs = append(c.errs, errs...)
		c.add(entries)
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	return &c.input, nil
}

// Parse decodes the multi-document YAML in data, read from the file called
// name (used in errors only), as Load decodes each file.
func Parse(name string, data []byte) (*translate.Input, error) {
	c := newConfig()
	entries, errs := parseFile(name, data)
	c.errs = append(c.errs, errs...)
	c.add(entries)
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	return &c.input, nil
}

// config is what was read from a directory, with where each object came from.
type config struct {
	input translate.Input
	where map[objectKey]location
	errs  []error
}

type objectKey struct{ kind, namespace, name string }

func (k objectKey) String() string { return k.kind + " " + objectName(k.namespace, k.name) }

// location is where an object was defined.
type location struct {
	file string
	line int
}

func (l location) String() string { return l.file + ":" + strconv.Itoa(l.line) }

func newConfig() *config { return &config{where: map[objectKey]location{}} }

// newConfigSized returns a config with room for n[kind] objects of each
// kind, so that collecting thousands of objects does not grow and copy
// the lists again and again.
func newConfigSized(n map[string]int) *config {
	total := 0
	for _, k := range n {
		total += k
	}
	c := &config{where: make(map[objectKey]location, total)}
	in := &c.input
	in.GatewayClasses = room[gatewayv1.GatewayClass](n["GatewayClass"])
	in.Gateways = room[gatewayv1.Gateway](n["Gateway"])
	in.HTTPRoutes = room[gatewayv1.HTTPRoute](n["HTTPRoute"])
	in.GRPCRoutes = room[gatewayv1.GRPCRoute](n["GRPCRoute"])
	in.TLSRoutes = room[gatewayv1.TLSRoute](n["TLSRoute"])
	in.Services = room[corev1.Service](n["Service"])
	in.EndpointSlices = room[discoveryv1.EndpointSlice](n["EndpointSlice"])
	return c
}

// room returns a list with room for n elements; nil for none.
func room[T any](n int) []T {
	if n == 0 {
		return nil
	}
	return make([]T, 0, n)
}

// entry is one object decoded from a file.
type entry struct {
	key   objectKey
	where location
	// prefix starts an error about the object: "file:line: document n (Kind ns/name)".
	prefix string
	kind   kindInfo
	obj    any
}

// add adds entries to c, recording an error for each object already defined.
func (c *config) add(entries []entry) {
	for _, e := range entries {
		if prev, dup := c.where[e.key]; dup {
			c.errs = append(c.errs, fmt.Errorf("%s: %s is already defined at %s", e.prefix, e.key, prev))
			continue
		}
		c.where[e.key] = e.where
		e.kind.add(&c.input, e.obj)
	}
}

// DefaultMaxFileSize is the largest config file read when Provider.MaxFileSize
// is zero, and by Load.
const DefaultMaxFileSize = 16 << 20

// fileData is one config file of a directory: its content and its
// SHA-256, or why it could not be read.
type fileData struct {
	path string
	data []byte
	sum  [sha256.Size]byte
	err  error
	// stat identifies the version of the file read; zero when unknown.
	stat fileStat
}

// racyWindow is how old a file's change time must be before its stat is
// trusted to tell its next version.
var racyWindow = 2 * time.Second

// fileStat is what tells one version of a file from another without
// reading it: a file written in place changes its size or its change time
// (in nanoseconds), one renamed over it its inode.
type fileStat struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// statOf returns info's fileStat; ok is false when the platform does not
// say.
func statOf(info os.FileInfo) (fileStat, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, false
	}
	return fileStat{dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, true
}

// readDir reads the config files directly in dir, in name order. Only
// regular files (or links to them) of at most limit bytes are read; each
// other config file comes back with an error saying why it was not, wrapping
// errSubdirectory for a directory. It fails only if dir cannot be listed.
func readDir(dir string, limit int64) ([]fileData, error) {
	return readDirCached(dir, limit, nil)
}

// readDirCached is readDir, except that a file whose size, times and inode
// are those of its entry in prev is not read again: its content and sum are
// prev's. prev is not modified.
func readDirCached(dir string, limit int64, prev map[string]fileData) ([]fileData, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read config directory: %w", err)
	}
	var files []fileData
	for _, e := range entries {
		if !isConfigFile(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		// Stat follows links: a ConfigMap volume's files are links into
		// its "..data" directory. What is not a regular file is not
		// opened, since opening a device may act on it.
		info, err := os.Stat(path)
		var (
			data  []byte
			stat  fileStat
			known bool
		)
		switch {
		case err != nil:
		case info.IsDir():
			err = errSubdirectory
		case !info.Mode().IsRegular():
			err = fmt.Errorf("%w (%s)", errNotRegular, fileType(info.Mode()))
		default:
			if stat, known = statOf(info); known && info.Size() <= limit {
				if p, ok := prev[path]; ok && p.err == nil && p.stat == stat {
					files = append(files, p)
					continue
				}
			}
			data, err = readRegular(path, limit)
		}
		if pe, ok := err.(*fs.PathError); ok {
			err = fmt.Errorf("%s: %w", pe.Op, pe.Err) // path is named once, below
		}
		if err != nil {
			err = fmt.Errorf("%s: not read: %w", path, err)
		}
		f := fileData{path: path, data: data, err: err}
		if err == nil {
			// A file read again only because its stat is recent (see
			// below) is usually as it was: comparing costs far less than
			// hashing.
			if p, ok := prev[path]; ok && p.err == nil && bytes.Equal(p.data, data) {
				f.sum = p.sum
			} else {
				f.sum = sha256.Sum256(data)
			}
			// Only a version stat saw before the read, that had not
			// changed after it, and whose change time is older than
			// racyWindow: file times advance in clock ticks of a few
			// milliseconds, so a file written twice within one tick,
			// to the same size, would look unchanged.
			if after, aerr := os.Stat(path); known && aerr == nil {
				if now, ok := statOf(after); ok && now == stat && int64(len(data)) == stat.size &&
					time.Since(time.Unix(0, max(stat.ctime, stat.mtime))) > racyWindow {
					f.stat = stat
				}
			}
		}
		files = append(files, f)
	}
	return files, nil
}

// Why a config file is not read.
var (
	errSubdirectory = errors.New("a directory; subdirectories are not read")
	errNotRegular   = errors.New("not a regular file")
)

// readRegular reads the regular file at path, failing if it is anything else
// or holds more than limit bytes. It never blocks on a named pipe or device:
// the file is opened non-blocking and checked before any read.
func readRegular(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Check what was opened, not what was at path a moment before.
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w (%s)", errNotRegular, fileType(info.Mode()))
	}
	if info.Size() > limit {
		return nil, fmt.Errorf("%d bytes is over the limit of %d", info.Size(), limit)
	}
	// The file may grow while it is read: read one byte more than the
	// limit to tell. The buffer starts at the size stat gave, so that a
	// file that did not grow is read into one allocation.
	data := make([]byte, 0, info.Size()+1)
	r := io.LimitReader(f, limit+1)
	for {
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := r.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("over the limit of %d bytes", limit)
	}
	return data, nil
}

// fileType names the type of a file that is not regular.
func fileType(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.String()
}

// isConfigFile reports whether a directory entry named name is read by Load.
func isConfigFile(name string) bool {
	return !strings.HasPrefix(name, ".") && (strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml"))
}

// document is one YAML document of a file.
type document struct {
	data []byte
	// line is the file line of the document's first content.
	line int
	// sum is data's SHA-256 when summed is set.
	sum    [sha256.Size]byte
	summed bool
}

// separatorRE matches a YAML document separator line.
var separatorRE = regexp.MustCompile(`^---(\s|$)`)

// splitDocuments splits a multi-document YAML file at its "---" lines,
// dropping documents with no content.
func splitDocuments(data []byte) []document {
	var (
		docs  []document
		cur   []byte
		first int // line of the current document's first content; 0 while none
	)
	flush := func() {
		if first != 0 {
			docs = append(docs, document{data: cur, line: first})
		}
		cur, first = nil, 0
	}
	for i, line := range bytes.SplitAfter(data, []byte("\n")) {
		if bytes.HasPrefix(line, []byte("---")) && separatorRE.Match(line) {
			flush()
			// Content may follow the marker ("--- |"); a comment is not content.
			line = append([]byte("   "), line[3:]...)
		}
		// Drop the blank and comment lines before the first content, so that
		// the document's line 1 is file line first.
		if first == 0 {
			if t := bytes.TrimSpace(line); len(t) == 0 || t[0] == '#' {
				continue
			}
			first = i + 1
		}
		cur = append(cur, line...)
	}
	flush()
	return docs
}

// yamlLineRE finds the line numbers in YAML parser errors, which count from
// the start of the document; newlineRE the breaks in multi-line ones.
var (
	yamlLineRE = regexp.MustCompile(`line (\d+)`)
	newlineRE  = regexp.MustCompile(`\s*\n\s*`)
)

// parseFile decodes every document of the file called name, returning the
// objects it defines and an error per document that failed.
func parseFile(name string, data []byte) ([]entry, []error) {
	return parseFileCached(name, data, nil, nil)
}

// docKey names one document of a file: where it is and its content's
// SHA-256.
type docKey struct {
	file    string
	n, line int
	sum     [sha256.Size]byte
}

// parsedDoc is what decoding one document made: an entry, or errors.
type parsedDoc struct {
	entry entry
	errs  []error
}

// parseFileCached is parseFile, except that a document found in prev (the
// same file, position and content) is not decoded again. Every document's
// result is added to next when next is not nil.
func parseFileCached(name string, data []byte, prev, next map[docKey]parsedDoc) ([]entry, []error) {
	var (
		entries []entry
		errs    []error
	)
	for n, doc := range splitDocuments(data) {
		k := docKey{file: name, n: n, line: doc.line}
		if prev != nil || next != nil {
			doc.sum, doc.summed = sha256.Sum256(doc.data), true
			k.sum = doc.sum
		}
		d, ok := prev[k]
		if !ok {
			d = parseDocument(name, n, doc)
		}
		if next != nil {
			next[k] = d
		}
		if d.errs != nil {
			errs = append(errs, d.errs...)
			continue
		}
		entries = append(entries, d.entry)
	}
	return entries, errs
}

// parseDocument decodes the n-th document (from 0) of the file called name.
func parseDocument(name string, n int, doc document) parsedDoc {
	where := location{file: name, line: doc.line}
	e, desc, err := decode(doc, where)
	prefix := fmt.Sprintf("%s: document %d%s", where, n+1, desc)
	if err != nil {
		var errs []error
		for _, err := range unjoin(err) {
			errs = append(errs, fmt.Errorf("%s: %w", prefix, err))
		}
		return parsedDoc{errs: errs}
	}
	e.prefix = prefix
	return parsedDoc{entry: e}
}

// header is what identifies a document, read before its kind is known.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// headerOf reads the header of a document decoded into m, as
// json.Unmarshal into a header would, leaving out what is not a string. ok
// is false when a key matches a header field only without regard to case,
// which json.Unmarshal accepts, the last such key of the document winning:
// then the caller unmarshals the header itself.
func headerOf(m map[string]any) (h header, ok bool) {
	exact := func(m map[string]any, names ...string) bool {
		for k := range m {
			for _, n := range names {
				if k != n && strings.EqualFold(k, n) {
					return false
				}
			}
		}
		return true
	}
	str := func(m map[string]any, k string) string {
		s, _ := m[k].(string)
		return s
	}
	if !exact(m, "apiVersion", "kind", "metadata") {
		return header{}, false
	}
	h.APIVersion, h.Kind = str(m, "apiVersion"), str(m, "kind")
	if meta, isMap := m["metadata"].(map[string]any); isMap {
		if !exact(meta, "name", "namespace") {
			return header{}, false
		}
		h.Metadata.Name, h.Metadata.Namespace = str(meta, "name"), str(meta, "namespace")
	}
	return h, true
}

// decode decodes one document. desc describes the object for errors, e.g.
// " (HTTPRoute default/inventory)".
func decode(doc document, where location) (e entry, desc string, err error) {
	return decodeWith(doc, where, fastYAML)
}

// decodeWith is decode, converting the document with fastJSON when fast is
// set and it takes the document.
func decodeWith(doc document, where location, fast bool) (e entry, desc string, err error) {
	j, raw, err := toJSON(doc, fast)
	if err != nil {
		return entry{}, "", err
	}
	// The header is best effort: the strict decode below names any error.
	h, ok := headerOf(raw)
	if !ok {
		_ = json.Unmarshal(j, &h)
	}
	kind, ok := kinds[gvk{h.APIVersion, h.Kind}]
	if kind.namespaced && h.Metadata.Namespace == "" {
		h.Metadata.Namespace = DefaultNamespace
	}
	if what := strings.TrimSpace(h.Kind + " " + objectName(h.Metadata.Namespace, h.Metadata.Name)); what != "" {
		desc = " (" + what + ")"
	}
	if !ok {
		return entry{}, desc, unsupported(h.APIVersion, h.Kind)
	}
	obj := kind.new()
	if err := decodeStrict(j, raw, obj); err != nil {
		return entry{}, desc, err
	}
	meta := obj.(metav1.Object)
	if err := checkMeta(kind.kind, kind.namespaced, meta); err != nil {
		return entry{}, desc, err
	}
	// The translator tells a changed object by its resourceVersion (see
	// translate.Incremental): one that names its content's version
	// stands in for the API server's.
	sum := doc.sum
	if !doc.summed {
		sum = sha256.Sum256(doc.data)
	}
	meta.SetResourceVersion(hex.EncodeToString(sum[:12]))
	key := objectKey{kind.kind, meta.GetNamespace(), meta.GetName()}
	return entry{key: key, where: where, kind: kind, obj: obj}, desc, nil
}

// fastYAML turns on fastJSON (off in tests comparing Load with and
// without it).
var fastYAML = true

// toJSON converts a document to JSON as sigs.k8s.io/yaml's
// YAMLToJSONStrict does (with fastJSON when fast is set), and returns it decoded too (see fastJSON: the
// numbers in raw may be int64s or float64s). It fails unless the document
// is a mapping.
func toJSON(doc document, fast bool) (j []byte, raw map[string]any, err error) {
	if fast {
		if j, raw, ok := fastJSON(doc.data); ok {
			return j, raw, nil
		}
	}
	j, err = yaml.YAMLToJSONStrict(doc.data)
	if err != nil {
		// One line per error, with line numbers counted in the file.
		msg := newlineRE.ReplaceAllString(err.Error(), " ")
		msg = yamlLineRE.ReplaceAllStringFunc(msg, func(s string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
			return "line " + strconv.Itoa(doc.line+n-1)
		})
		return nil, nil, errors.New(msg)
	}
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		return nil, nil, err
	}
	raw, ok := v.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("a document must be a mapping with apiVersion and kind, not %s", jsonKind(v))
	}
	return j, raw, nil
}

// objectName formats an object's name as "namespace/name", or "name" for a
// cluster-scoped object.
func objectName(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// gvk is an apiVersion and kind.
type gvk struct{ apiVersion, kind string }

// kindInfo says how to decode and collect one supported kind.
type kindInfo struct {
	kind       string
	namespaced bool
	new        func() any
	add        func(in *translate.Input, obj any)
}

// set replaces the i-th object of kind k's list in in with obj, as add
// would have added it.
func (k kindInfo) set(in *translate.Input, i int, obj any) {
	var one translate.Input
	k.add(&one, obj)
	list := inputList(k.kind)
	reflect.ValueOf(in).Elem().FieldByName(list).Index(i).Set(reflect.ValueOf(&one).Elem().FieldByName(list).Index(0))
}

// inputList names the field of translate.Input that lists objects of kind.
func inputList(kind string) string {
	switch kind {
	case "GatewayClass":
		return "GatewayClasses"
	case "AuthPolicy":
		return "AuthPolicies"
	case "TargetGroupPolicy":
		return "TargetGroupPolicies"
	}
	return kind + "s"
}

// kinds are the supported kinds, by apiVersion and kind.
var kinds = map[gvk]kindInfo{
	{"gateway.networking.k8s.io/v1", "GatewayClass"}:   kindOf(false, func(in *translate.Input) *[]gatewayv1.GatewayClass { return &in.GatewayClasses }),
	{"gateway.networking.k8s.io/v1", "Gateway"}:        kindOf(true, func(in *translate.Input) *[]gatewayv1.Gateway { return &in.Gateways }),
	{"gateway.networking.k8s.io/v1", "HTTPRoute"}:      kindOf(true, func(in *translate.Input) *[]gatewayv1.HTTPRoute { return &in.HTTPRoutes }),
	{"gateway.networking.k8s.io/v1", "GRPCRoute"}:      kindOf(true, func(in *translate.Input) *[]gatewayv1.GRPCRoute { return &in.GRPCRoutes }),
	{"gateway.networking.k8s.io/v1", "TLSRoute"}:       kindOf(true, func(in *translate.Input) *[]gatewayv1.TLSRoute { return &in.TLSRoutes }),
	{"gateway.networking.k8s.io/v1", "ReferenceGrant"}: kindOf(true, func(in *translate.Input) *[]gatewayv1.ReferenceGrant { return &in.ReferenceGrants }),
	{"trellis.dev/v1alpha1", "AuthPolicy"}:             kindOf(true, func(in *translate.Input) *[]v1alpha1.AuthPolicy { return &in.AuthPolicies }),
	{"trellis.dev/v1alpha1", "TargetGroupPolicy"}:      kindOf(true, func(in *translate.Input) *[]v1alpha1.TargetGroupPolicy { return &in.TargetGroupPolicies }),
	{"v1", "Pod"}: kindOf(true, func(in *translate.Input) *[]corev1.Pod { return &in.Pods }),
	{"v1", "Namespace"}: {
		kind: "Namespace",
		new:  func() any { return &corev1.Namespace{} },
		add: func(in *translate.Input, obj any) {
			// The API server labels every namespace with its name (and
			// overwrites that label), which listeners' namespace
			// selectors may match; so does the file provider.
			ns := obj.(*corev1.Namespace)
			if ns.Labels[corev1.LabelMetadataName] != ns.Name {
				ns.Labels = maps.Clone(ns.Labels)
				if ns.Labels == nil {
					ns.Labels = map[string]string{}
				}
				ns.Labels[corev1.LabelMetadataName] = ns.Name
			}
			in.Namespaces = append(in.Namespaces, *ns)
		},
	},
	{"v1", "Service"}: kindOf(true, func(in *translate.Input) *[]corev1.Service { return &in.Services }),
	{"v1", "Secret"}: {
		kind: "Secret", namespaced: true,
		new: func() any { return &corev1.Secret{} },
		add: func(in *translate.Input, obj any) {
			// stringData is write-only: the API server merges it into
			// data, and so does the file provider.
			s := obj.(*corev1.Secret)
			if len(s.StringData) > 0 && s.Data == nil {
				s.Data = map[string][]byte{}
			}
			for k, v := range s.StringData {
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
			in.Secrets = append(in.Secrets, *s)
		},
	},
	{"multicluster.x-k8s.io/v1beta1", "ServiceImport"}: kindOf(true, func(in *translate.Input) *[]mcsv1beta1.ServiceImport { return &in.ServiceImports }),
	// v1alpha1 is still served by the MCS CRDs; it is read as v1beta1,
	// which has the same fields.
	{"multicluster.x-k8s.io/v1alpha1", "ServiceImport"}: {
		kind: "ServiceImport", namespaced: true,
		new: func() any { return &mcsv1alpha1.ServiceImport{} },
		add: func(in *translate.Input, obj any) {
			in.ServiceImports = append(in.ServiceImports, *serviceImportV1beta1(obj.(*mcsv1alpha1.ServiceImport)))
		},
	},
	{"discovery.k8s.io/v1", "EndpointSlice"}: kindOf(true, func(in *translate.Input) *[]discoveryv1.EndpointSlice { return &in.EndpointSlices }),
}

// kindOf is the kindInfo of a kind whose objects decode to a T and are
// collected, as they are, in the list of translate.Input that list
// returns; the kind is T's name.
func kindOf[T any](namespaced bool, list func(in *translate.Input) *[]T) kindInfo {
	return kindInfo{
		kind:       reflect.TypeFor[T]().Name(),
		namespaced: namespaced,
		new:        func() any { return new(T) },
		add: func(in *translate.Input, obj any) {
			l := list(in)
			*l = append(*l, *obj.(*T))
		},
	}
}

// unsupported explains why apiVersion and kind are not read.
func unsupported(apiVersion, kind string) error {
	if apiVersion == "" || kind == "" {
		return errors.New("apiVersion and kind are required")
	}
	var versions []string
	for k := range kinds {
		if k.kind == kind {
			versions = append(versions, k.apiVersion)
		}
	}
	if len(versions) > 0 {
		slices.Sort(versions)
		return fmt.Errorf("%s must have apiVersion %s, not %s", kind, strings.Join(versions, " or "), apiVersion)
	}
	return fmt.Errorf("kind %s (%s) is not supported; files may hold GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute and ReferenceGrant (%s/v1), AuthPolicy and TargetGroupPolicy (trellis.dev/v1alpha1), Namespace, Service, Secret and Pod (v1), EndpointSlice (discovery.k8s.io/v1) and ServiceImport (multicluster.x-k8s.io/v1beta1 or v1alpha1)",
		kind, apiVersion, gatewayv1.GroupName)
}

// checkMeta checks an object's name and namespace as the API server would,
// defaulting the namespace of namespaced objects.
func checkMeta(kind string, namespaced bool, m metav1.Object) error {
	if !namespaced {
		if m.GetNamespace() != "" {
			return fmt.Errorf("metadata.namespace: %s is cluster-scoped and takes no namespace", kind)
		}
	} else if m.GetNamespace() == "" {
		m.SetNamespace(DefaultNamespace)
	} else if errs := validation.IsDNS1123Label(m.GetNamespace()); len(errs) > 0 {
		return fmt.Errorf("metadata.namespace: %q is invalid: %s", m.GetNamespace(), strings.Join(errs, "; "))
	}
	if m.GetName() == "" {
		return errors.New("metadata.name: required")
	}
	validName := validation.IsDNS1123Subdomain
	if kind == "Service" {
		// A DNS label, which may start with a digit: the apiserver's rule
		// since Kubernetes 1.34 (RelaxedServiceNameValidation).
		validName = validation.IsDNS1123Label
	}
	if errs := validName(m.GetName()); len(errs) > 0 {
		return fmt.Errorf("metadata.name: %q is invalid: %s", m.GetName(), strings.Join(errs, "; "))
	}
	return nil
}
