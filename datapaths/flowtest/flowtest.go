// Package flowtest holds proxyrig's packet-flow tables: declarative cases,
// shared by every datapath, that say what must happen to a packet sent from
// somewhere in a lab to some Service entry point. They follow the shape of
// kube-proxy's own packetFlowTest tables (pkg/proxy/iptables/proxier_test.go):
// a source, a destination, a port and an expected outcome, with a source line
// on every row so a failure points at the row that failed.
//
// The tables are pure data. Two consumers read them:
//   - datapaths/fake's reference tracer, in unit tests without root, which
//     checks each expectation against the model's semantics
//     (model.Categorize and kube-proxy's iptables-mode rules), and
//   - the conformance suite, which builds a real lab per case and sends real
//     packets from the named source.
//
// Every address lives in the lab's plan (topologies/api.go): nodes
// 198.18.0.11/12/13…, pods 198.18.64.x on node-a, 198.18.65.x on node-b,
// 198.18.66.x on node-c,
// client pods 198.18.127.(1+node index), external clients 198.18.0.(200+i),
// and Service VIPs, external IPs and load-balancer IPs in 198.19.0.0/16.
package flowtest

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// The lab's default address plan (topologies/api.go), which the fixtures
// are written against. flowtest keeps its own copy rather than importing
// topologies, so that any package, the lab's own tests included, may use
// the tables and the fake's tracer without an import cycle; a unit test
// checks the copies agree.
var (
	ClusterCIDR   = netip.MustParsePrefix("198.18.64.0/18")
	ClusterCIDR6  = netip.MustParsePrefix("2001:db8:64::/48")
	ServiceCIDR   = netip.MustParsePrefix("198.19.0.0/16")
	ServiceCIDR6  = netip.MustParsePrefix("2001:db8:19::/108")
	ClientPodBase = netip.MustParseAddr("198.18.127.0") // + 1 + node index
	ExternalBase  = netip.MustParseAddr("198.18.0.200") // + i
	// IPv6 counterparts, used when a flow's destination is IPv6.
	ClientPodBase6 = netip.MustParseAddr("2001:db8:64:7f::") // + 1 + node index
	ExternalBase6  = netip.MustParseAddr("2001:db8:18::c8")  // + i (0xc8 = 200, as for IPv4)
)

// Verdict is what the datapath does with a packet, in CONFORMANCE.md's
// vocabulary.
type Verdict string

const (
	// VerdictFWD: new connections are DNATed to the listed endpoints, all of
	// them eventually, and to no other.
	VerdictFWD Verdict = "FWD"
	// VerdictREJECT: the client gets an immediate error (TCP RST or ICMP
	// port unreachable, ECONNREFUSED either way).
	VerdictREJECT Verdict = "REJECT"
	// VerdictDROP: silence; the client times out.
	VerdictDROP Verdict = "DROP"
	// VerdictPASS: the datapath does not touch the packet and normal routing
	// decides. In a lab that means no endpoint answers: for an address no one
	// owns it times out or comes back as ICMP from a node.
	VerdictPASS Verdict = "PASS"
)

// Expect is the outcome a flow must have. The zero value is invalid; build
// one with FWD, Reject, Drop or Pass.
//
// The plain expectation is kube-proxy's iptables mode, which is also what
// datapaths/fake's tracer computes. A datapath that diverges from it in a
// way kube-proxy itself documents (CONFORMANCE.md Appendix 1) gets an
// override with On; no other datapath-specific expectation is allowed.
type Expect struct {
	Verdict Verdict
	// Endpoints are the endpoint names (EndpointSlice targetRef.name) that
	// must all answer, and no other, for FWD.
	Endpoints []string
	// Masquerade, for FWD: the backend sees a node-owned source address
	// (SNAT) rather than the client's own.
	Masquerade bool
	// Uniform, for FWD: the spread over endpoints must also be even within
	// the conformance suite's stated tolerance (CIP-02).
	Uniform bool

	overrides []Override
}

// Override is a documented per-datapath divergence from kube-proxy's
// iptables mode.
type Override struct {
	Datapath string
	Expect   Expect
	// Why cites where the divergence is documented.
	Why string
}

// FWD expects the flow to be forwarded to exactly these endpoints, without
// masquerade unless Masq is called.
func FWD(endpoints ...string) Expect {
	eps := slices.Clone(endpoints)
	slices.Sort(eps)
	return Expect{Verdict: VerdictFWD, Endpoints: eps}
}

// Reject expects an immediate refusal.
func Reject() Expect { return Expect{Verdict: VerdictREJECT} }

