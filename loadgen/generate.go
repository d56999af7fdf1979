// Package loadgen drives datapaths at the scales real clusters reach and
// measures what each costs: it generates synthetic clusters and streams of
// changes, sends traffic from client namespaces, and turns what it observes
// into the metrics of DESIGN.md §6 (sync_full, sync_incremental,
// programming_latency, first_packet_rtt, rr_latency, throughput,
// cpu_per_packet) with the context that gives each figure its meaning.
//
// The package never prints and never exits: a Runner reports progress
// through a callback and returns Results, which the CLI writes out.
package loadgen

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"

	"proxyrig/model"
	"proxyrig/topologies"
)

// Address plan of generated clusters. Everything sits inside the RFC 2544
// benchmarking range 198.18.0.0/15, which the lab keeps inside its
// namespaces:
//
//	198.18.0.(11+i)        node i (the lab's default node address)
//	198.18.64.0/18         pods: the local-traffic detector's range; node i
//	                       owns the /24s 198.18.(64+i*k) … (64+(i+1)*k-1),
//	                       k = 63/Nodes, hosts .1–.254 of each
//	198.18.127.(1+i)       client pod of node i (the lab's plan)
//	198.18.128.0/17        LoadBalancer ingress IPs, outside the Service
//	                       CIDR (nftables drops unallocated Service CIDR
//	                       addresses, and real LB IPs never live there)
//	198.19.0.0/17          ClusterIPs (198.19.0.0/16 is the Service CIDR)
//
// A /18 holds 16k addresses, too few for 30k Services × 5 endpoints. Rather
// than widen the pod range past what the lab's detector covers, endpoints
// share addresses: endpoint addresses are handed out one per IP first, and
// only when a node's IPs are all taken does a second "port slot" start on
// them. Each (IP, port) pair belongs to one endpoint of one Service, so up
// to a few thousand endpoints per node every endpoint has an IP of its own,
// and at 150k they share an IP with distinct target ports, as if each pod
// served several Services. The datapath's per-endpoint state (one DNAT
// target per IP:port) is the same either way.
var (
	// PodRange is the pod CIDR generated endpoints live in; pass it as the
	// lab's ClusterCIDR so the local-traffic detector covers every endpoint.
	PodRange = topologies.ClusterCIDR
	// ClusterIPRange holds generated ClusterIPs (inside ServiceCIDR).
	ClusterIPRange = netip.MustParsePrefix("198.19.0.0/17")
	// LoadBalancerRange holds generated LoadBalancer ingress IPs.
	LoadBalancerRange = netip.MustParsePrefix("198.18.128.0/17")
)

const (
	// podBlocks is the number of /24s of PodRange that endpoints use: 64 …
	// 126. The last /24 (198.18.127.0) holds the lab's client pods.
	podBlocks     = 63
	firstPodBlock = 64
	hostsPerBlock = 254 // .1 … .254: no network or broadcast-looking address
	// MaxNodes is the most nodes a generated cluster may have: each node
	// needs at least one /24 of its own.
	MaxNodes = 32
	// TargetPortBase is the first endpoint (target) port; slot s of service
	// port k listens on TargetPortBase + s*PortsPerService + k.
	TargetPortBase = 8000
	// MaxPortSlots bounds how many endpoints may share one IP.
	MaxPortSlots = 64
	// NodePortFirst/Last is Kubernetes' default NodePort range.
	NodePortFirst = 30000
	NodePortLast  = 32767
	// MaxServices is how many ClusterIPs ClusterIPRange holds, minus its
	// first and last address.
	MaxServices = 32766
	// Namespace of every generated Service.
	Namespace = "bench"
)

// Mix is the fraction of Services of each type. The fractions are
// normalised, so {1, 1, 0} means half ClusterIP and half NodePort.
type Mix struct {
	ClusterIP    float64 `json:"clusterIP"`
	NodePort     float64 `json:"nodePort"`
	LoadBalancer float64 `json:"loadBalancer"`
}

