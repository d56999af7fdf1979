package nftables

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// families are the two tables every node gets, as kube-proxy's dual-stack
// MetaProxier runs one nftables proxier per family.
var families = []knftables.Family{knftables.IPv4Family, knftables.IPv6Family}

// Ruleset is the desired content of both kube-proxy tables: plain data,
// computed from the view alone, with no kernel involved. plan.go turns it
// into a knftables transaction, full or partial.
type Ruleset struct {
	Families []*FamilyState // ip, then ip6
}

// Family returns one family's state.
func (rs *Ruleset) Family(f knftables.Family) *FamilyState {
	for _, fs := range rs.Families {
		if fs.Family == f {
			return fs
		}
	}
	return nil
}

// Objects counts the kernel objects the ruleset asks for: chains, sets and
// maps, rules and set/map elements.
func (rs *Ruleset) Objects() int {
	n := 0
	for _, fs := range rs.Families {
		n += fs.Base.objects()
		for _, ss := range fs.Services {
			n += len(ss.Chains) + len(ss.Sets) + len(ss.Rules) + len(ss.Elements)
		}
	}
	return n
}

// FamilyState is one family's table.
type FamilyState struct {
	Family knftables.Family
	Base   BaseState
	// Services are the Services with a ClusterIP of this family, sorted by
	// namespace/name.
	Services []*ServiceState
}

// BaseState is what the Service-independent part of the table (base chains,
// dispatch rules, maps, sets; kube-proxy's setupNFTables) depends on.
// Any change to it makes the next sync a full one.
type BaseState struct {
	// ServiceCIDRs of this family: traffic to unallocated addresses in
	// them is dropped.
	ServiceCIDRs []netip.Prefix
	// NodePortMatchAll accepts NodePorts on every local address but
	// localhost (fib daddr type local) instead of the nodeport-ips set.
	NodePortMatchAll bool
	// NodePortIPs fill the nodeport-ips set when !NodePortMatchAll.
	NodePortIPs []netip.Addr
}

func (b BaseState) key() string {
	return fmt.Sprintf("cidrs=%v all=%v ips=%v mark=%s", b.ServiceCIDRs, b.NodePortMatchAll, b.NodePortIPs, masqueradeMark)
}

// objects counts what writeBase creates: 16 chains (8 base, 8 regular),
// 6 maps and sets plus nodeport-ips, 22 rules plus the ServiceCIDR drop,
// and the nodeport-ips elements. A unit test checks it against the fake.
func (b BaseState) objects() int {
	n := 16 + 6 + 22 + len(b.NodePortIPs)
	if !b.NodePortMatchAll {
		n++
	}
	if len(b.ServiceCIDRs) > 0 {
		n++
	}
	return n
}

// ServiceState is everything one Service owns in one family: its chains
// (per port: endpoint, service, local, external and firewall chains), its
// affinity sets, the rules in those chains, and its elements in the shared
// maps and sets. A partial sync rewrites a Service's chains only when Hash
// changed; elements are diffed one by one either way.
type ServiceState struct {
	Name     model.ServiceName
	Chains   []string
	Sets     []*knftables.Set
	Rules    []*knftables.Rule
	Elements []*knftables.Element
	Hash     uint64
}

// Render computes the desired ruleset for one node. It is deterministic:
// the same view always renders the same objects in the same order.
func Render(view *datapaths.NodeView) (*Ruleset, error) { return render(view, nil) }

// layout says which endpoint dispatch a ruleset uses: kube-proxy's (one
// anonymous verdict map per policy chain) or nftables-flat's (see flat.go).
// Everything else is the same in both.
type layout int

const (
	layoutKubeProxy layout = iota
	layoutFlat
)

// nameCache remembers hashed chain names between renders, as kube-proxy
// keeps them in its servicePortInfo and endpointInfo, so a sync does not
// hash every endpoint of every Service again. Names unused by one render
// are forgotten by the next.
type nameCache struct {
	prev, next map[nameKey]string
	// services are the Services rendered by the last render (prev) and
	// this one (next), per family. The model is immutable (model.Cluster),
	// so the same *model.Service in the same context (layout, node, proxy
	// settings) renders the same ServiceState again, which a partial sync
	// can then reuse instead of rendering every Service: kube-proxy's
	// change trackers likewise let it skip unchanged Services. Nothing
	// downstream modifies a ServiceState.
	svcKey           map[knftables.Family]string
	svcPrev, svcNext map[svcCacheKey]*ServiceState
}

