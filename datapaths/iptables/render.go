package iptables

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"reflect"
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
	// sorted: Services is sorted by name, one entry per name, as Render
	// makes it; the planner need not check.
	sorted bool
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
	// The model sorts Services by namespace, then name; the rules follow
	// the order of "namespace/name", which differs only when a namespace
	// is a prefix of another.
	// unique: the names strictly increase (no Service twice), which lets
	// the planner skip its own check.
	services := view.Cluster.Services
	unique := true
	for i := 1; i < len(services) && unique; i++ {
		unique = byName(services[i-1], services[i]) < 0
	}
	if !unique && !slices.IsSortedFunc(services, byName) {
		services = slices.Clone(services)
		slices.SortFunc(services, byName)
	}
	key := ""
	if cache != nil {
		key = cache.contextKey(view, env)
	}
	rs := &Ruleset{}
	for _, f := range families {
		var fcache *familyCache
		if cache != nil {
			fcache = cache.family(f)
		}
		rs.Families = append(rs.Families, renderFamily(view, services, unique, f, env, fcache, key))
	}
	return rs, nil
}

// detach returns a copy of rs whose Service chains share nothing with the
// render cache, for a hook that may alter them.
func (rs *Ruleset) detach() *Ruleset {
	out := &Ruleset{}
	for _, fr := range rs.Families {
		c := *fr
		// The hook may reorder or add Services: the planner checks again.
		c.sorted = false
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
	// The context of the last render and its key, so that the key is not
	// formatted again while the node (a copy, compared by value), the
	// proxy settings and env stay the same.
	node  *model.Node
	proxy datapaths.ProxyConfig
	env   Env
	key   string
}

// contextKey is a string that differs whenever the node, the proxy
// settings or env do, all of which every Service's render depends on.
func (c *renderCache) contextKey(view *datapaths.NodeView, env Env) string {
	p := view.Proxy
	// The node is compared by value with a copy: a caller that changes
	// its Node in place between syncs must still get a new key.
	if c.key != "" && reflect.DeepEqual(c.node, view.Node) && c.env == env && sameProxy(p, c.proxy) {
		return c.key
	}
	node := ""
	if view.Node != nil {
		node = fmt.Sprintf("%+v", *view.Node)
	}
	c.node, c.env, c.key = view.Node.Clone(), env, fmt.Sprintf("%+v|%+v|%s", env, p, node)
	c.proxy = p
	c.proxy.ClusterCIDRs = slices.Clone(p.ClusterCIDRs)
	c.proxy.ServiceCIDRs = slices.Clone(p.ServiceCIDRs)
	c.proxy.NodePortAddresses = slices.Clone(p.NodePortAddresses)
	return c.key
}

// sameProxy compares proxy settings (TestSameProxySeesEveryField checks
// that it knows every field).
func sameProxy(a, b datapaths.ProxyConfig) bool {
	return slices.Equal(a.ClusterCIDRs, b.ClusterCIDRs) && slices.Equal(a.ServiceCIDRs, b.ServiceCIDRs) &&
		slices.Equal(a.NodePortAddresses, b.NodePortAddresses) && a.MasqueradeAll == b.MasqueradeAll &&
		a.LocalhostNodePorts == b.LocalhostNodePorts && a.NoLocalTrafficDetector == b.NoLocalTrafficDetector
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

// familyCache is one family's cache: the entries of the last render in
// its Service order (prev) and those of the current one (next); what a
// render does not use is dropped. Both renders walk their Services sorted
// by name, so a cursor over prev finds each unchanged Service with a
// pointer comparison, without a map keyed by 10,000 Services.
type familyCache struct {
	key        string
	prev, next []*cachedService
	pos        int // the cursor in prev
	// proxied counts the last render's Services proxied in the family.
	proxied int
	// topLens are the top-level chains' lengths in the last render, so the
	// next one allocates them once.
	topLens [numTopChains]int
}

// cachedService is one Service's output: ok is false when the Service is
// not proxied in the family.
type cachedService struct {
	svc *model.Service
	sc  ServiceChains
	ok  bool
	top []topRule
}

// topRule is one rule a Service adds to a top-level chain.
type topRule struct {
	chain topChain
	rule  string
}

// begin starts a render with context key; a different key empties the
// cache, since every Service may render differently.
func (c *familyCache) begin(key string) {
	if c.key != key {
		c.prev = nil
	}
	c.key = key
	c.pos = 0
	c.next = c.next[:0]
}

// lookup returns the last render's entry for svc when it was the same
// Service (pointer), or nil. Calls come in name order.
func (c *familyCache) lookup(svc *model.Service) *cachedService {
	for c.pos < len(c.prev) {
		e := c.prev[c.pos]
		if e.svc == svc {
			c.pos++
			return e
		}
		if e.svc.Name.Compare(svc.Name) >= 0 {
			// svc is new, or changed (same name, another pointer).
			return nil
		}
		c.pos++ // e's Service is gone
	}
	return nil
}

// end makes this render's entries the ones the next render can reuse; the
// previous ones' array is kept, emptied, for the render after.
func (c *familyCache) end(fc *familyCtx, proxied int) {
	old := c.prev
	c.prev, c.next = c.next, old[:0]
	clear(old)
	c.proxied = proxied
	for i := range c.topLens {
		c.topLens[i] = len(fc.top[i])
	}
}

// topChain is one of the top-level chains, which Services add rules to and
// every sync rewrites; the order is their declaration order in each table.
type topChain uint8

const (
	filterServices topChain = iota
	filterExternalServices
	filterForward
	filterNodePorts
	filterProxyFirewall
	filterKubeletFirewall
	natServices
	natNodePorts
	natPostrouting
	natMarkMasq
	numTopChains
)

var topChainNames = [numTopChains]string{
	kubeServicesChain, kubeExternalServicesChain, kubeForwardChain, kubeNodePortsChain, kubeProxyFirewallChain, kubeletFirewallChain,
	kubeServicesChain, kubeNodePortsChain, kubePostroutingChain, kubeMarkMasqChain,
}

func (c topChain) table() string {
	if c < natServices {
		return tableFilter
	}
	return tableNAT
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

	// top holds the rules of the top-level chains.
	top [numTopChains][]string
	// record: keep each Service's top-level rules for the render cache.
	record bool
	// sr is the Service being rendered; its buffers are reused.
	sr serviceRender
}

// add appends a rule that belongs to no Service to a top-level chain.
func (fc *familyCtx) add(c topChain, words ...string) {
	fc.top[c] = append(fc.top[c], strings.Join(words, " "))
}

// replay adds a cached Service's top-level rules, in their order.
func (fc *familyCtx) replay(rules []topRule) {
	for _, r := range rules {
		fc.top[r.chain] = append(fc.top[r.chain], r.rule)
	}
}

// byName orders Services as their "namespace/name" strings sort.
func byName(a, b *model.Service) int { return a.Name.Compare(b.Name) }

// renderFamily renders one family; services are the view's, sorted by
// name, and unique says that no name repeats.
func renderFamily(view *datapaths.NodeView, services []*model.Service, unique bool, f Family, env Env, cache *familyCache, key string) *FamilyRules {
	fc := &familyCtx{family: f, env: env, proxy: view.Proxy, node: view.Node}
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
	// port of this family, usable or not, as kube-proxy's endpointsMap does;
	// the count stops once it is over the threshold.
	total := 0
	for _, svc := range view.Cluster.Services {
		if total > largeClusterEndpointsThreshold {
			break
		}
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

	out := &FamilyRules{Family: f, Jumps: slices.Clone(jumpRules), LocalhostNodePorts: fc.localhostNP, LargeCluster: fc.largeCluster, sorted: unique}

	if cache != nil {
		cache.begin(key + "|" + strconv.FormatBool(fc.largeCluster))
		defer func() { cache.end(fc, len(out.Services)) }()
		fc.record = true
		for i, n := range cache.topLens {
			if n > 0 {
				fc.top[i] = make([]string, 0, n)
			}
		}
	}

	fc.writeBaseRules()

	proxied := len(services)
	if cache != nil && cache.prev != nil {
		proxied = cache.proxied + 8
	}
	out.Services = make([]ServiceChains, 0, proxied)
	for _, svc := range services {
		var sc ServiceChains
		var ok bool
		var cs *cachedService
		if cache != nil {
			cs = cache.lookup(svc)
		}
		if cs != nil {
			fc.replay(cs.top)
			cache.next = append(cache.next, cs)
			sc, ok = cs.sc, cs.ok
		} else {
			var top []topRule
			sc, ok, top = fc.renderService(svc)
			if cache != nil {
				cache.next = append(cache.next, &cachedService{svc: svc, sc: sc, ok: ok, top: top})
			}
		}
		if ok {
			out.Services = append(out.Services, sc)
		}
	}
	fc.writeTailRules()

	out.Filter = make([]Chain, 0, natServices)
	out.NAT = make([]Chain, 0, numTopChains-natServices)
	for c := range numTopChains {
		if len(fc.top[c]) == 0 {
			fc.top[c] = nil
		}
		ch := Chain{Name: topChainNames[c], Rules: fc.top[c]}
		if c.table() == tableFilter {
			out.Filter = append(out.Filter, ch)
		} else {
			out.NAT = append(out.NAT, ch)
		}
	}
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
	fc.add(natPostrouting, "-m", "mark", "!", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "RETURN")
	// Clear the mark so a packet that re-traverses the stack (e.g. via a
	// bridge or tunnel) is not masqueraded twice.
	fc.add(natPostrouting, "-j", "MARK", "--xor-mark", masqueradeMark)
	masq := []string{"-m", "comment", "--comment", `"kubernetes service traffic requiring SNAT"`, "-j", "MASQUERADE"}
	if fc.env.RandomFully {
		masq = append(masq, "--random-fully")
	}
	fc.add(natPostrouting, masq...)
	fc.add(natMarkMasq, "-j", "MARK", "--or-mark", masqueradeMark)

	if fc.localhostNP {
		// route_localnet=1 lets martian packets to 127/8 in from outside;
		// this rule (kubelet's, duplicated by kube-proxy) closes that hole
		// except for traffic kube-proxy DNATed itself.
		fc.add(filterKubeletFirewall,
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
		fc.add(natServices, append(append([]string{"-m", "comment", "--comment", comment}, dst...), "-j", kubeNodePortsChain)...)
	} else {
		for _, ip := range fc.nodePortIPs {
			if ip.IsLoopback() && (fc.family == IPv6 || !fc.localhostNP) {
				continue
			}
			fc.add(natServices, "-m", "comment", "--comment", comment, "-d", ip.String(), "-j", kubeNodePortsChain)
		}
	}

	// Packets conntrack deems INVALID (e.g. out-of-window TCP) would
	// otherwise be forwarded un-NATed and draw RSTs (kubernetes#74839).
	if !fc.env.ConntrackTCPLiberal {
		fc.add(filterForward, "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	}
	// Accept marked traffic even where the FORWARD policy is DROP, so
	// NodePort traffic that needs forwarding works.
	fc.add(filterForward, "-m", "comment", "--comment", `"kubernetes forwarding rules"`,
		"-m", "mark", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "ACCEPT")
	fc.add(filterForward, "-m", "comment", "--comment", `"kubernetes forwarding conntrack rule"`,
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

// familyPort is one Service port as kube-proxy's per-family proxier sees
// it: the Service narrowed to one port and one family.
type familyPort struct {
	svc  *model.Service // ExternalIPs, LoadBalancerIPs, Ports narrowed
	port *model.ServicePort
	prot string // "tcp"
}

// narrow returns the Service and port as the family sees them. When the
// Service has this one port and nothing of another family, that is the
// Service itself; otherwise a shallow copy narrowed to the port and the
// family.
func narrow(svc *model.Service, p *model.ServicePort, f Family) familyPort {
	prot := lowerProtocol(p.Protocol)
	if len(svc.Ports) == 1 && allOf(svc.ExternalIPs, f) && allOf(svc.LoadBalancerIPs, f) &&
		!slices.ContainsFunc(p.Endpoints, func(ep *model.Endpoint) bool { return !f.has(ep.IP) }) {
		return familyPort{svc: svc, port: p, prot: prot}
	}
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
	return familyPort{svc: &s, port: &port, prot: prot}
}

func allOf(addrs []netip.Addr, f Family) bool {
	for _, a := range addrs {
		if !f.has(a) {
			return false
		}
	}
	return true
}

// lowerProtocol is the protocol as iptables matches it ("tcp").
func lowerProtocol(p model.Protocol) string {
	switch p {
	case model.TCP:
		return "tcp"
	case model.UDP:
		return "udp"
	case model.SCTP:
		return "sctp"
	}
	return strings.ToLower(string(p))
}

// categorize sorts one family-port's endpoints for this node with
// model.Categorize (kube-proxy's CategorizeEndpoints).
func categorize(fp familyPort, node *model.Node) model.Categorized {
	return model.Categorize(fp.svc, fp.port, node)
}

// serviceRender accumulates one Service's output in one family. Every
// chain name and rule of the Service is written into one buffer, which
// becomes one string when the Service is done; names and rules are
// substrings of it. Rendering 1,000 Services thus allocates a few objects
// per Service instead of a few per rule word. The buffers are reused from
// one Service to the next.
type serviceRender struct {
	text []byte
	// start is where the rule being written begins in text. Names (chain
	// names, endpoints) are appended to text too, so they must be made
	// before a rule begins, never while it is written.
	start  int
	chains []chainRec
	rules  []ruleRec
	// byName indexes chains once a Service has more than linearChains.
	byName map[string]int
	// seps are the KUBE-SEP names of the current port's endpoints; sepIdx
	// indexes them once there are more than linearChains.
	seps   []sepRec
	sepIdx map[*model.Endpoint]int
	hin    []byte // hash input
}

// linearChains: up to this many chains (or endpoints), a linear search
// is cheaper than a map.
const linearChains = 16

// span is a part of serviceRender.text.
type span struct{ lo, hi int }

type chainRec struct {
	name span
	n    int // rules
}

// ruleRec is one rule: of the Service chain chain, or, when chain is
// negative, of the top-level chain -1-chain.
type ruleRec struct {
	chain int
	text  span
}

// sepRec is an endpoint's KUBE-SEP chain name and its "IP:port".
type sepRec struct {
	ep              *model.Endpoint
	chain, endpoint span
}

func (sr *serviceRender) reset() {
	sr.text = sr.text[:0]
	sr.chains = sr.chains[:0]
	sr.rules = sr.rules[:0]
	clear(sr.byName)
}

func (sr *serviceRender) str(s span) string { return string(sr.text[s.lo:s.hi]) }

// appendName writes a chain name (prefix and hash) and returns it.
func (sr *serviceRender) appendName(prefix string, h *[16]byte) span {
	lo := len(sr.text)
	sr.text = append(sr.text, prefix...)
	sr.text = append(sr.text, h[:]...)
	return span{lo, len(sr.text)}
}

// declare adds a chain, once, in declaration order, and returns its index.
func (sr *serviceRender) declare(name span) int {
	key := sr.text[name.lo:name.hi]
	if len(sr.chains) <= linearChains {
		for i, c := range sr.chains {
			if string(sr.text[c.name.lo:c.name.hi]) == string(key) {
				return i
			}
		}
	} else if i, ok := sr.byName[string(key)]; ok {
		return i
	}
	sr.chains = append(sr.chains, chainRec{name: name})
	switch n := len(sr.chains); {
	case n == linearChains+1:
		if sr.byName == nil {
			sr.byName = map[string]int{}
		}
		for i, c := range sr.chains {
			sr.byName[sr.str(c.name)] = i
		}
	case n > linearChains+1:
		sr.byName[string(key)] = n - 1
	}
	return len(sr.chains) - 1
}

// declareHashed declares the chain prefix+h.
func (sr *serviceRender) declareHashed(prefix string, h *[16]byte) int {
	return sr.declare(sr.appendName(prefix, h))
}

// begin starts a rule.
func (sr *serviceRender) begin() { sr.start = len(sr.text) }

// sep separates the next word from the previous one of the rule.
func (sr *serviceRender) sep() {
	if len(sr.text) > sr.start {
		sr.text = append(sr.text, ' ')
	}
}

// w writes words.
func (sr *serviceRender) w(s string) {
	sr.sep()
	sr.text = append(sr.text, s...)
}

// span writes a name made earlier.
func (sr *serviceRender) span(s span) {
	sr.sep()
	sr.text = append(sr.text, sr.text[s.lo:s.hi]...)
}

func (sr *serviceRender) chainRef(prefix string, h *[16]byte) {
	sr.sep()
	sr.text = append(sr.text, prefix...)
	sr.text = append(sr.text, h[:]...)
}

func (sr *serviceRender) addr(a netip.Addr) {
	sr.sep()
	sr.text = a.AppendTo(sr.text)
}

func (sr *serviceRender) prefix(p netip.Prefix) {
	sr.sep()
	sr.text = p.AppendTo(sr.text)
}

func (sr *serviceRender) num(n int) {
	sr.sep()
	sr.text = strconv.AppendInt(sr.text, int64(n), 10)
}

// comment writes -m comment --comment "<pre><name><post>".
func (sr *serviceRender) comment(pre string, name span, post string) {
	sr.commentOpen(pre, name, post)
	sr.text = append(sr.text, '"')
}

// commentOpen is comment without the closing quote.
func (sr *serviceRender) commentOpen(pre string, name span, post string) {
	sr.w(`-m comment --comment "`)
	sr.text = append(sr.text, pre...)
	sr.text = append(sr.text, sr.text[name.lo:name.hi]...)
	sr.text = append(sr.text, post...)
}

// match writes -m <prot> -p <prot> -d <dst> --dport <port>.
func (sr *serviceRender) match(prot string, dst netip.Addr, port int) {
	sr.w("-m")
	sr.w(prot)
	sr.w("-p")
	sr.w(prot)
	sr.w("-d")
	sr.addr(dst)
	sr.w("--dport")
	sr.num(port)
}

// toTop ends the rule, in a top-level chain.
func (sr *serviceRender) toTop(c topChain) {
	sr.rules = append(sr.rules, ruleRec{chain: -1 - int(c), text: span{sr.start, len(sr.text)}})
}

// to ends the rule, in the Service chain i.
func (sr *serviceRender) to(i int) {
	sr.rules = append(sr.rules, ruleRec{chain: i, text: span{sr.start, len(sr.text)}})
	sr.chains[i].n++
}

// sepInfo returns an endpoint's KUBE-SEP name and "IP:port", made once per
// port: each is needed by the SVC, SVL and affinity rules and by its own
// chain.
func (sr *serviceRender) sepInfo(name span, prot string, ep *model.Endpoint) sepRec {
	if len(sr.seps) <= linearChains {
		for _, s := range sr.seps {
			if s.ep == ep {
				return s
			}
		}
	} else if i, ok := sr.sepIdx[ep]; ok {
		return sr.seps[i]
	}
	lo := len(sr.text)
	sr.text = netip.AddrPortFrom(ep.IP, uint16(ep.Port)).AppendTo(sr.text)
	s := sepRec{ep: ep, endpoint: span{lo, len(sr.text)}}
	sr.hin = append(append(append(sr.hin[:0], sr.text[name.lo:name.hi]...), prot...), sr.text[s.endpoint.lo:s.endpoint.hi]...)
	h := hash16(sr.hin)
	s.chain = sr.appendName(sepChainPrefix, &h)
	sr.seps = append(sr.seps, s)
	switch n := len(sr.seps); {
	case n == linearChains+1:
		if sr.sepIdx == nil {
			sr.sepIdx = map[*model.Endpoint]int{}
		}
		for i, s := range sr.seps {
			sr.sepIdx[s.ep] = i
		}
	case n > linearChains+1:
		sr.sepIdx[ep] = n - 1
	}
	return s
}

// resetSeps forgets the endpoints of the previous port: SEP names hash the
// port's name.
func (sr *serviceRender) resetSeps() {
	sr.seps = sr.seps[:0]
	clear(sr.sepIdx)
}

// renderService renders every port of a Service for this family; ok is
// false when the Service is not proxied in this family. top is the
// Service's top-level rules when the render cache wants them.
func (fc *familyCtx) renderService(svc *model.Service) (sc ServiceChains, ok bool, top []topRule) {
	clusterIP, ok := clusterIPOf(svc, fc.family)
	if !ok {
		return ServiceChains{}, false, nil
	}
	sr := &fc.sr
	sr.reset()
	sr.text = append(sr.text, svc.Name.Namespace...)
	sr.text = append(sr.text, '/')
	sr.text = append(sr.text, svc.Name.Name...)
	svcName := span{0, len(sr.text)}
	for _, p := range svc.Ports {
		// The port's name, kube-proxy's ServicePortName.String().
		name := svcName
		if p.Name != "" {
			name.lo = len(sr.text)
			sr.text = append(sr.text, sr.text[svcName.lo:svcName.hi]...)
			sr.text = append(sr.text, ':')
			sr.text = append(sr.text, p.Name...)
			name.hi = len(sr.text)
		}
		fc.renderPort(sr, name, narrow(svc, p, fc.family), clusterIP)
	}

	text := string(sr.text)
	sub := func(s span) string { return text[s.lo:s.hi] }
	sc = ServiceChains{Service: sub(svcName), Chains: make([]Chain, len(sr.chains))}
	// One array holds the rules of every chain, each chain's part capped
	// so that appending to one cannot overwrite the next.
	n := 0
	for _, c := range sr.chains {
		n += c.n
	}
	rules := make([]string, n)
	n = 0
	for i, c := range sr.chains {
		sc.Chains[i].Name = sub(c.name)
		if c.n > 0 {
			sc.Chains[i].Rules = rules[n:n:(n + c.n)]
			n += c.n
		}
	}
	if fc.record && len(sr.rules) > n {
		top = make([]topRule, 0, len(sr.rules)-n)
	}
	var h maphash.Hash
	h.SetSeed(hashSeed)
	h.WriteString(sc.Service)
	h.WriteByte('\n')
	for _, r := range sr.rules {
		rule := sub(r.text)
		if r.chain >= 0 {
			c := &sc.Chains[r.chain]
			c.Rules = append(c.Rules, rule)
			continue
		}
		t := topChain(-1 - r.chain)
		fc.top[t] = append(fc.top[t], rule)
		if fc.record {
			top = append(top, topRule{chain: t, rule: rule})
		}
		h.WriteString(t.table())
		h.WriteByte(' ')
		h.WriteString(topChainNames[t])
		h.WriteByte(' ')
		h.WriteString(rule)
		h.WriteByte('\n')
	}
	for _, c := range sc.Chains {
		h.WriteByte(':')
		h.WriteString(c.Name)
		h.WriteByte('\n')
		for _, r := range c.Rules {
			h.WriteString(r)
			h.WriteByte('\n')
		}
	}
	sc.Hash = strconv.FormatUint(h.Sum64(), 16)
	return sc, true, top
}

// hashSeed keys the change hashes. Hashes are compared only with those of
// the same process (the applied state lives in memory), so a per-process
// seed is enough, and maphash is an order of magnitude cheaper than SHA-256
// when a sync renders 100k rules.
var hashSeed = maphash.MakeSeed()

// renderPort mirrors the body of kube-proxy's per-service-port loop in
// syncProxyRules. name is the port's name ("ns/name:port") in sr.text.
func (fc *familyCtx) renderPort(sr *serviceRender, name span, fp familyPort, clusterIP netip.Addr) {
	svc, prot := fp.svc, fp.prot
	port := int(fp.port.Port)
	cat := categorize(fp, fc.node)
	hasEndpoints := cat.HasAny
	sr.resetSeps()

	// One hash names all four per-port chains: KUBE-SVC-<h> and so on.
	sr.hin = append(append(sr.hin[:0], sr.text[name.lo:name.hi]...), prot...)
	h := hash16(sr.hin)
	usesClusterPolicyChain := len(cat.Cluster) > 0 && svc.UsesClusterEndpoints()
	usesLocalPolicyChain := len(cat.Local) > 0 && svc.UsesLocalEndpoints()

	internalChain := svcChainPrefix
	hasInternalEndpoints := hasEndpoints
	if svc.InternalPolicyLocal() {
		internalChain = svlChainPrefix
		if len(cat.Local) == 0 {
			hasInternalEndpoints = false
		}
	}
	externalPolicyChain := svcChainPrefix
	hasExternalEndpoints := hasEndpoints
	if svc.ExternalPolicyLocal() {
		externalPolicyChain = svlChainPrefix
		if len(cat.Local) == 0 {
			hasExternalEndpoints = false
		}
	}
	// The EXT chain exists whenever anything has endpoints, because it
	// holds the short-circuit rules for pod and node traffic even when no
	// endpoint can take external traffic.
	usesExternalChain := hasEndpoints && svc.ExternallyAccessible()

	lbChain := extChainPrefix
	srcRanges := sourceRanges(svc.LoadBalancerSourceRanges, fc.family)
	usesFWChain := hasEndpoints && len(svc.LoadBalancerIPs) > 0 && len(srcRanges) > 0
	if usesFWChain {
		lbChain = fwChainPrefix
	}

	// The filter rules' targets, and their comments after the port name.
	var internalFilterTarget, internalFilterComment, externalFilterTarget, externalFilterComment string
	if !hasEndpoints {
		// Nothing anywhere: REJECT, so clients fail fast.
		internalFilterTarget, externalFilterTarget = "REJECT", "REJECT"
		internalFilterComment = " has no endpoints"
		externalFilterComment = internalFilterComment
	} else {
		// Endpoints exist, just not here: DROP, so the client retries or
		// times out rather than being told the Service is gone.
		if !hasInternalEndpoints {
			internalFilterTarget = "DROP"
			internalFilterComment = " has no local endpoints"
		}
		if !hasExternalEndpoints {
			externalFilterTarget = "DROP"
			externalFilterComment = " has no local endpoints"
		}
	}

	// Capture the ClusterIP.
	sr.begin()
	if hasInternalEndpoints {
		sr.comment("", name, " cluster IP")
		sr.match(prot, clusterIP, port)
		sr.w("-j")
		sr.chainRef(internalChain, &h)
		sr.toTop(natServices)
	} else {
		sr.comment("", name, internalFilterComment)
		sr.match(prot, clusterIP, port)
		sr.w("-j")
		sr.w(internalFilterTarget)
		sr.toTop(filterServices)
	}

	// Capture externalIPs.
	for _, ip := range svc.ExternalIPs {
		if hasEndpoints {
			sr.begin()
			sr.comment("", name, " external IP")
			sr.match(prot, ip, port)
			sr.w("-j")
			sr.chainRef(extChainPrefix, &h)
			sr.toTop(natServices)
		}
		if !hasExternalEndpoints {
			sr.begin()
			sr.comment("", name, externalFilterComment)
			sr.match(prot, ip, port)
			sr.w("-j")
			sr.w(externalFilterTarget)
			sr.toTop(filterExternalServices)
		}
	}

	// Capture load-balancer ingress IPs.
	for _, ip := range svc.LoadBalancerIPs {
		if hasEndpoints {
			sr.begin()
			sr.comment("", name, " loadbalancer IP")
			sr.match(prot, ip, port)
			sr.w("-j")
			sr.chainRef(lbChain, &h)
			sr.toTop(natServices)
		}
		if usesFWChain {
			// Reached only by packets the KUBE-FW chain did not DNAT.
			sr.begin()
			sr.commentOpen("", name, " traffic not accepted by ")
			sr.text = append(sr.text, fwChainPrefix...)
			sr.text = append(sr.text, h[:]...)
			sr.text = append(sr.text, '"')
			sr.match(prot, ip, port)
			sr.w("-j DROP")
			sr.toTop(filterProxyFirewall)
		}
	}
	if !hasExternalEndpoints {
		for _, ip := range svc.LoadBalancerIPs {
			sr.begin()
			sr.comment("", name, externalFilterComment)
			sr.match(prot, ip, port)
			sr.w("-j")
			sr.w(externalFilterTarget)
			sr.toTop(filterExternalServices)
		}
	}

	// Capture NodePorts. loadBalancerSourceRanges never apply to them.
	if np := int(fp.port.NodePort); np != 0 {
		if hasEndpoints {
			sr.begin()
			sr.w("-m comment --comment")
			sr.span(name)
			sr.w("-m")
			sr.w(prot)
			sr.w("-p")
			sr.w(prot)
			sr.w("--dport")
			sr.num(np)
			sr.w("-j")
			sr.chainRef(extChainPrefix, &h)
			sr.toTop(natNodePorts)
		}
		if !hasExternalEndpoints {
			sr.begin()
			sr.comment("", name, externalFilterComment)
			sr.w("-m addrtype --dst-type LOCAL -m")
			sr.w(prot)
			sr.w("-p")
			sr.w(prot)
			sr.w("--dport")
			sr.num(np)
			sr.w("-j")
			sr.w(externalFilterTarget)
			sr.toTop(filterExternalServices)
		}
	}

	// Open the health-check node port in the node's firewall, whether or
	// not this node has local endpoints (the answer says which).
	if hc := healthCheckNodePort(svc); hc != 0 {
		sr.begin()
		sr.comment("", name, " health check node port")
		sr.w("-m tcp -p tcp --dport")
		sr.num(int(hc))
		sr.w("-j ACCEPT")
		sr.toTop(filterNodePorts)
	}

	// Internal traffic: masquerade what does not come from a pod, since a
	// static route to the Service range may bring outside traffic here.
	if hasInternalEndpoints && (fc.proxy.MasqueradeAll || fc.clusterCIDR.IsValid()) {
		c := sr.declareHashed(internalChain, &h)
		sr.begin()
		sr.comment("", name, " cluster IP")
		sr.match(prot, clusterIP, port)
		if !fc.proxy.MasqueradeAll {
			sr.w("! -s")
			sr.prefix(fc.clusterCIDR)
		}
		sr.w("-j " + kubeMarkMasqChain)
		sr.to(c)
	}

	if usesExternalChain {
		c := sr.declareHashed(extChainPrefix, &h)
		if !svc.ExternalPolicyLocal() {
			// Cluster policy may cross nodes: always SNAT.
			sr.begin()
			sr.comment("masquerade traffic for ", name, " external destinations")
			sr.w("-j " + kubeMarkMasqChain)
			sr.to(c)
		} else {
			if fc.clusterCIDR.IsValid() {
				// Pod traffic to an external address acts as if it left
				// the cluster and came back through an LB: all endpoints,
				// source kept.
				sr.begin()
				sr.comment("pod traffic for ", name, " external destinations")
				sr.w("-s")
				sr.prefix(fc.clusterCIDR)
				sr.w("-j")
				sr.chainRef(svcChainPrefix, &h)
				sr.to(c)
			}
			// Node-originated traffic picks a local (LB/node) source
			// address, so it must be masqueraded to get replies back.
			sr.begin()
			sr.comment("masquerade LOCAL traffic for ", name, " external destinations")
			sr.w("-m addrtype --src-type LOCAL -j " + kubeMarkMasqChain)
			sr.to(c)
			sr.begin()
			sr.comment("route LOCAL traffic for ", name, " external destinations")
			sr.w("-m addrtype --src-type LOCAL -j")
			sr.chainRef(svcChainPrefix, &h)
			sr.to(c)
		}
		if hasExternalEndpoints {
			sr.begin()
			sr.w("-j")
			sr.chainRef(externalPolicyChain, &h)
			sr.to(c)
		}
	}

	if usesFWChain {
		c := sr.declareHashed(fwChainPrefix, &h)
		allowFromNode := false
		for _, cidr := range srcRanges {
			sr.begin()
			sr.comment("", name, " loadbalancer IP")
			sr.w("-s")
			sr.prefix(cidr)
			sr.w("-j")
			sr.chainRef(extChainPrefix, &h)
			sr.to(c)
			if fc.nodeIP.IsValid() && cidr.Contains(fc.nodeIP) {
				allowFromNode = true
			}
		}
		// A node reaching its own VIP-style LB address loops back with the
		// LB IP as source; allow that when the node itself is allowed.
		if allowFromNode {
			for _, ip := range svc.LoadBalancerIPs {
				sr.begin()
				sr.comment("", name, " loadbalancer IP")
				sr.w("-s")
				sr.addr(ip)
				sr.w("-j")
				sr.chainRef(extChainPrefix, &h)
				sr.to(c)
			}
		}
		// Falling off the end leaves the packet un-DNATed, so filter
		// KUBE-PROXY-FIREWALL drops it.
		sr.begin()
		sr.comment("other traffic to ", name, " will be dropped by KUBE-PROXY-FIREWALL")
		sr.to(c)
	}

	if usesClusterPolicyChain {
		c := sr.declareHashed(svcChainPrefix, &h)
		fc.writeServiceToEndpointRules(sr, name, prot, svc, c, cat.Cluster)
	}
	if usesLocalPolicyChain {
		c := sr.declareHashed(svlChainPrefix, &h)
		fc.writeServiceToEndpointRules(sr, name, prot, svc, c, cat.Local)
	}

	for _, ep := range cat.AllReachable {
		si := sr.sepInfo(name, prot, ep)
		c := sr.declare(si.chain)
		// Hairpin: an endpoint reaching itself through the Service must be
		// SNATed or it would answer itself directly.
		sr.begin()
		fc.serviceComment(sr, name)
		sr.w("-s")
		sr.addr(ep.IP)
		sr.w("-j " + kubeMarkMasqChain)
		sr.to(c)
		sr.begin()
		fc.serviceComment(sr, name)
		if svc.SessionAffinity {
			sr.w("-m recent --name")
			sr.span(si.chain)
			sr.w("--set")
		}
		sr.w("-m")
		sr.w(prot)
		sr.w("-p")
		sr.w(prot)
		sr.w("-j DNAT --to-destination")
		sr.span(si.endpoint)
		sr.to(c)
	}
}

// serviceComment writes the per-endpoint comment, the port name unquoted;
// none in large cluster mode, as kube-proxy's appendServiceCommentLocked.
func (fc *familyCtx) serviceComment(sr *serviceRender, name span) {
	if fc.largeCluster {
		return
	}
	sr.w("-m comment --comment")
	sr.span(name)
}

// endpointComment writes -m comment --comment "<port name> -> <endpoint>",
// except in large cluster mode.
func (fc *familyCtx) endpointComment(sr *serviceRender, name span, si sepRec) {
	if fc.largeCluster {
		return
	}
	sr.commentOpen("", name, " -> ")
	sr.text = append(sr.text, sr.text[si.endpoint.lo:si.endpoint.hi]...)
	sr.text = append(sr.text, '"')
}

// writeServiceToEndpointRules fills a KUBE-SVC or KUBE-SVL chain: affinity
// checks first, then one probabilistic rule per endpoint. Rule i of n
// matches with probability 1/(n-i), which spreads load uniformly.
func (fc *familyCtx) writeServiceToEndpointRules(sr *serviceRender, name span, prot string, svc *model.Service, chain int, eps []*model.Endpoint) {
	if svc.SessionAffinity {
		seconds := int(svc.AffinityTimeout / time.Second)
		if seconds <= 0 {
			seconds = defaultAffinitySeconds
		}
		for _, ep := range eps {
			si := sr.sepInfo(name, prot, ep)
			sr.begin()
			fc.endpointComment(sr, name, si)
			sr.w("-m recent --name")
			sr.span(si.chain)
			sr.w("--rcheck --seconds")
			sr.num(seconds)
			sr.w("--reap -j")
			sr.span(si.chain)
			sr.to(chain)
		}
	}
	n := len(eps)
	for i, ep := range eps {
		si := sr.sepInfo(name, prot, ep)
		sr.begin()
		fc.endpointComment(sr, name, si)
		if i < n-1 {
			sr.w("-m statistic --mode random --probability")
			sr.w(fc.probs.get(n - i))
		}
		sr.w("-j")
		sr.span(si.chain)
		sr.to(chain)
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