// Spec describes a synthetic cluster. The zero value of every field but
// Services means "the default" (see Defaults).
type Spec struct {
	// Services is the number of Services (N).
	Services int `json:"services"`
	// EndpointsPerService is E: ready endpoints per Service (default 5).
	EndpointsPerService int `json:"endpointsPerService"`
	// Seed makes generation deterministic: the same Spec and Seed give the
	// same cluster, byte for byte.
	Seed uint64 `json:"seed"`
	// Mix of Service types (default 80% ClusterIP, 10% NodePort, 10%
	// LoadBalancer). NodePort Services are capped at
	// (NodePortLast-NodePortFirst+1)/PortsPerService; the excess becomes
	// ClusterIP and a warning says so. LoadBalancer Services take node
	// ports while any are left, then none (allocateLoadBalancerNodePorts:
	// false).
	Mix Mix `json:"mix"`
	// AffinityFraction of Services get sessionAffinity: ClientIP (default
	// 0.05; negative means none).
	AffinityFraction float64 `json:"affinityFraction"`
	// ETPLocalFraction of the externally accessible Services get
	// externalTrafficPolicy: Local (default 0.2; negative means none).
	ETPLocalFraction float64 `json:"etpLocalFraction"`
	// ITPLocalFraction of all Services get internalTrafficPolicy: Local
	// (default none).
	ITPLocalFraction float64 `json:"itpLocalFraction"`
	// UDPFraction of Services have UDP ports instead of TCP (default 0.1,
	// at least one UDP Service when positive; negative means none). UDP
	// Services carry the rr_latency and UDP throughput measurements.
	UDPFraction float64 `json:"udpFraction"`
	// PortsPerService (default 1). Port k is 80+k (TCP) or 53+k (UDP).
	PortsPerService int `json:"portsPerService"`
	// Nodes (default 2, at most MaxNodes). Node i is "node-%02d" with
	// address 198.18.0.(11+i); endpoint j of Service i is on node
	// (i+j) mod Nodes.
	Nodes int `json:"nodes"`
}

// Defaults returns s with every unset field given its default.
func (s Spec) Defaults() Spec {
	if s.EndpointsPerService == 0 {
		s.EndpointsPerService = 5
	}
	if s.Mix == (Mix{}) {
		s.Mix = Mix{ClusterIP: 0.8, NodePort: 0.1, LoadBalancer: 0.1}
	}
	if s.AffinityFraction == 0 {
		s.AffinityFraction = 0.05
	}
	if s.ETPLocalFraction == 0 {
		s.ETPLocalFraction = 0.2
	}
	if s.UDPFraction == 0 {
		s.UDPFraction = 0.1
	}
	if s.PortsPerService == 0 {
		s.PortsPerService = 1
	}
	if s.Nodes == 0 {
		s.Nodes = 2
	}
	for _, f := range []*float64{&s.AffinityFraction, &s.ETPLocalFraction, &s.ITPLocalFraction, &s.UDPFraction} {
		if *f < 0 {
			*f = 0
		}
	}
	return s
}

// Check reports what is wrong with a (defaulted) spec.
func (s Spec) Check() error {
	var errs []error
	if s.Services < 0 || s.Services > MaxServices {
		errs = append(errs, fmt.Errorf("services: %d is out of range 0-%d (the ClusterIP range %s)", s.Services, MaxServices, ClusterIPRange))
	}
	if s.EndpointsPerService < 0 {
		errs = append(errs, fmt.Errorf("endpointsPerService: %d is negative", s.EndpointsPerService))
	}
	if s.Nodes < 1 || s.Nodes > MaxNodes {
		errs = append(errs, fmt.Errorf("nodes: %d is out of range 1-%d", s.Nodes, MaxNodes))
	}
	if s.PortsPerService < 1 || s.PortsPerService > 16 {
		errs = append(errs, fmt.Errorf("portsPerService: %d is out of range 1-16", s.PortsPerService))
	}
	m := s.Mix
	if m.ClusterIP < 0 || m.NodePort < 0 || m.LoadBalancer < 0 || m.ClusterIP+m.NodePort+m.LoadBalancer <= 0 {
		errs = append(errs, fmt.Errorf("mix %+v: fractions must be non-negative and not all zero", m))
	}
	for name, f := range map[string]float64{"affinityFraction": s.AffinityFraction, "etpLocalFraction": s.ETPLocalFraction,
		"itpLocalFraction": s.ITPLocalFraction, "udpFraction": s.UDPFraction} {
		if f > 1 {
			errs = append(errs, fmt.Errorf("%s: %g is above 1", name, f))
		}
	}
	if s.Nodes >= 1 && s.Nodes <= MaxNodes && s.PortsPerService >= 1 {
		if capacity := s.Nodes * endpointCapacityPerNode(s.Nodes, s.PortsPerService); s.Services*s.EndpointsPerService > capacity {
			errs = append(errs, fmt.Errorf("%d Services × %d endpoints exceed the %d endpoint addresses (IP:port) of the address plan", s.Services, s.EndpointsPerService, capacity))
		}
	}
	return errors.Join(errs...)
}

