// Package topologies builds proxyrig's labs: a small cluster made of network
// namespaces on one machine. Nodes sit on a bridge inside a "fabric"
// namespace (never the root namespace), pods are namespaces routed via their
// node, and clients stand outside (external) and inside (a client pod per
// node). Echo servers answer on every endpoint so probes can tell which
// backend served them and what source address it saw.
//
// Everything a lab creates is named prx-<lab>-…, and Cleanup removes it by
// that prefix.
package topologies

import (
	"log/slog"
	"net/netip"
	"time"

	"proxyrig/datapaths"
)

// Prefix starts the name of every namespace, link, process title and state
// directory proxyrig makes.
const Prefix = "prx-"

// StateRoot holds one directory per running lab (pid, control socket, the
// last applied cluster).
const StateRoot = "/run/proxyrig"

// Default address plan (DESIGN.md §3). A user's YAML may bring any
// addresses; these are used where the input leaves a choice to the lab.
var (
	// NodeSegment is the L2 segment of nodes and external clients.
	NodeSegment  = netip.MustParsePrefix("198.18.0.0/24")
	NodeSegment6 = netip.MustParsePrefix("2001:db8:18::/64")
	// ClusterCIDR is the pod range, the local-traffic detector's range.
	ClusterCIDR  = netip.MustParsePrefix("198.18.64.0/18")
	ClusterCIDR6 = netip.MustParsePrefix("2001:db8:64::/48")
	// ServiceCIDR is the VIP range.
	ServiceCIDR  = netip.MustParsePrefix("198.19.0.0/16")
	ServiceCIDR6 = netip.MustParsePrefix("2001:db8:19::/108")
	// ClientPodBase: the client pod of node i gets 198.18.127.(1+i).
	ClientPodBase = netip.MustParseAddr("198.18.127.0")
	// ExternalBase: external client i gets 198.18.0.(200+i).
	ExternalBase = netip.MustParseAddr("198.18.0.200")
	// PodGateway is the link-local next hop pods use, as in Calico.
	PodGateway  = netip.MustParseAddr("169.254.1.1")
	PodGateway6 = netip.MustParseAddr("fe80::1")
)

// Options configure a lab.
type Options struct {
	// Name is the lab's name: 1–12 characters of [a-z0-9]. Namespaces are
	// prx-<Name>-…, so labs with different names never touch each other.
	Name string
	// Datapath is a registered datapath name ("iptables"); "" builds the lab
	// with no datapath (useful for the direct baseline).
	Datapath        string
	DatapathOptions map[string]string
	IPTablesBackend string // "legacy" (default) or "nft"
	// Topology is the cross-node routing mode: "direct" (default).
	Topology string
	// Proxy is passed to every datapath; zero fields get lab defaults
	// (ClusterCIDRs, ServiceCIDRs of the address plan).
	Proxy datapaths.ProxyConfig
	// ExternalClients is how many external client namespaces to make
	// (default 1). External client i has address ExternalBase+i.
	ExternalClients int
	// DatapathNodes limits which nodes run the datapath; empty means all.
	// Other nodes are plain routers, like "node B, no datapath" in the
	// kube-proxy unit tests.
	DatapathNodes []string
	// IngressNode is the node that external clients send ExternalIPs, LB IPs
	// and ClusterIPs to (the harness plays the load balancer). Default: the
	// first node.
	IngressNode string
	Logger      *slog.Logger
}

// Info is the lab as printed by `proxyrig lab up`: everything a person
// needs to poke at it with `ip netns exec`.
type Info struct {
	Name      string         `json:"name"`
	Datapath  string         `json:"datapath"`
	Backend   string         `json:"backend,omitempty"`
	Topology  string         `json:"topology"`
	Fabric    string         `json:"fabricNetns"`
	Nodes     []NodeInfo     `json:"nodes"`
	Endpoints []EndpointInfo `json:"endpoints"`
	Clients   []ClientInfo   `json:"clients"`
	SCTP      bool           `json:"sctp"`
	Notes     []string       `json:"notes,omitempty"`
}

type NodeInfo struct {
	Name     string   `json:"name"`
	Netns    string   `json:"netns"`
	IPs      []string `json:"ips"`
	Zone     string   `json:"zone,omitempty"`
	Datapath bool     `json:"datapath"`
}

type EndpointInfo struct {
	Name  string   `json:"name"`
	Netns string   `json:"netns"`
	IPs   []string `json:"ips"`
	Node  string   `json:"node"`
	// HostNetwork is true when the endpoint's IP is a node address and its
	// servers run in the node's namespace.
	HostNetwork bool     `json:"hostNetwork,omitempty"`
	Ports       []string `json:"ports"` // "8080/TCP"
}

type ClientInfo struct {
	Name  string   `json:"name"`  // "external-0", "client-<node>"
	Kind  string   `json:"kind"`  // "external" or "pod"
	Netns string   `json:"netns"` //
	IPs   []string `json:"ips"`
	Node  string   `json:"node,omitempty"`
}

// Outcome is what a probe observed.
type Outcome string

const (
	Answered Outcome = "answered" // an echo line came back
	Refused  Outcome = "refused"  // ECONNREFUSED / ICMP unreachable / RST, quickly
	TimedOut Outcome = "timeout"  // silence until the deadline
	Failed   Outcome = "error"    // anything else (bad reply, local error)
)

// ProbeSpec describes one probe: one TCP connection or one UDP exchange.
type ProbeSpec struct {
	Proto string // "TCP", "UDP" or "SCTP"
	Dst   netip.AddrPort
	// Src optionally binds the client socket (address and/or port). A fixed
	// source port keeps the same 5-tuple across probes (conntrack tests).
	Src     netip.AddrPort
	Timeout time.Duration // default 2 s
	// Payload is sent for UDP (default "probe\n"); TCP sends nothing.
	Payload []byte
}

// ProbeResult is what came back.
type ProbeResult struct {
	Outcome Outcome `json:"outcome"`
	// Endpoint is the name the backend answered with.
	Endpoint string `json:"endpoint,omitempty"`
	// SeenSource is the client address the backend reported.
	SeenSource netip.AddrPort `json:"seenSource,omitempty"`
	// Local is the client socket's own address.
	Local netip.AddrPort `json:"local,omitempty"`
	RTT   time.Duration  `json:"rttNs"`
	Err   string         `json:"error,omitempty"`
}