// Drop expects silence.
func Drop() Expect { return Expect{Verdict: VerdictDROP} }

// Pass expects the datapath to leave the packet alone.
func Pass() Expect { return Expect{Verdict: VerdictPASS} }

// Masq marks a FWD expectation as masqueraded.
func (e Expect) Masq() Expect {
	e.Masquerade = true
	return e
}

// Evenly asks the conformance suite to check the spread over endpoints too.
func (e Expect) Evenly() Expect {
	e.Uniform = true
	return e
}

// On records that datapath behaves as other instead, for the documented
// reason why.
func (e Expect) On(datapath string, other Expect, why string) Expect {
	e.overrides = append(slices.Clone(e.overrides), Override{Datapath: datapath, Expect: other, Why: why})
	return e
}

// Overrides lists the per-datapath divergences.
func (e Expect) Overrides() []Override { return slices.Clone(e.overrides) }

// variantOf names, for a datapath that is a variant of another, the one
// whose documented divergences it shares: nftables-flat is kube-proxy's
// nftables layout with another endpoint dispatch, so it behaves as
// nftables does wherever that differs from iptables mode.
var variantOf = map[string]string{
	"nftables-flat": "nftables",
}

// For returns the expectation for one datapath, and the reason when it
// differs from kube-proxy's iptables mode. A variant (see variantOf) gets
// its own override if it has one, else its base datapath's.
func (e Expect) For(datapath string) (Expect, string) {
	for _, o := range e.overrides {
		if o.Datapath == datapath {
			return o.Expect, o.Why
		}
	}
	if base, ok := variantOf[datapath]; ok {
		return e.For(base)
	}
	base := e
	base.overrides = nil
	return base, ""
}

// String prints the expectation the way CONFORMANCE.md writes it:
// "FWD(pod-a1, pod-b1) masq", "REJECT".
func (e Expect) String() string {
	if e.Verdict != VerdictFWD {
		return string(e.Verdict)
	}
	s := "FWD(" + strings.Join(e.Endpoints, ", ") + ")"
	if e.Masquerade {
		s += " masq"
	} else {
		s += " no-masq"
	}
	return s
}

// SourceKind says where a flow starts.
type SourceKind string

const (
	// FromPod is the client pod of a node (198.18.127.(1+node index)).
	FromPod SourceKind = "pod"
	// FromNode is the node's own network namespace, like a hostNetwork pod.
	FromNode SourceKind = "node"
	// FromNodeLocalhost is the node's namespace with the socket bound to
	// 127.0.0.1, or ::1 for an IPv6 destination (localhost NodePorts,
	// NP-04).
	FromNodeLocalhost SourceKind = "node-localhost"
	// FromExternal is external client i, a host on the node segment outside
	// the cluster (198.18.0.(200+i)).
	FromExternal SourceKind = "external"
	// FromEndpoint is an endpoint's own namespace (hairpin, MASQ-03).
	FromEndpoint SourceKind = "endpoint"
)

// Source is where a flow starts.
type Source struct {
	Kind     SourceKind
	Node     string // FromPod, FromNode, FromNodeLocalhost
	Index    int    // FromExternal
	Endpoint string // FromEndpoint: the endpoint's name
}

// PodOn is the client pod of node.
func PodOn(node string) Source { return Source{Kind: FromPod, Node: node} }

// NodeItself is node's own namespace.
func NodeItself(node string) Source { return Source{Kind: FromNode, Node: node} }

// NodeLocalhost is node's own namespace, bound to the loopback address of
// the destination's family.
func NodeLocalhost(node string) Source { return Source{Kind: FromNodeLocalhost, Node: node} }

// External is external client i.
func External(i int) Source { return Source{Kind: FromExternal, Index: i} }

// EndpointPod is the namespace of the named endpoint.
func EndpointPod(name string) Source { return Source{Kind: FromEndpoint, Endpoint: name} }

func (s Source) String() string {
	switch s.Kind {
	case FromPod:
		return "pod on " + s.Node
	case FromNode:
		return s.Node
	case FromNodeLocalhost:
		return s.Node + " from localhost"
	case FromExternal:
		return fmt.Sprintf("external-%d", s.Index)
	case FromEndpoint:
		return "endpoint " + s.Endpoint
	}
	return string(s.Kind)
}

// DestKind says which address a flow is sent to.
type DestKind string

const (
	ToClusterIP      DestKind = "clusterIP"
	ToExternalIP     DestKind = "externalIP"
	ToLoadBalancerIP DestKind = "loadBalancerIP"
	ToNodeIP         DestKind = "nodeIP"
	ToLocalhost      DestKind = "localhost"
	ToAddr           DestKind = "addr"
)

