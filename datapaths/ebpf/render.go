package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// This file renders the desired contents of the BPF maps from a node's
// view. It is a pure function of (view, previous ID table): no kernel, no
// root, deterministic. maps.go applies what it renders.

// Flag values; they mirror the #defines in bpf/lb.h.
const (
	svcExternal  = 1 << 0
	svcTwoScopes = 1 << 1
	svcLocal     = 1 << 2
	svcAffinity  = 1 << 3
	svcSrcRange  = 1 << 4
	svcReject    = 1 << 5
	svcDrop      = 1 << 6
	svcNodePort  = 1 << 7

	beLocal     = 1 << 0
	beHostLocal = 1 << 1

	cfgDetector  = 1 << 0
	cfgMasqAll   = 1 << 1
	cfgDetector6 = 1 << 2

	scopePrimary  = 0
	scopeInternal = 1

	protoTCP = 6
	protoUDP = 17

	netnsKindNode = 1
	netnsKindPod  = 2
)

// defaultAffinitySeconds is used when a ClientIP Service carries no timeout.
const defaultAffinitySeconds = uint32(model.DefaultAffinityTimeout / time.Second)

// desired is the whole desired content of the configuration maps of one
// node. The LRU maps (ct, affinity, sock_revnat, sock_flows) are the programs' own
// state and are never rendered.
type desired struct {
	Config    lbLbConfig
	Services  map[lbSvcKey]lbSvcValue
	Slots     map[lbSlotKey]uint32
	Backends  map[uint32]lbBackend
	Members   map[lbMemberKey]uint32
	SrcRanges map[lbSrcRangeKey]uint8
	// The IPv6 maps; slots and members are shared by both families.
	Services6  map[lbSvc6Key]lbSvcValue
	Backends6  map[uint32]lbBackend6
	SrcRanges6 map[lbSrcRange6Key]uint8

	// owner maps each group id to the Service ("ns/name") that owns it,
	// and frontends to their Service, for SyncStats.ChangedServices.
	groupOwner map[uint32]string
	svcOwner   map[lbSvcKey]string
	svcOwner6  map[lbSvc6Key]string
	// groupName is the readable name of each group id, for dumps.
	groupName map[uint32]string
	// localhostNodePorts: NodePorts are served on 127.0.0.1, which needs
	// route_localnet on lo.
	localhostNodePorts bool
	// Warnings are things the datapath cannot express (SCTP, a frontend
	// two Services claim); they do not fail the sync.
	Warnings []string

	// gen numbers the renders of one cache; touched, when not nil, holds
	// every key that may differ from render gen touched.base, so a sync
	// whose maps hold that render diffs only these keys.
	gen     uint64
	touched *touchedKeys
}

// objects counts the entries of the rendered maps.
func (d *desired) objects() int {
	return 1 + len(d.Services) + len(d.Slots) + len(d.Backends) + len(d.Members) + len(d.SrcRanges) +
		len(d.Services6) + len(d.Backends6) + len(d.SrcRanges6)
}

// idTable keeps group and backend ids stable from one render to the next,
// so an unchanged Service renders to byte-identical map entries and an
// incremental sync writes nothing for it. Ids are never reused within one
// datapath instance: a UDP flow or an affinity entry that still names a
// freed id can then never land on an unrelated backend.
type idTable struct {
	Groups      map[string]uint32
	Backends    map[string]uint32
	NextGroup   uint32
	NextBackend uint32
}

func newIDTable() *idTable {
	return &idTable{Groups: map[string]uint32{}, Backends: map[string]uint32{}, NextGroup: 1, NextBackend: 1}
}

// idAllocator hands out ids for one render: existing names keep theirs.
type idAllocator struct {
	prev, next *idTable
}

func (a *idAllocator) group(name string) uint32 {
	if id, ok := a.next.Groups[name]; ok {
		return id
	}
	id, ok := a.prev.Groups[name]
	if !ok {
		id = a.next.NextGroup
		a.next.NextGroup++
	}
	a.next.Groups[name] = id
	return id
}

func (a *idAllocator) backend(name string) uint32 {
	if id, ok := a.next.Backends[name]; ok {
		return id
	}
	id, ok := a.prev.Backends[name]
	if !ok {
		id = a.next.NextBackend
		a.next.NextBackend++
	}
	a.next.Backends[name] = id
	return id
}

// be32 is an IPv4 address as the programs see it: the four bytes of the
// header read as a host-order integer.
func be32(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.NativeEndian.Uint32(b[:])
}