type svcCacheKey struct {
	family knftables.Family
	svc    *model.Service
}

type nameKey struct {
	svc            model.ServiceName
	protocol, port string
	ep             netip.AddrPort // zero for the Service port's own base
}

func newNameCache() *nameCache {
	return &nameCache{prev: map[nameKey]string{}, next: map[nameKey]string{},
		svcKey: map[knftables.Family]string{}, svcNext: map[svcCacheKey]*ServiceState{}}
}

// beginFamily starts rendering a family in context key; a new context
// forgets that family's Services.
func (c *nameCache) beginFamily(f knftables.Family, key string) {
	if c == nil || c.svcKey[f] == key {
		return
	}
	c.svcKey[f] = key
	for k := range c.svcPrev {
		if k.family == f {
			delete(c.svcPrev, k)
		}
	}
}

// service returns what svc rendered last time in family f (nil for a
// Service not proxied in f), and whether it is known.
func (c *nameCache) service(f knftables.Family, svc *model.Service) (*ServiceState, bool) {
	if c == nil {
		return nil, false
	}
	k := svcCacheKey{f, svc}
	ss, ok := c.svcPrev[k]
	if ok {
		c.svcNext[k] = ss
	}
	return ss, ok
}

func (c *nameCache) keepService(f knftables.Family, svc *model.Service, ss *ServiceState) {
	if c != nil {
		c.svcNext[svcCacheKey{f, svc}] = ss
	}
}

// base returns servicePortChainNameBase or, with a valid ep,
// servicePortEndpointChainNameBase. A nil cache computes every time.
func (c *nameCache) base(k nameKey) string {
	if c == nil {
		return computeBase(k)
	}
	if b, ok := c.next[k]; ok {
		return b
	}
	b, ok := c.prev[k]
	if !ok {
		b = computeBase(k)
	}
	c.next[k] = b
	return b
}

func computeBase(k nameKey) string {
	if k.ep.IsValid() {
		return servicePortEndpointChainNameBase(k.svc, k.protocol, k.port, k.ep)
	}
	return servicePortChainNameBase(k.svc, k.protocol, k.port)
}

// rotate ends a render: what it did not use is dropped.
func (c *nameCache) rotate() {
	if c != nil {
		c.prev, c.next = c.next, make(map[nameKey]string, len(c.next))
		c.svcPrev, c.svcNext = c.svcNext, make(map[svcCacheKey]*ServiceState, len(c.svcNext))
	}
}

func render(view *datapaths.NodeView, names *nameCache) (*Ruleset, error) {
	return renderLayout(view, names, layoutKubeProxy)
}

func renderLayout(view *datapaths.NodeView, names *nameCache, lay layout) (*Ruleset, error) {
	if view == nil || view.Cluster == nil {
		return nil, errors.New("render nftables ruleset: the view has no cluster")
	}
	rs := &Ruleset{}
	services := slices.Clone(view.Cluster.Services)
	slices.SortFunc(services, func(a, b *model.Service) int {
		return a.Name.Compare(b.Name)
	})
	defer names.rotate()
	for _, f := range families {
		fc := newFamilyCtx(view, f)
		fc.names = names
		fc.layout = lay
		fs := &FamilyState{Family: f, Base: fc.base}
		if names != nil {
			node := ""
			if view.Node != nil {
				node = fmt.Sprintf("%+v", *view.Node)
			}
			names.beginFamily(f, fmt.Sprintf("%d|%+v|%s", lay, view.Proxy, node))
		}
		fs.Services = make([]*ServiceState, 0, len(services))
		for _, svc := range services {
			ss, ok := names.service(f, svc)
			if !ok {
				ss = fc.renderService(svc)
				names.keepService(f, svc, ss)
			}
			if ss != nil {
				fs.Services = append(fs.Services, ss)
			}
		}
		rs.Families = append(rs.Families, fs)
	}
	return rs, nil
}

// familyCtx holds what one family's proxier knows: kube-proxy's Proxier
// fields, narrowed to what rendering reads.
type familyCtx struct {
	family   knftables.Family
	ipX      string // "ip" or "ip6", the payload expression keyword
	addrType string // "ipv4_addr" or "ipv6_addr"
	node     *model.Node
	// nodeIP is the node's primary address of this family (kube-proxy's
	// --bind-address/detected node IP); invalid if it has none.
	nodeIP netip.Addr
	// localCIDR is the local-traffic detector (--cluster-cidr, one per
	// family); invalid means no detector.
	localCIDR     netip.Prefix
	masqueradeAll bool
	base          BaseState
	names         *nameCache
	layout        layout
}

