package fuzzcluster

import (
	"fmt"
	"net/netip"
	"strings"

	"proxyrig/datapaths"
	"proxyrig/model"
	"proxyrig/topologies"
)

// Extreme is one extreme but legal cluster, as a node view, for renderer
// tests: each renderer must render it, correctly and without quadratic
// blow-up (the tests finish in seconds; they never assert durations).
type Extreme struct {
	Name string
	View *datapaths.NodeView
}

// Extremes returns the extreme clusters. Sizes are parameters so that the
// nightly job can run them larger; Defaults are what `make test` uses.
func Extremes(s ExtremeSizes) []Extreme {
	return []Extreme{
		{"one-service-many-endpoints", ManyEndpoints(s.Endpoints)},
		{"many-services-one-port", ManyServices(s.Services)},
		{"many-ports", ManyPorts(s.Ports)},
		{"names-at-their-limits", LongNames()},
		{"ipv6-only", IPv6Only()},
	}
}

// ExtremeSizes sizes the extremes.
type ExtremeSizes struct {
	Endpoints int // endpoints of one Service
	Services  int // Services sharing port 80/TCP
	Ports     int // ports of one Service
}

// DefaultSizes are the sizes issue 8 asks every renderer to cope with: a
// Service with 100k endpoints, 30k Services on one port, and a Service
// with as many ports as one EndpointSlice may carry (100).
var DefaultSizes = ExtremeSizes{Endpoints: 100_000, Services: 30_000, Ports: 100}

func nodes(n int) []*model.Node {
	var out []*model.Node
	for i := range n {
		out = append(out, &model.Node{
			Name:      fmt.Sprintf("node-%02d", i),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)}), netip.MustParseAddr(fmt.Sprintf("2001:db8:18::%x", 11+i))},
		})
	}
	return out
}

func viewOf(c *model.Cluster) *datapaths.NodeView {
	return &datapaths.NodeView{
		Cluster: c,
		Node:    c.Nodes[0],
		Proxy: datapaths.ProxyConfig{
			ClusterCIDRs: []netip.Prefix{topologies.ClusterCIDR, netip.MustParsePrefix("2001:db8:64::/48")},
			ServiceCIDRs: []netip.Prefix{topologies.ServiceCIDR, netip.MustParsePrefix("2001:db8:19::/108")},
		},
	}
}

// podIP is the i-th address of the pod range 198.18.64.0/18 (16k
// addresses); endpoints beyond that share addresses with distinct ports.
func podIP(i int) netip.Addr {
	i %= 1 << 14
	return netip.AddrFrom4([4]byte{198, 18, byte(64 + i>>8), byte(i)})
}

func svc(name string, ip netip.Addr, ports ...*model.ServicePort) *model.Service {
	return &model.Service{
		Name:                  model.ServiceName{Namespace: "default", Name: name},
		Type:                  model.ClusterIP,
		ClusterIPs:            []netip.Addr{ip},
		ExternalTrafficPolicy: model.PolicyCluster,
		InternalTrafficPolicy: model.PolicyCluster,
		Ports:                 ports,
	}
}

// ManyEndpoints is one NodePort Service with n ready endpoints spread over
// three nodes (n above 16k share pod addresses, each pair IP:port once).
func ManyEndpoints(n int) *datapaths.NodeView {
	ns := nodes(3)
	p := &model.ServicePort{Name: "http", Protocol: model.TCP, Port: 80, NodePort: 30080, TargetPort: "http"}
	for i := range n {
		ip := podIP(i)
		port := int32(8080 + i>>14)
		p.Endpoints = append(p.Endpoints, &model.Endpoint{
			IP: ip, Port: port, Name: fmt.Sprintf("pod-%d", i), NodeName: ns[i%3].Name, Ready: true, Serving: true,
		})
	}
	sortEndpoints(p.Endpoints)
	s := svc("big", netip.MustParseAddr("198.19.0.10"), p)
	s.Type = model.NodePort
	return viewOf(&model.Cluster{Services: []*model.Service{s}, Nodes: ns})
}