// blocksPerNode is k, the number of /24s each node owns.
func blocksPerNode(nodes int) int { return podBlocks / nodes }

// portSlots is how many endpoints may share one IP: bounded by MaxPortSlots
// and by the 16-bit port space above TargetPortBase.
func portSlots(portsPerService int) int {
	return min(MaxPortSlots, (65535-TargetPortBase)/portsPerService)
}

func endpointCapacityPerNode(nodes, portsPerService int) int {
	return blocksPerNode(nodes) * hostsPerBlock * portSlots(portsPerService)
}

// NodeName is the name of generated node i.
func NodeName(i int) string { return fmt.Sprintf("node-%02d", i) }

// NodeAddress is the address of generated node i (the lab's default).
func NodeAddress(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)})
}

// NodePrefixes are the /24s whose addresses node i's endpoints use, out of
// a cluster of the given number of nodes. A scale lab makes exactly these
// local in the node's backend namespace.
func NodePrefixes(i, nodes int) []netip.Prefix {
	k := blocksPerNode(nodes)
	out := make([]netip.Prefix, 0, k)
	for b := firstPodBlock + i*k; b < firstPodBlock+(i+1)*k; b++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(b), 0}), 24))
	}
	return out
}

// EndpointName is what a generated endpoint is called, and what the scale
// lab's echo servers answer with (topologies.ScaleEndpointName).
func EndpointName(ap netip.AddrPort) string { return topologies.ScaleEndpointName(ap) }

// allocator hands out endpoint addresses (IP, port slot) per node, IPs
// first, and VIPs, node ports and Service names, deterministically.
type allocator struct {
	nodes, ports int
	perNode      [][]bool // per node: used[slot*ips + ipIndex]
	cursor       []int
	ips          int // addresses per node
	slots        int

	vipCursor, lbCursor, nextSvc int
	usedVIPs, usedLBs            map[netip.Addr]bool
	nodePorts                    map[int32]bool
	nextNodePort                 int32
}

func newAllocator(nodes, portsPerService int) *allocator {
	a := &allocator{
		nodes:     nodes,
		ports:     portsPerService,
		ips:       blocksPerNode(nodes) * hostsPerBlock,
		slots:     portSlots(portsPerService),
		cursor:    make([]int, nodes),
		nodePorts: map[int32]bool{},
		usedVIPs:  map[netip.Addr]bool{},
		usedLBs:   map[netip.Addr]bool{},
	}
	a.nextNodePort = NodePortFirst
	for range nodes {
		a.perNode = append(a.perNode, make([]bool, a.ips*a.slots))
	}
	return a
}

// endpoint is one allocated endpoint address: its IP and port slot.
type endpointAddr struct {
	node int
	ip   netip.Addr
	slot int
}

func (a *allocator) ipAt(node, idx int) netip.Addr {
	k := blocksPerNode(a.nodes)
	block := firstPodBlock + node*k + idx/hostsPerBlock
	return netip.AddrFrom4([4]byte{198, 18, byte(block), byte(1 + idx%hostsPerBlock)})
}

func (a *allocator) indexOf(node int, ip netip.Addr, slot int) int {
	b := ip.As4()
	k := blocksPerNode(a.nodes)
	idx := (int(b[2])-firstPodBlock-node*k)*hostsPerBlock + int(b[3]) - 1
	return slot*a.ips + idx
}