// Dest is where a flow is sent.
type Dest struct {
	Kind DestKind
	// Service is "name" (namespace default) or "namespace/name".
	Service string
	Node    string
	// Index picks among several: the Service's Nth ClusterIP, externalIP or
	// LB IP, or the node's Nth address of the family (0 is the primary, 1
	// the first secondary).
	Index int
	// IPv6 picks the node's IPv6 addresses (ToNodeIP) or ::1 (ToLocalhost).
	IPv6 bool
	Addr netip.Addr // ToAddr
}

// ClusterIPOf is the Service's (primary) ClusterIP.
func ClusterIPOf(svc string) Dest { return Dest{Kind: ToClusterIP, Service: svc} }

// ExternalIPOf is the Service's first externalIP.
func ExternalIPOf(svc string) Dest { return Dest{Kind: ToExternalIP, Service: svc} }

// LoadBalancerIPOf is the Service's first load-balancer ingress IP.
func LoadBalancerIPOf(svc string) Dest { return Dest{Kind: ToLoadBalancerIP, Service: svc} }

// NodeIPOf is node's primary IPv4 address.
func NodeIPOf(node string) Dest { return Dest{Kind: ToNodeIP, Node: node} }

// SecondaryNodeIPOf is node's second IPv4 address, in the order its Node
// object lists them.
func SecondaryNodeIPOf(node string) Dest { return Dest{Kind: ToNodeIP, Node: node, Index: 1} }

// NodeIP6Of is node's primary IPv6 address.
func NodeIP6Of(node string) Dest { return Dest{Kind: ToNodeIP, Node: node, IPv6: true} }

// SecondaryNodeIP6Of is node's second IPv6 address.
func SecondaryNodeIP6Of(node string) Dest {
	return Dest{Kind: ToNodeIP, Node: node, Index: 1, IPv6: true}
}

// At picks the Service's i-th address of the kind (0 is the first): the
// secondary ClusterIP of a dual-stack Service, the second LB ingress IP.
func (d Dest) At(i int) Dest {
	d.Index = i
	return d
}

// Localhost is 127.0.0.1 (only meaningful from the node itself).
func Localhost() Dest { return Dest{Kind: ToLocalhost} }

// Localhost6 is ::1 (only meaningful from the node itself).
func Localhost6() Dest { return Dest{Kind: ToLocalhost, IPv6: true} }

// Addr is a literal address, e.g. an unallocated VIP.
func Addr(s string) Dest { return Dest{Kind: ToAddr, Addr: netip.MustParseAddr(s)} }

func (d Dest) String() string {
	switch d.Kind {
	case ToClusterIP, ToExternalIP, ToLoadBalancerIP:
		if d.Index > 0 {
			return fmt.Sprintf("%s[%d] of %s", d.Kind, d.Index, d.Service)
		}
		return string(d.Kind) + " of " + d.Service
	case ToNodeIP:
		fam := "IP"
		if d.IPv6 {
			fam = "IPv6"
		}
		if d.Index > 0 {
			return fmt.Sprintf("%s[%d] of %s", fam, d.Index, d.Node)
		}
		return fam + " of " + d.Node
	case ToLocalhost:
		if d.IPv6 {
			return "[::1]"
		}
		return "127.0.0.1"
	case ToAddr:
		return d.Addr.String()
	}
	return string(d.Kind)
}

// Flow is one row of a packet-flow table.
type Flow struct {
	Name string
	From Source
	To   Dest
	// Port is the destination port: the Service port for VIPs, the
	// nodePort for node addresses.
	Port  int32
	Proto model.Protocol // "" means TCP
	// PayloadSize, when set, sends a UDP datagram of that many bytes
	// (CIP-10: bigger than the MTU, so it is fragmented).
	PayloadSize int
	// SrcPort fixes the client's source port, so several clients collide
	// on the same 5-tuple before SNAT (MASQ-05).
	SrcPort uint16
	Expect  Expect
	// ImplementationDefined, when set, says why Kubernetes leaves this
	// flow's outcome to the implementation (e.g. a pod reaching its own
	// node's eTP=Local NodePort, ETP-06). Expect is still kube-proxy's
	// iptables mode, which the tracer checks; the conformance suite sends
	// the traffic and records what it saw, but does not fail the datapath
	// when it differs.
	ImplementationDefined string
	// Line is the table row's file:line; set it with getLine().
	Line string
}

