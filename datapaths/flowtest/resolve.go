package flowtest

import (
	"fmt"
	"net/netip"
	"strings"

	"proxyrig/model"
)

// Resolved is a flow turned into addresses, for a tracer.
type Resolved struct {
	// Node is the node whose datapath decides the packet's fate (see
	// DecidingNode).
	Node     *model.Node
	Src, Dst netip.Addr
	Port     int32
	Proto    model.Protocol
}

// Resolve turns a flow of case c into addresses in cluster cl, using the
// lab's default address plan for clients.
func Resolve(c *Case, cl *model.Cluster, f Flow) (Resolved, error) {
	dst, err := DestAddr(cl, f.To)
	if err != nil {
		return Resolved{}, err
	}
	src, err := SourceAddr(cl, f.From, dst.Is6())
	if err != nil {
		return Resolved{}, err
	}
	node, err := DecidingNode(c, cl, f.From, dst)
	if err != nil {
		return Resolved{}, err
	}
	return Resolved{Node: node, Src: src, Dst: dst, Port: f.Port, Proto: f.Protocol()}, nil
}

// LookupService finds a Service by "name" (namespace default) or
// "namespace/name".
func LookupService(cl *model.Cluster, ref string) (*model.Service, error) {
	ns, name := "default", ref
	if i := strings.IndexByte(ref, '/'); i >= 0 {
		ns, name = ref[:i], ref[i+1:]
	}
	svc := cl.Service(ns, name)
	if svc == nil {
		return nil, fmt.Errorf("no Service %s/%s in the fixture", ns, name)
	}
	return svc, nil
}

// DestAddr resolves a destination against the cluster.
func DestAddr(cl *model.Cluster, d Dest) (netip.Addr, error) {
	pick := func(what string, list []netip.Addr) (netip.Addr, error) {
		if d.Index >= len(list) {
			return netip.Addr{}, fmt.Errorf("%s has no %s[%d]", d.Service, what, d.Index)
		}
		return list[d.Index], nil
	}
	switch d.Kind {
	case ToClusterIP, ToExternalIP, ToLoadBalancerIP:
		svc, err := LookupService(cl, d.Service)
		if err != nil {
			return netip.Addr{}, err
		}
		switch d.Kind {
		case ToClusterIP:
			return pick("clusterIPs", svc.ClusterIPs)
		case ToExternalIP:
			return pick("externalIPs", svc.ExternalIPs)
		default:
			return pick("loadBalancer IPs", svc.LoadBalancerIPs)
		}
	case ToNodeIP:
		n := cl.Node(d.Node)
		if n == nil {
			return netip.Addr{}, fmt.Errorf("no node %s in the fixture", d.Node)
		}
		addrs := familyAddrs(n.Addresses, d.IPv6)
		if d.Index >= len(addrs) {
			return netip.Addr{}, fmt.Errorf("node %s has no %s address[%d]", d.Node, family(d.IPv6), d.Index)
		}
		return addrs[d.Index], nil
	case ToLocalhost:
		return loopback(d.IPv6), nil
	case ToAddr:
		if !d.Addr.IsValid() {
			return netip.Addr{}, fmt.Errorf("literal destination without an address")
		}
		return d.Addr, nil
	}
	return netip.Addr{}, fmt.Errorf("unknown destination kind %q", d.Kind)
}

