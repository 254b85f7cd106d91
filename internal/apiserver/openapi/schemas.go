package openapi

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	smdschema "sigs.k8s.io/structured-merge-diff/v6/schema"
)

const refPrefix = "#/components/schemas/"

// Methods k8s.io types implement to steer their OpenAPI form; the schema
// generator looks for them the same way upstream's openapi-gen does.
type (
	modelNamer     interface{ OpenAPIModelName() string }
	swaggerDoccer  interface{ SwaggerDoc() map[string]string }
	schemaTyper    interface{ OpenAPISchemaType() []string }
	schemaFormater interface{ OpenAPISchemaFormat() string }
	oneOfTyper     interface{ OpenAPIV3OneOfTypes() []string }
)

// definition is one entry of components.schemas.
type definition struct {
	schema map[string]any
	refs   []string // model names this schema refers to directly
	json   []byte   // the encoded schema, filled by encode
}

// schemaGen turns Go types into OpenAPI v3 component schemas.
type schemaGen struct {
	// smd is client-go's structured-merge-diff schema of the built-in types
	// (nil disables list/map markers and defaults). It carries what Go types
	// cannot: +listType/+listMapKey/+mapType markers and field defaults.
	smd    *smdschema.Schema
	defs   map[string]*definition
	byType map[reflect.Type]string
	// gvks adds x-kubernetes-group-version-kind to definitions by model name.
	gvks map[string][]map[string]string
}

func newSchemaGen(smd *smdschema.Schema) *schemaGen {
	return &schemaGen{
		smd:    smd,
		defs:   map[string]*definition{},
		byType: map[reflect.Type]string{},
		gvks:   map[string][]map[string]string{},
	}
}

// modelName is the components.schemas key of a named Go type, like
// "io.k8s.api.core.v1.Service": the generated OpenAPIModelName when the type
// has one, else the package path with its domain reversed
// (k8s.io/api/core/v1 → io.k8s.api.core.v1) plus the type name.
func modelName(t reflect.Type) string {
	if n, ok := reflect.Zero(t).Interface().(modelNamer); ok {
		return n.OpenAPIModelName()
	}
	pkg := t.PkgPath()
	domain, rest, _ := strings.Cut(pkg, "/")
	parts := strings.Split(domain, ".")
	slices.Reverse(parts)
	name := strings.Join(parts, ".")
	if rest != "" {
		name += "." + strings.ReplaceAll(rest, "/", ".")
	}
	return name + "." + t.Name()
}

// ref returns {"$ref": ...} for a model name.
func ref(name string) map[string]any { return map[string]any{"$ref": refPrefix + name} }

// define makes sure the named struct type t has a definition and returns its
// model name.
func (g *schemaGen) define(t reflect.Type) string {
	if name, ok := g.byType[t]; ok {
		return name
	}
	name := modelName(t)
	g.byType[t] = name
	d := &definition{}
	g.defs[name] = d // before recursing: types may refer to themselves
	d.schema = g.structSchema(t, name, &d.refs)
	if gvks := g.gvks[name]; len(gvks) > 0 {
		d.schema["x-kubernetes-group-version-kind"] = gvks
	}
	return name
}