// Protocol is Proto with the TCP default applied.
func (f Flow) Protocol() model.Protocol {
	if f.Proto == "" {
		return model.TCP
	}
	return f.Proto
}

// String is a one-line description for test names and failure messages.
func (f Flow) String() string {
	return fmt.Sprintf("%s: %s -> %s:%d/%s", f.Name, f.From, f.To, f.Port, f.Protocol())
}

// PortProto is a port number and protocol.
type PortProto struct {
	Port  int32
	Proto model.Protocol
}

// Step changes the cluster of a running case and checks flows again. A
// datapath is level-triggered, so a step gives the whole new cluster.
type Step struct {
	Name    string
	Fixture string
	Flows   []Flow
	// FreePorts must be bindable in the node under test after this step:
	// the datapath holds no socket on them (NP-06 "frees the port").
	FreePorts []PortProto
	Line      string
}

// Case is one conformance scenario: a cluster, the node under test and the
// flows to check, then optional steps that change the cluster.
type Case struct {
	// ID is the CONFORMANCE.md item, e.g. "CIP-02".
	ID   string
	Name string
	// Fixture is Kubernetes YAML (Nodes, Services, EndpointSlices) in the
	// lab's address plan, parsed with model.Parse.
	Fixture string
	// Node is the node under test: where external clients send VIPs (the
	// lab's ingress node). Default "node-a".
	Node string
	// Proxy overrides the lab's proxy settings; zero fields keep the lab
	// defaults (the lab's ClusterCIDR and ServiceCIDR).
	Proxy datapaths.ProxyConfig
	Flows []Flow
	Then  []Step
	// Concurrent sends all Flows at the same time, one probe each, and
	// requires masqueraded flows to be seen from distinct source
	// address:port pairs (MASQ-05: SNAT port allocation never collides).
	Concurrent bool
	Line       string
}

// NodeUnderTest is Node with its default.
func (c *Case) NodeUnderTest() string {
	if c.Node == "" {
		return "node-a"
	}
	return c.Node
}

// Title is "CIP-02 multiple endpoints are all used, uniformly".
func (c *Case) Title() string { return c.ID + " " + c.Name }

// Cluster parses the case's fixture.
func (c *Case) Cluster() (*model.Cluster, error) {
	cl, err := model.Parse(c.ID+".yaml", []byte(c.Fixture))
	if err != nil {
		return nil, fmt.Errorf("case %s (%s): %w", c.Title(), c.Line, err)
	}
	return cl, nil
}

// StepCluster parses step i's fixture.
func (c *Case) StepCluster(i int) (*model.Cluster, error) {
	s := c.Then[i]
	cl, err := model.Parse(fmt.Sprintf("%s-step%d.yaml", c.ID, i+1), []byte(s.Fixture))
	if err != nil {
		return nil, fmt.Errorf("case %s step %q (%s): %w", c.Title(), s.Name, s.Line, err)
	}
	return cl, nil
}

// AllFlows is every flow of the case, initial and in steps.
func (c *Case) AllFlows() []Flow {
	out := slices.Clone(c.Flows)
	for _, s := range c.Then {
		out = append(out, s.Flows...)
	}
	return out
}

// ExternalClients is how many external clients the case's lab needs.
func (c *Case) ExternalClients() int {
	n := 1
	for _, f := range c.AllFlows() {
		if f.From.Kind == FromExternal && f.From.Index+1 > n {
			n = f.From.Index + 1
		}
	}
	return n
}

// Protocols lists the protocols the case's flows use.
func (c *Case) Protocols() []model.Protocol {
	var out []model.Protocol
	for _, f := range c.AllFlows() {
		if !slices.Contains(out, f.Protocol()) {
			out = append(out, f.Protocol())
		}
	}
	return out
}

// ProxyConfig is the case's proxy settings with the lab's defaults filled
// in, as the lab hands them to every datapath.
func (c *Case) ProxyConfig() datapaths.ProxyConfig {
	p := c.Proxy
	if len(p.ClusterCIDRs) == 0 && !p.NoLocalTrafficDetector {
		p.ClusterCIDRs = []netip.Prefix{ClusterCIDR, ClusterCIDR6}
	}
	if len(p.ServiceCIDRs) == 0 {
		p.ServiceCIDRs = []netip.Prefix{ServiceCIDR, ServiceCIDR6}
	}
	return p
}

// getLine returns the caller's file:line, for the Line field of each row.
func getLine() string {
	_, file, line, ok := runtime.Caller(1)
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%s:%d", filepath.Base(file), line)
}