// SourceAddr is the address a source sends from, in the family of the
// destination, in the lab's default plan. The conformance suite does not
// need it (the probe reports its own address); tracers do.
func SourceAddr(cl *model.Cluster, s Source, ipv6 bool) (netip.Addr, error) {
	switch s.Kind {
	case FromPod:
		i := nodeIndex(cl, s.Node)
		if i < 0 {
			return netip.Addr{}, fmt.Errorf("no node %s in the fixture", s.Node)
		}
		if ipv6 {
			return addN(ClientPodBase6, 1+i), nil
		}
		return addN(ClientPodBase, 1+i), nil
	case FromNode:
		n := cl.Node(s.Node)
		if n == nil {
			return netip.Addr{}, fmt.Errorf("no node %s in the fixture", s.Node)
		}
		addrs := familyAddrs(n.Addresses, ipv6)
		if len(addrs) == 0 {
			return netip.Addr{}, fmt.Errorf("node %s has no %s address in the fixture", s.Node, family(ipv6))
		}
		return addrs[0], nil
	case FromNodeLocalhost:
		return loopback(ipv6), nil
	case FromExternal:
		if ipv6 {
			return addN(ExternalBase6, s.Index), nil
		}
		return addN(ExternalBase, s.Index), nil
	case FromEndpoint:
		for _, ep := range findEndpoints(cl, s.Endpoint) {
			if ep.IP.Is6() == ipv6 {
				return ep.IP, nil
			}
		}
		return netip.Addr{}, fmt.Errorf("no endpoint named %s with an %s address in the fixture", s.Endpoint, family(ipv6))
	}
	return netip.Addr{}, fmt.Errorf("unknown source kind %q", s.Kind)
}

// SourceNode is the node a source sits on ("" for external clients).
func SourceNode(cl *model.Cluster, s Source) string {
	switch s.Kind {
	case FromPod, FromNode, FromNodeLocalhost:
		return s.Node
	case FromEndpoint:
		if ep := FindEndpoint(cl, s.Endpoint); ep != nil {
			return ep.NodeName
		}
	}
	return ""
}

// DecidingNode is the node whose datapath decides a packet from s to dst:
//   - a node's own address is decided by that node (its NodePorts); the
//     sender's node forwards it untouched, since it is neither a VIP nor
//     local there;
//   - anything else by the sender's node, or for an external client by the
//     case's node under test, which the lab routes VIPs to.
func DecidingNode(c *Case, cl *model.Cluster, s Source, dst netip.Addr) (*model.Node, error) {
	name := ""
	if s.Kind != FromNodeLocalhost {
		for _, n := range cl.Nodes {
			for _, a := range n.Addresses {
				if a == dst {
					name = n.Name
				}
			}
		}
	}
	if name == "" {
		name = SourceNode(cl, s)
	}
	if name == "" {
		name = c.NodeUnderTest()
	}
	n := cl.Node(name)
	if n == nil {
		return nil, fmt.Errorf("no node %s in the fixture", name)
	}
	return n, nil
}

// FindEndpoint finds an endpoint by name in any Service port.
func FindEndpoint(cl *model.Cluster, name string) *model.Endpoint {
	if eps := findEndpoints(cl, name); len(eps) > 0 {
		return eps[0]
	}
	return nil
}

// findEndpoints finds every endpoint entry with the name: a dual-stack pod
// appears once per family.
func findEndpoints(cl *model.Cluster, name string) []*model.Endpoint {
	var out []*model.Endpoint
	for _, svc := range cl.Services {
		for _, p := range svc.Ports {
			for _, ep := range p.Endpoints {
				if ep.Name == name {
					out = append(out, ep)
				}
			}
		}
	}
	return out
}

func familyAddrs(addrs []netip.Addr, ipv6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a.Is6() == ipv6 {
			out = append(out, a)
		}
	}
	return out
}

func family(ipv6 bool) string {
	if ipv6 {
		return "IPv6"
	}
	return "IPv4"
}

func loopback(ipv6 bool) netip.Addr {
	if ipv6 {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// EndpointNames lists every endpoint name in the cluster.
func EndpointNames(cl *model.Cluster) map[string]bool {
	out := map[string]bool{}
	for _, svc := range cl.Services {
		for _, p := range svc.Ports {
			for _, ep := range p.Endpoints {
				out[ep.Name] = true
			}
		}
	}
	return out
}

func nodeIndex(cl *model.Cluster, name string) int {
	for i, n := range cl.Nodes {
		if n.Name == name {
			return i
		}
	}
	return -1
}

func addN(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}
