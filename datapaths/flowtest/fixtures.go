package flowtest

import (
	"fmt"
	"strings"
)

// Fixture building blocks. Fixtures are plain Kubernetes YAML, the same a
// user would hand `proxyrig lab up -f`, so a failing case can be replayed by
// hand: paste its Fixture into a file and bring the lab up.
//
// Address plan used throughout:
//
//	node-a 198.18.0.11   pods 198.18.64.x   client pod 198.18.127.1
//	node-b 198.18.0.12   pods 198.18.65.x   client pod 198.18.127.2
//	external client i    198.18.0.(200+i)
//	ClusterIPs 198.19.0.x, externalIPs 198.19.1.x, LB IPs 198.19.2.x
//	NodePorts 30000-32767
//
// IPv6: nodes 2001:db8:18::b/::c, pods 2001:db8:64::x (node-a) and
// 2001:db8:64:1::x (node-b), ClusterIPs 2001:db8:19::x.

// docs joins YAML documents.
func docs(parts ...string) string {
	trimmed := make([]string, 0, len(parts))
	for _, p := range parts {
		trimmed = append(trimmed, strings.TrimSpace(p))
	}
	return strings.Join(trimmed, "\n---\n") + "\n"
}

const nodeA = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.11
`

// nodeAWithSecondary gives node-a a second address on the node segment, so
// NP-02 can ask whether NodePorts are served on it.
const nodeAWithSecondary = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.11
  - type: InternalIP
    address: 198.18.0.21
`

const nodeB = `
apiVersion: v1
kind: Node
metadata:
  name: node-b
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.12
`

// Dual-stack nodes, for IPv6 cases. The IPv6 addresses are the lab's
// default plan's (node i is 2001:db8:18::(11+i), in hex ::b and ::c).
const nodeADualStack = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.11
  - type: InternalIP
    address: 2001:db8:18::b
`

const nodeBDualStack = `
apiVersion: v1
kind: Node
metadata:
  name: node-b
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.12
  - type: InternalIP
    address: 2001:db8:18::c
`

// Endpoint conditions as EndpointSlice YAML, for endpointSlice. The empty
// string leaves them unset, which the API reads as ready and serving.
const (
	condReady       = ""
	condTerminating = "{ready: false, serving: true, terminating: true}"
	// condNotServing is terminating and no longer serving: never used,
	// not even as a fallback (EPC-04).
	condNotServing = "{ready: false, serving: false, terminating: true}"
	// condUnready is not ready while not terminating: also never used.
	condUnready = "{ready: false, serving: true, terminating: false}"
)

// epSpec is one endpoint of an EndpointSlice fixture.
type epSpec struct {
	Name, IP, Node string
	Cond           string // one of the cond* constants
	// Hints is the endpoint's hints as a YAML flow map, e.g.
	// "{forZones: [{name: zone-a}]}"; "" for none.
	Hints string
}

// endpointSlice writes an EndpointSlice of Service svc in namespace
// default. ports are YAML flow maps ("{name: http, port: 80, protocol:
// TCP}"). Used where a table needs many slices that differ only in their
// endpoints; the output is ordinary YAML a person can replay.
func endpointSlice(name, svc, addressType string, ports []string, eps ...epSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s\n  namespace: default\n  labels: {kubernetes.io/service-name: %s}\naddressType: %s\nports:\n", name, svc, addressType)
	for _, p := range ports {
		fmt.Fprintf(&b, "- %s\n", p)
	}
	if len(eps) == 0 {
		b.WriteString("endpoints: []\n")
		return b.String()
	}
	b.WriteString("endpoints:\n")
	for _, e := range eps {
		fmt.Fprintf(&b, "- addresses: [%s]\n", e.IP)
		if e.Node != "" {
			fmt.Fprintf(&b, "  nodeName: %s\n", e.Node)
		}
		fmt.Fprintf(&b, "  targetRef: {kind: Pod, namespace: default, name: %s}\n", e.Name)
		if e.Cond != "" {
			fmt.Fprintf(&b, "  conditions: %s\n", e.Cond)
		}
		if e.Hints != "" {
			fmt.Fprintf(&b, "  hints: %s\n", e.Hints)
		}
	}
	return b.String()
}

// zoneHints is a hints map naming zones.
func zoneHints(zones ...string) string {
	var names []string
	for _, z := range zones {
		names = append(names, "{name: "+z+"}")
	}
	return "{forZones: [" + strings.Join(names, ", ") + "]}"
}

// nodeZoneHints names one node and one zone, as the EndpointSlice
// controller writes them for PreferSameNode.
func nodeZoneHints(node, zone string) string {
	return "{forNodes: [{name: " + node + "}], forZones: [{name: " + zone + "}]}"
}

// zonedNode is a Node with addresses and, unless zone is "-", the
// topology.kubernetes.io/zone label set to zone ("" writes an empty label).
func zonedNode(name, zone string, addrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n", name)
	if zone != "-" {
		fmt.Fprintf(&b, "  labels: {topology.kubernetes.io/zone: %q}\n", zone)
	}
	b.WriteString("status:\n  addresses:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "  - type: InternalIP\n    address: %s\n", a)
	}
	return b.String()
}
