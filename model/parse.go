package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Source is one input file: its name (used in every message about it) and
// its bytes.
type Source struct {
	Name string
	Data []byte
}

// Parse reads one file of multi-document YAML and returns the cluster it
// describes. See ParseSources.
func Parse(name string, data []byte) (*Cluster, error) {
	return ParseSources(Source{Name: name, Data: data})
}

// ParseFiles reads the named files ("-" is standard input) and merges them
// into one cluster. See ParseSources.
//
// Equivalent input: kubectl get svc,endpointslices,nodes -A -o yaml > cluster.yaml
func ParseFiles(paths ...string) (*Cluster, error) {
	srcs := make([]Source, 0, len(paths))
	for _, p := range paths {
		var (
			data []byte
			err  error
			name = p
		)
		if p == "-" {
			name = "<stdin>"
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(p)
		}
		if err != nil {
			return nil, fmt.Errorf("read cluster file %s: %w", name, err)
		}
		srcs = append(srcs, Source{Name: name, Data: data})
	}
	return ParseSources(srcs...)
}

// ParseSources reads several files of multi-document YAML and merges them
// into one cluster, as if they had been applied to one API server.
//
// Accepted objects are v1 Service, discovery.k8s.io/v1 EndpointSlice, v1
// Node, and lists of them (v1 List, ServiceList, NodeList,
// EndpointSliceList): exactly what `kubectl get svc,endpointslices,nodes -A
// -o yaml` prints, status and managedFields included. Objects of any other
// kind are skipped and recorded in Cluster.Warnings. Fields are decoded
// strictly: an unknown field is an error that names its path.
//
// On failure the error joins one *FieldError per problem (use errors.As or
// unwrap the join to walk them), so a user sees every problem at once.
func ParseSources(srcs ...Source) (*Cluster, error) {
	p := &parser{errs: newErrorList("")}
	for _, src := range srcs {
		p.readSource(src)
	}
	c := p.build()
	if err := p.errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// parsedObject is one decoded Service, EndpointSlice or Node with where it
// came from.
type parsedObject struct {
	origin Origin
	svc    *corev1.Service
	slice  *discoveryv1.EndpointSlice
	node   *corev1.Node
}

type parser struct {
	objects  []*parsedObject
	warnings []string
	errs     *errorList
	// lostObjects is set when some document could not be decoded at all, so
	// "Service does not exist" complaints may only be echoes of that error.
	lostObjects bool
}

// document is one YAML document of a file.
type document struct {
	body []byte
	line int // 1-based line of the file where body starts
}

// splitDocuments cuts a multi-document YAML stream at "---" lines, the way
// kubectl's YAML reader does, and remembers where each piece starts so that
// messages can quote file line numbers. Pieces holding only comments and
// blank lines are dropped: they are not documents to a person either.
func splitDocuments(data []byte) []document {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var docs []document
	var cur bytes.Buffer
	start, lineNo := 1, 0
	flush := func(next int) {
		if hasContent(cur.Bytes()) {
			docs = append(docs, document{body: bytes.Clone(cur.Bytes()), line: start})
		}
		cur.Reset()
		start = next
	}
	for len(data) > 0 {
		lineNo++
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		if isSeparator(line) {
			flush(lineNo + 1)
			continue
		}
		cur.Write(line)
	}
	flush(lineNo + 1)
	return docs
}

func isSeparator(line []byte) bool {
	if !bytes.HasPrefix(line, []byte("---")) {
		return false
	}
	rest := bytes.TrimSpace(line[3:])
	return len(rest) == 0 || rest[0] == '#'
}

func hasContent(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return true
		}
	}
	return false
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// yamlError rewrites the YAML library's document-relative "line N" into a
// line of the file and drops its "error converting YAML to JSON" wrapping.
func yamlError(err error, firstLine int) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	// Several problems come as "unmarshal errors:\n  line 3: …\n  line 4: …";
	// keep one error per line of output.
	if rest, ok := strings.CutPrefix(msg, "unmarshal errors:"); ok {
		var parts []string
		for _, l := range strings.Split(rest, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				parts = append(parts, l)
			}
		}
		msg = strings.Join(parts, "; ")
	}
	return yamlLineRE.ReplaceAllStringFunc(msg, func(s string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
		return fmt.Sprintf("line %d", n+firstLine-1)
	})
}

func (p *parser) readSource(src Source) {
	for i, doc := range splitDocuments(src.Data) {
		origin := Origin{File: src.Name, Doc: i, Kind: "document", Name: fmt.Sprintf("#%d (line %d)", i+1, doc.line)}
		j, err := yaml.YAMLToJSONStrict(doc.body)
		if err != nil {
			p.lostObjects = true
			p.errs.add(origin, "", "invalid YAML: %s", yamlError(err, doc.line))
			continue
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue
		}
		p.decodeObject(origin, j, "", "")
	}
}

// objectHead is what every Kubernetes object starts with.
type objectHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// listObject is the envelope of v1 List and the typed lists.
type listObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   json.RawMessage   `json:"metadata,omitempty"`
	Items      []json.RawMessage `json:"items"`
}

const (
	groupDiscoveryV1 = "discovery.k8s.io/v1"
	labelServiceName = discoveryv1.LabelServiceName // kubernetes.io/service-name
	labelZone        = corev1.LabelTopologyZone     // topology.kubernetes.io/zone
)

