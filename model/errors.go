package model

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// GeneratedOrigin is the file name given to objects that came from no file.
const GeneratedOrigin = "<generated>"

// errorList collects FieldErrors. It keeps only the first error about any
// one field of one object, because conversion and validation sometimes see
// the same mistake twice (an unparseable IP is first a parse error, then an
// invalid address).
type errorList struct {
	defaultFile string
	errs        []*FieldError
	seen        map[string]bool
}

func newErrorList(defaultFile string) *errorList {
	return &errorList{defaultFile: defaultFile, seen: map[string]bool{}}
}

func (l *errorList) add(o Origin, field, format string, args ...any) {
	if o.File == "" {
		o.File = l.defaultFile
	}
	// spec.clusterIP is spec.clusterIPs[0] under another name.
	keyField := field
	if keyField == "spec.clusterIP" {
		keyField = "spec.clusterIPs[0]"
	}
	key := fmt.Sprintf("%s\x00%d\x00%s\x00%s\x00%s", o.File, o.Doc, o.Kind, o.Name, keyField)
	if l.seen[key] {
		return
	}
	l.seen[key] = true
	l.errs = append(l.errs, &FieldError{Origin: o, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// err joins every error, ordered by file and document so that the list
// reads top to bottom like the input; nil if there were none.
func (l *errorList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	sorted := slices.Clone(l.errs)
	slices.SortStableFunc(sorted, func(a, b *FieldError) int {
		if c := strings.Compare(a.Origin.File, b.Origin.File); c != 0 {
			return c
		}
		return a.Origin.Doc - b.Origin.Doc
	})
	errs := make([]error, len(sorted))
	for i, e := range sorted {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// FieldErrors returns every *FieldError inside err (as returned by Parse or
// Validate), in order; nil if there is none.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}
