// Package fuzzcluster turns fuzz input into valid node views, so that every
// renderer's fuzz target explores the same space of clusters: a seeded
// loadgen cluster or a parsed YAML file as the base, then a string of
// byte-coded edits that reach the corners a generator does not (dual-stack
// and IPv6-only Services, terminating endpoints, topology hints, names at
// their length limits, odd proxy flags). It is test support: no package
// outside tests should import it.
package fuzzcluster

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/loadgen"
	"proxyrig/model"
	"proxyrig/topologies"
)

// Limits keep one fuzz execution small: the point is odd shapes, not size.
const (
	maxServices  = 24
	maxEndpoints = 6
	maxNodes     = 3
	maxOps       = 64
)

// Input is one fuzz execution's arguments. YAML, when it parses, is the
// base cluster; otherwise a loadgen cluster is generated from Seed and
// Size. Ops are applied on top, three bytes each.
type Input struct {
	YAML []byte
	Seed uint64
	Size uint16
	Ops  []byte
}

// AddSeeds adds Seeds (with the examples under root/examples) to the
// corpus of a renderer fuzz target whose arguments are an Input's fields:
// f.Fuzz(func(t *testing.T, yaml []byte, seed uint64, size uint16, ops []byte)).
func AddSeeds(f *testing.F, root string) {
	f.Helper()
	examples, err := Examples(root)
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range Seeds(examples) {
		f.Add(in.YAML, in.Seed, in.Size, in.Ops)
	}
}

// Seeds returns seed inputs: one per example file (read by the caller, who
// knows where the repository is) and a few generated shapes.
func Seeds(examples map[string][]byte) []Input {
	var out []Input
	for _, name := range slices.Sorted(maps.Keys(examples)) {
		out = append(out, Input{YAML: examples[name]})
	}
	out = append(out,
		Input{Seed: 1, Size: 0x0305},
		Input{Seed: 2, Size: 0x0210, Ops: []byte{6, 0, 0, 6, 1, 0, 7, 2, 0, 4, 0, 0x1d, 5, 3, 0}},
		Input{Seed: 3, Size: 0x0408, Ops: []byte{0, 0, 1, 0, 1, 2, 1, 1, 0, 9, 0, 0, 10, 1, 24, 3, 2, 30}},
		Input{Seed: 4, Size: 0x0506, Ops: []byte{11, 0, 1, 11, 1, 2, 13, 0, 1, 15, 0, 1, 14, 0, 0x0f}},
		Input{Seed: 5, Size: 0x0104, Ops: []byte{16, 0, 0, 16, 1, 1, 12, 0, 2, 12, 0, 1, 8, 2, 0, 8, 3, 1}},
	)
	return out
}