func familyHas(f knftables.Family, a netip.Addr) bool {
	return a.IsValid() && a.Unmap().Is4() == (f == knftables.IPv4Family)
}

func newFamilyCtx(view *datapaths.NodeView, f knftables.Family) *familyCtx {
	fc := &familyCtx{family: f, ipX: "ip", addrType: "ipv4_addr", node: view.Node, masqueradeAll: view.Proxy.MasqueradeAll}
	if f == knftables.IPv6Family {
		fc.ipX, fc.addrType = "ip6", "ipv6_addr"
	}
	if view.Node != nil {
		for _, a := range view.Node.Addresses {
			if familyHas(f, a) {
				fc.nodeIP = a.Unmap()
				break
			}
		}
	}
	for _, p := range view.Proxy.ClusterCIDRs {
		if view.Proxy.NoLocalTrafficDetector {
			break
		}
		if p.IsValid() && familyHas(f, p.Addr()) {
			fc.localCIDR = p.Masked()
			break
		}
	}
	for _, p := range view.Proxy.ServiceCIDRs {
		if p.IsValid() && familyHas(f, p.Addr()) && !slices.Contains(fc.base.ServiceCIDRs, p.Masked()) {
			fc.base.ServiceCIDRs = append(fc.base.ServiceCIDRs, p.Masked())
		}
	}
	fc.resolveNodePortAddresses(view.Proxy.NodePortAddresses)
	return fc
}

// resolveNodePortAddresses applies --nodeport-addresses the way kube-proxy's
// nftables mode does. Its default there is "primary": the node's primary
// IP of each family as a /32 or /128, so a secondary address does not
// accept NodePorts (CONFORMANCE NP-02). CIDRs of the other family are
// ignored; a family left with no CIDR at all (a node with no address of
// that family under "primary", or an explicit list without one) falls back
// to the zero CIDR, "every local address", as proxyutil.NewNodePortAddresses
// does. Localhost never accepts NodePorts in nftables mode.
func (fc *familyCtx) resolveNodePortAddresses(configured []netip.Prefix) {
	var cidrs []netip.Prefix
	if len(configured) == 0 {
		if fc.nodeIP.IsValid() && !fc.nodeIP.IsLoopback() {
			cidrs = append(cidrs, netip.PrefixFrom(fc.nodeIP, fc.nodeIP.BitLen()))
		}
	} else {
		for _, p := range configured {
			if p.IsValid() && familyHas(fc.family, p.Addr()) {
				cidrs = append(cidrs, p.Masked())
			}
		}
	}
	if len(cidrs) == 0 {
		fc.base.NodePortMatchAll = true
		return
	}
	for _, p := range cidrs {
		if p.Bits() == 0 {
			fc.base.NodePortMatchAll = true
			return
		}
	}
	// kube-proxy lists the node's interface addresses that fall in the
	// CIDRs; the model's node addresses stand for the interfaces. Loopback
	// addresses are skipped ("localhost NodePorts are not supported").
	if fc.node == nil {
		return
	}
	for _, a := range fc.node.Addresses {
		a = a.Unmap()
		if !familyHas(fc.family, a) || a.IsLoopback() || slices.Contains(fc.base.NodePortIPs, a) {
			continue
		}
		for _, p := range cidrs {
			if p.Contains(a) {
				fc.base.NodePortIPs = append(fc.base.NodePortIPs, a)
				break
			}
		}
	}
}

// serviceRender accumulates one Service's objects in one family.
type serviceRender struct {
	fc *familyCtx
	ss *ServiceState
	// chains is the set of sr.ss.Chains: a Service has one chain per
	// endpoint, and a scan per chain made a 100k-endpoint Service render
	// in minutes (quadratic).
	chains map[string]bool
}

// chain adds a chain once.
func (sr *serviceRender) chain(name string) {
	if sr.chains == nil {
		sr.chains = map[string]bool{}
	}
	if !sr.chains[name] {
		sr.chains[name] = true
		sr.ss.Chains = append(sr.ss.Chains, name)
	}
}