// decodeObject decodes one object (a document or a list item). Items of typed
// lists may omit apiVersion and kind; impliedVersion/impliedKind fill them.
func (p *parser) decodeObject(at Origin, j []byte, impliedVersion, impliedKind string) {
	var head objectHead
	if err := json.Unmarshal(j, &head); err != nil {
		p.errs.add(at, "", "not a Kubernetes object (expected a mapping with apiVersion and kind)")
		p.lostObjects = true
		return
	}
	if head.Kind == "" && head.APIVersion == "" {
		head.APIVersion, head.Kind = impliedVersion, impliedKind
	}
	if head.Kind == "" {
		p.errs.add(at, "kind", "required")
		p.lostObjects = true
		return
	}
	if head.APIVersion == "" {
		p.errs.add(at, "apiVersion", "required")
		p.lostObjects = true
		return
	}
	ns := head.Metadata.Namespace
	name := head.Metadata.Name
	origin := Origin{File: at.File, Doc: at.Doc, Kind: head.Kind, Name: name}

	switch {
	case head.Kind == "List" && head.APIVersion == "v1",
		head.Kind == "ServiceList" && head.APIVersion == "v1",
		head.Kind == "NodeList" && head.APIVersion == "v1",
		head.Kind == "EndpointSliceList" && head.APIVersion == groupDiscoveryV1:
		var list listObject
		origin.Name = fmt.Sprintf("(document #%d)", at.Doc+1)
		if !p.strictDecode(origin, j, &list) {
			return
		}
		itemKind := strings.TrimSuffix(head.Kind, "List")
		for i, item := range list.Items {
			itemAt := at
			itemAt.Kind = head.Kind
			itemAt.Name = fmt.Sprintf("%s items[%d]", origin.Name, i)
			if itemKind == "" {
				p.decodeObject(itemAt, item, "", "")
			} else {
				p.decodeObject(itemAt, item, head.APIVersion, itemKind)
			}
		}
		return

	case head.Kind == "Service" && head.APIVersion == "v1":
		origin.Name = namespaced(ns, name)
		var svc corev1.Service
		if !p.strictDecode(origin, j, &svc) {
			return
		}
		if svc.Namespace == "" {
			svc.Namespace = "default"
		}
		p.objects = append(p.objects, &parsedObject{origin: origin, svc: &svc})

	case head.Kind == "EndpointSlice" && head.APIVersion == groupDiscoveryV1:
		origin.Name = namespaced(ns, name)
		var slice discoveryv1.EndpointSlice
		if !p.strictDecode(origin, j, &slice) {
			return
		}
		if slice.Namespace == "" {
			slice.Namespace = "default"
		}
		p.objects = append(p.objects, &parsedObject{origin: origin, slice: &slice})

	case head.Kind == "Node" && head.APIVersion == "v1":
		var node corev1.Node
		if !p.strictDecode(origin, j, &node) {
			return
		}
		p.objects = append(p.objects, &parsedObject{origin: origin, node: &node})

	case head.Kind == "Service" || head.Kind == "Node" || head.Kind == "EndpointSlice":
		origin.Name = name
		if head.Kind != "Node" {
			origin.Name = namespaced(ns, name)
		}
		want := "v1"
		if head.Kind == "EndpointSlice" {
			want = groupDiscoveryV1
		}
		p.errs.add(origin, "apiVersion", "%q is not supported for %s; use %s", head.APIVersion, head.Kind, want)
		p.lostObjects = true

	default:
		id := name
		if ns != "" {
			id = ns + "/" + name
		}
		hint := ""
		if head.Kind == "Endpoints" && head.APIVersion == "v1" {
			hint = " (endpoints are read from EndpointSlices, as kube-proxy does)"
		}
		p.warnings = append(p.warnings, fmt.Sprintf("%s: skipping %s %s %s: proxyrig reads only Service, EndpointSlice and Node%s",
			at.File, head.APIVersion, head.Kind, id, hint))
	}
}

func namespaced(ns, name string) string {
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + name
}

// strictDecode decodes j into obj, reporting unknown and duplicate fields
// with their paths. It returns false when the object is unusable.
func (p *parser) strictDecode(origin Origin, j []byte, obj any) bool {
	strictErrs, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		p.lostObjects = true
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			p.errs.add(origin, typeErr.Field, "expected %s, got %s", describeType(typeErr.Type), typeErr.Value)
		} else {
			p.errs.add(origin, "", "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return false
	}
	for _, se := range strictErrs {
		path := ""
		if fe, ok := se.(kjson.FieldError); ok {
			path = fe.FieldPath()
		}
		msg := "unknown field"
		if strings.HasPrefix(se.Error(), "duplicate field") {
			msg = "duplicate field"
		}
		// A newer kubelet writes Node status fields this build may not know;
		// nobody types them by hand, so they cannot be typos.
		if origin.Kind == "Node" && msg == "unknown field" && strings.HasPrefix(path, "status.") && !strings.HasPrefix(path, "status.addresses") {
			p.warnings = append(p.warnings, fmt.Sprintf("%s: ignoring %s: unknown field", origin, path))
			continue
		}
		p.errs.add(origin, path, "%s", msg)
	}
	return true
}

// describeType names a Go type the way a YAML author thinks of it.
func describeType(t reflect.Type) string {
	if t == nil {
		return "a different type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}