// be16 is a port in network byte order, read as a host-order integer.
func be16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// be128 is an IPv6 address as the programs see it: four host-order
// integers read from the 16 bytes in network order.
func be128(a netip.Addr) [4]uint32 {
	b := a.As16()
	var out [4]uint32
	for i := range out {
		out[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return out
}

func addrFromBE128(v [4]uint32) netip.Addr {
	var b [16]byte
	for i, w := range v {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return netip.AddrFrom16(b)
}

func addrFromBE32(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func portFromBE16(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func is4(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is4() }

// family is 4 or 6.
type family int

func (f family) has(a netip.Addr) bool { return a.IsValid() && is4(a) == (f == 4) }

// renderCtx holds what every Service of one render needs.
type renderCtx struct {
	view   *datapaths.NodeView
	node   *model.Node
	ids    *idAllocator
	out    *desired
	nodeIP netip.Addr
	// nodePortIPs are the local addresses that accept NodePorts, both
	// families.
	nodePortIPs []netip.Addr
	// hostIPs are the node's own addresses: an endpoint there is
	// host-network and delivered locally.
	hostIPs map[netip.Addr]bool
	// frag receives what the Service being rendered contributes.
	frag *svcFrag
	// refs counts the fragments that use each backend id.
	refs map[uint32]int
	// touched collects the keys an incremental render changed; nil on a
	// whole render.
	touched *touchedKeys
	// dupWarned: two Services claimed one frontend.
	dupWarned bool
}

// render computes the desired map contents for one node. prev may be nil.
// It returns the new id table, to pass to the next render.
func render(view *datapaths.NodeView, prev *idTable) (*desired, *idTable, error) {
	return renderCached(view, prev, nil)
}

// renderCached is render with a cache of each Service's rendering: a
// Service equal to the one cache saw last time, in the same node context
// and with the id table that render returned, reuses its entries. cache
// (may be nil) is updated to this render.
func renderCached(view *datapaths.NodeView, prev *idTable, cache *renderCache) (*desired, *idTable, error) {
	if view == nil || view.Cluster == nil {
		return nil, nil, errors.New("render eBPF maps: no cluster in the node view")
	}
	if prev == nil {
		prev = newIDTable()
	}
	rc := &renderCtx{view: view, node: view.Node, out: &desired{}, hostIPs: map[netip.Addr]bool{}}
	rc.renderConfig()
	usable := cache.usable(prev, view)
	if usable && cache.last != nil && cache.clean {
		if out, ok := rc.renderIncremental(cache, prev); ok {
			return out, prev, nil
		}
	}

	// Maps are sized like the last render's, so a sync of an unchanged
	// cluster does not spend its time growing them.
	var hint desired
	if cache != nil && cache.last != nil {
		hint = *cache.last
	}
	// With no earlier render (a first, full sync) the view gives a lower
	// bound: a frontend per port, a slot, member and backend per
	// endpoint. Growing maps of 50k entries step by step was a large part
	// of a full sync's render.
	var nPorts, nEPs int
	if hint.Services == nil {
		for _, svc := range view.Cluster.Services {
			nPorts += len(svc.Ports)
			for _, p := range svc.Ports {
				if p != nil {
					nEPs += len(p.Endpoints)
				}
			}
		}
	}
	atLeast := func(n, min int) int { return max(n, min) }
	next := &idTable{Groups: make(map[string]uint32, atLeast(len(prev.Groups), nPorts)), Backends: make(map[string]uint32, atLeast(len(prev.Backends), nEPs)),
		NextGroup: prev.NextGroup, NextBackend: prev.NextBackend}
	rc.ids = &idAllocator{prev: prev, next: next}
	rc.out = &desired{
		Config:             rc.out.Config,
		localhostNodePorts: rc.out.localhostNodePorts,
		Services:           make(map[lbSvcKey]lbSvcValue, atLeast(len(hint.Services), nPorts)),
		Slots:              make(map[lbSlotKey]uint32, atLeast(len(hint.Slots), nEPs)),
		Backends:           make(map[uint32]lbBackend, atLeast(len(hint.Backends), nEPs)),
		Members:            make(map[lbMemberKey]uint32, atLeast(len(hint.Members), nEPs)),
		SrcRanges:          make(map[lbSrcRangeKey]uint8, len(hint.SrcRanges)),
		Services6:          make(map[lbSvc6Key]lbSvcValue, len(hint.Services6)),
		Backends6:          make(map[uint32]lbBackend6, len(hint.Backends6)),
		SrcRanges6:         make(map[lbSrcRange6Key]uint8, len(hint.SrcRanges6)),
		groupOwner:         make(map[uint32]string, atLeast(len(hint.groupOwner), nPorts)),
		svcOwner:           make(map[lbSvcKey]string, atLeast(len(hint.svcOwner), nPorts)),
		svcOwner6:          make(map[lbSvc6Key]string, len(hint.svcOwner6)),
		groupName:          make(map[uint32]string, atLeast(len(hint.groupName), nPorts)),
	}

	var old map[model.ServiceName]*svcFrag
	if usable {
		old = cache.frags
	}
	rc.refs = make(map[uint32]int, atLeast(len(hint.Backends)+len(hint.Backends6), nEPs))
	warnFrags := map[string]*svcFrag{}
	frags := make(map[model.ServiceName]*svcFrag, len(view.Cluster.Services))
	// Names are built once, not in every comparison of the sort.
	type named struct {
		name string
		svc  *model.Service
	}
	services := make([]named, len(view.Cluster.Services))
	for i, svc := range view.Cluster.Services {
		services[i] = named{svc.Name.String(), svc}
	}
	slices.SortStableFunc(services, func(a, b named) int { return strings.Compare(a.name, b.name) })
	for _, sn := range services {
		name, svc := sn.name, sn.svc
		f, ok := old[svc.Name]
		fresh := !ok || (f.in != svc && !equalService(f.in, svc))
		if fresh {
			f = &svcFrag{in: svc}
			rc.frag = f
			rc.renderService(svc)
			rc.frag = nil
		}
		rc.merge(name, f, fresh)
		if _, dup := frags[svc.Name]; !dup {
			f.in = svc
			frags[svc.Name] = f
			if f.hasWarnings() {
				warnFrags[name] = f
			}
		}
	}
	if cache != nil {
		gen := cache.gen + 1
		rc.out.gen = gen
		order := make([]*svcFrag, len(view.Cluster.Services))
		for i, svc := range view.Cluster.Services {
			order[i] = frags[svc.Name]
		}
		*cache = renderCache{ids: next, node: cloneNode(view.Node), proxy: cloneProxy(view.Proxy), frags: frags,
			order: slices.Clone(view.Cluster.Services), orderFrags: order, last: rc.out,
			refs: rc.refs, warnFrags: warnFrags, clean: !rc.dupWarned && len(frags) == len(services), gen: gen}
	}
	return rc.out, next, nil
}

func (rc *renderCtx) warnf(format string, args ...any) {
	rc.frag.ops = append(rc.frag.ops, fragOp{warning: fmt.Sprintf(format, args...)})
}

func (rc *renderCtx) renderConfig() {
	cfg := &rc.out.Config
	if rc.node != nil {
		for _, a := range rc.node.Addresses {
			rc.hostIPs[a.Unmap()] = true
			if is4(a) && !rc.nodeIP.IsValid() {
				rc.nodeIP = a.Unmap()
			}
		}
	}
	if rc.nodeIP.IsValid() {
		cfg.NodeIp4 = be32(rc.nodeIP)
	}
	if rc.node != nil {
		for _, a := range rc.node.Addresses {
			if a.IsValid() && !is4(a) {
				cfg.NodeIp6 = be128(a)
				break
			}
		}
	}
	var have4, have6 bool
	cidrs := rc.view.Proxy.ClusterCIDRs
	if rc.view.Proxy.NoLocalTrafficDetector {
		cidrs = nil // kube-proxy's no-op detector
	}
	for _, p := range cidrs {
		// kube-proxy's ClusterCIDR detector takes one CIDR per family.
		if !p.IsValid() {
			continue
		}
		m := p.Masked()
		if is4(p.Addr()) && !have4 {
			have4 = true
			cfg.ClusterCidr4 = be32(m.Addr())
			cfg.ClusterMask4 = be32(netip.PrefixFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), m.Bits()).Masked().Addr())
			cfg.Flags |= cfgDetector
		}
		if !is4(p.Addr()) && !have6 {
			have6 = true
			ones := netip.AddrFrom16([16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			cfg.ClusterCidr6 = be128(m.Addr())
			cfg.ClusterMask6 = be128(netip.PrefixFrom(ones, m.Bits()).Masked().Addr())
			cfg.Flags |= cfgDetector6
		}
	}
	if rc.view.Proxy.MasqueradeAll {
		cfg.Flags |= cfgMasqAll
	}
	rc.nodePortIPs = append(nodePortAddresses(rc.view.Proxy, rc.node, 4), nodePortAddresses(rc.view.Proxy, rc.node, 6)...)
	rc.out.localhostNodePorts = slices.Contains(rc.nodePortIPs, netip.MustParseAddr("127.0.0.1"))
}

// nodePortAddresses applies --nodeport-addresses to the node's addresses
// of one family, as kube-proxy's NodePortAddresses does: no CIDR of the
// family (or a zero CIDR) means every local address. The node's addresses
// stand for "local addresses" (a lab node has no others), plus 127.0.0.1
// when localhost NodePorts are on (IPv4 only, as in kube-proxy): only
// from_host on the loopback device ever sees that one.
func nodePortAddresses(proxy datapaths.ProxyConfig, node *model.Node, fam family) []netip.Addr {
	var cidrs []netip.Prefix
	for _, p := range proxy.NodePortAddresses {
		if fam.has(p.Addr()) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	matchAll := len(cidrs) == 0
	for _, p := range cidrs {
		if p.Bits() == 0 {
			matchAll = true
		}
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	candidates := []netip.Addr{}
	if proxy.LocalhostNodePorts && fam == 4 {
		candidates = append(candidates, loopback)
	}
	if node != nil {
		candidates = append(candidates, node.Addresses...)
	}
	var out []netip.Addr
	for _, a := range candidates {
		if !fam.has(a) {
			continue
		}
		a = a.Unmap()
		if slices.Contains(out, a) {
			continue
		}
		ok := matchAll
		for _, p := range cidrs {
			ok = ok || p.Contains(a)
		}
		if ok {
			out = append(out, a)
		}
	}
	return out
}

func protoNumber(p model.Protocol) (uint8, bool) {
	switch p {
	case model.TCP:
		return protoTCP, true
	case model.UDP:
		return protoUDP, true
	}
	return 0, false
}

// narrow is a shallow copy of svc narrowed to one port and one family,
// the way kube-proxy's per-family proxier sees it. Narrowing Ports makes
// ExternallyAccessible per port, as in kube-proxy.
func narrow(svc *model.Service, p *model.ServicePort, fam family) (*model.Service, *model.ServicePort) {
	port := *p
	port.Endpoints = nil
	for _, ep := range p.Endpoints {
		if fam.has(ep.IP) {
			port.Endpoints = append(port.Endpoints, ep)
		}
	}
	s := *svc
	s.ExternalIPs = filterFamily(svc.ExternalIPs, fam)
	s.LoadBalancerIPs = filterFamily(svc.LoadBalancerIPs, fam)
	s.Ports = []*model.ServicePort{&port}
	return &s, &port
}

func filterFamily(in []netip.Addr, fam family) []netip.Addr {
	var out []netip.Addr
	for _, a := range in {
		if fam.has(a) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func clusterIPOf(svc *model.Service, fam family) (netip.Addr, bool) {
	if !svc.IsProxied() {
		return netip.Addr{}, false
	}
	for _, ip := range svc.ClusterIPs {
		if fam.has(ip) {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// sourceRanges filters loadBalancerSourceRanges to one family; a zero
// CIDR means "allow any", the same as none (kube-proxy
// newBaseServiceInfo).
func sourceRanges(in []netip.Prefix, fam family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range in {
		if !fam.has(p.Addr()) {
			continue
		}
		if p.Bits() == 0 {
			return nil
		}
		out = append(out, p.Masked())
	}
	return out
}

func (rc *renderCtx) renderService(svc *model.Service) {
	for _, fam := range []family{4, 6} {
		cip, ok := clusterIPOf(svc, fam)
		if !ok {
			continue
		}
		for _, p := range svc.Ports {
			proto, ok := protoNumber(p.Protocol)
			if !ok {
				rc.warnf("%s port %d/%s: the eBPF datapath handles only TCP and UDP; skipped", svc.Name, p.Port, p.Protocol)
				continue
			}
			nsvc, nport := narrow(svc, p, fam)
			rc.renderPort(nsvc, nport, cip, proto, fam)
		}
	}
}

// groupSet renders one backend set ("group") and returns its id. The set
// is named by Service, port and policy ("cluster" or "local"), so the
// ClusterIP and the external frontends share one set when their policies
// agree, as kube-proxy's KUBE-EXT chain jumps to the same KUBE-SVC chain.
func (rc *renderCtx) groupSet(svc *model.Service, port *model.ServicePort, policy string, eps []*model.Endpoint, fam family) uint32 {
	spn := svc.Name.String()
	if port.Name != "" {
		spn += ":" + port.Name
	}
	name := spn + "/" + string(port.Protocol) + "/" + policy
	if fam == 6 {
		name += "/IPv6"
	}
	id := rc.ids.group(name)
	for _, g := range rc.frag.groups {
		if g.id == id {
			return id
		}
	}
	g := fragGroup{id: id, name: name, slots: make([]uint32, len(eps))}
	for i, ep := range eps {
		g.slots[i] = rc.backend(ep)
	}
	rc.frag.groups = append(rc.frag.groups, g)
	return id
}

func (rc *renderCtx) backend(ep *model.Endpoint) uint32 {
	name := ep.String()
	id := rc.ids.backend(name)
	var flags uint8
	if rc.node != nil && ep.NodeName != "" && ep.NodeName == rc.node.Name {
		flags |= beLocal
	}
	if rc.hostIPs[ep.IP.Unmap()] {
		flags |= beHostLocal
	}
	b := fragBackend{id: id, name: name}
	if is4(ep.IP) {
		b.v4 = lbBackend{Addr: be32(ep.IP), Port: be16(uint16(ep.Port)), Flags: flags}
	} else {
		b.is6 = true
		b.v6 = lbBackend6{Addr: be128(ep.IP), Port: be16(uint16(ep.Port)), Flags: flags}
	}
	rc.frag.backends = append(rc.frag.backends, b)
	return id
}

// frontend records a frontend; merge resolves two Services claiming it.
func (rc *renderCtx) frontend(svc *model.Service, addr netip.Addr, port uint16, proto, scope uint8, v lbSvcValue) {
	op := fragOp{val: v}
	if is4(addr) {
		op.key = lbSvcKey{Addr: be32(addr), Port: be16(port), Proto: proto, Scope: scope}
	} else {
		op.is6 = true
		op.key6 = lbSvc6Key{Addr: be128(addr), Port: be16(port), Proto: proto, Scope: scope}
	}
	rc.frag.ops = append(rc.frag.ops, op)
}

func protoName(p uint8) string {
	switch p {
	case protoTCP:
		return "TCP"
	case protoUDP:
		return "UDP"
	}
	return fmt.Sprint(p)
}

// renderPort mirrors the decisions of kube-proxy's per-service-port loop
// (iptables proxier syncProxyRules), expressed as map entries instead of
// chains:
//   - the ClusterIP frontend uses the internal policy's endpoints; with
//     none anywhere it REJECTs, with none for iTP=Local here it DROPs;
//   - each external frontend (externalIPs, LoadBalancer IPs, NodePort on
//     every NodePort address) uses the external policy's endpoints, with
//     the same REJECT/DROP split;
//   - eTP=Local frontends carry SVC_TWO_SCOPES and an internal twin with
//     the Cluster endpoints, for pod and node traffic;
//   - LoadBalancer frontends with loadBalancerSourceRanges carry
//     SVC_SRC_RANGE, and the ranges go into src_ranges.
func (rc *renderCtx) renderPort(svc *model.Service, port *model.ServicePort, clusterIP netip.Addr, proto uint8, fam family) {
	cat := model.Categorize(svc, port, rc.node)

	var affinity uint32
	var common uint16
	if svc.SessionAffinity {
		common |= svcAffinity
		affinity = uint32(svc.AffinityTimeout / time.Second)
		if affinity == 0 {
			affinity = defaultAffinitySeconds
		}
	}
	groups := map[string]uint32{}
	group := func(policy string) (uint32, int) {
		eps := cat.Cluster
		if policy == "local" {
			eps = cat.Local
		}
		if _, ok := groups[policy]; !ok {
			groups[policy] = rc.groupSet(svc, port, policy, eps, fam)
		}
		return groups[policy], len(eps)
	}
	value := func(policy string, flags uint16) lbSvcValue {
		id, n := group(policy)
		flags |= common
		switch {
		case !cat.HasAny:
			// Nothing anywhere: REJECT, so clients fail fast.
			flags |= svcReject
			n = 0
		case n == 0:
			// Endpoints exist, just not for this policy here: DROP, so
			// the client retries rather than being told it is gone.
			flags |= svcDrop
		}
		return lbSvcValue{Id: id, Count: uint16(n), Flags: flags, AffinityTimeout: affinity}
	}

	internal := "cluster"
	if svc.InternalPolicyLocal() {
		internal = "local"
	}
	rc.frontend(svc, clusterIP, uint16(port.Port), proto, scopePrimary, value(internal, 0))

	if !svc.ExternallyAccessible() {
		return
	}
	external := "cluster"
	extFlags := uint16(svcExternal)
	if svc.ExternalPolicyLocal() {
		external = "local"
		extFlags |= svcLocal
		if cat.HasAny {
			extFlags |= svcTwoScopes
		}
	}
	srcRanges := sourceRanges(svc.LoadBalancerSourceRanges, fam)

	addExternal := func(addr netip.Addr, p uint16, extra uint16) {
		v := value(external, extFlags|extra)
		rc.frontend(svc, addr, p, proto, scopePrimary, v)
		if v.Flags&svcTwoScopes != 0 {
			rc.frontend(svc, addr, p, proto, scopeInternal, value("cluster", svcExternal))
		}
		if extra&svcSrcRange != 0 {
			for _, r := range srcRanges {
				if fam == 4 {
					rc.frag.ranges = append(rc.frag.ranges, lbSrcRangeKey{Prefixlen: uint32(32 + r.Bits()), Id: v.Id, Addr: be32(r.Addr())})
				} else {
					rc.frag.ranges6 = append(rc.frag.ranges6, lbSrcRange6Key{Prefixlen: uint32(32 + r.Bits()), Id: v.Id, Addr: be128(r.Addr())})
				}
			}
		}
	}
	for _, ip := range svc.ExternalIPs {
		addExternal(ip, uint16(port.Port), 0)
	}
	for _, ip := range svc.LoadBalancerIPs {
		var extra uint16
		if len(srcRanges) > 0 {
			extra = svcSrcRange
		}
		addExternal(ip, uint16(port.Port), extra)
	}
	if port.NodePort != 0 {
		for _, ip := range rc.nodePortIPs {
			if fam.has(ip) {
				addExternal(ip, uint16(port.NodePort), svcNodePort)
			}
		}
	}
}

// dump renders the desired state as sorted, readable lines: one per map
// entry, in the order maps.go writes them. It is what `bpftool map dump`
// would show, with names instead of numbers.
func (d *desired) dump() string {
	var b strings.Builder
	c := d.Config
	fmt.Fprintf(&b, "config node_ip=%s cluster_cidr=%s/%s flags=%s\n",
		addrFromBE32(c.NodeIp4), addrFromBE32(c.ClusterCidr4), addrFromBE32(c.ClusterMask4), cfgFlagNames(c.Flags))

	backendText := map[uint32]string{}
	for id, be := range d.Backends {
		backendText[id] = netip.AddrPortFrom(addrFromBE32(be.Addr), portFromBE16(be.Port)).String()
	}
	for id, be := range d.Backends6 {
		backendText[id] = netip.AddrPortFrom(addrFromBE128(be.Addr), portFromBE16(be.Port)).String()
	}
	for _, id := range slices.Sorted(maps.Keys(backendText)) {
		flags := d.Backends[id].Flags
		if be, ok := d.Backends6[id]; ok {
			flags = be.Flags
		}
		fmt.Fprintf(&b, "backend %d %s%s\n", id, backendText[id], beFlagNames(flags))
	}
	skeys := slices.SortedFunc(maps.Keys(d.Services), lessSvcKey)
	for _, k := range skeys {
		v := d.Services[k]
		scope := ""
		if k.Scope == scopeInternal {
			scope = " (internal)"
		}
		fmt.Fprintf(&b, "service %s:%d/%s%s -> group %d %q count=%d%s%s\n",
			addrFromBE32(k.Addr), portFromBE16(k.Port), protoName(k.Proto), scope,
			v.Id, d.groupName[v.Id], v.Count, svcFlagNames(v.Flags), affinityText(v))
	}
	for _, k := range slices.SortedFunc(maps.Keys(d.Services6), lessSvc6Key) {
		v := d.Services6[k]
		scope := ""
		if k.Scope == scopeInternal {
			scope = " (internal)"
		}
		fmt.Fprintf(&b, "service %s/%s%s -> group %d %q count=%d%s%s\n",
			netip.AddrPortFrom(addrFromBE128(k.Addr), portFromBE16(k.Port)), protoName(k.Proto), scope,
			v.Id, d.groupName[v.Id], v.Count, svcFlagNames(v.Flags), affinityText(v))
	}
	for _, k := range slices.SortedFunc(maps.Keys(d.Slots), lessSlotKey) {
		bid := d.Slots[k]
		fmt.Fprintf(&b, "slot %d/%d -> backend %d %s\n", k.Id, k.Slot, bid, backendText[bid])
	}
	for _, k := range slices.SortedFunc(maps.Keys(d.SrcRanges), lessSrcRangeKey) {
		fmt.Fprintf(&b, "src_range group %d allows %s/%d\n", k.Id, addrFromBE32(k.Addr), k.Prefixlen-32)
	}
	for _, k := range slices.SortedFunc(maps.Keys(d.SrcRanges6), lessSrcRange6Key) {
		fmt.Fprintf(&b, "src_range group %d allows %s/%d\n", k.Id, addrFromBE128(k.Addr), k.Prefixlen-32)
	}
	for _, w := range d.Warnings {
		fmt.Fprintf(&b, "warning %s\n", w)
	}
	return b.String()
}

func affinityText(v lbSvcValue) string {
	if v.Flags&svcAffinity == 0 {
		return ""
	}
	return fmt.Sprintf(" affinity=%ds", v.AffinityTimeout)
}

func flagNames(v uint32, names []string) string {
	var out []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " [" + strings.Join(out, ",") + "]"
}

func svcFlagNames(v uint16) string {
	return flagNames(uint32(v), []string{"external", "two-scopes", "local", "affinity", "src-range", "reject", "drop", "nodeport"})
}

func beFlagNames(v uint8) string {
	return flagNames(uint32(v), []string{"local", "host"})
}

func cfgFlagNames(v uint32) string {
	s := flagNames(v, []string{"detector", "masquerade-all", "detector6"})
	if s == "" {
		return "[]"
	}
	return strings.TrimPrefix(s, " ")
}

// The render cache. This caches the rendering of each Service between syncs, so an
// incremental sync at 10k Services does not render 10k Services again:
// a Service whose model data, node and proxy configuration are unchanged
// since the last render reuses the entries it rendered then (a deep
// comparison, no allocation), and only changed Services are rendered.

// svcFrag is what one Service contributes to the desired maps, in the
// order render emitted it, so merging fragments reproduces the uncached
// render exactly (frontend conflicts are still resolved in Service order).
type svcFrag struct {
	in       *model.Service // the last input found equal to it: the same pointer again is the same Service (the model is immutable)
	ops      []fragOp       // frontends and warnings, in emission order
	groups   []fragGroup
	backends []fragBackend
	ranges   []lbSrcRangeKey
	ranges6  []lbSrcRange6Key
	seen     uint64 // the cache generation that last found this Service
}

type fragOp struct {
	warning string // set: a warning; else a frontend
	is6     bool
	key     lbSvcKey
	key6    lbSvc6Key
	val     lbSvcValue
}

type fragGroup struct {
	id    uint32
	name  string
	slots []uint32 // backend id of slot i+1
}

type fragBackend struct {
	id   uint32
	name string
	is6  bool
	v4   lbBackend
	v6   lbBackend6
}

// renderCache holds the fragments of the last render. It is valid only
// for the id table that render returned (ids) and the node context it
// saw; anything else renders every Service again.
type renderCache struct {
	ids   *idTable
	node  *model.Node
	proxy datapaths.ProxyConfig
	frags map[model.ServiceName]*svcFrag
	// order is the last view's Service list (a copy), and orderFrags the
	// fragment each of its positions resolved to, for the aligned walk of
	// an incremental render.
	order      []*model.Service
	orderFrags []*svcFrag
	// last is the last render's output; an incremental render changes it
	// in place.
	last *desired
	// refs counts the fragments using each backend id; warnFrags are the
	// fragments with warnings. clean: the last render had no frontend two
	// Services claim and no Service name twice, so Services can be
	// rendered one by one.
	refs      map[uint32]int
	warnFrags map[string]*svcFrag
	clean     bool
	gen       uint64
}

// usable reports whether the cached fragments may be reused with prev
// and view.
func (c *renderCache) usable(prev *idTable, view *datapaths.NodeView) bool {
	return c != nil && c.ids != nil && c.ids == prev &&
		reflect.DeepEqual(c.node, view.Node) && reflect.DeepEqual(c.proxy, view.Proxy)
}

func cloneNode(n *model.Node) *model.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Addresses = slices.Clone(n.Addresses)
	c.Labels = maps.Clone(n.Labels)
	return &c
}

func cloneProxy(p datapaths.ProxyConfig) datapaths.ProxyConfig {
	p.ClusterCIDRs = slices.Clone(p.ClusterCIDRs)
	p.ServiceCIDRs = slices.Clone(p.ServiceCIDRs)
	p.NodePortAddresses = slices.Clone(p.NodePortAddresses)
	return p
}

// equalService compares every field of two Services (render reads
// nearly all of them, through model.Categorize too). TestEqualServiceFields
// checks that no field is forgotten.
func equalService(a, b *model.Service) bool {
	if a.Name != b.Name || a.Type != b.Type || a.Origin != b.Origin || a.Headless != b.Headless ||
		a.SessionAffinity != b.SessionAffinity || a.AffinityTimeout != b.AffinityTimeout ||
		a.ExternalTrafficPolicy != b.ExternalTrafficPolicy || a.InternalTrafficPolicy != b.InternalTrafficPolicy ||
		a.TrafficDistribution != b.TrafficDistribution || a.HealthCheckNodePort != b.HealthCheckNodePort ||
		!slices.Equal(a.ClusterIPs, b.ClusterIPs) || !slices.Equal(a.ExternalIPs, b.ExternalIPs) ||
		!slices.Equal(a.LoadBalancerIPs, b.LoadBalancerIPs) || !slices.Equal(a.LoadBalancerSourceRanges, b.LoadBalancerSourceRanges) ||
		len(a.Ports) != len(b.Ports) {
		return false
	}
	for i, p := range a.Ports {
		q := b.Ports[i]
		if (p == nil) != (q == nil) {
			return false
		}
		if p == nil {
			continue
		}
		if p.Name != q.Name || p.Protocol != q.Protocol || p.Port != q.Port || p.NodePort != q.NodePort ||
			p.TargetPort != q.TargetPort || len(p.Endpoints) != len(q.Endpoints) {
			return false
		}
		for j, e := range p.Endpoints {
			f := q.Endpoints[j]
			if (e == nil) != (f == nil) {
				return false
			}
			if e == nil {
				continue
			}
			if e.IP != f.IP || e.Port != f.Port || e.Name != f.Name || e.NodeName != f.NodeName || e.Zone != f.Zone ||
				e.Ready != f.Ready || e.Serving != f.Serving || e.Terminating != f.Terminating ||
				!slices.Equal(e.ZoneHints, f.ZoneHints) || !slices.Equal(e.NodeHints, f.NodeHints) ||
				(e.ZoneHints == nil) != (f.ZoneHints == nil) || (e.NodeHints == nil) != (f.NodeHints == nil) {
				return false
			}
		}
	}
	return true
}

// merge adds the fragment of the Service named owner to the render's
// output and id table, exactly as rendering the Service there would have.
// idsDone says the fragment was just rendered with this render's id
// table, which holds its names already.
func (rc *renderCtx) merge(owner string, f *svcFrag, idsDone bool) {
	out := rc.out
	t := rc.touched
	for _, b := range f.backends {
		if !idsDone {
			rc.ids.next.Backends[b.name] = b.id
		}
		rc.refs[b.id]++
		t.backend(b)
		if b.is6 {
			out.Backends6[b.id] = b.v6
		} else {
			out.Backends[b.id] = b.v4
		}
	}
	for _, g := range f.groups {
		if !idsDone {
			rc.ids.next.Groups[g.name] = g.id
		}
		if _, done := out.groupOwner[g.id]; done {
			continue
		}
		out.groupOwner[g.id] = owner
		out.groupName[g.id] = g.name
		t.group(g)
		for i, bid := range g.slots {
			slot := uint32(i + 1)
			out.Slots[lbSlotKey{Id: g.id, Slot: slot}] = bid
			out.Members[lbMemberKey{Id: g.id, BackendId: bid}] = slot
		}
	}
	for _, k := range f.ranges {
		out.SrcRanges[k] = 1
		if t != nil {
			t.ranges.add(k)
		}
	}
	for _, k := range f.ranges6 {
		out.SrcRanges6[k] = 1
		if t != nil {
			t.ranges6.add(k)
		}
	}
	for _, op := range f.ops {
		if op.warning != "" {
			out.Warnings = append(out.Warnings, op.warning)
			continue
		}
		var prevOwner string
		var dup bool
		t.frontend(op)
		if op.is6 {
			if prevOwner, dup = out.svcOwner6[op.key6]; !dup {
				out.svcOwner6[op.key6] = owner
				out.Services6[op.key6] = op.val
			}
		} else {
			if prevOwner, dup = out.svcOwner[op.key]; !dup {
				out.svcOwner[op.key] = owner
				out.Services[op.key] = op.val
			}
		}
		if dup && prevOwner != owner {
			rc.dupWarned = true
			addr, port := addrFromBE32(op.key.Addr), portFromBE16(op.key.Port)
			proto := op.key.Proto
			if op.is6 {
				addr, port, proto = addrFromBE128(op.key6.Addr), portFromBE16(op.key6.Port), op.key6.Proto
			}
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: frontend %s/%s is already %s's; skipped", owner, netip.AddrPortFrom(addr, port), protoName(proto), prevOwner))
		}
	}
}

func (f *svcFrag) hasWarnings() bool {
	for _, op := range f.ops {
		if op.warning != "" {
			return true
		}
	}
	return false
}

// keySet is a set of map keys.
type keySet[K comparable] map[K]struct{}

func (s keySet[K]) add(k K) { s[k] = struct{}{} }

// touchedKeys are the keys an incremental render added, changed or
// removed. Its methods do nothing on a nil *touchedKeys (a whole render).
type touchedKeys struct {
	base      uint64 // the render these keys are relative to
	services  keySet[lbSvcKey]
	services6 keySet[lbSvc6Key]
	slots     keySet[lbSlotKey]
	members   keySet[lbMemberKey]
	backends  keySet[uint32]
	backends6 keySet[uint32]
	ranges    keySet[lbSrcRangeKey]
	ranges6   keySet[lbSrcRange6Key]
	groups    keySet[uint32]
}

func newTouchedKeys(base uint64) *touchedKeys {
	return &touchedKeys{base: base, services: keySet[lbSvcKey]{}, services6: keySet[lbSvc6Key]{}, slots: keySet[lbSlotKey]{},
		members: keySet[lbMemberKey]{}, backends: keySet[uint32]{}, backends6: keySet[uint32]{},
		ranges: keySet[lbSrcRangeKey]{}, ranges6: keySet[lbSrcRange6Key]{}, groups: keySet[uint32]{}}
}

func (t *touchedKeys) backend(b fragBackend) {
	if t == nil {
		return
	}
	if b.is6 {
		t.backends6.add(b.id)
	} else {
		t.backends.add(b.id)
	}
}

func (t *touchedKeys) group(g fragGroup) {
	if t == nil {
		return
	}
	t.groups.add(g.id)
	for i, bid := range g.slots {
		t.slots.add(lbSlotKey{Id: g.id, Slot: uint32(i + 1)})
		t.members.add(lbMemberKey{Id: g.id, BackendId: bid})
	}
}

func (t *touchedKeys) frontend(op fragOp) {
	if t == nil || op.warning != "" {
		return
	}
	if op.is6 {
		t.services6.add(op.key6)
	} else {
		t.services.add(op.key)
	}
}

// fragChange is one Service whose rendering changed: old or new is nil
// for a Service added or removed.
type fragChange struct {
	key      model.ServiceName
	name     string
	svc      *model.Service
	old, new *svcFrag
}

// renderIncremental renders only the Services that differ from the
// cache's and patches the cache's last output in place, so a sync that
// changes one Service costs one Service's render plus one comparison per
// unchanged Service. It declines (false, nothing changed) where a
// Service's entries depend on another's: a frontend claimed twice, a
// Service name given twice.
func (rc *renderCtx) renderIncremental(c *renderCache, prev *idTable) (*desired, bool) {
	gen := c.gen + 1
	// Ids of new names are drawn into a scratch table, so declining
	// leaves prev as it was.
	scratch := &idTable{Groups: map[string]uint32{}, Backends: map[string]uint32{}, NextGroup: prev.NextGroup, NextBackend: prev.NextBackend}
	rc.ids = &idAllocator{prev: prev, next: scratch}
	var changes []fragChange
	var added map[model.ServiceName]bool
	matched := 0
	type repoint struct {
		f   *svcFrag
		src *model.Service
	}
	var repointed []repoint
	// The walk follows the last view's Service order (c.order): a caller
	// that changes a few Services hands the others again as the same
	// objects in the same order (loadgen's churn replaces, appends or
	// deletes one), so most Services are one pointer comparison against
	// the same position, with no hashing; j realigns after a Service was
	// added or removed. Whatever does not line up is found by name and
	// compared (by pointer, then field by field).
	svcs := rc.view.Cluster.Services
	last, lastF := c.order, c.orderFrags
	order := make([]*svcFrag, len(svcs))
	var slow []int        // positions resolved below, not by order
	var passed []*svcFrag // fragments of last positions the walk went past
	j := 0
	for i, svc := range svcs {
		if j+1 < len(last) && last[j] != svc && last[j+1] == svc {
			// last[j] left (or moved).
			passed = append(passed, lastF[j])
			j++
		}
		if j < len(last) && last[j] == svc {
			if f := lastF[j]; f != nil && f.seen != gen {
				f.seen = gen
				matched++
				order[i] = f
				j++
				continue
			}
		}
		if j < len(last) && (i+1 >= len(svcs) || svcs[i+1] != last[j]) {
			// svc took last[j]'s place (or both are out of line).
			passed = append(passed, lastF[j])
			j++
		}
		slow = append(slow, i)
		key := svc.Name
		f, ok := c.frags[key]
		if ok {
			if f.seen == gen {
				return nil, false
			}
			f.seen = gen
			matched++
			if f.in == svc {
				order[i] = f
				continue
			}
			if equalService(f.in, svc) {
				// The same Service in a new object: compare by this
				// pointer next time (once the render is committed).
				order[i] = f
				repointed = append(repointed, repoint{f, svc})
				continue
			}
		} else {
			if added[key] {
				return nil, false
			}
			if added == nil {
				added = map[model.ServiceName]bool{}
			}
			added[key] = true
		}
		changes = append(changes, fragChange{key: key, name: key.String(), svc: svc, old: f})
	}
	// New ids are drawn in the order of Service names, as a whole
	// render draws them.
	slices.SortFunc(changes, func(a, b fragChange) int { return strings.Compare(a.name, b.name) })
	for i := range changes {
		ch := &changes[i]
		ch.new = &svcFrag{in: ch.svc, seen: gen}
		rc.frag = ch.new
		rc.renderService(ch.svc)
		rc.frag = nil
	}
	if matched < len(c.frags) {
		// Removed Services: the fragments the walk went past that
		// nothing claimed, if they account for all of them; else look at
		// every fragment.
		passed = append(passed, lastF[min(j, len(lastF)):]...)
		var gone []*svcFrag
		counted := map[*svcFrag]bool{}
		for _, f := range passed {
			if f != nil && f.seen != gen && !counted[f] {
				counted[f] = true
				gone = append(gone, f)
			}
		}
		if matched+len(gone) != len(c.frags) {
			gone = gone[:0]
			for _, f := range c.frags {
				if f.seen != gen {
					gone = append(gone, f)
				}
			}
		}
		for _, f := range gone {
			changes = append(changes, fragChange{key: f.in.Name, name: f.in.Name.String(), old: f})
		}
	}

	out := c.last
	// Decline when a new frontend is, or would be, claimed by two
	// Services: which one wins depends on the order of all of them.
	changed := make(map[string]bool, len(changes))
	for _, ch := range changes {
		changed[ch.name] = true
	}
	claims := map[lbSvcKey]string{}
	claims6 := map[lbSvc6Key]string{}
	for _, ch := range changes {
		if ch.new == nil {
			continue
		}
		for _, op := range ch.new.ops {
			if op.warning != "" {
				continue
			}
			var o, o2 string
			var ok, ok2 bool
			if op.is6 {
				o, ok = out.svcOwner6[op.key6]
				o2, ok2 = claims6[op.key6]
				claims6[op.key6] = ch.name
			} else {
				o, ok = out.svcOwner[op.key]
				o2, ok2 = claims[op.key]
				claims[op.key] = ch.name
			}
			if (ok && o != ch.name && !changed[o]) || (ok2 && o2 != ch.name) {
				return nil, false
			}
		}
	}

	// Commit: from here on the cache, prev and out change.
	out.Config, out.localhostNodePorts = rc.out.Config, rc.out.localhostNodePorts
	rc.out = out
	rc.refs = c.refs
	rc.touched = newTouchedKeys(c.gen)
	rc.ids.next = prev
	prev.NextGroup, prev.NextBackend = scratch.NextGroup, scratch.NextBackend
	for _, ch := range changes {
		if ch.old != nil {
			rc.unmerge(ch.name, ch.old, prev)
		}
	}
	for _, r := range repointed {
		r.f.in = r.src
	}
	for _, ch := range changes {
		delete(c.warnFrags, ch.name)
		if ch.new == nil {
			delete(c.frags, ch.key)
			continue
		}
		rc.merge(ch.name, ch.new, false)
		c.frags[ch.key] = ch.new
		if ch.new.hasWarnings() {
			c.warnFrags[ch.name] = ch.new
		}
	}
	out.Warnings = nil
	for _, name := range slices.Sorted(maps.Keys(c.warnFrags)) {
		for _, op := range c.warnFrags[name].ops {
			if op.warning != "" {
				out.Warnings = append(out.Warnings, op.warning)
			}
		}
	}
	for _, i := range slow {
		if order[i] == nil {
			order[i] = c.frags[svcs[i].Name]
		}
	}
	c.order, c.orderFrags = slices.Clone(svcs), order
	c.gen = gen
	out.gen = gen
	out.touched = rc.touched
	return out, true
}

// unmerge takes a fragment merged earlier out of the output and id table.
func (rc *renderCtx) unmerge(name string, f *svcFrag, ids *idTable) {
	out, t := rc.out, rc.touched
	for _, b := range f.backends {
		t.backend(b)
		rc.refs[b.id]--
		if rc.refs[b.id] > 0 {
			continue
		}
		delete(rc.refs, b.id)
		if b.is6 {
			delete(out.Backends6, b.id)
		} else {
			delete(out.Backends, b.id)
		}
		if ids.Backends[b.name] == b.id {
			delete(ids.Backends, b.name)
		}
	}
	for _, g := range f.groups {
		if ids.Groups[g.name] == g.id {
			delete(ids.Groups, g.name)
		}
		if out.groupOwner[g.id] != name {
			continue
		}
		t.group(g)
		delete(out.groupOwner, g.id)
		delete(out.groupName, g.id)
		for i, bid := range g.slots {
			delete(out.Slots, lbSlotKey{Id: g.id, Slot: uint32(i + 1)})
			delete(out.Members, lbMemberKey{Id: g.id, BackendId: bid})
		}
	}
	for _, k := range f.ranges {
		delete(out.SrcRanges, k)
		t.ranges.add(k)
	}
	for _, k := range f.ranges6 {
		delete(out.SrcRanges6, k)
		t.ranges6.add(k)
	}
	for _, op := range f.ops {
		if op.warning != "" {
			continue
		}
		t.frontend(op)
		if op.is6 {
			if out.svcOwner6[op.key6] == name {
				delete(out.svcOwner6, op.key6)
				delete(out.Services6, op.key6)
			}
		} else if out.svcOwner[op.key] == name {
			delete(out.svcOwner, op.key)
			delete(out.Services, op.key)
		}
	}
}