// structSchema builds the schema of the named struct type t.
func (g *schemaGen) structSchema(t reflect.Type, name string, refs *[]string) map[string]any {
	zero := reflect.Zero(t).Interface()
	s := map[string]any{}
	if d, ok := zero.(swaggerDoccer); ok {
		if desc := d.SwaggerDoc()[""]; desc != "" {
			s["description"] = desc
		}
	}

	// Types with their own JSON form (Time, Quantity, IntOrString …) say
	// what it is; their fields are not what goes over the wire.
	if st, ok := zero.(schemaTyper); ok {
		types := st.OpenAPISchemaType()
		format := ""
		if f, ok := zero.(schemaFormater); ok {
			format = f.OpenAPISchemaFormat()
		}
		if format != "" {
			s["format"] = format
		}
		if o, ok := zero.(oneOfTyper); ok {
			var oneOf []any
			intOrString := false
			for _, typ := range o.OpenAPIV3OneOfTypes() {
				oneOf = append(oneOf, map[string]any{"type": typ})
				intOrString = intOrString || typ == "integer" || typ == "number"
			}
			s["oneOf"] = oneOf
			// The structural-schema spelling of the same thing, for
			// tools that look for it rather than at oneOf.
			if intOrString && slices.Contains(o.OpenAPIV3OneOfTypes(), "string") {
				s["x-kubernetes-int-or-string"] = true
			}
		} else if len(types) > 0 {
			s["type"] = types[0]
		}
		return s
	}
	if t == reflect.TypeFor[metav1.Duration]() {
		// Marshals as a Go duration string ("1m30s").
		s["type"] = "string"
		return s
	}

	s["type"] = "object"
	var smdMap *smdschema.Map
	if g.smd != nil {
		if td, ok := g.smd.FindNamedType(name); ok && td.Map != nil {
			smdMap = td.Map
			if td.Map.ElementRelationship == smdschema.Atomic {
				s["x-kubernetes-map-type"] = "atomic"
			}
			if unions := unionsExt(td.Map.Unions); unions != nil {
				s["x-kubernetes-unions"] = unions
			}
		}
	}
	props := map[string]any{}
	var required []string
	g.addFields(t, props, &required, smdMap, refs)
	if len(props) > 0 {
		s["properties"] = props
	}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// addFields adds the JSON fields of struct t (and of structs it inlines) to
// props.
func (g *schemaGen) addFields(t reflect.Type, props map[string]any, required *[]string, smdMap *smdschema.Map, refs *[]string) {
	var docs map[string]string
	if d, ok := reflect.Zero(t).Interface().(swaggerDoccer); ok {
		docs = d.SwaggerDoc()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		jsonName, opts, _ := strings.Cut(tag, ",")
		inline := strings.Contains(","+opts+",", ",inline,") || (f.Anonymous && jsonName == "")
		if inline {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				g.addFields(ft, props, required, smdMap, refs)
				continue
			}
		}
		if jsonName == "" {
			jsonName = f.Name
		}
		omitEmpty := strings.Contains(","+opts+",", ",omitempty,") || strings.Contains(","+opts+",", ",omitzero,")
		var prop map[string]any
		if smdMap != nil {
			sf, _ := smdMap.FindField(jsonName)
			prop = g.fieldSchema(f, docs[jsonName], &sf, refs)
		} else {
			prop = g.fieldSchema(f, docs[jsonName], nil, refs)
			guessMarkers(prop, f.Type, omitEmpty)
		}
		props[jsonName] = prop
		if !omitEmpty {
			*required = append(*required, jsonName)
		}
	}
}

// fieldSchema is the property schema of struct field f.
func (g *schemaGen) fieldSchema(f reflect.StructField, desc string, smdField *smdschema.StructField, refs *[]string) map[string]any {
	base := g.typeSchema(f.Type, refs)
	var s map[string]any
	if _, isRef := base["$ref"]; isRef {
		// Upstream's v3 form: a reference wrapped in allOf, so that it can
		// carry the field's own description and default beside it.
		s = map[string]any{"allOf": []any{base}}
	} else {
		s = base
	}
	if desc != "" {
		s["description"] = desc
	}
	if v := f.Tag.Get("patchStrategy"); v != "" {
		s["x-kubernetes-patch-strategy"] = v
	}
	if v := f.Tag.Get("patchMergeKey"); v != "" {
		s["x-kubernetes-patch-merge-key"] = v
	}
	if smdField == nil || smdField.Name == "" {
		return s
	}
	if smdField.Default != nil {
		s["default"] = jsonValue(smdField.Default)
	}
	atom, ok := g.smd.Resolve(smdField.Type)
	if !ok {
		return s
	}
	ft := f.Type
	for ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	switch {
	case ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8 && atom.List != nil:
		switch {
		case atom.List.ElementRelationship == smdschema.Associative && len(atom.List.Keys) > 0:
			s["x-kubernetes-list-type"] = "map"
			s["x-kubernetes-list-map-keys"] = slices.Clone(atom.List.Keys)
		case atom.List.ElementRelationship == smdschema.Associative:
			s["x-kubernetes-list-type"] = "set"
		default:
			s["x-kubernetes-list-type"] = "atomic"
		}
	case ft.Kind() == reflect.Map && atom.Map != nil && atom.Map.ElementRelationship == smdschema.Atomic:
		s["x-kubernetes-map-type"] = "atomic"
	case ft.Kind() == reflect.Struct && smdField.Type.ElementRelationship != nil && *smdField.Type.ElementRelationship == smdschema.Atomic:
		// A field-level +structType=atomic on an otherwise granular struct.
		s["x-kubernetes-map-type"] = "atomic"
	}
	return s
}

