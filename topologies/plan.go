package topologies

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// IPv6 side of the default address plan and the offsets into it. The v6
// addresses are the same numbers added to a v6 base, so node i is
// 198.18.0.(11+i) and 2001:db8:18::(11+i) (hex: node 0 is ::b).
var (
	NodeBase6      = NodeSegment6.Addr()                     // + 11 + i
	ClientPodBase6 = netip.MustParseAddr("2001:db8:64:7f::") // + 1 + i
	ExternalBase6  = NodeSegment6.Addr()                     // + 200 + i
)

const (
	firstNodeOffset     = 11  // node i: NodeSegment + 11 + i
	externalOffset6     = 200 // external i: NodeSegment6 + 200 + i
	maxDefaultNodes     = 189 // 11+188 = 199, below the external range at .200
	maxExternalClients  = 55  // .200 … .254
	maxClientPods       = 254 // 198.18.127.1 … .254
	defaultExternalHost = 1
)

// plan is everything a lab should be for one cluster, computed without
// touching the kernel: Build and Apply diff plans against what exists, and
// an invalid cluster fails here before anything changes.
type plan struct {
	lab     string
	cluster *model.Cluster // effective: implicit node addresses filled in
	v6      bool

	nodes     []*nodePlan
	externals []*hostPlan
	// pods are endpoint groups, host-network ones included; clients are the
	// per-node client pods. Both sorted by namespace name.
	pods    []*podPlan
	clients []*podPlan
	servers map[serverKey]string // -> endpoint name to answer with

	ingress   string         // node external clients route VIPs through
	vipRoutes []netip.Prefix // on every external client, via the ingress node
	hc        map[string]map[int32]hcPlan
	proxy     datapaths.ProxyConfig
}

// hostPlan is a host on the node segment: a node or an external client.
type hostPlan struct {
	name  string
	ns    string
	addrs []netip.Addr
}

type nodePlan struct {
	hostPlan
	node     *model.Node // in the effective cluster
	index    int
	datapath bool
}

// podPlan is one pod namespace (or, with hostNetwork, a set of endpoint
// addresses that are node addresses and live in the node's namespace).
type podPlan struct {
	name        string // endpoint name, or client-<node>
	ns          string
	node        string // node the pod hangs off
	ips         []netip.Addr
	hostNetwork bool
	ports       []string // "8080/TCP", sorted
}

// sameWiring reports whether two pod plans need the same links and routes,
// so Apply may keep the existing namespace.
func (p *podPlan) sameWiring(q *podPlan) bool {
	return p.ns == q.ns && p.node == q.node && p.hostNetwork == q.hostNetwork && slices.Equal(p.ips, q.ips)
}

type serverKey struct {
	ns    string
	addr  netip.AddrPort
	proto model.Protocol
}

type hcPlan struct {
	svc   model.ServiceName
	count int
}