// allocEndpoint takes the next free (IP, slot) of a node, IPs first.
func (a *allocator) allocEndpoint(node int) (endpointAddr, error) {
	used := a.perNode[node]
	n := len(used)
	for i := 0; i < n; i++ {
		j := (a.cursor[node] + i) % n
		if !used[j] {
			used[j] = true
			a.cursor[node] = j + 1
			return endpointAddr{node: node, ip: a.ipAt(node, j%a.ips), slot: j / a.ips}, nil
		}
	}
	return endpointAddr{}, fmt.Errorf("node %s has no free endpoint address left (%d in use)", NodeName(node), n)
}

func (a *allocator) freeEndpoint(e endpointAddr) {
	a.perNode[e.node][a.indexOf(e.node, e.ip, e.slot)] = false
}

func (a *allocator) targetPort(slot, k int) int32 {
	return int32(TargetPortBase + slot*a.ports + k)
}

// slotOf recovers the port slot from a target port of service port k.
func (a *allocator) slotOf(port int32, k int) int {
	return (int(port) - TargetPortBase - k) / a.ports
}

func (a *allocator) allocVIP() (netip.Addr, error) {
	return a.allocFrom(a.usedVIPs, &a.vipCursor, ClusterIPRange)
}

func (a *allocator) allocLB() (netip.Addr, error) {
	return a.allocFrom(a.usedLBs, &a.lbCursor, LoadBalancerRange)
}

