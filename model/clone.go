package model

import (
	"maps"
	"net/netip"
	"slices"
)

// Clone returns a deep copy of c: changing the copy never shows through to
// c, which other goroutines may be reading.
func (c *Cluster) Clone() *Cluster {
	if c == nil {
		return nil
	}
	out := &Cluster{Warnings: slices.Clone(c.Warnings)}
	if c.Services != nil {
		out.Services = make([]*Service, len(c.Services))
		for i, s := range c.Services {
			out.Services[i] = s.Clone()
		}
	}
	if c.Nodes != nil {
		out.Nodes = make([]*Node, len(c.Nodes))
		for i, n := range c.Nodes {
			out.Nodes[i] = n.Clone()
		}
	}
	return out
}

// Clone returns a deep copy of s.
func (s *Service) Clone() *Service {
	if s == nil {
		return nil
	}
	out := *s
	out.ClusterIPs = slices.Clone(s.ClusterIPs)
	out.ExternalIPs = slices.Clone(s.ExternalIPs)
	out.LoadBalancerIPs = slices.Clone(s.LoadBalancerIPs)
	out.LoadBalancerSourceRanges = slices.Clone(s.LoadBalancerSourceRanges)
	if s.Ports != nil {
		out.Ports = make([]*ServicePort, len(s.Ports))
		for i, p := range s.Ports {
			out.Ports[i] = p.Clone()
		}
	}
	return &out
}

// Clone returns a deep copy of p.
func (p *ServicePort) Clone() *ServicePort {
	if p == nil {
		return nil
	}
	out := *p
	if p.Endpoints != nil {
		out.Endpoints = make([]*Endpoint, len(p.Endpoints))
		for i, ep := range p.Endpoints {
			out.Endpoints[i] = ep.Clone()
		}
	}
	return &out
}

// Clone returns a deep copy of ep.
func (ep *Endpoint) Clone() *Endpoint {
	if ep == nil {
		return nil
	}
	out := *ep
	out.ZoneHints = slices.Clone(ep.ZoneHints)
	out.NodeHints = slices.Clone(ep.NodeHints)
	return &out
}

// Clone returns a deep copy of n.
func (n *Node) Clone() *Node {
	if n == nil {
		return nil
	}
	out := *n
	out.Addresses = slices.Clone(n.Addresses)
	out.Labels = maps.Clone(n.Labels)
	return &out
}

// WithNodeAddresses returns a copy of c in which every node that has no
// addresses gets addrs[node name], if there is such an entry. Nodes that
// already have addresses keep them: the lab uses this to give implicit
// nodes (named only by an endpoint's nodeName) addresses of its own plan.
func (c *Cluster) WithNodeAddresses(addrs map[string][]netip.Addr) *Cluster {
	out := c.Clone()
	if out == nil {
		return nil
	}
	for _, n := range out.Nodes {
		if len(n.Addresses) == 0 {
			if a, ok := addrs[n.Name]; ok {
				n.Addresses = slices.Clone(a)
			}
		}
	}
	return out
}