func (p *plan) node(name string) *nodePlan {
	for _, n := range p.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func addrOf(addrs []netip.Addr, v6 bool) netip.Addr {
	for _, a := range addrs {
		if a.Is6() == v6 {
			return a
		}
	}
	return netip.Addr{}
}

// addOffset returns base + n, in either family.
func addOffset(base netip.Addr, n int) netip.Addr {
	b := base.As16()
	carry := n
	for i := 15; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry
		b[i] = byte(sum)
		carry = sum >> 8
	}
	a := netip.AddrFrom16(b)
	if base.Is4() {
		return a.Unmap()
	}
	return a
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// makePlan validates the cluster against the lab options and lays out the
// lab. It never touches the kernel. keepIPv6 keeps a dual-stack lab
// dual-stack even if the cluster no longer has anything IPv6.
func makePlan(c *model.Cluster, opts Options, keepIPv6 bool) (*plan, error) {
	if c == nil {
		return nil, errors.New("no cluster given")
	}
	p := &plan{lab: opts.Name, servers: map[serverKey]string{}, hc: map[string]map[int32]hcPlan{}}
	// A lab built dual-stack stays dual-stack across Apply, so its clients
	// keep their addresses even if the cluster drops its last IPv6 object.
	p.v6 = clusterUsesIPv6(c) || keepIPv6

	if err := p.layoutNodes(c); err != nil {
		return nil, err
	}
	if err := p.layoutExternals(opts.ExternalClients); err != nil {
		return nil, err
	}
	taken := map[netip.Addr]string{} // address -> who holds it, for collisions
	nodeOf := map[netip.Addr]string{}
	for _, n := range p.nodes {
		for _, a := range n.addrs {
			if who, dup := taken[a]; dup {
				return nil, fmt.Errorf("node %s: address %s is also %s", n.name, a, who)
			}
			taken[a] = "node " + n.name
			nodeOf[a] = n.name
		}
	}
	for _, x := range p.externals {
		for _, a := range x.addrs {
			if who, dup := taken[a]; dup {
				return nil, fmt.Errorf("%s: address %s is also %s; move it or lower ExternalClients", x.name, a, who)
			}
			taken[a] = x.name
		}
	}
	for _, gw := range []netip.Addr{PodGateway, PodGateway6} {
		taken[gw] = "the pod gateway"
	}
	if err := p.layoutClients(taken); err != nil {
		return nil, err
	}
	if err := p.layoutPods(taken, nodeOf); err != nil {
		return nil, err
	}

	// Roles.
	if opts.IngressNode != "" {
		if p.node(opts.IngressNode) == nil {
			return nil, fmt.Errorf("ingress node %q is not a node of the cluster", opts.IngressNode)
		}
		p.ingress = opts.IngressNode
	} else {
		p.ingress = p.nodes[0].name
	}
	if opts.Datapath != "" {
		if len(opts.DatapathNodes) == 0 {
			for _, n := range p.nodes {
				n.datapath = true
			}
		}
		for _, name := range opts.DatapathNodes {
			n := p.node(name)
			if n == nil {
				return nil, fmt.Errorf("datapath node %q is not a node of the cluster", name)
			}
			n.datapath = true
		}
	}

	p.proxy = opts.Proxy
	// Without a detector ClusterCIDRs stay as given (empty), which is how a
	// datapath learns there is none.
	if len(p.proxy.ClusterCIDRs) == 0 && !p.proxy.NoLocalTrafficDetector {
		p.proxy.ClusterCIDRs = []netip.Prefix{ClusterCIDR}
		if p.v6 {
			p.proxy.ClusterCIDRs = append(p.proxy.ClusterCIDRs, ClusterCIDR6)
		}
	}
	if len(p.proxy.ServiceCIDRs) == 0 {
		p.proxy.ServiceCIDRs = []netip.Prefix{ServiceCIDR}
		if p.v6 {
			p.proxy.ServiceCIDRs = append(p.proxy.ServiceCIDRs, ServiceCIDR6)
		}
	}
	p.layoutVIPRoutes()
	p.layoutHealthChecks()
	return p, nil
}

// clusterUsesIPv6 reports whether anything in the cluster is IPv6; then
// every node and client gets an IPv6 address too.
func clusterUsesIPv6(c *model.Cluster) bool {
	for _, n := range c.Nodes {
		for _, a := range n.Addresses {
			if a.Is6() {
				return true
			}
		}
	}
	for _, s := range c.Services {
		for _, list := range [][]netip.Addr{s.ClusterIPs, s.ExternalIPs, s.LoadBalancerIPs} {
			for _, a := range list {
				if a.Is6() {
					return true
				}
			}
		}
		for _, sp := range s.Ports {
			for _, ep := range sp.Endpoints {
				if ep.IP.Is6() {
					return true
				}
			}
		}
	}
	return false
}

func (p *plan) layoutNodes(c *model.Cluster) error {
	src := c.Nodes
	if len(src) == 0 {
		src = []*model.Node{{Name: defaultNode, Implicit: true, Origin: model.Origin{Kind: "Node", Name: defaultNode}}}
	}
	eff := &model.Cluster{Services: c.Services, Warnings: c.Warnings}
	byNS := map[string]int{}
	for _, n := range src {
		byNS[nsName(p.lab, kindNode, n.Name)]++
	}
	for i, n := range src {
		cp := *n
		cp.Addresses = slices.Clone(n.Addresses)
		if !addrOf(cp.Addresses, false).IsValid() {
			if i >= maxDefaultNodes {
				return fmt.Errorf("node %s has no IPv4 address and the default plan holds only %d nodes: give the Node an address", n.Name, maxDefaultNodes)
			}
			cp.Addresses = append(cp.Addresses, addOffset(NodeSegment.Addr(), firstNodeOffset+i))
		}
		if p.v6 && !addrOf(cp.Addresses, true).IsValid() {
			cp.Addresses = append(cp.Addresses, addOffset(NodeBase6, firstNodeOffset+i))
		}
		ns := nsName(p.lab, kindNode, n.Name)
		if byNS[ns] > 1 {
			ns = nsNameHashed(p.lab, kindNode, n.Name, n.Name)
		}
		eff.Nodes = append(eff.Nodes, &cp)
		p.nodes = append(p.nodes, &nodePlan{
			hostPlan: hostPlan{name: n.Name, ns: ns, addrs: cp.Addresses},
			node:     &cp,
			index:    i,
		})
	}
	p.cluster = eff
	return nil
}

func (p *plan) layoutExternals(n int) error {
	switch {
	case n == 0:
		n = defaultExternalHost
	case n < 0:
		n = 0 // explicitly none
	case n > maxExternalClients:
		return fmt.Errorf("%d external clients asked for; the address plan holds %d", n, maxExternalClients)
	}
	for i := range n {
		addrs := []netip.Addr{addOffset(ExternalBase, i)}
		if p.v6 {
			addrs = append(addrs, addOffset(ExternalBase6, externalOffset6+i))
		}
		p.externals = append(p.externals, &hostPlan{
			name:  externalName(i),
			ns:    labPrefix(p.lab) + kindExternal + "-" + strconv.Itoa(i),
			addrs: addrs,
		})
	}
	return nil
}

func (p *plan) layoutClients(taken map[netip.Addr]string) error {
	if len(p.nodes) > maxClientPods {
		return fmt.Errorf("%d nodes: the client pod range holds %d", len(p.nodes), maxClientPods)
	}
	for _, n := range p.nodes {
		ips := []netip.Addr{addOffset(ClientPodBase, 1+n.index)}
		if p.v6 {
			ips = append(ips, addOffset(ClientPodBase6, 1+n.index))
		}
		name := clientName(n.name)
		for _, a := range ips {
			if who, dup := taken[a]; dup {
				return fmt.Errorf("client pod of node %s needs %s, which is %s", n.name, a, who)
			}
			taken[a] = "the client pod of node " + n.name
		}
		ns := nsName(p.lab, kindClient, n.name)
		if n.ns != nsName(p.lab, kindNode, n.name) { // the node name collided
			ns = nsNameHashed(p.lab, kindClient, n.name, n.name)
		}
		p.clients = append(p.clients, &podPlan{name: name, ns: ns, node: n.name, ips: ips})
	}
	return nil
}

// groupKey identifies one pod: its endpoint name and node. An endpoint with
// an IPv4 and an IPv6 address under one targetRef is one pod with two
// addresses, as in a dual-stack cluster.
type groupKey struct {
	name, node  string
	hostNetwork bool
}

func (p *plan) layoutPods(taken map[netip.Addr]string, nodeOf map[netip.Addr]string) error {
	groups := map[groupKey]*podPlan{}
	var order []groupKey
	byIP := map[netip.Addr]*podPlan{}
	type pending struct {
		g     *podPlan
		addr  netip.AddrPort
		proto model.Protocol
		name  string
	}
	var servers []pending
	ports := map[*podPlan]map[string]bool{}

	for _, s := range p.cluster.Services {
		for _, sp := range s.Ports {
			for _, ep := range sp.Endpoints {
				if !ep.IP.IsValid() || ep.Port <= 0 || ep.Port > 65535 {
					continue // the model rejects these; nothing to serve
				}
				name := ep.Name
				if name == "" {
					name = ep.IP.String()
				}
				g := byIP[ep.IP]
				if g == nil {
					var key groupKey
					if owner, ok := nodeOf[ep.IP]; ok {
						key = groupKey{name: name, node: owner, hostNetwork: true}
					} else {
						if who, dup := taken[ep.IP]; dup {
							return fmt.Errorf("%s: endpoint %s has address %s, which is %s", s.Origin, name, ep.IP, who)
						}
						host := ep.NodeName
						if host == "" || p.node(host) == nil {
							// Endpoints without a node are local to no node;
							// they still need to hang off some node.
							host = p.nodes[0].name
						}
						key = groupKey{name: name, node: host}
					}
					g = groups[key]
					if g == nil {
						g = &podPlan{name: name, node: key.node, hostNetwork: key.hostNetwork}
						groups[key] = g
						order = append(order, key)
						ports[g] = map[string]bool{}
					}
					g.ips = append(g.ips, ep.IP)
					byIP[ep.IP] = g
				}
				servers = append(servers, pending{g, netip.AddrPortFrom(ep.IP, uint16(ep.Port)), sp.Protocol, g.name})
				ports[g][strconv.Itoa(int(ep.Port))+"/"+string(sp.Protocol)] = true
			}
		}
	}

	// Namespace names: sanitized endpoint names, hashed where two collide.
	count := map[string]int{}
	for _, k := range order {
		if !k.hostNetwork {
			count[nsName(p.lab, kindPod, k.name)]++
		}
	}
	for _, k := range order {
		g := groups[k]
		switch {
		case k.hostNetwork:
			g.ns = p.node(k.node).ns
		case count[nsName(p.lab, kindPod, k.name)] > 1:
			g.ns = nsNameHashed(p.lab, kindPod, k.name, k.name+"\x00"+k.node)
		default:
			g.ns = nsName(p.lab, kindPod, k.name)
		}
		slices.SortFunc(g.ips, func(a, b netip.Addr) int {
			// IPv4 first, then by value: a stable, readable order.
			if a.Is4() != b.Is4() {
				if a.Is4() {
					return -1
				}
				return 1
			}
			return a.Compare(b)
		})
		for port := range ports[g] {
			g.ports = append(g.ports, port)
		}
		slices.Sort(g.ports)
		p.pods = append(p.pods, g)
	}
	slices.SortFunc(p.pods, func(a, b *podPlan) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
	})
	for _, s := range servers {
		k := serverKey{ns: s.g.ns, addr: s.addr, proto: s.proto}
		if _, dup := p.servers[k]; !dup {
			p.servers[k] = s.name
		}
	}
	return nil
}