// View builds the node view for in. ok is false when the input does not
// describe a valid cluster (the YAML is invalid and generation failed, or
// the edits broke a rule Validate enforces); fuzz targets skip those, since
// Parse and Validate are fuzzed on their own.
func View(in Input) (view *datapaths.NodeView, ok bool) {
	var c *model.Cluster
	if len(in.YAML) > 0 {
		parsed, err := model.Parse("fuzz.yaml", in.YAML)
		if err == nil {
			// Nodes the file only names get addresses, as the lab gives them.
			c = fillNodeAddresses(parsed)
		}
	}
	if c == nil {
		spec := loadgen.Spec{
			Services:            int(in.Size&0xff) % (maxServices + 1),
			EndpointsPerService: int(in.Size>>8) % (maxEndpoints + 1),
			Seed:                in.Seed,
			Nodes:               1 + int(in.Seed>>8)%maxNodes,
			PortsPerService:     1 + int(in.Seed>>16)%3,
			ITPLocalFraction:    float64(in.Seed>>24&3) / 4,
		}
		none := spec.EndpointsPerService == 0
		if none {
			spec.EndpointsPerService = 1 // 0 would mean "the default"
		}
		gen, err := loadgen.Generate(spec)
		if err != nil {
			return nil, false
		}
		if none {
			for _, s := range gen.Services {
				for _, p := range s.Ports {
					p.Endpoints = nil
				}
			}
		}
		c = gen
	}
	if len(c.Nodes) == 0 {
		c.Nodes = []*model.Node{{Name: "node-a", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.11")}}}
	}
	e := &editor{c: c, view: &datapaths.NodeView{
		Cluster: c,
		Node:    c.Nodes[0],
		Proxy: datapaths.ProxyConfig{
			ClusterCIDRs: []netip.Prefix{topologies.ClusterCIDR, netip.MustParsePrefix("2001:db8:64::/48")},
			ServiceCIDRs: []netip.Prefix{topologies.ServiceCIDR, netip.MustParsePrefix("2001:db8:19::/108")},
		},
	}}
	e.init()
	ops := in.Ops
	for n := 0; len(ops) >= 3 && n < maxOps; n++ {
		e.apply(ops[0], ops[1], ops[2])
		ops = ops[3:]
	}
	slices.SortStableFunc(c.Services, func(a, b *model.Service) int {
		return cmp.Or(cmp.Compare(a.Name.Namespace, b.Name.Namespace), cmp.Compare(a.Name.Name, b.Name.Name))
	})
	for _, s := range c.Services {
		for _, p := range s.Ports {
			sortEndpoints(p.Endpoints)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, false
	}
	return e.view, true
}

func fillNodeAddresses(c *model.Cluster) *model.Cluster {
	addrs := map[string][]netip.Addr{}
	for i, n := range c.Nodes {
		if len(n.Addresses) == 0 {
			addrs[n.Name] = []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)})}
		}
	}
	if len(addrs) == 0 {
		return c
	}
	return c.WithNodeAddresses(addrs)
}

func sortEndpoints(eps []*model.Endpoint) {
	slices.SortStableFunc(eps, func(a, b *model.Endpoint) int {
		return cmp.Or(a.IP.Compare(b.IP), cmp.Compare(a.Port, b.Port))
	})
}

// editor applies byte-coded edits and hands out addresses and node ports
// that no other object uses, so most edit strings keep the cluster valid.
type editor struct {
	c         *model.Cluster
	view      *datapaths.NodeView
	nodePorts map[int32]bool
	vips      map[netip.Addr]bool
	next      uint32 // counter for fresh addresses and names
}

func (e *editor) init() {
	e.nodePorts = map[int32]bool{}
	e.vips = map[netip.Addr]bool{}
	for _, s := range e.c.Services {
		for _, p := range s.Ports {
			if p.NodePort != 0 {
				e.nodePorts[p.NodePort] = true
			}
		}
		if s.HealthCheckNodePort != 0 {
			e.nodePorts[s.HealthCheckNodePort] = true
		}
		for _, l := range [][]netip.Addr{s.ClusterIPs, s.ExternalIPs, s.LoadBalancerIPs} {
			for _, ip := range l {
				e.vips[ip] = true
			}
		}
	}
}

func (e *editor) freshNodePort() int32 {
	for p := int32(32767); p >= 30000; p-- {
		if !e.nodePorts[p] {
			e.nodePorts[p] = true
			return p
		}
	}
	return 0
}

// freshVIP returns an unused address: base plus a counter.
func (e *editor) freshVIP(base netip.Addr) netip.Addr {
	for {
		e.next++
		b := base.As16()
		n := e.next
		b[15] += byte(n)
		b[14] += byte(n >> 8)
		ip := netip.AddrFrom16(b)
		if base.Is4() {
			ip = ip.Unmap()
		}
		if !e.vips[ip] {
			e.vips[ip] = true
			return ip
		}
	}
}

