package iptables

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Family is an IP family; each has its own rule set, written with
// iptables-restore (IPv4) or ip6tables-restore (IPv6), as kube-proxy runs
// one proxier per family.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// has reports whether a belongs to the family.
func (f Family) has(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is4() == (f == IPv4) }

// families is the order in which rule sets are rendered and applied.
var families = []Family{IPv4, IPv6}

// largeClusterEndpointsThreshold: above this many endpoints kube-proxy
// drops the per-endpoint comments to shrink the restore input by ~40%
// ("large cluster mode"). Mirrored because it changes what each packet
// matches against (one match extension fewer per SVC and SEP rule).
const largeClusterEndpointsThreshold = 1000

// defaultAffinitySeconds is used when a ClientIP Service carries no timeout.
const defaultAffinitySeconds = int(model.DefaultAffinityTimeout / time.Second)

// Env holds the facts about the machine that change the rendered rules.
// They are probed once per datapath instance, never inside Render, so that
// Render stays a pure function.
type Env struct {
	// RandomFully: the iptables binary supports MASQUERADE --random-fully
	// (iptables >= 1.6.2), as kube-proxy's HasRandomFully.
	RandomFully bool
	// ConntrackTCPLiberal: nf_conntrack_tcp_be_liberal is non-zero in the
	// node's namespace, so kube-proxy omits the INVALID drop rule.
	ConntrackTCPLiberal bool
}

// Chain is a user-defined chain and its rules, in order. Each rule is the
// rule specification that follows "-A <Name> " in iptables-restore input,
// with comments already quoted the way kube-proxy writes them.
type Chain struct {
	Name  string
	Rules []string
}

// ServiceChains is what one Service contributes to one family: the nat
// chains it owns (KUBE-SVC/SVL/EXT/FW/SEP; none when it has no usable
// endpoints) and a hash over everything it renders, including its rules in
// the top-level chains. A partial sync rewrites Chains only for Services
// whose Hash changed.
type ServiceChains struct {
	Service string // "namespace/name"
	Chains  []Chain
	Hash    string
}

// JumpRule is a rule in a built-in chain that jumps to one of ours. These
// are not written by iptables-restore as whole chains (that would replace
// other software's rules in INPUT, PREROUTING, ...), but inserted at the
// top of the built-in chain when missing, as kube-proxy's EnsureRule.
type JumpRule struct {
	Table string // "filter" or "nat"
	Chain string // built-in chain, e.g. "PREROUTING"
	Spec  string // e.g. `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`
}

// FamilyRules is the whole desired state of one family.
type FamilyRules struct {
	Family Family
	// Jumps from built-in chains, in kube-proxy's order.
	Jumps []JumpRule
	// Filter holds every filter chain; all are rewritten on every sync.
	Filter []Chain
	// NAT holds the top-level nat chains; all are rewritten on every sync.
	NAT []Chain
	// Services holds the per-Service nat chains, sorted by Service.
	Services []ServiceChains
	// LocalhostNodePorts is true when NodePorts are served on 127.0.0.0/8,
	// which needs net.ipv4.conf.all.route_localnet=1 (IPv4 only).
	LocalhostNodePorts bool
	// LargeCluster is kube-proxy's large cluster mode (comments dropped).
	LargeCluster bool
}

// Ruleset is the desired state of a node: one FamilyRules per family, IPv4
// first.
type Ruleset struct {
	Families []*FamilyRules
}

// Rules counts every rule in the desired state, jump rules included.
func (fr *FamilyRules) Rules() int {
	n := len(fr.Jumps)
	for _, c := range fr.Filter {
		n += len(c.Rules)
	}
	for _, c := range fr.NAT {
		n += len(c.Rules)
	}
	for _, s := range fr.Services {
		for _, c := range s.Chains {
			n += len(c.Rules)
		}
	}
	return n
}

// Family returns the rules of one family, or nil.
func (rs *Ruleset) Family(f Family) *FamilyRules {
	for _, fr := range rs.Families {
		if fr.Family == f {
			return fr
		}
	}
	return nil
}

