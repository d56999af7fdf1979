package loadgen

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// SchemaJSON is loadgen/schema/bench-v1.json, the JSON Schema of Results.
//
//go:embed schema/bench-v1.json
var SchemaJSON []byte

// ValidateJSON checks a results file against SchemaJSON. It implements the
// part of JSON Schema (2020-12) that the schema uses: type, const, enum,
// required, properties, additionalProperties: false, items, minItems,
// minimum, minLength and local $ref. That keeps the schema file the one
// definition of the format, checked in tests, without a schema library.
func ValidateJSON(data []byte) error {
	var schema map[string]any
	if err := json.Unmarshal(SchemaJSON, &schema); err != nil {
		return fmt.Errorf("parse the embedded schema: %w", err)
	}
	var doc any
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("parse results: %w", err)
	}
	v := &validator{root: schema}
	v.check(schema, doc, "$")
	return errors.Join(v.errs...)
}

type validator struct {
	root map[string]any
	errs []error
}

func (v *validator) fail(path, format string, args ...any) {
	if len(v.errs) < 20 {
		v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
}

func (v *validator) resolve(ref string) map[string]any {
	if !strings.HasPrefix(ref, "#/") {
		return nil
	}
	var cur any = v.root
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	m, _ := cur.(map[string]any)
	return m
}

func typeOf(x any) string {
	switch t := x.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if f, err := t.Float64(); err == nil && f == math.Trunc(f) && !strings.ContainsAny(t.String(), ".eE") {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "unknown"
}

func (v *validator) check(s map[string]any, x any, path string) {
	if ref, ok := s["$ref"].(string); ok {
		target := v.resolve(ref)
		if target == nil {
			v.fail(path, "schema has an unresolvable $ref %q", ref)
			return
		}
		v.check(target, x, path)
		return
	}
	got := typeOf(x)
	if t, ok := s["type"].(string); ok {
		if !(t == got || (t == "number" && got == "integer")) {
			v.fail(path, "is %s, want %s", got, t)
			return
		}
	}
	if c, ok := s["const"]; ok && fmt.Sprint(c) != fmt.Sprint(x) {
		v.fail(path, "is %v, want %v", x, c)
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if fmt.Sprint(e) == fmt.Sprint(x) {
				found = true
			}
		}
		if !found {
			v.fail(path, "is %v, want one of %v", x, enum)
		}
	}
	if min, ok := s["minimum"].(float64); ok {
		if n, isNum := x.(json.Number); isNum {
			if f, _ := n.Float64(); f < min {
				v.fail(path, "is %v, below the minimum %v", f, min)
			}
		}
	}
	if ml, ok := s["minLength"].(float64); ok {
		if str, isStr := x.(string); isStr && float64(len(str)) < ml {
			v.fail(path, "is shorter than %v characters", ml)
		}
	}
	switch t := x.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, present := t[r.(string)]; !present {
					v.fail(path, "lacks required field %q", r)
				}
			}
		}
		for k, val := range t {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if ap, set := s["additionalProperties"].(bool); set && !ap {
					v.fail(path, "has unknown field %q", k)
				}
				continue
			}
			v.check(ps, val, path+"."+k)
		}
	case []any:
		if mi, ok := s["minItems"].(float64); ok && float64(len(t)) < mi {
			v.fail(path, "has %d items, want at least %v", len(t), mi)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range t {
				v.check(items, e, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
}