var (
	v6VIPBase = netip.MustParseAddr("2001:db8:19::1:0")
	v6PodBase = netip.MustParseAddr("2001:db8:64::")
	extBase   = netip.MustParseAddr("198.19.200.0")
	lbBase    = netip.MustParseAddr("198.18.250.0")
)

// v6Of maps an IPv4 endpoint address to a stable IPv6 one, so a
// dual-stack edit gives each pod one address of each family.
func v6Of(ip netip.Addr) netip.Addr {
	b4 := ip.As4()
	b := v6PodBase.As16()
	copy(b[12:], b4[:])
	return netip.AddrFrom16(b)
}

func (e *editor) svc(i byte) *model.Service {
	if len(e.c.Services) == 0 {
		return nil
	}
	return e.c.Services[int(i)%len(e.c.Services)]
}

func (e *editor) node(i byte) *model.Node { return e.c.Nodes[int(i)%len(e.c.Nodes)] }

// apply performs edit op on the Service picked by a, with argument b.
func (e *editor) apply(op, a, b byte) {
	switch op % 20 {
	case 14:
		e.proxyFlags(b)
		return
	case 15:
		n := e.node(b)
		e.view.Node = n
		if a&1 != 0 && !slices.ContainsFunc(n.Addresses, netip.Addr.Is6) {
			n.Addresses = append(n.Addresses, netip.MustParseAddr(fmt.Sprintf("2001:db8:18::%x", 11+int(b)%len(e.c.Nodes))))
		}
		if a&2 != 0 {
			n.Zone = fmt.Sprintf("zone-%d", b%3)
		}
		return
	}
	s := e.svc(a)
	if s == nil {
		return
	}
	switch op % 20 {
	case 0: // Service type
		e.setType(s, []model.ServiceType{model.ClusterIP, model.NodePort, model.LoadBalancer}[b%3])
	case 1: // externalTrafficPolicy, with a health check node port for LBs
		if s.ExternalTrafficPolicy == model.PolicyLocal {
			s.ExternalTrafficPolicy = model.PolicyCluster
			s.HealthCheckNodePort = 0
		} else {
			s.ExternalTrafficPolicy = model.PolicyLocal
			if s.Type == model.LoadBalancer && b&1 != 0 {
				s.HealthCheckNodePort = e.freshNodePort()
			}
		}
	case 2: // internalTrafficPolicy
		if s.InternalTrafficPolicy == model.PolicyLocal {
			s.InternalTrafficPolicy = model.PolicyCluster
		} else {
			s.InternalTrafficPolicy = model.PolicyLocal
		}
	case 3: // session affinity
		s.SessionAffinity = b != 0
		s.AffinityTimeout = time.Duration(b) * time.Second
		if b == 255 {
			s.AffinityTimeout = model.MaxAffinityTimeout
		}
	case 4: // endpoint conditions: bits 0-2 ready, serving, terminating
		for _, p := range s.Ports {
			if len(p.Endpoints) == 0 {
				continue
			}
			ep := p.Endpoints[int(b>>3)%len(p.Endpoints)]
			ep.Ready, ep.Serving, ep.Terminating = b&1 != 0, b&2 != 0, b&4 != 0
		}
	case 5: // drop endpoints
		for _, p := range s.Ports {
			if b == 0 || len(p.Endpoints) == 0 {
				p.Endpoints = nil
			} else {
				p.Endpoints = slices.Delete(p.Endpoints, 0, min(len(p.Endpoints), int(b)%len(p.Endpoints)+1))
			}
		}
	case 6: // dual-stack
		if s.IsProxied() && len(s.ClusterIPs) == 1 && s.ClusterIPs[0].Is4() {
			s.ClusterIPs = append(s.ClusterIPs, e.freshVIP(v6VIPBase))
			if b&1 != 0 {
				s.ClusterIPs[0], s.ClusterIPs[1] = s.ClusterIPs[1], s.ClusterIPs[0]
			}
			e.addV6Endpoints(s, false)
		}
	case 7: // IPv6 only
		if s.IsProxied() && len(s.ClusterIPs) == 1 && s.ClusterIPs[0].Is4() {
			s.ClusterIPs = []netip.Addr{e.freshVIP(v6VIPBase)}
			s.ExternalIPs, s.LoadBalancerIPs, s.LoadBalancerSourceRanges = nil, nil, nil
			e.addV6Endpoints(s, true)
			if s.Type == model.LoadBalancer && b&1 != 0 {
				s.LoadBalancerIPs = []netip.Addr{e.freshVIP(netip.MustParseAddr("2001:db8:18:128::"))}
			}
		}
	case 8: // headless or ExternalName
		e.setType(s, model.ClusterIP)
		if b&1 == 0 {
			s.Headless, s.ClusterIPs = true, nil
		} else {
			s.Type, s.ClusterIPs = model.ExternalName, nil
		}
		s.ExternalIPs = nil
	case 9: // externalIP
		base := extBase
		if len(s.ClusterIPs) > 0 && s.ClusterIPs[0].Is6() {
			base = netip.MustParseAddr("2001:db8:19::2:0")
		}
		s.ExternalIPs = append(s.ExternalIPs, e.freshVIP(base))
	case 10: // loadBalancerSourceRanges
		if s.Type != model.LoadBalancer {
			e.setType(s, model.LoadBalancer)
		}
		bits := int(b) % 33
		pfx, _ := netip.AddrFrom4([4]byte{198, 18, b, 0}).Prefix(bits)
		if b&0x80 != 0 {
			pfx, _ = netip.MustParseAddr("2001:db8:18::").Prefix(int(b) % 129)
		}
		s.LoadBalancerSourceRanges = append(s.LoadBalancerSourceRanges, pfx)
	case 11: // topology
		s.TrafficDistribution = []string{"", "PreferClose", "PreferSameZone", "PreferSameNode"}[b%4]
		for _, p := range s.Ports {
			for i, ep := range p.Endpoints {
				switch (int(b>>2) + i) % 4 {
				case 0:
					ep.ZoneHints, ep.NodeHints = nil, nil
				case 1:
					ep.ZoneHints = []string{fmt.Sprintf("zone-%d", i%3)}
				case 2:
					ep.NodeHints = []string{e.node(byte(i)).Name}
				case 3:
					ep.Zone = fmt.Sprintf("zone-%d", i%3)
					ep.ZoneHints = []string{ep.Zone}
					ep.NodeHints = []string{ep.NodeName}
				}
			}
		}
	case 12: // another port, of another protocol
		proto := []model.Protocol{model.TCP, model.UDP, model.SCTP}[b%3]
		sp := &model.ServicePort{Name: fmt.Sprintf("x%d", len(s.Ports)), Protocol: proto, Port: 1000 + int32(b), TargetPort: "9000"}
		if s.Type == model.NodePort || s.Type == model.LoadBalancer {
			sp.NodePort = e.freshNodePort()
		}
		if len(s.Ports) > 0 {
			for _, ep := range s.Ports[0].Endpoints {
				c := ep.Clone()
				c.Port = 9000 + int32(b)
				sp.Endpoints = append(sp.Endpoints, c)
			}
		}
		if len(s.Ports) == 1 && s.Ports[0].Name == "" {
			s.Ports[0].Name = "p"
		}
		s.Ports = append(s.Ports, sp)
	case 13: // move an endpoint to another node, or to no node
		for _, p := range s.Ports {
			if len(p.Endpoints) > 0 {
				ep := p.Endpoints[int(b>>2)%len(p.Endpoints)]
				if b&3 == 3 {
					ep.NodeName = ""
				} else {
					ep.NodeName = e.node(b).Name
				}
			}
		}
	case 16: // names at their length limits
		s.Name.Name = longName(b, 63, "s")
		if b&1 != 0 {
			s.Name.Namespace = longName(b, 63, "n")
		}
		for i, p := range s.Ports {
			if len(s.Ports) > 1 || b&2 != 0 {
				p.Name = longName(byte(i), 63, "p")
			}
		}
		s.Origin = model.Origin{}
	case 17: // an endpoint on the node itself (host network)
		for _, p := range s.Ports {
			if len(p.Endpoints) > 0 && len(e.view.Node.Addresses) > 0 {
				ep := p.Endpoints[0]
				ip := e.view.Node.Addresses[0]
				if ip.Is4() == ep.IP.Is4() {
					ep.IP, ep.NodeName = ip, e.view.Node.Name
				}
			}
		}
		for _, p := range s.Ports {
			p.Endpoints = dedupe(p.Endpoints)
		}
	case 18: // large affinity timeout and many endpoint flips at once
		for _, p := range s.Ports {
			for i, ep := range p.Endpoints {
				bits := b >> (i % 8)
				ep.Ready, ep.Serving, ep.Terminating = bits&1 != 0, bits&3 != 0, bits&1 == 0
			}
		}
	case 19: // remove the Service
		i := slices.Index(e.c.Services, s)
		e.c.Services = slices.Delete(e.c.Services, i, i+1)
	}
}