// jumpRules mirrors kube-proxy's iptablesJumpChains followed by the two
// kubelet jumps to KUBE-FIREWALL (iptablesKubeletJumpChains).
var jumpRules = []JumpRule{
	{tableFilter, "INPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`},
	{tableFilter, "FORWARD", `-m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`},
	{tableFilter, "INPUT", `-m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS`},
	{tableFilter, "FORWARD", `-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{tableFilter, "OUTPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{tableFilter, "FORWARD", `-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`},
	{tableFilter, "INPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`},
	{tableFilter, "OUTPUT", `-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`},
	{tableFilter, "FORWARD", `-m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`},
	{tableNAT, "OUTPUT", `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{tableNAT, "PREROUTING", `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`},
	{tableNAT, "POSTROUTING", `-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`},
	{tableFilter, "INPUT", `-j KUBE-FIREWALL`},
	{tableFilter, "OUTPUT", `-j KUBE-FIREWALL`},
}

// Render computes the desired rules for one node. It is deterministic: the
// same view and env always give byte-identical output. It needs no root.
func Render(view *datapaths.NodeView, env Env) (*Ruleset, error) {
	return render(view, env, nil)
}

// render is Render with an optional cache of what earlier renders of the
// same proxier produced (see renderCache).
func render(view *datapaths.NodeView, env Env, cache *renderCache) (*Ruleset, error) {
	if view == nil || view.Cluster == nil {
		return nil, errors.New("render iptables rules: no cluster in the node view")
	}
	rs := &Ruleset{}
	for _, f := range families {
		var fcache *familyCache
		if cache != nil {
			fcache = cache.family(f)
		}
		rs.Families = append(rs.Families, renderFamily(view, f, env, fcache))
	}
	return rs, nil
}

// detach returns a copy of rs whose Service chains share nothing with the
// render cache, for a hook that may alter them.
func (rs *Ruleset) detach() *Ruleset {
	out := &Ruleset{}
	for _, fr := range rs.Families {
		c := *fr
		c.Services = slices.Clone(fr.Services)
		for i := range c.Services {
			chains := slices.Clone(c.Services[i].Chains)
			for j := range chains {
				chains[j].Rules = slices.Clip(slices.Clone(chains[j].Rules))
			}
			c.Services[i].Chains = chains
		}
		out.Families = append(out.Families, &c)
	}
	return out
}

// renderCache remembers, per family, what each Service rendered in the
// last sync: its chains, hash and top-level rules. The model is immutable
// (model.Cluster), so a Service that is the same pointer as last time, in
// the same family context (node, proxy settings, env, large cluster
// mode), renders the same output again; a partial sync then renders only
// the Services that changed, as kube-proxy's change trackers let it skip
// the unchanged ones. The output is identical with or without the cache.
type renderCache struct {
	families map[Family]*familyCache
}

func newRenderCache() *renderCache { return &renderCache{families: map[Family]*familyCache{}} }

func (c *renderCache) family(f Family) *familyCache {
	fc := c.families[f]
	if fc == nil {
		fc = &familyCache{}
		c.families[f] = fc
	}
	return fc
}

// familyCache is one family's cache: entries of the last render (prev)
// and of the current one (next); what a render does not use is dropped.
type familyCache struct {
	key        string
	prev, next map[*model.Service]*cachedService
}

// cachedService is one Service's output: ok is false when the Service is
// not proxied in the family.
type cachedService struct {
	sc  ServiceChains
	ok  bool
	top []topRule
}

// topRule is one rule a Service adds to a top-level chain.
type topRule struct {
	table, chain, rule string
}

// begin starts a render with context key; a different key empties the
// cache, since every Service may render differently.
func (c *familyCache) begin(key string) {
	if c.key != key {
		c.prev = nil
	}
	c.key = key
	c.next = make(map[*model.Service]*cachedService, len(c.prev))
}

// end makes this render's entries the ones the next render can reuse.
func (c *familyCache) end() {
	c.prev, c.next = c.next, nil
}

// chainSet builds chains while keeping their declaration order.
type chainSet struct {
	order []string
	rules map[string][]string
}

func newChainSet(names ...string) *chainSet {
	cs := &chainSet{rules: map[string][]string{}}
	for _, n := range names {
		cs.declare(n)
	}
	return cs
}

func (cs *chainSet) declare(name string) {
	if _, ok := cs.rules[name]; !ok {
		cs.order = append(cs.order, name)
		cs.rules[name] = nil
	}
}

func (cs *chainSet) add(chain string, words ...string) {
	cs.rules[chain] = append(cs.rules[chain], strings.Join(words, " "))
}

func (cs *chainSet) chains() []Chain {
	out := make([]Chain, 0, len(cs.order))
	for _, n := range cs.order {
		out = append(out, Chain{Name: n, Rules: cs.rules[n]})
	}
	return out
}

// familyCtx holds the per-family, per-node settings derived from the view.
type familyCtx struct {
	family Family
	env    Env
	proxy  datapaths.ProxyConfig
	node   *model.Node

	// clusterCIDR is the local-traffic detector (--cluster-cidr) of this
	// family; invalid means "no detector".
	clusterCIDR netip.Prefix
	// nodeIP is the node's primary address of this family, used for the
	// node-to-own-LB allowance in KUBE-FW chains.
	nodeIP netip.Addr
	// nodePortMatchAll: --nodeport-addresses is unset for this family.
	nodePortMatchAll bool
	nodePortIPs      []netip.Addr
	localhostNP      bool
	largeCluster     bool
	probs            probabilityCache
	sepNames         map[*model.Endpoint]sepInfo

	filter *chainSet
	nat    *chainSet
	// top, while rendering a Service, records its top-level rules for the
	// render cache.
	top *[]topRule
}

// replay adds a cached Service's top-level rules, in their order.
func (fc *familyCtx) replay(rules []topRule) {
	for _, r := range rules {
		cs := fc.nat
		if r.table == tableFilter {
			cs = fc.filter
		}
		cs.rules[r.chain] = append(cs.rules[r.chain], r.rule)
	}
}

func renderFamily(view *datapaths.NodeView, f Family, env Env, cache *familyCache) *FamilyRules {
	fc := &familyCtx{family: f, env: env, proxy: view.Proxy, node: view.Node, sepNames: map[*model.Endpoint]sepInfo{}}
	for _, p := range view.Proxy.ClusterCIDRs {
		// kube-proxy's ClusterCIDR detector takes one CIDR per family.
		if p.IsValid() && f.has(p.Addr()) {
			fc.clusterCIDR = p.Masked()
			break
		}
	}
	if view.Node != nil {
		for _, a := range view.Node.Addresses {
			if f.has(a) {
				fc.nodeIP = a
				break
			}
		}
	}
	fc.resolveNodePortAddresses()

	// Large cluster mode counts every endpoint of every proxied Service
	// port of this family, usable or not, as kube-proxy's endpointsMap does.
	total := 0
	for _, svc := range view.Cluster.Services {
		if _, ok := clusterIPOf(svc, f); !ok {
			continue
		}
		for _, p := range svc.Ports {
			for _, ep := range p.Endpoints {
				if f.has(ep.IP) {
					total++
				}
			}
		}
	}
	fc.largeCluster = total > largeClusterEndpointsThreshold

	if cache != nil {
		node := ""
		if view.Node != nil {
			node = fmt.Sprintf("%+v", *view.Node)
		}
		cache.begin(fmt.Sprintf("%+v|%+v|%s|%v", env, view.Proxy, node, fc.largeCluster))
		defer cache.end()
	}

	fc.filter = newChainSet(kubeServicesChain, kubeExternalServicesChain, kubeForwardChain, kubeNodePortsChain, kubeProxyFirewallChain, kubeletFirewallChain)
	fc.nat = newChainSet(kubeServicesChain, kubeNodePortsChain, kubePostroutingChain, kubeMarkMasqChain)

	fc.writeBaseRules()

	out := &FamilyRules{Family: f, Jumps: slices.Clone(jumpRules), LocalhostNodePorts: fc.localhostNP, LargeCluster: fc.largeCluster}
	services := slices.Clone(view.Cluster.Services)
	slices.SortFunc(services, func(a, b *model.Service) int {
		return a.Name.Compare(b.Name)
	})
	out.Services = make([]ServiceChains, 0, len(services))
	for _, svc := range services {
		var cs *cachedService
		if cache != nil {
			cs = cache.prev[svc]
		}
		if cs == nil {
			cs = &cachedService{}
			fc.top = &cs.top
			cs.sc, cs.ok = fc.renderService(svc)
			fc.top = nil
		} else {
			fc.replay(cs.top)
		}
		if cache != nil {
			cache.next[svc] = cs
		}
		if cs.ok {
			out.Services = append(out.Services, cs.sc)
		}
	}
	fc.writeTailRules()

	out.Filter = fc.filter.chains()
	out.NAT = fc.nat.chains()
	return out
}

// resolveNodePortAddresses applies --nodeport-addresses to this family the
// way kube-proxy's NodePortAddresses does: only CIDRs of the family count,
// none (or a zero CIDR) means "every local address", and localhost
// NodePorts need the IPv4 loopback to be included.
func (fc *familyCtx) resolveNodePortAddresses() {
	var cidrs []netip.Prefix
	for _, p := range fc.proxy.NodePortAddresses {
		if p.IsValid() && fc.family.has(p.Addr()) {
			cidrs = append(cidrs, p.Masked())
		}
	}
	loopback4 := netip.MustParseAddr("127.0.0.0")
	containsLoopback := false
	if len(cidrs) == 0 {
		fc.nodePortMatchAll = true
		containsLoopback = fc.family == IPv4
	}
	for _, p := range cidrs {
		if fc.family == IPv4 && (p.Addr().IsLoopback() || p.Contains(loopback4)) {
			containsLoopback = true
		}
		if p.Bits() == 0 {
			fc.nodePortMatchAll = true
		}
	}
	// kube-proxy's IPv6 proxier is always built with localhost NodePorts
	// off: ::1 cannot be DNATed to a remote address.
	fc.localhostNP = fc.family == IPv4 && fc.proxy.LocalhostNodePorts && containsLoopback
	if fc.nodePortMatchAll {
		return
	}
	// kube-proxy lists interface addresses; the loopback interface comes
	// first and always holds 127.0.0.1 and ::1.
	candidates := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	if fc.node != nil {
		candidates = append(candidates, fc.node.Addresses...)
	}
	for _, a := range candidates {
		if !fc.family.has(a) || slices.Contains(fc.nodePortIPs, a) {
			continue
		}
		for _, p := range cidrs {
			if p.Contains(a) {
				fc.nodePortIPs = append(fc.nodePortIPs, a)
				break
			}
		}
	}
}

// writeBaseRules writes the rules that do not depend on any Service.
func (fc *familyCtx) writeBaseRules() {
	fc.nat.add(kubePostroutingChain, "-m", "mark", "!", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "RETURN")
	// Clear the mark so a packet that re-traverses the stack (e.g. via a
	// bridge or tunnel) is not masqueraded twice.
	fc.nat.add(kubePostroutingChain, "-j", "MARK", "--xor-mark", masqueradeMark)
	masq := []string{"-m", "comment", "--comment", `"kubernetes service traffic requiring SNAT"`, "-j", "MASQUERADE"}
	if fc.env.RandomFully {
		masq = append(masq, "--random-fully")
	}
	fc.nat.add(kubePostroutingChain, masq...)
	fc.nat.add(kubeMarkMasqChain, "-j", "MARK", "--or-mark", masqueradeMark)

	if fc.localhostNP {
		// route_localnet=1 lets martian packets to 127/8 in from outside;
		// this rule (kubelet's, duplicated by kube-proxy) closes that hole
		// except for traffic kube-proxy DNATed itself.
		fc.filter.add(kubeletFirewallChain,
			"-m", "comment", "--comment", `"block incoming localnet connections"`,
			"-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8",
			"-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP")
	}
}

// writeTailRules writes the rules that must come after every Service.
func (fc *familyCtx) writeTailRules() {
	const comment = `"kubernetes service nodeports; NOTE: this must be the last rule in this chain"`
	if fc.nodePortMatchAll {
		dst := []string{"-m", "addrtype", "--dst-type", "LOCAL"}
		// Block localhost NodePorts where they cannot work: always on IPv6,
		// and on IPv4 unless route_localnet was enabled for them.
		if fc.family == IPv6 {
			dst = append(dst, "!", "-d", "::1/128")
		} else if !fc.localhostNP {
			dst = append(dst, "!", "-d", "127.0.0.0/8")
		}
		fc.nat.add(kubeServicesChain, append(append([]string{"-m", "comment", "--comment", comment}, dst...), "-j", kubeNodePortsChain)...)
	} else {
		for _, ip := range fc.nodePortIPs {
			if ip.IsLoopback() && (fc.family == IPv6 || !fc.localhostNP) {
				continue
			}
			fc.nat.add(kubeServicesChain, "-m", "comment", "--comment", comment, "-d", ip.String(), "-j", kubeNodePortsChain)
		}
	}

	// Packets conntrack deems INVALID (e.g. out-of-window TCP) would
	// otherwise be forwarded un-NATed and draw RSTs (kubernetes#74839).
	if !fc.env.ConntrackTCPLiberal {
		fc.filter.add(kubeForwardChain, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	}
	// Accept marked traffic even where the FORWARD policy is DROP, so
	// NodePort traffic that needs forwarding works.
	fc.filter.add(kubeForwardChain, "-m", "comment", "--comment", `"kubernetes forwarding rules"`,
		"-m", "mark", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "ACCEPT")
	fc.filter.add(kubeForwardChain, "-m", "comment", "--comment", `"kubernetes forwarding conntrack rule"`,
		"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
}

// clusterIPOf returns the Service's ClusterIP of the family, if it is
// proxied in that family at all.
func clusterIPOf(svc *model.Service, f Family) (netip.Addr, bool) {
	if !svc.IsProxied() {
		return netip.Addr{}, false
	}
	for _, ip := range svc.ClusterIPs {
		if f.has(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func filterAddrs(in []netip.Addr, f Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range in {
		if f.has(a) {
			out = append(out, a)
		}
	}
	return out
}

// sourceRanges filters loadBalancerSourceRanges to the family; a zero CIDR
// means "allow any", the same as no ranges (kube-proxy newBaseServiceInfo).
func sourceRanges(in []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range in {
		if !p.IsValid() || !f.has(p.Addr()) {
			continue
		}
		if p.Bits() == 0 {
			return nil
		}
		out = append(out, p.Masked())
	}
	return out
}

// servicePortName is kube-proxy's ServicePortName.String().
func servicePortName(svc *model.Service, p *model.ServicePort) string {
	if p.Name == "" {
		return svc.Name.String()
	}
	return svc.Name.String() + ":" + p.Name
}

// familyPort is one Service port as kube-proxy's per-family proxier sees
// it: a shallow copy of the Service narrowed to one port and one family.
type familyPort struct {
	svc  *model.Service // ExternalIPs, LoadBalancerIPs, Ports narrowed
	port *model.ServicePort
	name string // "ns/name:port"
	prot string // "tcp"
}

func narrow(svc *model.Service, p *model.ServicePort, f Family) familyPort {
	port := *p
	port.Endpoints = nil
	for _, ep := range p.Endpoints {
		if f.has(ep.IP) {
			port.Endpoints = append(port.Endpoints, ep)
		}
	}
	s := *svc
	s.ExternalIPs = filterAddrs(svc.ExternalIPs, f)
	s.LoadBalancerIPs = filterAddrs(svc.LoadBalancerIPs, f)
	// Narrowing Ports to this one port makes ExternallyAccessible per port,
	// as kube-proxy's (a port without a NodePort of a Service whose other
	// port has one is not externally accessible through it).
	s.Ports = []*model.ServicePort{&port}
	return familyPort{svc: &s, port: &port, name: servicePortName(svc, p), prot: strings.ToLower(string(p.Protocol))}
}

// categorize sorts one family-port's endpoints for this node with
// model.Categorize (kube-proxy's CategorizeEndpoints).
func categorize(fp familyPort, node *model.Node) model.Categorized {
	return model.Categorize(fp.svc, fp.port, node)
}

// serviceRender accumulates one Service's output in one family.
type serviceRender struct {
	chains *chainSet
	hash   []string // top-level lines, for the change hash
	record *[]topRule
}

func (sr *serviceRender) top(cs *chainSet, table, chain string, words ...string) {
	rule := strings.Join(words, " ")
	cs.rules[chain] = append(cs.rules[chain], rule)
	sr.hash = append(sr.hash, table+" "+chain+" "+rule)
	if sr.record != nil {
		*sr.record = append(*sr.record, topRule{table: table, chain: chain, rule: rule})
	}
}

// renderService renders every port of a Service for this family; ok is
// false when the Service is not proxied in this family.
func (fc *familyCtx) renderService(svc *model.Service) (ServiceChains, bool) {
	clusterIP, ok := clusterIPOf(svc, fc.family)
	if !ok {
		return ServiceChains{}, false
	}
	sr := &serviceRender{chains: newChainSet(), record: fc.top}
	for _, p := range svc.Ports {
		fc.renderPort(sr, narrow(svc, p, fc.family), clusterIP)
	}
	sc := ServiceChains{Service: svc.Name.String(), Chains: sr.chains.chains()}
	var h maphash.Hash
	h.SetSeed(hashSeed)
	line := func(s string) {
		h.WriteString(s)
		h.WriteByte('\n')
	}
	line(sc.Service)
	for _, l := range sr.hash {
		line(l)
	}
	for _, c := range sc.Chains {
		line(":" + c.Name)
		for _, r := range c.Rules {
			line(r)
		}
	}
	sc.Hash = strconv.FormatUint(h.Sum64(), 16)
	return sc, true
}

// hashSeed keys the change hashes. Hashes are compared only with those of
// the same process (the applied state lives in memory), so a per-process
// seed is enough, and maphash is an order of magnitude cheaper than SHA-256
// when a sync renders 100k rules.
var hashSeed = maphash.MakeSeed()

// renderPort mirrors the body of kube-proxy's per-service-port loop in
// syncProxyRules.
func (fc *familyCtx) renderPort(sr *serviceRender, fp familyPort, clusterIP netip.Addr) {
	svc, name, prot := fp.svc, fp.name, fp.prot
	port := strconv.Itoa(int(fp.port.Port))
	cat := categorize(fp, fc.node)
	hasEndpoints := cat.HasAny

	// One hash names all four per-port chains.
	portHash := portProtoHash(name, prot)
	clusterPolicyChain := svcChainPrefix + portHash
	usesClusterPolicyChain := len(cat.Cluster) > 0 && svc.UsesClusterEndpoints()
	localPolicyChain := svlChainPrefix + portHash
	usesLocalPolicyChain := len(cat.Local) > 0 && svc.UsesLocalEndpoints()

	internalChain := clusterPolicyChain
	hasInternalEndpoints := hasEndpoints
	if svc.InternalPolicyLocal() {
		internalChain = localPolicyChain
		if len(cat.Local) == 0 {
			hasInternalEndpoints = false
		}
	}
	externalPolicyChain := clusterPolicyChain
	hasExternalEndpoints := hasEndpoints
	if svc.ExternalPolicyLocal() {
		externalPolicyChain = localPolicyChain
		if len(cat.Local) == 0 {
			hasExternalEndpoints = false
		}
	}
	externalChain := extChainPrefix + portHash
	// The EXT chain exists whenever anything has endpoints, because it
	// holds the short-circuit rules for pod and node traffic even when no
	// endpoint can take external traffic.
	usesExternalChain := hasEndpoints && svc.ExternallyAccessible()

	lbChain := externalChain
	fwChain := fwChainPrefix + portHash
	srcRanges := sourceRanges(svc.LoadBalancerSourceRanges, fc.family)
	usesFWChain := hasEndpoints && len(svc.LoadBalancerIPs) > 0 && len(srcRanges) > 0
	if usesFWChain {
		lbChain = fwChain
	}

	var internalFilterTarget, internalFilterComment, externalFilterTarget, externalFilterComment string
	if !hasEndpoints {
		// Nothing anywhere: REJECT, so clients fail fast.
		internalFilterTarget, externalFilterTarget = "REJECT", "REJECT"
		internalFilterComment = fmt.Sprintf(`"%s has no endpoints"`, name)
		externalFilterComment = internalFilterComment
	} else {
		// Endpoints exist, just not here: DROP, so the client retries or
		// times out rather than being told the Service is gone.
		if !hasInternalEndpoints {
			internalFilterTarget = "DROP"
			internalFilterComment = fmt.Sprintf(`"%s has no local endpoints"`, name)
		}
		if !hasExternalEndpoints {
			externalFilterTarget = "DROP"
			externalFilterComment = fmt.Sprintf(`"%s has no local endpoints"`, name)
		}
	}

	match := func(dst string) []string {
		return []string{"-m", prot, "-p", prot, "-d", dst, "--dport", port}
	}
	withComment := func(comment string, words ...string) []string {
		return append([]string{"-m", "comment", "--comment", comment}, words...)
	}

	// Capture the ClusterIP.
	if hasInternalEndpoints {
		sr.top(fc.nat, tableNAT, kubeServicesChain, append(withComment(fmt.Sprintf(`"%s cluster IP"`, name), match(clusterIP.String())...), "-j", internalChain)...)
	} else {
		sr.top(fc.filter, tableFilter, kubeServicesChain, append(withComment(internalFilterComment, match(clusterIP.String())...), "-j", internalFilterTarget)...)
	}

	// Capture externalIPs.
	for _, ip := range svc.ExternalIPs {
		if hasEndpoints {
			sr.top(fc.nat, tableNAT, kubeServicesChain, append(withComment(fmt.Sprintf(`"%s external IP"`, name), match(ip.String())...), "-j", externalChain)...)
		}
		if !hasExternalEndpoints {
			sr.top(fc.filter, tableFilter, kubeExternalServicesChain, append(withComment(externalFilterComment, match(ip.String())...), "-j", externalFilterTarget)...)
		}
	}

	// Capture load-balancer ingress IPs.
	for _, ip := range svc.LoadBalancerIPs {
		if hasEndpoints {
			sr.top(fc.nat, tableNAT, kubeServicesChain, append(withComment(fmt.Sprintf(`"%s loadbalancer IP"`, name), match(ip.String())...), "-j", lbChain)...)
		}
		if usesFWChain {
			// Reached only by packets the KUBE-FW chain did not DNAT.
			sr.top(fc.filter, tableFilter, kubeProxyFirewallChain, append(withComment(fmt.Sprintf(`"%s traffic not accepted by %s"`, name, fwChain), match(ip.String())...), "-j", "DROP")...)
		}
	}
	if !hasExternalEndpoints {
		for _, ip := range svc.LoadBalancerIPs {
			sr.top(fc.filter, tableFilter, kubeExternalServicesChain, append(withComment(externalFilterComment, match(ip.String())...), "-j", externalFilterTarget)...)
		}
	}

	// Capture NodePorts. loadBalancerSourceRanges never apply to them.
	if np := fp.port.NodePort; np != 0 {
		nps := strconv.Itoa(int(np))
		if hasEndpoints {
			sr.top(fc.nat, tableNAT, kubeNodePortsChain, "-m", "comment", "--comment", name, "-m", prot, "-p", prot, "--dport", nps, "-j", externalChain)
		}
		if !hasExternalEndpoints {
			sr.top(fc.filter, tableFilter, kubeExternalServicesChain, append(withComment(externalFilterComment, "-m", "addrtype", "--dst-type", "LOCAL"),
				"-m", prot, "-p", prot, "--dport", nps, "-j", externalFilterTarget)...)
		}
	}

	// Open the health-check node port in the node's firewall, whether or
	// not this node has local endpoints (the answer says which).
	if hc := healthCheckNodePort(svc); hc != 0 {
		sr.top(fc.filter, tableFilter, kubeNodePortsChain, "-m", "comment", "--comment", fmt.Sprintf(`"%s health check node port"`, name),
			"-m", "tcp", "-p", "tcp", "--dport", strconv.Itoa(int(hc)), "-j", "ACCEPT")
	}

	nat := sr.chains
	// Internal traffic: masquerade what does not come from a pod, since a
	// static route to the Service range may bring outside traffic here.
	if hasInternalEndpoints {
		args := withComment(fmt.Sprintf(`"%s cluster IP"`, name), match(clusterIP.String())...)
		if fc.proxy.MasqueradeAll {
			nat.declare(internalChain)
			nat.add(internalChain, append(args, "-j", kubeMarkMasqChain)...)
		} else if fc.clusterCIDR.IsValid() {
			nat.declare(internalChain)
			nat.add(internalChain, append(args, "!", "-s", fc.clusterCIDR.String(), "-j", kubeMarkMasqChain)...)
		}
	}

	if usesExternalChain {
		nat.declare(externalChain)
		if !svc.ExternalPolicyLocal() {
			// Cluster policy may cross nodes: always SNAT.
			nat.add(externalChain, "-m", "comment", "--comment", fmt.Sprintf(`"masquerade traffic for %s external destinations"`, name), "-j", kubeMarkMasqChain)
		} else {
			if fc.clusterCIDR.IsValid() {
				// Pod traffic to an external address acts as if it left
				// the cluster and came back through an LB: all endpoints,
				// source kept.
				nat.add(externalChain, "-m", "comment", "--comment", fmt.Sprintf(`"pod traffic for %s external destinations"`, name),
					"-s", fc.clusterCIDR.String(), "-j", clusterPolicyChain)
			}
			// Node-originated traffic picks a local (LB/node) source
			// address, so it must be masqueraded to get replies back.
			nat.add(externalChain, "-m", "comment", "--comment", fmt.Sprintf(`"masquerade LOCAL traffic for %s external destinations"`, name),
				"-m", "addrtype", "--src-type", "LOCAL", "-j", kubeMarkMasqChain)
			nat.add(externalChain, "-m", "comment", "--comment", fmt.Sprintf(`"route LOCAL traffic for %s external destinations"`, name),
				"-m", "addrtype", "--src-type", "LOCAL", "-j", clusterPolicyChain)
		}
		if hasExternalEndpoints {
			nat.add(externalChain, "-j", externalPolicyChain)
		}
	}

	if usesFWChain {
		nat.declare(fwChain)
		args := []string{"-m", "comment", "--comment", fmt.Sprintf(`"%s loadbalancer IP"`, name)}
		allowFromNode := false
		for _, cidr := range srcRanges {
			nat.add(fwChain, append(slices.Clone(args), "-s", cidr.String(), "-j", externalChain)...)
			if fc.nodeIP.IsValid() && cidr.Contains(fc.nodeIP) {
				allowFromNode = true
			}
		}
		// A node reaching its own VIP-style LB address loops back with the
		// LB IP as source; allow that when the node itself is allowed.
		if allowFromNode {
			for _, ip := range svc.LoadBalancerIPs {
				nat.add(fwChain, append(slices.Clone(args), "-s", ip.String(), "-j", externalChain)...)
			}
		}
		// Falling off the end leaves the packet un-DNATed, so filter
		// KUBE-PROXY-FIREWALL drops it.
		nat.add(fwChain, "-m", "comment", "--comment", fmt.Sprintf(`"other traffic to %s will be dropped by KUBE-PROXY-FIREWALL"`, name))
	}

	if usesClusterPolicyChain {
		nat.declare(clusterPolicyChain)
		fc.writeServiceToEndpointRules(nat, name, prot, svc, clusterPolicyChain, cat.Cluster)
	}
	if usesLocalPolicyChain {
		nat.declare(localPolicyChain)
		fc.writeServiceToEndpointRules(nat, name, prot, svc, localPolicyChain, cat.Local)
	}

	for _, ep := range cat.AllReachable {
		si := fc.sepInfo(name, prot, ep)
		sep := si.chain
		nat.declare(sep)
		args := fc.serviceComment(name)
		// Hairpin: an endpoint reaching itself through the Service must be
		// SNATed or it would answer itself directly.
		nat.add(sep, append(slices.Clone(args), "-s", ep.IP.String(), "-j", kubeMarkMasqChain)...)
		if svc.SessionAffinity {
			args = append(args, "-m", "recent", "--name", sep, "--set")
		}
		nat.add(sep, append(args, "-m", prot, "-p", prot, "-j", "DNAT", "--to-destination", si.endpoint)...)
	}
	clear(fc.sepNames)
}

// sepInfo is an endpoint's KUBE-SEP chain name and its "IP:port".
type sepInfo struct {
	chain, endpoint string
}

// sepInfo caches KUBE-SEP names within one Service port: each endpoint's
// name is needed by the SVC, SVL and affinity rules and by its own chain.
func (fc *familyCtx) sepInfo(name, prot string, ep *model.Endpoint) sepInfo {
	if si, ok := fc.sepNames[ep]; ok {
		return si
	}
	s := ep.String()
	si := sepInfo{chain: sepChainName(name, prot, s), endpoint: s}
	fc.sepNames[ep] = si
	return si
}

// serviceComment is the per-endpoint comment, dropped in large cluster
// mode as kube-proxy's appendServiceCommentLocked does.
func (fc *familyCtx) serviceComment(comment string) []string {
	if fc.largeCluster {
		return nil
	}
	return []string{"-m", "comment", "--comment", comment}
}

// writeServiceToEndpointRules fills a KUBE-SVC or KUBE-SVL chain: affinity
// checks first, then one probabilistic rule per endpoint. Rule i of n
// matches with probability 1/(n-i), which spreads load uniformly.
func (fc *familyCtx) writeServiceToEndpointRules(nat *chainSet, name, prot string, svc *model.Service, chain string, eps []*model.Endpoint) {
	if svc.SessionAffinity {
		seconds := int(svc.AffinityTimeout / time.Second)
		if seconds <= 0 {
			seconds = defaultAffinitySeconds
		}
		for _, ep := range eps {
			si := fc.sepInfo(name, prot, ep)
			args := fc.serviceComment(`"` + name + " -> " + si.endpoint + `"`)
			nat.add(chain, append(args, "-m", "recent", "--name", si.chain, "--rcheck", "--seconds", strconv.Itoa(seconds), "--reap", "-j", si.chain)...)
		}
	}
	n := len(eps)
	for i, ep := range eps {
		si := fc.sepInfo(name, prot, ep)
		var args []string
		if !fc.largeCluster {
			// Room for the statistic match too, so appends do not copy.
			args = append(make([]string, 0, 12), "-m", "comment", "--comment", `"`+name+" -> "+si.endpoint+`"`)
		}
		if i < n-1 {
			args = append(args, "-m", "statistic", "--mode", "random", "--probability", fc.probs.get(n-i))
		}
		nat.add(chain, append(args, "-j", si.chain)...)
	}
}

// healthCheckNodePort is the port kube-proxy opens, which it does only
// for LoadBalancer Services with eTP=Local (apiservice.NeedsHealthCheck).
func healthCheckNodePort(svc *model.Service) int32 {
	if svc.Type != model.LoadBalancer || svc.ExternalTrafficPolicy != model.PolicyLocal {
		return 0
	}
	return svc.HealthCheckNodePort
}