// layoutVIPRoutes lists what external clients send via the ingress node:
// every Service VIP and the Service CIDRs. The harness plays the router or
// load balancer in front of the cluster.
func (p *plan) layoutVIPRoutes() {
	seen := map[netip.Prefix]bool{}
	add := func(pf netip.Prefix) {
		pf = pf.Masked()
		if pf.Addr().Is6() && !p.v6 {
			return
		}
		if !seen[pf] {
			seen[pf] = true
			p.vipRoutes = append(p.vipRoutes, pf)
		}
	}
	segment := map[netip.Addr]bool{}
	for _, n := range p.nodes {
		for _, a := range n.addrs {
			segment[a] = true
		}
	}
	for _, x := range p.externals {
		for _, a := range x.addrs {
			segment[a] = true
		}
	}
	for _, pf := range p.proxy.ServiceCIDRs {
		add(pf)
	}
	for _, s := range p.cluster.Services {
		if !s.IsProxied() {
			continue
		}
		for _, list := range [][]netip.Addr{s.ClusterIPs, s.ExternalIPs, s.LoadBalancerIPs} {
			for _, a := range list {
				if !segment[a] { // a host route to it exists already
					add(hostPrefix(a))
				}
			}
		}
	}
	slices.SortFunc(p.vipRoutes, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
}

// layoutHealthChecks computes, per datapath node, the health-check servers
// kube-proxy would run: one per Service with eTP=Local and a
// healthCheckNodePort, reporting the number of distinct ready endpoint IPs
// on that node (pkg/proxy/endpointschangetracker LocalReadyEndpoints: one
// pod serving two ports counts once).
func (p *plan) layoutHealthChecks() {
	for _, n := range p.nodes {
		if !n.datapath {
			continue
		}
		ports := map[int32]hcPlan{}
		for _, s := range p.cluster.Services {
			if !s.IsProxied() || !s.ExternalPolicyLocal() || s.HealthCheckNodePort == 0 {
				continue
			}
			if _, dup := ports[s.HealthCheckNodePort]; dup {
				continue // the model forbids this; first one wins
			}
			ips := map[netip.Addr]bool{}
			for _, sp := range s.Ports {
				for _, ep := range sp.Endpoints {
					if ep.Ready && ep.NodeName == n.name {
						ips[ep.IP] = true
					}
				}
			}
			ports[s.HealthCheckNodePort] = hcPlan{svc: s.Name, count: len(ips)}
		}
		p.hc[n.name] = ports
	}
}

// sameNodes reports why a new plan cannot be applied to a lab built from
// old: nodes and their addresses are wired at Build time.
func sameNodes(old, new *plan) error {
	if len(old.nodes) != len(new.nodes) {
		return fmt.Errorf("the cluster has %d nodes, the lab %d: nodes cannot change in a running lab; rebuild it", len(new.nodes), len(old.nodes))
	}
	for i, n := range new.nodes {
		o := old.nodes[i]
		if o.name != n.name {
			return fmt.Errorf("node %s is not in the lab (it has %s): nodes cannot change in a running lab; rebuild it", n.name, o.name)
		}
		if !slices.Equal(o.addrs, n.addrs) {
			return fmt.Errorf("node %s: addresses %v differ from the lab's %v: node addresses cannot change in a running lab; rebuild it", n.name, n.addrs, o.addrs)
		}
	}
	if new.v6 && !old.v6 {
		return errors.New("the cluster now uses IPv6 but the lab was built IPv4-only; rebuild it")
	}
	return nil
}
