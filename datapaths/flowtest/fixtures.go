package flowtest

import "strings"

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