// ManyServices is n ClusterIP Services that all use port 80/TCP, one
// endpoint each (n at most 32k: the ClusterIPs come from 198.19.0.0/17).
func ManyServices(n int) *datapaths.NodeView {
	ns := nodes(2)
	var svcs []*model.Service
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		p := &model.ServicePort{Protocol: model.TCP, Port: 80, TargetPort: "8080", Endpoints: []*model.Endpoint{{
			IP: podIP(i), Port: 8080 + int32(i>>14), Name: fmt.Sprintf("pod-%d", i), NodeName: ns[i%2].Name, Ready: true, Serving: true,
		}}}
		svcs = append(svcs, svc(fmt.Sprintf("svc-%05d", i), ip, p))
	}
	return viewOf(&model.Cluster{Services: svcs, Nodes: ns})
}

// ManyPorts is one LoadBalancer Service with n ports (alternating TCP and
// UDP, each with a node port), each with two endpoints.
func ManyPorts(n int) *datapaths.NodeView {
	ns := nodes(2)
	var ports []*model.ServicePort
	for i := range n {
		proto := model.TCP
		if i%2 == 1 {
			proto = model.UDP
		}
		p := &model.ServicePort{Name: fmt.Sprintf("p%d", i), Protocol: proto, Port: int32(1000 + i), NodePort: int32(30000 + i), TargetPort: fmt.Sprint(2000 + i)}
		for j := range 2 {
			p.Endpoints = append(p.Endpoints, &model.Endpoint{
				IP: podIP(j), Port: int32(2000 + i), Name: fmt.Sprintf("pod-%d", j), NodeName: ns[j].Name, Ready: true, Serving: true,
			})
		}
		ports = append(ports, p)
	}
	s := svc("wide", netip.MustParseAddr("198.19.0.20"), ports...)
	s.Type = model.LoadBalancer
	s.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("198.18.128.20")}
	s.ExternalIPs = []netip.Addr{netip.MustParseAddr("198.19.200.20")}
	return viewOf(&model.Cluster{Services: []*model.Service{s}, Nodes: ns})
}

// label is a valid DNS label of exactly n characters.
func label(prefix string, n int) string {
	return prefix + strings.Repeat("x", n-len(prefix)-1) + "z"
}

