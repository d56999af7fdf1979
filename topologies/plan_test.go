package topologies

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"proxyrig/model"
)

// Helpers to write clusters by hand; tests of the lab do not depend on the
// YAML parser.

func mkNode(name string, addrs ...string) *model.Node {
	n := &model.Node{Name: name}
	for _, a := range addrs {
		n.Addresses = append(n.Addresses, netip.MustParseAddr(a))
	}
	return n
}

func mkEP(ip string, port int32, name, node string) *model.Endpoint {
	return &model.Endpoint{IP: netip.MustParseAddr(ip), Port: port, Name: name, NodeName: node, Ready: true, Serving: true}
}

func mkPort(proto model.Protocol, port int32, eps ...*model.Endpoint) *model.ServicePort {
	return &model.ServicePort{Name: strings.ToLower(string(proto)), Protocol: proto, Port: port, Endpoints: eps}
}

func mkSvc(name string, clusterIPs []string, ports ...*model.ServicePort) *model.Service {
	s := &model.Service{
		Name:                  model.ServiceName{Namespace: "default", Name: name},
		Type:                  model.ClusterIP,
		ExternalTrafficPolicy: model.PolicyCluster,
		InternalTrafficPolicy: model.PolicyCluster,
		Ports:                 ports,
		Origin:                model.Origin{Kind: "Service", Name: "default/" + name},
	}
	for _, ip := range clusterIPs {
		s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr(ip))
	}
	return s
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestPlanDefaultNode(t *testing.T) {
	c := &model.Cluster{Services: []*model.Service{
		mkSvc("web", []string{"198.19.0.10"}, mkPort(model.TCP, 80, mkEP("198.18.64.10", 8080, "web-0", ""))),
	}}
	p, err := makePlan(c, Options{Name: "t"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.cluster.Nodes) != 1 || p.cluster.Nodes[0].Name != defaultNode || !p.cluster.Nodes[0].Implicit {
		t.Fatalf("want one implicit node %s, got %+v", defaultNode, p.cluster.Nodes)
	}
	if got := p.nodes[0].addrs; !slices.Equal(got, addrs("198.18.0.11")) {
		t.Errorf("node address = %v, want 198.18.0.11", got)
	}
	if len(c.Nodes) != 0 {
		t.Error("makePlan modified its input")
	}
	if len(p.pods) != 1 || p.pods[0].node != defaultNode || p.pods[0].ns != "prx-t-p-web-0" {
		t.Errorf("endpoint without a node should hang off %s: %+v", defaultNode, p.pods[0])
	}
	if len(p.externals) != 1 || !slices.Equal(p.externals[0].addrs, addrs("198.18.0.200")) {
		t.Errorf("externals = %+v", p.externals)
	}
	if len(p.clients) != 1 || !slices.Equal(p.clients[0].ips, addrs("198.18.127.1")) || p.clients[0].ns != "prx-t-c-node-1" {
		t.Errorf("clients = %+v", p.clients[0])
	}
	wantRoutes := []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("198.19.0.10/32")}
	if !slices.Equal(p.vipRoutes, wantRoutes) {
		t.Errorf("vipRoutes = %v, want %v", p.vipRoutes, wantRoutes)
	}
	if !slices.Equal(p.proxy.ClusterCIDRs, []netip.Prefix{ClusterCIDR}) || !slices.Equal(p.proxy.ServiceCIDRs, []netip.Prefix{ServiceCIDR}) {
		t.Errorf("proxy defaults = %+v", p.proxy)
	}
}

