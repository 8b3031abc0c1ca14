package file

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// decodeStrict decodes the JSON document j (raw is the same document decoded
// into maps and slices) into obj, as strictly as the Kubernetes API server:
// every field name must match exactly, including case, which encoding/json
// alone does not check. Every unknown field is reported with its path.
func decodeStrict(j []byte, raw any, obj any) error {
	if anyUnknown(raw, reflect.TypeOf(obj)) {
		var unknown []error
		unknownFields("", raw, reflect.TypeOf(obj), &unknown)
		return errors.Join(unknown...)
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	if err := d.Decode(obj); err != nil {
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
			return fmt.Errorf("%s: cannot use a %s as %s", te.Field, te.Value, te.Type)
		}
		return err
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// anyUnknown reports whether unknownFields would find an unknown field in
// v, without building paths or sorting keys: the common case, a document
// without one, costs no allocation.
func anyUnknown(v any, typ reflect.Type) bool {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if reflect.PointerTo(typ).Implements(jsonUnmarshaler) {
		return false
	}
	switch typ.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		fields := jsonFields(typ)
		for k, e := range m {
			ft, ok := fields[k]
			if !ok || anyUnknown(e, ft) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		s, ok := v.([]any)
		if !ok {
			return false
		}
		for _, e := range s {
			if anyUnknown(e, typ.Elem()) {
				return true
			}
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		for _, e := range m {
			if anyUnknown(e, typ.Elem()) {
				return true
			}
		}
	}
	return false
}

// unknownFields appends an error for every key in v, a decoded JSON value
// found at path, that type typ has no field for. Values whose type decodes
// itself (json.Unmarshaler) are not inspected; values of the wrong JSON type
// are left to the decoder to report.
func unknownFields(path string, v any, typ reflect.Type, out *[]error) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if reflect.PointerTo(typ).Implements(jsonUnmarshaler) {
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		fields := jsonFields(typ)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := fields[k]
			if !ok {
				*out = append(*out, fmt.Errorf("unknown field %q", p))
				continue
			}
			unknownFields(p, m[k], ft, out)
		}
	case reflect.Slice, reflect.Array:
		s, ok := v.([]any)
		if !ok {
			return
		}
		for i, e := range s {
			unknownFields(path+"["+strconv.Itoa(i)+"]", e, typ.Elem(), out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			unknownFields(path+"["+k+"]", m[k], typ.Elem(), out)
		}
	}
}

// fieldsOf caches jsonFields by type: the same few types are walked for
// every document, and files are decoded concurrently.
var fieldsOf sync.Map // reflect.Type → map[string]reflect.Type

// jsonFields returns the JSON field names of struct type typ and their types,
// following encoding/json: embedded structs without a name are inlined, and
// an untagged field is named by its Go name. The map returned is shared:
// callers must not modify it.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	if f, ok := fieldsOf.Load(typ); ok {
		return f.(map[string]reflect.Type)
	}
	f := jsonFieldsOf(typ)
	fieldsOf.Store(typ, f)
	return f
}

// jsonFieldsOf is jsonFields, uncached.
func jsonFieldsOf(typ reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		ft := f.Type
		if f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, t := range jsonFields(ft) {
					if _, shadowed := fields[k]; !shadowed {
						fields[k] = t
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = ft
	}
	return fields
}

// jsonKind names the JSON type of a decoded value, for messages.
func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}