// LongNames has every name at the longest the API server allows: a
// 63-character namespace, Service name and port names, 253-character node
// names; dual-stack, NodePort and LoadBalancer with eTP=Local, affinity,
// and terminating endpoints, so every comment and chain name a renderer
// writes carries the longest name it ever will.
func LongNames() *datapaths.NodeView {
	nodeName := func(i int) string {
		// Four labels of 63 characters and a dot each: 4*63+3 = 255 is
		// one too many, so the last is 61.
		return fmt.Sprintf("%s.%s.%s.%s", label(fmt.Sprintf("n%d", i), 63), label("b", 63), label("c", 63), label("d", 61))
	}
	ns := nodes(2)
	for i, n := range ns {
		n.Name = nodeName(i)
	}
	namespace := label("ns", 63)
	var ports []*model.ServicePort
	for i, proto := range []model.Protocol{model.TCP, model.UDP, model.SCTP} {
		p := &model.ServicePort{Name: label(fmt.Sprintf("p%d", i), 63), Protocol: proto, Port: int32(80 + i), NodePort: int32(31000 + i), TargetPort: "8080"}
		for j, ip := range []string{"198.18.64.10", "198.18.65.10", "2001:db8:64::10", "2001:db8:65::10"} {
			ep := &model.Endpoint{IP: netip.MustParseAddr(ip), Port: 8080, Name: label("pod", 63), NodeName: ns[j%2].Name, Ready: true, Serving: true}
			if j == 1 {
				ep.Ready, ep.Terminating = false, true
			}
			p.Endpoints = append(p.Endpoints, ep)
		}
		sortEndpoints(p.Endpoints)
		ports = append(ports, p)
	}
	var svcs []*model.Service
	for i, name := range []string{label("a", 63), label("b", 63)} {
		s := &model.Service{
			Name:                  model.ServiceName{Namespace: namespace, Name: name},
			Type:                  model.LoadBalancer,
			ClusterIPs:            []netip.Addr{netip.AddrFrom4([4]byte{198, 19, 0, byte(30 + i)}), netip.MustParseAddr(fmt.Sprintf("2001:db8:19::%x", 30+i))},
			LoadBalancerIPs:       []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 128, byte(30 + i)})},
			ExternalIPs:           []netip.Addr{netip.AddrFrom4([4]byte{198, 19, 200, byte(30 + i)})},
			SessionAffinity:       true,
			AffinityTimeout:       model.MaxAffinityTimeout,
			ExternalTrafficPolicy: model.PolicyLocal,
			InternalTrafficPolicy: model.PolicyCluster,
			HealthCheckNodePort:   int32(32000 + i),
		}
		for _, p := range ports {
			c := p.Clone()
			c.NodePort += int32(100 * i)
			s.Ports = append(s.Ports, c)
		}
		if i == 1 {
			s.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:18::/64")}
			s.InternalTrafficPolicy = model.PolicyLocal
		}
		svcs = append(svcs, s)
	}
	// Without endpoints, the name goes into REJECT rules' and elements'
	// comments too.
	empty := svc(label("c", 63), netip.MustParseAddr("198.19.0.32"))
	empty.Name.Namespace = namespace
	for _, p := range ports {
		c := p.Clone()
		c.Endpoints, c.NodePort = nil, 0
		empty.Ports = append(empty.Ports, c)
	}
	svcs = append(svcs, empty)
	return viewOf(&model.Cluster{Services: svcs, Nodes: ns})
}

// IPv6Only is a cluster with no IPv4 at all: IPv6 node addresses, Service
// addresses and endpoints, every Service type.
func IPv6Only() *datapaths.NodeView {
	ns := nodes(2)
	for i, n := range ns {
		n.Addresses = []netip.Addr{netip.MustParseAddr(fmt.Sprintf("2001:db8:18::%x", 11+i))}
	}
	ep := func(ip, node string) *model.Endpoint {
		return &model.Endpoint{IP: netip.MustParseAddr(ip), Port: 8080, Name: ip, NodeName: node, Ready: true, Serving: true}
	}
	port := func() *model.ServicePort {
		return &model.ServicePort{Protocol: model.TCP, Port: 80, TargetPort: "8080", Endpoints: []*model.Endpoint{
			ep("2001:db8:64::10", ns[0].Name), ep("2001:db8:65::10", ns[1].Name),
		}}
	}
	cip := svc("web", netip.MustParseAddr("2001:db8:19::10"), port())
	np := svc("np", netip.MustParseAddr("2001:db8:19::11"), port())
	np.Type = model.NodePort
	np.Ports[0].NodePort = 30081
	lb := svc("lb", netip.MustParseAddr("2001:db8:19::12"), port())
	lb.Type = model.LoadBalancer
	lb.Ports[0].NodePort = 30082
	lb.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("2001:db8:18:128::12")}
	lb.ExternalIPs = []netip.Addr{netip.MustParseAddr("2001:db8:19::2:12")}
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.LoadBalancerSourceRanges = []netip.Prefix{netip.MustParsePrefix("2001:db8:18::/64")}
	empty := svc("empty", netip.MustParseAddr("2001:db8:19::13"), &model.ServicePort{Protocol: model.UDP, Port: 53, TargetPort: "53"})
	c := &model.Cluster{Services: []*model.Service{cip, empty, lb, np}, Nodes: ns}
	v := viewOf(c)
	v.Proxy.ClusterCIDRs = []netip.Prefix{netip.MustParsePrefix("2001:db8:64::/48")}
	v.Proxy.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("2001:db8:19::/108")}
	return v
}
