package model

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var addrCmp = cmp.Options{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestCloneIsDeep(t *testing.T) {
	orig, err := ParseFiles("../examples/loadbalancer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	orig.Warnings = []string{"w"}
	orig.Services[0].Ports[0].Endpoints[0].ZoneHints = []string{"zone-a"}
	orig.Services[0].Ports[0].Endpoints[0].NodeHints = []string{"node-a"}
	snapshot := orig.Clone()
	if diff := cmp.Diff(orig, snapshot, addrCmp); diff != "" {
		t.Fatalf("clone differs (-orig +clone):\n%s", diff)
	}

	c := orig.Clone()
	s, n := c.Services[0], c.Nodes[0]
	s.ClusterIPs[0] = netip.MustParseAddr("198.19.9.9")
	s.ExternalIPs[0] = netip.MustParseAddr("198.19.9.9")
	s.LoadBalancerIPs[0] = netip.MustParseAddr("198.19.9.9")
	s.LoadBalancerSourceRanges[0] = netip.MustParsePrefix("198.19.9.0/24")
	s.Ports[0].Port = 1
	ep := s.Ports[0].Endpoints[0]
	ep.Ready = false
	ep.ZoneHints[0] = "x"
	ep.NodeHints[0] = "x"
	s.Ports[0].Endpoints[1] = nil
	s.Ports = append(s.Ports, &ServicePort{})
	n.Addresses[0] = netip.MustParseAddr("198.18.9.9")
	n.Labels["x"] = "y"
	c.Warnings[0] = "changed"
	c.Services = append(c.Services, &Service{})

	if diff := cmp.Diff(snapshot, orig, addrCmp); diff != "" {
		t.Errorf("changing the clone changed the original (-before +after):\n%s", diff)
	}
	if (*Cluster)(nil).Clone() != nil {
		t.Error("nil.Clone() != nil")
	}
}

func TestWithNodeAddresses(t *testing.T) {
	orig := mustParse(t, svcWeb+`---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 198.18.0.11}]}
`+slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.65.1], nodeName: node-b}]`))
	if n := orig.Node("node-b"); n == nil || !n.Implicit || len(n.Addresses) != 0 {
		t.Fatalf("node-b = %+v, want an implicit node without addresses", n)
	}
	got := orig.WithNodeAddresses(map[string][]netip.Addr{
		"node-a": {netip.MustParseAddr("198.18.0.99")}, // has addresses: kept
		"node-b": {netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("2001:db8:18::12")},
		"node-z": {netip.MustParseAddr("198.18.0.13")}, // no such node: ignored
	})
	if a := addrStrings(got.Node("node-a").Addresses); !cmp.Equal(a, []string{"198.18.0.11"}) {
		t.Errorf("node-a addresses = %v, want its own", a)
	}
	if a := addrStrings(got.Node("node-b").Addresses); !cmp.Equal(a, []string{"198.18.0.12", "2001:db8:18::12"}) {
		t.Errorf("node-b addresses = %v", a)
	}
	if !got.Node("node-b").Implicit || got.Node("node-z") != nil || len(got.Nodes) != 2 {
		t.Errorf("nodes changed beyond addresses: %+v", got.Nodes)
	}
	if len(orig.Node("node-b").Addresses) != 0 {
		t.Errorf("WithNodeAddresses changed the original")
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