// guessMarkers sets what the structured-merge-diff schema would have told
// for a type it does not cover (meta/v1 list and discovery types, anything
// outside k8s.io/api), using openapi-gen's own rules: non-pointer structs
// default to {}, non-pointer scalars without omitempty to their zero value,
// and lists are maps on their patch merge key and sets when merged without
// one (unmarked lists are atomic to server-side apply anyway).
func guessMarkers(prop map[string]any, t reflect.Type, omitEmpty bool) {
	switch t.Kind() {
	case reflect.Struct:
		if _, isRef := prop["allOf"]; isRef && !implements[schemaTyper](t) && hasJSONFields(t) {
			prop["default"] = map[string]any{}
		}
	case reflect.String:
		if !omitEmpty {
			prop["default"] = ""
		}
	case reflect.Bool:
		if !omitEmpty {
			prop["default"] = false
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		if !omitEmpty {
			prop["default"] = 0
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return
		}
		key, hasKey := prop["x-kubernetes-patch-merge-key"].(string)
		strategy, _ := prop["x-kubernetes-patch-strategy"].(string)
		switch {
		case hasKey:
			prop["x-kubernetes-list-type"] = "map"
			prop["x-kubernetes-list-map-keys"] = []string{key}
		case strings.Contains(strategy, "merge"):
			prop["x-kubernetes-list-type"] = "set"
		}
	}
}

// hasJSONFields reports whether struct t has a field that appears in JSON
// (RawExtension and FieldsV1 have none: they marshal themselves).
func hasJSONFields(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
			return true
		}
	}
	return false
}

func implements[I any](t reflect.Type) bool {
	_, ok := reflect.Zero(t).Interface().(I)
	return ok
}

// unionsExt is the x-kubernetes-unions extension of structured-merge-diff
// unions.
func unionsExt(unions []smdschema.Union) []any {
	var out []any
	for _, u := range unions {
		fields := map[string]string{}
		for _, f := range u.Fields {
			fields[f.FieldName] = f.DiscriminatorValue
		}
		ext := map[string]any{"fields-to-discriminateBy": fields}
		if u.Discriminator != nil {
			ext["discriminator"] = *u.Discriminator
		}
		if u.DeduceInvalidDiscriminator {
			ext["deduceInvalidDiscriminator"] = true
		}
		out = append(out, ext)
	}
	return out
}

// typeSchema is the inline schema of a value of type t: a reference for
// named structs, the JSON form otherwise.
func (g *schemaGen) typeSchema(t reflect.Type, refs *[]string) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		name := g.define(t)
		*refs = append(*refs, name)
		return ref(name)
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float32:
		return map[string]any{"type": "number", "format": "float"}
	case reflect.Float64:
		return map[string]any{"type": "number", "format": "double"}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": g.typeSchema(t.Elem(), refs)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.typeSchema(t.Elem(), refs)}
	default:
		// interface{} and the like: any JSON value.
		return map[string]any{}
	}
}

// jsonValue converts a default value parsed from YAML into one encoding/json
// can write (YAML maps may have interface{} keys).
func jsonValue(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonValue(e)
		}
		return m
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = jsonValue(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = jsonValue(e)
		}
		return l
	}
	return v
}

// encode marshals every definition once; documents splice the bytes in.
func (g *schemaGen) encode() error {
	for name, d := range g.defs {
		if d.json != nil {
			continue
		}
		b, err := json.Marshal(d.schema)
		if err != nil {
			return fmt.Errorf("openapi: encoding schema %s: %w", name, err)
		}
		d.json = b
	}
	return nil
}

// closure returns the model names reachable from roots, sorted.
func (g *schemaGen) closure(roots []string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		if d := g.defs[n]; d != nil {
			for _, r := range d.refs {
				walk(r)
			}
		}
	}
	for _, r := range roots {
		walk(r)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
