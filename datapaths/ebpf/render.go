package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
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
// node. The LRU maps (ct, affinity, sock_revnat) are the programs' own
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
}

// render computes the desired map contents for one node. prev may be nil.
// It returns the new id table, to pass to the next render.
func render(view *datapaths.NodeView, prev *idTable) (*desired, *idTable, error) {
	if view == nil || view.Cluster == nil {
		return nil, nil, errors.New("render eBPF maps: no cluster in the node view")
	}
	if prev == nil {
		prev = newIDTable()
	}
	next := &idTable{Groups: map[string]uint32{}, Backends: map[string]uint32{}, NextGroup: prev.NextGroup, NextBackend: prev.NextBackend}
	rc := &renderCtx{
		view: view,
		node: view.Node,
		ids:  &idAllocator{prev: prev, next: next},
		out: &desired{
			Services:   map[lbSvcKey]lbSvcValue{},
			Slots:      map[lbSlotKey]uint32{},
			Backends:   map[uint32]lbBackend{},
			Members:    map[lbMemberKey]uint32{},
			SrcRanges:  map[lbSrcRangeKey]uint8{},
			Services6:  map[lbSvc6Key]lbSvcValue{},
			Backends6:  map[uint32]lbBackend6{},
			SrcRanges6: map[lbSrcRange6Key]uint8{},
			groupOwner: map[uint32]string{},
			svcOwner:   map[lbSvcKey]string{},
			svcOwner6:  map[lbSvc6Key]string{},
			groupName:  map[uint32]string{},
		},
		hostIPs: map[netip.Addr]bool{},
	}
	rc.renderConfig()

	services := slices.Clone(view.Cluster.Services)
	sort.Slice(services, func(i, j int) bool { return services[i].Name.String() < services[j].Name.String() })
	for _, svc := range services {
		rc.renderService(svc)
	}
	return rc.out, next, nil
}

func (rc *renderCtx) warnf(format string, args ...any) {
	rc.out.Warnings = append(rc.out.Warnings, fmt.Sprintf(format, args...))
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
	name := fmt.Sprintf("%s/%s/%s", spn, port.Protocol, policy)
	if fam == 6 {
		name += "/IPv6"
	}
	id := rc.ids.group(name)
	if _, done := rc.out.groupOwner[id]; done {
		return id
	}
	rc.out.groupOwner[id] = svc.Name.String()
	rc.out.groupName[id] = name
	for i, ep := range eps {
		bid := rc.backend(ep)
		slot := uint32(i + 1)
		rc.out.Slots[lbSlotKey{Id: id, Slot: slot}] = bid
		rc.out.Members[lbMemberKey{Id: id, BackendId: bid}] = slot
	}
	return id
}

func (rc *renderCtx) backend(ep *model.Endpoint) uint32 {
	id := rc.ids.backend(ep.String())
	var flags uint8
	if rc.node != nil && ep.NodeName != "" && ep.NodeName == rc.node.Name {
		flags |= beLocal
	}
	if rc.hostIPs[ep.IP.Unmap()] {
		flags |= beHostLocal
	}
	if is4(ep.IP) {
		rc.out.Backends[id] = lbBackend{Addr: be32(ep.IP), Port: be16(uint16(ep.Port)), Flags: flags}
	} else {
		rc.out.Backends6[id] = lbBackend6{Addr: be128(ep.IP), Port: be16(uint16(ep.Port)), Flags: flags}
	}
	return id
}

func (rc *renderCtx) frontend(svc *model.Service, addr netip.Addr, port uint16, proto, scope uint8, v lbSvcValue) {
	var owner string
	var dup bool
	if is4(addr) {
		k := lbSvcKey{Addr: be32(addr), Port: be16(port), Proto: proto, Scope: scope}
		if owner, dup = rc.out.svcOwner[k]; !dup {
			rc.out.svcOwner[k] = svc.Name.String()
			rc.out.Services[k] = v
		}
	} else {
		k := lbSvc6Key{Addr: be128(addr), Port: be16(port), Proto: proto, Scope: scope}
		if owner, dup = rc.out.svcOwner6[k]; !dup {
			rc.out.svcOwner6[k] = svc.Name.String()
			rc.out.Services6[k] = v
		}
	}
	if dup && owner != svc.Name.String() {
		rc.warnf("%s: frontend %s/%s is already %s's; skipped", svc.Name, netip.AddrPortFrom(addr, port), protoName(proto), owner)
	}
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
					rc.out.SrcRanges[lbSrcRangeKey{Prefixlen: uint32(32 + r.Bits()), Id: v.Id, Addr: be32(r.Addr())}] = 1
				} else {
					rc.out.SrcRanges6[lbSrcRange6Key{Prefixlen: uint32(32 + r.Bits()), Id: v.Id, Addr: be128(r.Addr())}] = 1
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