func TestPlanDualStackAndHostNetwork(t *testing.T) {
	c := &model.Cluster{
		Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b", "10.0.0.2")},
		Services: []*model.Service{
			mkSvc("web", []string{"198.19.0.10", "2001:db8:19::10"},
				mkPort(model.TCP, 80,
					mkEP("198.18.64.10", 8080, "web-a", "node-a"),
					mkEP("2001:db8:64::10", 8080, "web-a", "node-a"),
					mkEP("10.0.0.2", 9090, "host-b", "node-b"),
				),
				mkPort(model.UDP, 53, mkEP("198.18.64.10", 5353, "web-a", "node-a")),
			),
		},
	}
	p, err := makePlan(c, Options{Name: "t", ExternalClients: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !p.v6 {
		t.Fatal("an IPv6 ClusterIP should make the lab dual-stack")
	}
	if got := p.nodes[0].addrs; !slices.Equal(got, addrs("198.18.0.11", "2001:db8:18::b")) {
		t.Errorf("node-a addresses = %v", got)
	}
	if got := p.nodes[1].addrs; !slices.Equal(got, addrs("10.0.0.2", "2001:db8:18::c")) {
		t.Errorf("node-b addresses = %v (the user's address stays first)", got)
	}
	if got := p.cluster.Node("node-b").Addresses; !slices.Equal(got, addrs("10.0.0.2", "2001:db8:18::c")) {
		t.Errorf("effective cluster node-b = %v", got)
	}
	if got := p.externals[1].addrs; !slices.Equal(got, addrs("198.18.0.201", "2001:db8:18::c9")) {
		t.Errorf("external-1 = %v", got)
	}
	if got := p.clients[1].ips; !slices.Equal(got, addrs("198.18.127.2", "2001:db8:64:7f::2")) {
		t.Errorf("client of node-b = %v", got)
	}

	if len(p.pods) != 2 {
		t.Fatalf("want 2 endpoint groups (web-a dual-stack, host-b), got %d: %+v", len(p.pods), p.pods)
	}
	byName := map[string]*podPlan{}
	for _, pp := range p.pods {
		byName[pp.name] = pp
	}
	wa, hb := byName["web-a"], byName["host-b"]
	if wa == nil || !slices.Equal(wa.ips, addrs("198.18.64.10", "2001:db8:64::10")) || wa.hostNetwork {
		t.Errorf("web-a = %+v", wa)
	}
	if !slices.Equal(wa.ports, []string{"5353/UDP", "8080/TCP"}) {
		t.Errorf("web-a ports = %v", wa.ports)
	}
	if hb == nil || !hb.hostNetwork || hb.ns != "prx-t-n-node-b" || hb.node != "node-b" {
		t.Errorf("host-b should be host-network in node-b's namespace: %+v", hb)
	}
	k := serverKey{ns: "prx-t-n-node-b", addr: netip.MustParseAddrPort("10.0.0.2:9090"), proto: model.TCP}
	if p.servers[k] != "host-b" {
		t.Errorf("no host-network server %v in %v", k, p.servers)
	}
	if len(p.servers) != 4 {
		t.Errorf("want 4 servers, got %v", p.servers)
	}
}

func TestPlanErrors(t *testing.T) {
	web := func(ip, node string) *model.Cluster {
		return &model.Cluster{
			Nodes:    []*model.Node{mkNode("node-a")},
			Services: []*model.Service{mkSvc("web", []string{"198.19.0.10"}, mkPort(model.TCP, 80, mkEP(ip, 80, "x", node)))},
		}
	}
	for name, tc := range map[string]struct {
		c    *model.Cluster
		opts Options
		want string
	}{
		"client pod collision":   {c: web("198.18.127.1", "node-a"), want: "client pod"},
		"external collision":     {c: web("198.18.0.200", "node-a"), want: "external-0"},
		"gateway collision":      {c: web("169.254.1.1", "node-a"), want: "gateway"},
		"unknown ingress":        {c: web("198.18.64.1", "node-a"), opts: Options{IngressNode: "nope"}, want: "ingress node"},
		"unknown datapath node":  {c: web("198.18.64.1", "node-a"), opts: Options{Datapath: "x", DatapathNodes: []string{"nope"}}, want: "datapath node"},
		"too many externals":     {c: web("198.18.64.1", "node-a"), opts: Options{ExternalClients: 99}, want: "external clients"},
		"duplicate node address": {c: &model.Cluster{Nodes: []*model.Node{mkNode("a", "10.0.0.1"), mkNode("b", "10.0.0.1")}}, want: "also node a"},
	} {
		opts := tc.opts
		opts.Name = "t"
		_, err := makePlan(tc.c, opts, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

func TestPlanNameCollisions(t *testing.T) {
	c := &model.Cluster{
		Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b")},
		Services: []*model.Service{mkSvc("web", []string{"198.19.0.10"}, mkPort(model.TCP, 80,
			mkEP("198.18.64.1", 80, "web-0", "node-a"),
			mkEP("198.18.65.1", 80, "web-0", "node-b"), // same pod name, another node
			mkEP("198.18.66.1", 80, "web_1", "node-a"),
			mkEP("198.18.66.2", 80, "web-1", "node-a"), // sanitizes to the same
		))},
	}
	p, err := makePlan(c, Options{Name: "t"}, false)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, pp := range p.pods {
		if seen[pp.ns] {
			t.Errorf("namespace %s used twice", pp.ns)
		}
		seen[pp.ns] = true
	}
	if len(p.pods) != 4 {
		t.Errorf("want 4 pods, got %d", len(p.pods))
	}
}

func TestPlanHealthChecks(t *testing.T) {
	lb := mkSvc("lb", []string{"198.19.0.30"},
		mkPort(model.TCP, 80, mkEP("198.18.64.1", 80, "a", "node-a"), mkEP("198.18.65.1", 80, "b", "node-b")),
		mkPort(model.UDP, 81, mkEP("198.18.64.1", 81, "a", "node-a")), // same pod: counts once
	)
	lb.Type = model.LoadBalancer
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.HealthCheckNodePort = 30100
	lb.Ports[0].NodePort = 30080
	lb.Ports[0].Endpoints[1].Ready = false
	c := &model.Cluster{Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b")}, Services: []*model.Service{lb}}

	p, err := makePlan(c, Options{Name: "t"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.hc) != 0 {
		t.Errorf("no datapath, so no health checks; got %v", p.hc)
	}
	p, err = makePlan(c, Options{Name: "t", Datapath: "x"}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[int32]hcPlan{
		"node-a": {30100: {svc: lb.Name, count: 1}},
		"node-b": {30100: {svc: lb.Name, count: 0}}, // its endpoint is not ready
	}
	for node, ports := range want {
		for port, hp := range ports {
			if p.hc[node][port] != hp {
				t.Errorf("hc[%s][%d] = %+v, want %+v", node, port, p.hc[node][port], hp)
			}
		}
	}
}

func TestSameNodes(t *testing.T) {
	one := &model.Cluster{Nodes: []*model.Node{mkNode("node-a")}}
	two := &model.Cluster{Nodes: []*model.Node{mkNode("node-a"), mkNode("node-b")}}
	moved := &model.Cluster{Nodes: []*model.Node{mkNode("node-a", "10.1.1.1")}}
	p1, _ := makePlan(one, Options{Name: "t"}, false)
	p2, _ := makePlan(two, Options{Name: "t"}, false)
	p3, _ := makePlan(moved, Options{Name: "t"}, false)
	if err := sameNodes(p1, p1); err != nil {
		t.Error(err)
	}
	if err := sameNodes(p1, p2); err == nil {
		t.Error("adding a node should be refused")
	}
	if err := sameNodes(p1, p3); err == nil {
		t.Error("changing a node address should be refused")
	}
}

func TestAddOffset(t *testing.T) {
	for _, tc := range []struct {
		base string
		n    int
		want string
	}{
		{"198.18.0.0", 11, "198.18.0.11"},
		{"198.18.0.250", 10, "198.18.1.4"},
		{"2001:db8:18::", 200, "2001:db8:18::c8"},
		{"2001:db8::ff", 1, "2001:db8::100"},
	} {
		if got := addOffset(netip.MustParseAddr(tc.base), tc.n); got != netip.MustParseAddr(tc.want) {
			t.Errorf("addOffset(%s, %d) = %s, want %s", tc.base, tc.n, got, tc.want)
		}
	}
}