func dedupe(eps []*model.Endpoint) []*model.Endpoint {
	seen := map[netip.AddrPort]bool{}
	var out []*model.Endpoint
	for _, ep := range eps {
		k := netip.AddrPortFrom(ep.IP, uint16(ep.Port))
		if !seen[k] {
			seen[k] = true
			out = append(out, ep)
		}
	}
	return out
}

// longName is a valid DNS label of length n, distinct for each b.
func longName(b byte, n int, prefix string) string {
	s := fmt.Sprintf("%s%03d-", prefix, b)
	return s + strings.Repeat("x", n-len(s))
}

func (e *editor) setType(s *model.Service, t model.ServiceType) {
	if !s.IsProxied() {
		return
	}
	s.Type = t
	for _, p := range s.Ports {
		switch {
		case t == model.ClusterIP:
			p.NodePort = 0
		case p.NodePort == 0:
			p.NodePort = e.freshNodePort()
		}
	}
	if t != model.LoadBalancer {
		s.LoadBalancerIPs, s.LoadBalancerSourceRanges, s.HealthCheckNodePort = nil, nil, 0
	} else if len(s.LoadBalancerIPs) == 0 && s.ClusterIPs[0].Is4() {
		s.LoadBalancerIPs = []netip.Addr{e.freshVIP(lbBase)}
	}
}

func (e *editor) addV6Endpoints(s *model.Service, replace bool) {
	for _, p := range s.Ports {
		var v6 []*model.Endpoint
		for _, ep := range p.Endpoints {
			if !ep.IP.Is4() {
				continue
			}
			c := ep.Clone()
			c.IP = v6Of(ep.IP)
			v6 = append(v6, c)
		}
		if replace {
			p.Endpoints = v6
		} else {
			p.Endpoints = append(p.Endpoints, v6...)
		}
	}
}

// proxyFlags sets kube-proxy's node flags from the bits of b.
func (e *editor) proxyFlags(b byte) {
	p := &e.view.Proxy
	p.MasqueradeAll = b&1 != 0
	p.LocalhostNodePorts = b&2 != 0
	if b&4 != 0 {
		p.ClusterCIDRs = nil
		p.NoLocalTrafficDetector = true
	}
	switch (b >> 3) & 3 {
	case 1:
		p.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	case 2:
		if len(e.view.Node.Addresses) > 0 {
			a := e.view.Node.Addresses[0]
			p.NodePortAddresses = []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
		}
	case 3:
		p.NodePortAddresses = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("2001:db8:18::/64")}
	}
	if b&0x20 != 0 {
		p.ServiceCIDRs = nil
	}
}