// allocFrom takes the next unused address of r after its first one,
// starting at *cursor and wrapping, so freed addresses are reused only once
// the range has gone round: a removed Service's VIP is not handed out again
// at once, as a real allocator would also avoid.
func (a *allocator) allocFrom(used map[netip.Addr]bool, cursor *int, r netip.Prefix) (netip.Addr, error) {
	for i := 0; i < MaxServices; i++ {
		off := 1 + (*cursor+i)%MaxServices
		ip := addOffset(r.Addr(), off)
		if !used[ip] {
			used[ip] = true
			*cursor = off
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("the range %s is full", r)
}

// allocNodePort returns 0 when the range is exhausted.
func (a *allocator) allocNodePort() int32 {
	for p := a.nextNodePort; p <= NodePortLast; p++ {
		if !a.nodePorts[p] {
			a.nodePorts[p] = true
			a.nextNodePort = p + 1
			return p
		}
	}
	for p := int32(NodePortFirst); p < a.nextNodePort; p++ {
		if !a.nodePorts[p] {
			a.nodePorts[p] = true
			a.nextNodePort = p + 1
			return p
		}
	}
	return 0
}

func (a *allocator) nodePortsFree() int {
	return NodePortLast - NodePortFirst + 1 - len(a.nodePorts)
}

func (a *allocator) serviceName() model.ServiceName {
	a.nextSvc++
	return model.ServiceName{Namespace: Namespace, Name: fmt.Sprintf("svc-%05d", a.nextSvc-1)}
}

func addOffset(base netip.Addr, n int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// serviceShape is what a new Service looks like, decided before it is
// built.
type serviceShape struct {
	typ         model.ServiceType
	udp         bool
	affinity    bool
	etpLocal    bool
	itpLocal    bool
	endpoints   int
	firstNode   int
	onlyOnNodes []int // if set, endpoints go round-robin over these nodes
}

func (a *allocator) newService(sh serviceShape) (*model.Service, error) {
	name := a.serviceName()
	vip, err := a.allocVIP()
	if err != nil {
		return nil, err
	}
	s := &model.Service{
		Name:                  name,
		Type:                  sh.typ,
		Origin:                model.Origin{File: model.GeneratedOrigin, Kind: "Service", Name: name.String()},
		ClusterIPs:            []netip.Addr{vip},
		ExternalTrafficPolicy: model.PolicyCluster,
		InternalTrafficPolicy: model.PolicyCluster,
	}
	if sh.affinity {
		s.SessionAffinity = true
		s.AffinityTimeout = model.DefaultAffinityTimeout
	}
	if sh.itpLocal {
		s.InternalTrafficPolicy = model.PolicyLocal
	}
	if sh.typ == model.LoadBalancer {
		lb, err := a.allocLB()
		if err != nil {
			return nil, err
		}
		s.LoadBalancerIPs = []netip.Addr{lb}
	}
	proto, base := model.TCP, int32(80)
	if sh.udp {
		proto, base = model.UDP, 53
	}
	for k := range a.ports {
		sp := &model.ServicePort{Protocol: proto, Port: base + int32(k), TargetPort: "http"}
		if a.ports > 1 {
			sp.Name = "p" + strconv.Itoa(k)
		}
		if sh.typ == model.NodePort || sh.typ == model.LoadBalancer {
			sp.NodePort = a.allocNodePort()
			if sp.NodePort == 0 && sh.typ == model.NodePort {
				return nil, errors.New("the NodePort range is full")
			}
		}
		s.Ports = append(s.Ports, sp)
	}
	// The target port is per endpoint (its slot), so spec.targetPort is a
	// port name, as with a Deployment whose pods name their port.
	for j := range sh.endpoints {
		node := (sh.firstNode + j) % a.nodes
		if len(sh.onlyOnNodes) > 0 {
			node = sh.onlyOnNodes[j%len(sh.onlyOnNodes)]
		}
		if err := a.addEndpoint(s, node); err != nil {
			return nil, err
		}
	}
	if sh.etpLocal && s.ExternallyAccessible() {
		s.ExternalTrafficPolicy = model.PolicyLocal
	}
	return s, nil
}

// addEndpoint gives every port of s one more endpoint on node.
func (a *allocator) addEndpoint(s *model.Service, node int) error {
	e, err := a.allocEndpoint(node)
	if err != nil {
		return err
	}
	for k, sp := range s.Ports {
		ap := netip.AddrPortFrom(e.ip, uint16(a.targetPort(e.slot, k)))
		sp.Endpoints = append(sp.Endpoints, &model.Endpoint{
			IP: e.ip, Port: int32(ap.Port()), Name: EndpointName(ap), NodeName: NodeName(node),
			Ready: true, Serving: true,
		})
		sortEndpoints(sp.Endpoints)
	}
	return nil
}

// releaseService frees everything a Service held.
func (a *allocator) releaseService(s *model.Service) {
	for _, ip := range s.ClusterIPs {
		delete(a.usedVIPs, ip)
	}
	for _, ip := range s.LoadBalancerIPs {
		delete(a.usedLBs, ip)
	}
	for _, sp := range s.Ports {
		if sp.NodePort != 0 {
			delete(a.nodePorts, sp.NodePort)
		}
	}
	if len(s.Ports) > 0 {
		for _, ep := range s.Ports[0].Endpoints {
			a.releaseEndpoint(ep)
		}
	}
}

func (a *allocator) releaseEndpoint(ep *model.Endpoint) {
	node := nodeIndex(ep.NodeName)
	if node < 0 || node >= a.nodes || ep.Port < TargetPortBase {
		return // not from this allocator
	}
	a.freeEndpoint(endpointAddr{node: node, ip: ep.IP, slot: a.slotOf(ep.Port, 0)})
}

func nodeIndex(name string) int {
	var i int
	if _, err := fmt.Sscanf(name, "node-%d", &i); err != nil {
		return -1
	}
	return i
}

func sortEndpoints(eps []*model.Endpoint) {
	slices.SortFunc(eps, func(x, y *model.Endpoint) int {
		if c := x.IP.Compare(y.IP); c != 0 {
			return c
		}
		return int(x.Port) - int(y.Port)
	})
}

func sortServices(svcs []*model.Service) {
	slices.SortFunc(svcs, func(x, y *model.Service) int {
		if x.Name.Namespace != y.Name.Namespace {
			if x.Name.Namespace < y.Name.Namespace {
				return -1
			}
			return 1
		}
		switch {
		case x.Name.Name < y.Name.Name:
			return -1
		case x.Name.Name > y.Name.Name:
			return 1
		}
		return 0
	})
}

// pickExact returns a set of exactly round(frac*n) distinct indices out of
// n, chosen by rng: exact counts make a spec's fractions hold at every
// scale, and the permutation keeps them spread rather than clustered.
func pickExact(rng *rand.Rand, n int, frac float64) map[int]bool {
	k := int(math.Round(frac * float64(n)))
	k = max(0, min(k, n))
	out := make(map[int]bool, k)
	for _, i := range rng.Perm(n)[:k] {
		out[i] = true
	}
	return out
}

// Generate builds a synthetic cluster from spec: deterministic for a seed,
// valid by (*model.Cluster).Validate, with the address plan above. Notes
// about caps applied (NodePort Services turned ClusterIP) go to
// Cluster.Warnings.
func Generate(spec Spec) (*model.Cluster, error) {
	c, _, err := generate(spec)
	return c, err
}

func generate(spec Spec) (*model.Cluster, *allocator, error) {
	spec = spec.Defaults()
	if err := spec.Check(); err != nil {
		return nil, nil, fmt.Errorf("generate: %w", err)
	}
	rng := rand.New(rand.NewPCG(spec.Seed, 0x70727879726967)) // "prxyrig"
	a := newAllocator(spec.Nodes, spec.PortsPerService)
	c := &model.Cluster{}
	for i := range spec.Nodes {
		c.Nodes = append(c.Nodes, &model.Node{
			Name:      NodeName(i),
			Addresses: []netip.Addr{NodeAddress(i)},
			Labels:    map[string]string{"kubernetes.io/hostname": NodeName(i)},
			Origin:    model.Origin{File: model.GeneratedOrigin, Kind: "Node", Name: NodeName(i)},
		})
	}

	n := spec.Services
	m := spec.Mix
	total := m.ClusterIP + m.NodePort + m.LoadBalancer
	nNP := int(math.Round(m.NodePort / total * float64(n)))
	nLB := int(math.Round(m.LoadBalancer / total * float64(n)))
	if nNP+nLB > n {
		nLB = n - nNP
	}
	maxNP := (NodePortLast - NodePortFirst + 1) / spec.PortsPerService
	if nNP > maxNP {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%d NodePort Services asked for, but the node port range %d-%d holds %d with %d port(s) each: the other %d are ClusterIP",
			nNP, NodePortFirst, NodePortLast, maxNP, spec.PortsPerService, nNP-maxNP))
		nNP = maxNP
	}
	types := make([]model.ServiceType, n)
	perm := rng.Perm(n)
	for rank, i := range perm {
		switch {
		case rank < nNP:
			types[i] = model.NodePort
		case rank < nNP+nLB:
			types[i] = model.LoadBalancer
		default:
			types[i] = model.ClusterIP
		}
	}
	// NodePort Services take their node ports first, so LoadBalancers only
	// get what is left.
	order := make([]int, 0, n)
	for i := range n {
		if types[i] == model.NodePort {
			order = append(order, i)
		}
	}
	for i := range n {
		if types[i] != model.NodePort {
			order = append(order, i)
		}
	}
	affinity := pickExact(rng, n, spec.AffinityFraction)
	etp := pickExact(rng, n, spec.ETPLocalFraction) // applied only where it has effect
	itp := pickExact(rng, n, spec.ITPLocalFraction)
	udp := pickExact(rng, n, spec.UDPFraction)
	if spec.UDPFraction > 0 && len(udp) == 0 && n > 0 {
		udp[rng.IntN(n)] = true
	}
	lbWithoutNodePorts := 0
	svcs := make([]*model.Service, n)
	// Names follow the Service index, not the allocation order.
	for _, i := range order {
		a.nextSvc = i
		if types[i] == model.LoadBalancer && a.nodePortsFree() < spec.PortsPerService {
			lbWithoutNodePorts++
		}
		s, err := a.newService(serviceShape{
			typ: types[i], udp: udp[i], affinity: affinity[i], etpLocal: etp[i], itpLocal: itp[i],
			endpoints: spec.EndpointsPerService, firstNode: i % spec.Nodes,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("generate service %d: %w", i, err)
		}
		svcs[i] = s
	}
	a.nextSvc = n
	if lbWithoutNodePorts > 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%d LoadBalancer Services have no node ports (allocateLoadBalancerNodePorts: false): the node port range is used up", lbWithoutNodePorts))
	}
	sortServices(svcs)
	c.Services = svcs
	return c, a, nil
}
