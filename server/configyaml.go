package server

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The YAML decoder reports mistakes in Go's terms ("cannot unmarshal !!int
// `5` into server.LimitsConfig", "field x not found in type
// server.CAConfig", "EOF"). checkShape reads the file's tree against the
// Config struct first and says every mistake in the file's terms: the line,
// the field's dotted name and what kind of value it wants.

var (
	durationType  = reflect.TypeOf(Duration{})
	unmarshalerTy = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// checkShape returns one problem per unknown field or value of the wrong
// kind under n, which is decoded into a value of type t at path.
func checkShape(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an empty value leaves the default
	}
	if t == durationType || reflect.PointerTo(t).Implements(unmarshalerTy) {
		if n.Kind != yaml.ScalarNode {
			return []error{shapeError(n, path, "a duration such as 30s, 2m or 1h")}
		}
		if _, err := time.ParseDuration(n.Value); t == durationType && err != nil {
			return []error{shapeError(n, path, "a duration in h, m and s, such as 30s, 10m or 1h30m (no days or years: a day is 24h, a year 8760h)")}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return []error{shapeError(n, path, "a section of fields (name: value lines, or {name: value, …})")}
		}
		fields := yamlFields(t)
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" {
				errs = append(errs, checkMerge(v, t, path)...)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				errs = append(errs, fmt.Errorf("line %d: unknown field %q (every field is listed in docs/config.md)",
					k.Line, joinPath(path, k.Value)))
				continue
			}
			errs = append(errs, checkShape(v, f.Type, joinPath(path, k.Value))...)
		}
		return errs
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return []error{shapeError(n, path, "a mapping of names to values")}
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, checkShape(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value))...)
		}
		return errs
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return []error{shapeError(n, path, "a list ([a, b], or one \"- item\" line each)")}
		}
		var errs []error
		for i, item := range n.Content {
			errs = append(errs, checkShape(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
		return errs
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return []error{shapeError(n, path, "true or false")}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && !(n.Tag == "!!float" && wholeFloat(n.Value))) {
			return []error{shapeError(n, path, "a whole number")}
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return []error{shapeError(n, path, "a number")}
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return []error{shapeError(n, path, "a single value (text), not a list or a section")}
		}
	}
	return nil
}

// checkMerge checks a merge key's value ("<<: *anchor", or a list of
// them): mappings read into the same type as the mapping they merge into.
func checkMerge(v *yaml.Node, t reflect.Type, path string) []error {
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		var errs []error
		for _, item := range v.Content {
			errs = append(errs, checkMerge(item, t, path)...)
		}
		return errs
	}
	return checkShape(v, t, path)
}

// wholeFloat: a float the decoder reads into an integer (1e6, 3.0).
func wholeFloat(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53
}

// yamlFields maps a struct's YAML names to its fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

// shapeError says what the value at path should have been.
func shapeError(n *yaml.Node, path, want string) error {
	return fmt.Errorf("line %d: %s: want %s, not %s", n.Line, fieldName(path), want, describeNode(n))
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a section"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "…"
	}
	return fmt.Sprintf("%q", v)
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func fieldName(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

// goTypeNames are what is left of Go in a decoder error the shape check
// did not catch first; they are said in the file's terms.
var goTypeNames = regexp.MustCompile(` into (\[\])?[\w.*\[\]]+| in type [\w.]+|!!\w+ `)

// readableYAMLError rewrites a decoder error without Go's names.
func readableYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = strings.ReplaceAll(msg, "cannot unmarshal", "cannot read")
	if strings.Contains(msg, "found character that cannot start any token") || strings.Contains(msg, "found a tab character") {
		// Nearly always a tab: YAML indents with spaces only.
		msg += " (a tab? YAML indents with spaces only)"
	}
	return goTypeNames.ReplaceAllString(msg, " ")
}