// hasElement reports whether an earlier port of the Service already added
// key to container, which is then not repeated, as nftElementStorage
// keeps one element per key.
func (sr *serviceRender) hasElement(container string, key []string) bool {
	for _, e := range sr.ss.Elements {
		if e.Set+e.Map == container && slices.Equal(e.Key, key) {
			return true
		}
	}
	return false
}

func (sr *serviceRender) rule(chain string, comment string, words ...any) {
	r := &knftables.Rule{Family: sr.fc.family, Table: kubeProxyTable, Chain: chain, Rule: knftables.Concat(words...)}
	if comment != "" {
		r.Comment = knftables.PtrTo(fitComment(comment))
	}
	sr.ss.Rules = append(sr.ss.Rules, r)
}

// fitComment cuts a comment to nft's limit (128 characters): a Service
// port name at the API's limits ("ns/name:port", 63 characters each) is
// longer, and nft refuses a whole transaction over one long comment.
func fitComment(c string) string {
	if len(c) > knftables.CommentLengthMax {
		c = c[:knftables.CommentLengthMax-3] + "..."
	}
	return c
}

// setElement adds a key to a set (cluster-ips). A key already added by an
// earlier port of the same Service is not repeated.
func (sr *serviceRender) setElement(set string, key ...string) {
	if sr.hasElement(set, key) {
		return
	}
	sr.ss.Elements = append(sr.ss.Elements, &knftables.Element{Family: sr.fc.family, Table: kubeProxyTable, Set: set, Key: key})
}

// mapElement adds a key and verdict to a map, with an optional comment.
func (sr *serviceRender) mapElement(m string, key []string, verdict string, comment string) {
	if sr.hasElement(m, key) {
		return
	}
	e := &knftables.Element{Family: sr.fc.family, Table: kubeProxyTable, Map: m, Key: key, Value: []string{verdict}}
	if comment != "" {
		e.Comment = knftables.PtrTo(fitComment(comment))
	}
	sr.ss.Elements = append(sr.ss.Elements, e)
}

// clusterIPOf returns the Service's ClusterIP of the family, if the Service
// is proxied in that family at all.
func clusterIPOf(svc *model.Service, f knftables.Family) (netip.Addr, bool) {
	if !svc.IsProxied() {
		return netip.Addr{}, false
	}
	for _, ip := range svc.ClusterIPs {
		if familyHas(f, ip) {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func filterAddrs(in []netip.Addr, f knftables.Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range in {
		if familyHas(f, a) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// narrow returns the Service as one family's proxier sees one of its ports
// (kube-proxy's BaseServicePortInfo): a shallow copy with only this port,
// only this family's endpoints, external IPs, LB IPs and source ranges.
// Narrowing Ports makes ExternallyAccessible a per-port fact, as it is in
// kube-proxy: a port without a NodePort of a Service with no external or
// LB IPs is not externally accessible, whatever its sibling ports have.
func narrow(svc *model.Service, p *model.ServicePort, f knftables.Family) (*model.Service, *model.ServicePort) {
	port := *p
	port.Endpoints = nil
	for _, ep := range p.Endpoints {
		if familyHas(f, ep.IP) {
			port.Endpoints = append(port.Endpoints, ep)
		}
	}
	s := *svc
	s.ExternalIPs = filterAddrs(svc.ExternalIPs, f)
	s.LoadBalancerIPs = filterAddrs(svc.LoadBalancerIPs, f)
	s.LoadBalancerSourceRanges = nil
	for _, r := range svc.LoadBalancerSourceRanges {
		if r.IsValid() && familyHas(f, r.Addr()) {
			s.LoadBalancerSourceRanges = append(s.LoadBalancerSourceRanges, r.Masked())
		}
	}
	s.Ports = []*model.ServicePort{&port}
	return &s, &port
}

func affinitySeconds(svc *model.Service) time.Duration {
	t := svc.AffinityTimeout
	if t <= 0 {
		t = model.DefaultAffinityTimeout
	}
	return t.Truncate(time.Second)
}

// renderService renders one Service in this family: kube-proxy's
// syncProxyRules loop body, once per port. It returns nil for a Service
// that has no ClusterIP of this family (headless, ExternalName, or the
// other family only).
func (fc *familyCtx) renderService(svc *model.Service) *ServiceState {
	clusterIP, ok := clusterIPOf(svc, fc.family)
	if !ok {
		return nil
	}
	sr := &serviceRender{fc: fc, ss: &ServiceState{Name: svc.Name}}
	for _, p := range svc.Ports {
		fc.renderPort(sr, svc, p, clusterIP)
	}
	sr.ss.Hash = hashService(sr.ss)
	return sr.ss
}

// endpointNames are the chain and affinity set of one endpoint.
type endpointNames struct {
	chain, affinitySet string
}

func (fc *familyCtx) renderPort(sr *serviceRender, svc *model.Service, p *model.ServicePort, clusterIP netip.Addr) {
	fsvc, fport := narrow(svc, p, fc.family)
	cat := model.Categorize(fsvc, fport, fc.node)

	protocol := strings.ToLower(string(p.Protocol))
	portStr := strconv.Itoa(int(p.Port))
	nameString := servicePortName(svc.Name, p.Name)
	base := fc.names.base(nameKey{svc: svc.Name, protocol: protocol, port: p.Name})
	clusterPolicyChain := servicePortPolicyClusterChainNamePrefix + base
	localPolicyChain := servicePortPolicyLocalChainNamePrefix + base
	externalTrafficChain := serviceExternalChainNamePrefix + base
	fwChain := servicePortFirewallChainNamePrefix + base
	affinity := svc.SessionAffinity

	epNames := map[*model.Endpoint]endpointNames{}
	names := func(ep *model.Endpoint) endpointNames {
		if n, ok := epNames[ep]; ok {
			return n
		}
		b := fc.names.base(nameKey{svc: svc.Name, protocol: protocol, port: p.Name, ep: netip.AddrPortFrom(ep.IP.Unmap(), uint16(ep.Port))})
		n := endpointNames{chain: servicePortEndpointChainNamePrefix + b, affinitySet: servicePortEndpointAffinityNamePrefix + b}
		epNames[ep] = n
		return n
	}

	// The endpoint chains this node can ever jump to.
	for _, ep := range cat.AllReachable {
		sr.chain(names(ep).chain)
	}

	usesClusterPolicyChain := len(cat.Cluster) > 0 && fsvc.UsesClusterEndpoints()
	if usesClusterPolicyChain {
		sr.chain(clusterPolicyChain)
	}
	usesLocalPolicyChain := len(cat.Local) > 0 && fsvc.UsesLocalEndpoints()
	if usesLocalPolicyChain {
		sr.chain(localPolicyChain)
	}

	// Internal (ClusterIP) traffic goes to the cluster-policy chain, or the
	// local one with iTP=Local; hasInternalEndpoints is false when iTP=Local
	// has nothing local.
	hasEndpoints := cat.HasAny
	internalTrafficChain := clusterPolicyChain
	hasInternalEndpoints := hasEndpoints
	if fsvc.InternalPolicyLocal() {
		internalTrafficChain = localPolicyChain
		if len(cat.Local) == 0 {
			hasInternalEndpoints = false
		}
	}

	// External (NodePort, external IP, LB IP) traffic always enters the
	// external chain, which short-circuits pod and node traffic before
	// applying the external policy.
	externalPolicyChain := clusterPolicyChain
	hasExternalEndpoints := hasEndpoints
	if fsvc.ExternalPolicyLocal() {
		externalPolicyChain = localPolicyChain
		if len(cat.Local) == 0 {
			hasExternalEndpoints = false
		}
	}
	// Based on hasEndpoints, not hasExternalEndpoints: the short-circuit
	// rules are needed even when no endpoint serves external traffic here.
	usesExternalTrafficChain := hasEndpoints && fsvc.ExternallyAccessible()
	if usesExternalTrafficChain {
		sr.chain(externalTrafficChain)
	}

	var internalTrafficFilterVerdict, externalTrafficFilterVerdict string
	if !hasEndpoints {
		// Nothing anywhere: REJECT, from the filter chains, every entry point.
		internalTrafficFilterVerdict = "goto " + rejectChain
		externalTrafficFilterVerdict = "goto " + rejectChain
	} else {
		if !hasInternalEndpoints {
			// iTP=Local with nothing local: DROP ClusterIP traffic.
			internalTrafficFilterVerdict = "drop"
		}
		if !hasExternalEndpoints {
			// eTP=Local with nothing local: DROP what the external chain
			// did not short-circuit.
			externalTrafficFilterVerdict = "drop"
		}
	}

	usesFWChain := len(fsvc.LoadBalancerIPs) > 0 && len(fsvc.LoadBalancerSourceRanges) > 0
	if usesFWChain {
		sr.chain(fwChain)
	}

	// Elements in the shared maps and sets.
	cip := clusterIP.String()
	sr.setElement(clusterIPsSet, cip)
	if hasInternalEndpoints {
		sr.mapElement(serviceIPsMap, []string{cip, protocol, portStr}, "goto "+internalTrafficChain, "")
	} else {
		sr.mapElement(noEndpointServicesMap, []string{cip, protocol, portStr}, internalTrafficFilterVerdict, nameString)
	}
	for _, extIP := range fsvc.ExternalIPs {
		key := []string{extIP.String(), protocol, portStr}
		if hasEndpoints {
			sr.mapElement(serviceIPsMap, key, "goto "+externalTrafficChain, "")
		}
		if !hasExternalEndpoints {
			sr.mapElement(noEndpointServicesMap, key, externalTrafficFilterVerdict, nameString)
		}
	}
	for _, lbIP := range fsvc.LoadBalancerIPs {
		key := []string{lbIP.String(), protocol, portStr}
		if hasEndpoints {
			sr.mapElement(serviceIPsMap, key, "goto "+externalTrafficChain, "")
		}
		if usesFWChain {
			sr.mapElement(firewallIPsMap, key, "goto "+fwChain, "")
		}
	}
	if !hasExternalEndpoints {
		for _, lbIP := range fsvc.LoadBalancerIPs {
			sr.mapElement(noEndpointServicesMap, []string{lbIP.String(), protocol, portStr}, externalTrafficFilterVerdict, nameString)
		}
	}
	if p.NodePort != 0 {
		key := []string{protocol, strconv.Itoa(int(p.NodePort))}
		if hasEndpoints {
			// NodePorts are not subject to loadBalancerSourceRanges, for
			// better or worse, and that cannot change now.
			sr.mapElement(serviceNodePortsMap, key, "goto "+externalTrafficChain, "")
		}
		if !hasExternalEndpoints {
			sr.mapElement(noEndpointNodePortsMap, key, externalTrafficFilterVerdict, nameString)
		}
	}

	// Internal traffic masquerade: everything with --masquerade-all, else
	// traffic from outside the pod network (it may bounce off-node).
	if hasInternalEndpoints {
		// The chain is reached for this port only (through service-ips, or
		// from the external chain with another daddr, which must not match).
		if fc.masqueradeAll {
			sr.rule(internalTrafficChain, "", fc.ipX, "daddr", cip, "jump", markMasqChain)
		} else if fc.localCIDR.IsValid() {
			sr.rule(internalTrafficChain, "", fc.ipX, "daddr", cip, fc.ipX, "saddr", "!=", fc.localCIDR.String(), "jump", markMasqChain)
		}
	}

	if usesExternalTrafficChain {
		if !fsvc.ExternalPolicyLocal() {
			// Endpoints may be remote: masquerade so replies come back.
			sr.rule(externalTrafficChain, "", "jump", markMasqChain)
		} else {
			if fc.localCIDR.IsValid() {
				// Pods reaching an external address behave as if they went
				// out to the load balancer and back: neither policy applies.
				sr.rule(externalTrafficChain, "short-circuit pod traffic", fc.ipX, "saddr", fc.localCIDR.String(), "goto", clusterPolicyChain)
			}
			// The node's own traffic picks the LB IP or node IP as source,
			// which is local: masquerade it and short-circuit it too.
			sr.rule(externalTrafficChain, "masquerade local traffic", "fib", "saddr", "type", "local", "jump", markMasqChain)
			sr.rule(externalTrafficChain, "short-circuit local traffic", "fib", "saddr", "type", "local", "goto", clusterPolicyChain)
		}
		if hasExternalEndpoints {
			sr.rule(externalTrafficChain, "", "goto", externalPolicyChain)
		}
	}

	if usesFWChain {
		var sources []string
		allowFromNode := false
		for _, cidr := range fsvc.LoadBalancerSourceRanges {
			if len(sources) > 0 {
				sources = append(sources, ",")
			}
			sources = append(sources, cidr.String())
			if fc.nodeIP.IsValid() && cidr.Contains(fc.nodeIP) {
				allowFromNode = true
			}
		}
		// A VIP-style LB often makes the LB IP local to the node, so the
		// node's own requests to it loop back with the LB IP as source.
		if allowFromNode {
			for _, lbIP := range fsvc.LoadBalancerIPs {
				sources = append(sources, ",", lbIP.String())
			}
		}
		sr.rule(fwChain, "", fc.ipX, "saddr", "!=", "{", sources, "}", "drop")
	}

	if affinity {
		// One set per endpoint, remembering client IPs for the timeout.
		// Affinity is per source IP and Service port, whichever of the
		// Service's IPs was used, as in the iptables mode.
		timeout := affinitySeconds(svc)
		for _, ep := range cat.AllReachable {
			sr.ss.Sets = append(sr.ss.Sets, &knftables.Set{
				Family: fc.family,
				Table:  kubeProxyTable,
				Name:   names(ep).affinitySet,
				Type:   fc.addrType,
				// "dynamic" too: some kernels add it by themselves, after
				// which re-adding the set without it would fail.
				Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
				Timeout: knftables.PtrTo(timeout),
			})
		}
	}

	if usesClusterPolicyChain {
		fc.writeServiceToEndpointRules(sr, affinity, clusterPolicyChain, cat.Cluster, names)
	}
	if usesLocalPolicyChain {
		fc.writeServiceToEndpointRules(sr, affinity, localPolicyChain, cat.Local, names)
	}

	for _, ep := range cat.AllReachable {
		n := names(ep)
		// Hairpin: an endpoint reaching itself through the Service must be
		// masqueraded so the reply comes back through this node.
		sr.rule(n.chain, "", fc.ipX, "saddr", ep.IP.Unmap().String(), "jump", markMasqChain)
		if affinity {
			sr.rule(n.chain, "", "update", "@", n.affinitySet, "{", fc.ipX, "saddr", "}")
		}
		sr.rule(n.chain, "", "meta l4proto", protocol, "dnat to", netip.AddrPortFrom(ep.IP.Unmap(), uint16(ep.Port)).String())
	}
}

// writeServiceToEndpointRules writes a policy chain: affinity lookups
// first, then one random pick among the endpoints.
func (fc *familyCtx) writeServiceToEndpointRules(sr *serviceRender, affinity bool, chain string, eps []*model.Endpoint, names func(*model.Endpoint) endpointNames) {
	if affinity {
		for _, ep := range eps {
			n := names(ep)
			sr.rule(chain, "", fc.ipX, "saddr", "@", n.affinitySet, "goto", n.chain)
		}
	}
	targets := make([]string, len(eps))
	for i, ep := range eps {
		targets[i] = names(ep).chain
	}
	fc.loadBalance(sr, chain, targets)
}

// loadBalance writes the rule that spreads new connections over the
// endpoint chains: kube-proxy's single numgen lookup in an anonymous
// verdict map, O(1) per packet.
//
// This is the one place the "nftables-flat" variant changes (flat.go):
// creating thousands of rules that each carry an anonymous map is
// super-linear on this kernel. Everything else stays as is.
func (fc *familyCtx) loadBalance(sr *serviceRender, chain string, targets []string) {
	if fc.layout == layoutFlat {
		fc.loadBalanceFlat(sr, chain, targets)
		return
	}
	var elements []string
	for i, t := range targets {
		elements = append(elements, strconv.Itoa(i), ":", "goto", t)
		if i != len(targets)-1 {
			elements = append(elements, ",")
		}
	}
	sr.rule(chain, "", "numgen random mod", len(targets), "vmap", "{", elements, "}")
}

// hashService fingerprints everything a Service renders, so a partial sync
// can tell which Services changed.
func hashService(ss *ServiceState) uint64 {
	h := fnv.New64a()
	w := func(parts ...string) {
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
		h.Write([]byte{'\n'})
	}
	for _, c := range ss.Chains {
		w("chain", c)
	}
	for _, s := range ss.Sets {
		w("set", s.Name, s.Type, s.Timeout.String())
	}
	for _, r := range ss.Rules {
		c := ""
		if r.Comment != nil {
			c = *r.Comment
		}
		w("rule", r.Chain, r.Rule, c)
	}
	for _, e := range ss.Elements {
		c := ""
		if e.Comment != nil {
			c = *e.Comment
		}
		w("element", e.Set, e.Map, strings.Join(e.Key, " . "), strings.Join(e.Value, " . "), c)
	}
	return h.Sum64()
}
