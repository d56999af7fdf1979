package ipvs

import (
	"cmp"
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

// Schedulers this datapath accepts for Config.Options["scheduler"]. They
// are the IPVS schedulers the issue asks to compare; the kernel has more,
// and kube-proxy passes --ipvs-scheduler through unchecked.
var Schedulers = []string{"rr", "wrr", "lc", "sh", "mh"}

// DefaultScheduler is kube-proxy's default --ipvs-scheduler.
const DefaultScheduler = "rr"

// defaultAffinitySeconds is used when a ClientIP Service carries no timeout.
const defaultAffinitySeconds = uint32(model.DefaultAffinityTimeout / time.Second)

// Env holds the settings and the machine facts that change the rendered
// state. Sync probes the facts each time (kube-proxy lists the node's
// addresses on every sync); Render never looks at the machine, so it
// stays a pure function.
type Env struct {
	// Scheduler is the IPVS scheduler of every virtual server
	// (--ipvs-scheduler); "" means DefaultScheduler.
	Scheduler string
	// LocalAddrs are the node's own addresses on every interface except
	// kube-ipvs0, loopback and IPv6 link-local excluded (kube-proxy's
	// GetAllLocalAddressesExcept). They decide which addresses get
	// NodePort virtual servers and whether an externalIP or LB IP must be
	// bound to kube-ipvs0. nil means the Node object's addresses.
	LocalAddrs []netip.Addr
	// RandomFully: the iptables binary supports MASQUERADE --random-fully.
	RandomFully bool
}

func (e Env) scheduler() string {
	if e.Scheduler == "" {
		return DefaultScheduler
	}
	return e.Scheduler
}

// VirtualServer is one IPVS service (ipvsadm -A) and its real servers.
type VirtualServer struct {
	// Service is kube-proxy's ServicePortName, "namespace/name:port".
	Service   string
	Address   netip.Addr
	Protocol  model.Protocol
	Port      uint16
	Scheduler string
	// Flags holds flagPersistent and flagSourceHash; Timeout is the
	// persistence timeout in seconds when flagPersistent is set.
	Flags   uint32
	Timeout uint32
	// RealServers are sorted by address then port; all have weight 1, as
	// kube-proxy gives them.
	RealServers []RealServer
}

// Key identifies the virtual server the way kube-proxy prints it:
// "198.19.0.10:80/TCP".
func (vs *VirtualServer) Key() string {
	return netip.AddrPortFrom(vs.Address, vs.Port).String() + "/" + string(vs.Protocol)
}

// sameService reports whether two virtual servers have the same
// attributes (not the same real servers).
func (vs *VirtualServer) sameService(o *VirtualServer) bool {
	return vs.Key() == o.Key() && vs.Scheduler == o.Scheduler && vs.Flags == o.Flags && vs.Timeout == o.Timeout
}

// RealServer is one IPVS destination (ipvsadm -a ... -m -w <weight>).
type RealServer struct {
	Address netip.Addr
	Port    uint16
	Weight  int
}

// Key is "ip:port", kube-proxy's RealServer.String().
func (rs RealServer) Key() string { return netip.AddrPortFrom(rs.Address, rs.Port).String() }

// Set is one ipset and its entries, in the textual form `ipset save`
// prints (host-sized nets without their mask).
type Set struct {
	Name    string
	Type    string
	Family  Family
	Comment string
	Entries []string // sorted
}

// createLine is the `ipset restore` line that creates the set.
func (s *Set) createLine() string {
	switch s.Type {
	case setBitmapPort:
		return fmt.Sprintf("create %s %s range %s", s.Name, s.Type, bitmapPortRange)
	default:
		return fmt.Sprintf("create %s %s family %s hashsize %d maxelem %d", s.Name, s.Type, s.Family.hashFamily(), setHashSize, setMaxElem)
	}
}

// Chain is one iptables chain and its rules, each the text that follows
// "-A <Name> " in iptables-restore input.
type Chain struct {
	Name  string
	Rules []string
}

// JumpRule is a rule in a built-in chain that jumps to one of ours. It is
// inserted at the top when missing, never rewritten, so other software's
// rules in the built-in chains are left alone (kube-proxy's EnsureRule).
type JumpRule struct {
	Table string
	Chain string
	Spec  string
}

// jumpRules is kube-proxy's iptablesJumpChain for IPVS mode.
var jumpRules = []JumpRule{
	{tableNAT, "OUTPUT", `-m comment --comment "kubernetes service portals" -j ` + kubeServicesChain},
	{tableNAT, "PREROUTING", `-m comment --comment "kubernetes service portals" -j ` + kubeServicesChain},
	{tableNAT, "POSTROUTING", `-m comment --comment "kubernetes postrouting rules" -j ` + kubePostroutingChain},
	{tableFilter, "FORWARD", `-m comment --comment "kubernetes forwarding rules" -j ` + kubeForwardChain},
	{tableFilter, "INPUT", `-m comment --comment "kubernetes health check rules" -j ` + kubeNodePortChain},
	{tableFilter, "INPUT", `-m comment --comment "kube-proxy firewall rules" -j ` + kubeProxyFirewallChain},
	{tableFilter, "FORWARD", `-m comment --comment "kube-proxy firewall rules" -j ` + kubeProxyFirewallChain},
	{tableFilter, "INPUT", `-m comment --comment "kubernetes ipvs access filter" -j ` + kubeIPVSFilterChain},
	{tableFilter, "OUTPUT", `-m comment --comment "kubernetes ipvs access filter" -j ` + kubeIPVSOutFilterChain},
}

// FamilyState is what one family's proxier owns: its ipsets and its
// iptables rules.
type FamilyState struct {
	Family Family
	// Sets are in kube-proxy's order (setSpecs), every one of them, empty
	// or not.
	Sets   []*Set
	Jumps  []JumpRule
	NAT    []Chain
	Filter []Chain
}

// Set returns the family's set with the given IPv4 base name.
func (fs *FamilyState) Set(base string) *Set {
	name := familySetName(base, fs.Family)
	for _, s := range fs.Sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Rules counts the iptables rules, jumps included.
func (fs *FamilyState) Rules() int {
	n := len(fs.Jumps)
	for _, c := range fs.NAT {
		n += len(c.Rules)
	}
	for _, c := range fs.Filter {
		n += len(c.Rules)
	}
	return n
}

// State is the whole desired state of one node.
type State struct {
	// VirtualServers of both families, sorted by address, protocol, port.
	VirtualServers []*VirtualServer
	// Bind lists the addresses kube-ipvs0 must hold, sorted.
	Bind     []netip.Addr
	Families []*FamilyState
	// Services maps "namespace/name" to a fingerprint of everything the
	// Service contributes (virtual servers, real servers, set entries), so
	// a sync can count the Services it changed.
	Services map[string]uint64
}

// Family returns one family's state, or nil.
func (s *State) Family(f Family) *FamilyState {
	for _, fs := range s.Families {
		if fs.Family == f {
			return fs
		}
	}
	return nil
}

// Objects counts the kernel objects: virtual servers, real servers, bound
// addresses, set entries and iptables rules.
func (s *State) Objects() int {
	n := len(s.VirtualServers) + len(s.Bind)
	for _, vs := range s.VirtualServers {
		n += len(vs.RealServers)
	}
	for _, fs := range s.Families {
		for _, set := range fs.Sets {
			n += len(set.Entries)
		}
		n += fs.Rules()
	}
	return n
}

// Render computes the desired state of one node. It is deterministic and
// needs no root.
func Render(view *datapaths.NodeView, env Env) (*State, error) {
	if view == nil || view.Cluster == nil {
		return nil, errors.New("render ipvs state: no cluster in the node view")
	}
	if !slices.Contains(Schedulers, env.scheduler()) {
		return nil, fmt.Errorf("render ipvs state: scheduler %q: want one of %s", env.Scheduler, strings.Join(Schedulers, ", "))
	}
	st := &State{Services: map[string]uint64{}}
	services := slices.Clone(view.Cluster.Services)
	slices.SortFunc(services, func(a, b *model.Service) int { return strings.Compare(a.Name.String(), b.Name.String()) })

	vsByKey := map[string]*VirtualServer{}
	bind := map[netip.Addr]bool{}
	fps := map[string]*maphash.Hash{}
	for _, f := range families {
		fr := newFamilyRender(view, f, env)
		for _, svc := range services {
			h := fps[svc.Name.String()]
			if h == nil {
				h = &maphash.Hash{}
				h.SetSeed(hashSeed)
				fps[svc.Name.String()] = h
			}
			fr.renderService(svc, h)
		}
		for _, vs := range fr.vss {
			// A key claimed twice (two Services listing the same
			// externalIP and port) keeps the first Service by name; the
			// order of kube-proxy's map iteration decides it there.
			if _, dup := vsByKey[vs.Key()]; !dup {
				vsByKey[vs.Key()] = vs
				st.VirtualServers = append(st.VirtualServers, vs)
			}
		}
		for a := range fr.bind {
			bind[a] = true
		}
		st.Families = append(st.Families, fr.finish())
	}
	for name, h := range fps {
		st.Services[name] = h.Sum64()
	}
	slices.SortFunc(st.VirtualServers, func(a, b *VirtualServer) int {
		return cmp.Or(a.Address.Compare(b.Address), strings.Compare(string(a.Protocol), string(b.Protocol)), cmp.Compare(a.Port, b.Port))
	})
	for a := range bind {
		st.Bind = append(st.Bind, a)
	}
	slices.SortFunc(st.Bind, netip.Addr.Compare)
	return st, nil
}

// hashSeed keys the per-Service fingerprints; they are only compared
// within one process.
var hashSeed = maphash.MakeSeed()

// familyRender accumulates one family's state.
type familyRender struct {
	f     Family
	env   Env
	proxy datapaths.ProxyConfig
	node  *model.Node

	// nodeIP is the node's primary address of the family: the source of
	// node traffic to LB IPs that source ranges are checked against.
	nodeIP netip.Addr
	// clusterCIDR is the local-traffic detector; invalid means none.
	clusterCIDR netip.Prefix
	// local holds the node's own addresses of the family.
	local map[netip.Addr]bool
	// nodePortIPs get one virtual server per NodePort.
	nodePortIPs []netip.Addr

	entries map[string]map[string]bool // set base name -> entries
	// lbNoNodeAccess lists LB ip:port/proto that node-originated traffic
	// may not reach (source ranges that exclude the node).
	lbNoNodeAccess []lbEntry
	vss            []*VirtualServer
	bind           map[netip.Addr]bool
}

type lbEntry struct {
	ip    netip.Addr
	proto string
	port  int32
}

func newFamilyRender(view *datapaths.NodeView, f Family, env Env) *familyRender {
	fr := &familyRender{
		f: f, env: env, proxy: view.Proxy, node: view.Node,
		local:   map[netip.Addr]bool{},
		entries: map[string]map[string]bool{},
		bind:    map[netip.Addr]bool{},
	}
	for _, s := range setSpecs {
		fr.entries[s.name] = map[string]bool{}
	}
	for _, p := range view.Proxy.ClusterCIDRs {
		// kube-proxy's cluster-CIDR detector takes one CIDR per family.
		if p.IsValid() && f.has(p.Addr()) {
			fr.clusterCIDR = p.Masked()
			break
		}
	}
	if view.Node != nil {
		for _, a := range view.Node.Addresses {
			if f.has(a) {
				fr.nodeIP = a.Unmap()
				break
			}
		}
	}
	local := env.LocalAddrs
	if local == nil && view.Node != nil {
		local = view.Node.Addresses
	}
	var locals []netip.Addr
	for _, a := range local {
		a = a.Unmap()
		if !f.has(a) || a.IsLoopback() || (f == IPv6 && a.IsLinkLocalUnicast()) || fr.local[a] {
			continue
		}
		fr.local[a] = true
		locals = append(locals, a)
	}
	slices.SortFunc(locals, netip.Addr.Compare)
	fr.nodePortIPs = nodePortIPs(view.Proxy.NodePortAddresses, f, locals)
	return fr
}

// nodePortIPs applies --nodeport-addresses the way kube-proxy's IPVS mode
// does: unset (or a zero-length CIDR) means every local address except
// kube-ipvs0's; otherwise the local addresses inside the CIDRs of this
// family. Loopback addresses never get NodePorts in IPVS mode.
func nodePortIPs(cidrs []netip.Prefix, f Family, locals []netip.Addr) []netip.Addr {
	var mine []netip.Prefix
	for _, p := range cidrs {
		if !p.IsValid() || !f.has(p.Addr()) {
			continue
		}
		if p.Bits() == 0 {
			return locals
		}
		mine = append(mine, p.Masked())
	}
	if len(mine) == 0 {
		return locals
	}
	var out []netip.Addr
	for _, a := range locals {
		for _, p := range mine {
			if p.Contains(a) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

func (fr *familyRender) add(set, entry string) { fr.entries[set][entry] = true }

// clusterIPOf returns the Service's ClusterIP of the family, if it is
// proxied in that family at all.
func clusterIPOf(svc *model.Service, f Family) (netip.Addr, bool) {
	if !svc.IsProxied() {
		return netip.Addr{}, false
	}
	for _, ip := range svc.ClusterIPs {
		if f.has(ip) {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func filterAddrs(in []netip.Addr, f Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range in {
		if f.has(a) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// sourceRanges filters loadBalancerSourceRanges to the family; a zero-length
// CIDR means "allow any", the same as no ranges.
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

// narrow is one Service port as one family's proxier sees it: a shallow
// copy of the Service with only this port and only this family's
// addresses and endpoints. Narrowing Ports makes ExternallyAccessible per
// port, as kube-proxy's per-port service info is.
func narrow(svc *model.Service, p *model.ServicePort, f Family) (*model.Service, *model.ServicePort) {
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
	s.Ports = []*model.ServicePort{&port}
	return &s, &port
}

// healthCheckNodePort is the port kube-proxy opens, which it does only for
// LoadBalancer Services with eTP=Local (apiservice.NeedsHealthCheck).
func healthCheckNodePort(svc *model.Service) int32 {
	if svc.Type != model.LoadBalancer || svc.ExternalTrafficPolicy != model.PolicyLocal {
		return 0
	}
	return svc.HealthCheckNodePort
}

func entryIPPort(ip netip.Addr, proto string, port int32) string {
	return ip.String() + "," + proto + ":" + strconv.Itoa(int(port))
}

// hostNet prints a prefix the way ipset lists it: host-sized prefixes
// without their mask.
func hostNet(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// renderService mirrors the body of kube-proxy's per-service-port loop in
// syncProxyRules for one family, writing what it contributes into h too.
func (fr *familyRender) renderService(svc *model.Service, h *maphash.Hash) {
	clusterIP, ok := clusterIPOf(svc, fr.f)
	if !ok {
		return
	}
	line := func(parts ...string) {
		h.WriteString(strings.Join(parts, " "))
		h.WriteByte('\n')
	}
	for _, p := range svc.Ports {
		s, port := narrow(svc, p, fr.f)
		name := servicePortName(svc, p)
		proto := strings.ToLower(string(p.Protocol))
		cat := model.Categorize(s, port, fr.node)
		// kube-proxy's syncEndpoint: Local-policy traffic uses the local
		// endpoints, or, when this node has none, the Cluster ones
		// (kubernetes#97081: so pods here can still reach the Service;
		// external clients' replies then leave unNATed and are lost).
		realServers := func(onlyLocal bool) []RealServer {
			eps := cat.Cluster
			if onlyLocal && len(cat.Local) > 0 {
				eps = cat.Local
			}
			out := make([]RealServer, 0, len(eps))
			for _, ep := range eps {
				out = append(out, RealServer{Address: ep.IP.Unmap(), Port: uint16(ep.Port), Weight: 1})
			}
			slices.SortFunc(out, func(a, b RealServer) int {
				return cmp.Or(a.Address.Compare(b.Address), cmp.Compare(a.Port, b.Port))
			})
			return slices.CompactFunc(out, func(a, b RealServer) bool { return a.Key() == b.Key() })
		}
		addVS := func(ip netip.Addr, vport int32, onlyLocal, bindAddr bool) {
			vs := &VirtualServer{
				Service: name, Address: ip, Protocol: p.Protocol, Port: uint16(vport),
				Scheduler: fr.env.scheduler(), RealServers: realServers(onlyLocal),
			}
			if svc.SessionAffinity {
				vs.Flags |= flagPersistent
				vs.Timeout = uint32(svc.AffinityTimeout / time.Second)
				if vs.Timeout == 0 {
					vs.Timeout = defaultAffinitySeconds
				}
			}
			if vs.Scheduler == "mh" {
				vs.Flags |= flagSourceHash
			}
			fr.vss = append(fr.vss, vs)
			if bindAddr {
				fr.bind[ip] = true
			}
			line("vs", vs.Key(), vs.Scheduler, strconv.FormatUint(uint64(vs.Flags), 16), strconv.FormatUint(uint64(vs.Timeout), 10))
			for _, rs := range vs.RealServers {
				line("rs", rs.Key())
			}
		}
		entry := func(set, e string) {
			fr.add(set, e)
			line("set", set, e)
		}

		// Hairpin: an endpoint on this node reaching itself through the
		// Service must be masqueraded.
		for _, ep := range port.Endpoints {
			if ep.NodeName != "" && fr.node != nil && ep.NodeName == fr.node.Name {
				ip := ep.IP.Unmap()
				entry(setLoopBack, entryIPPort(ip, proto, ep.Port)+","+ip.String())
			}
		}

		// ClusterIP: always bound to kube-ipvs0. Its real servers follow
		// the internal traffic policy.
		entry(setClusterIP, entryIPPort(clusterIP, proto, p.Port))
		addVS(clusterIP, p.Port, s.InternalPolicyLocal(), true)

		// externalIPs: masqueraded unless eTP=Local.
		for _, ip := range s.ExternalIPs {
			if s.ExternalPolicyLocal() {
				entry(setExternalIPLocal, entryIPPort(ip, proto, p.Port))
			} else {
				entry(setExternalIP, entryIPPort(ip, proto, p.Port))
			}
			// An address that is already the node's own is not bound again.
			addVS(ip, p.Port, s.ExternalPolicyLocal(), !fr.local[ip])
		}

		// Load-balancer ingress IPs.
		for _, ip := range s.LoadBalancerIPs {
			e := entryIPPort(ip, proto, p.Port)
			entry(setLoadBalancer, e)
			if s.ExternalPolicyLocal() {
				entry(setLoadBalancerLocal, e)
			}
			if ranges := sourceRanges(s.LoadBalancerSourceRanges, fr.f); len(ranges) > 0 {
				entry(setLoadBalancerFW, e)
				allowFromNode := false
				for _, cidr := range ranges {
					entry(setLoadBalancerSrcCIDR, e+","+hostNet(cidr))
					if fr.nodeIP.IsValid() && cidr.Contains(fr.nodeIP) {
						allowFromNode = true
					}
				}
				if allowFromNode {
					// Node traffic to its own LB IP loops back with the LB
					// IP as source (it is bound locally): allow that.
					entry(setLoadBalancerSrcIP, e+","+ip.String())
				} else {
					fr.lbNoNodeAccess = append(fr.lbNoNodeAccess, lbEntry{ip: ip, proto: proto, port: p.Port})
					line("out-filter", e)
				}
			}
			addVS(ip, p.Port, s.ExternalPolicyLocal(), !fr.local[ip])
		}

		// NodePorts: one virtual server per node address.
		if np := p.NodePort; np != 0 && len(fr.nodePortIPs) > 0 {
			var global, local string
			var entries []string
			switch p.Protocol {
			case model.TCP:
				global, local = setNodePortTCP, setNodePortLocalTCP
				entries = []string{strconv.Itoa(int(np))}
			case model.UDP:
				global, local = setNodePortUDP, setNodePortLocalUDP
				entries = []string{strconv.Itoa(int(np))}
			case model.SCTP:
				// bitmap:port cannot tell SCTP from the others' ports, so
				// SCTP uses hash:ip,port with every node address.
				global, local = setNodePortSCTP, setNodePortLocalSCTP
				for _, ip := range fr.nodePortIPs {
					entries = append(entries, entryIPPort(ip, proto, np))
				}
			}
			for _, e := range entries {
				entry(global, e)
				if s.ExternalPolicyLocal() {
					entry(local, e)
				}
			}
			for _, ip := range fr.nodePortIPs {
				addVS(ip, np, s.ExternalPolicyLocal(), false)
			}
		}

		if hc := healthCheckNodePort(svc); hc != 0 {
			entry(setHealthCheckNodePort, strconv.Itoa(int(hc)))
		}
	}
}

// finish builds the family's sets and iptables rules once every Service
// has been rendered.
func (fr *familyRender) finish() *FamilyState {
	for a := range fr.bind {
		fr.add(setIPVSIPs, a.String())
	}
	fs := &FamilyState{Family: fr.f, Jumps: slices.Clone(jumpRules)}
	for _, spec := range setSpecs {
		set := &Set{Name: familySetName(spec.name, fr.f), Type: spec.typ, Family: fr.f, Comment: spec.comment}
		for e := range fr.entries[spec.name] {
			set.Entries = append(set.Entries, e)
		}
		slices.Sort(set.Entries)
		fs.Sets = append(fs.Sets, set)
	}
	fr.writeRules(fs)
	return fs
}

// ruleWriter builds chains in declaration order.
type ruleWriter struct {
	order []string
	rules map[string][]string
}

func newRuleWriter(names []string) *ruleWriter {
	w := &ruleWriter{order: slices.Clone(names), rules: map[string][]string{}}
	return w
}

func (w *ruleWriter) add(chain string, words ...string) {
	w.rules[chain] = append(w.rules[chain], strings.Join(words, " "))
}

func (w *ruleWriter) chains() []Chain {
	out := make([]Chain, 0, len(w.order))
	for _, n := range w.order {
		out = append(out, Chain{Name: n, Rules: w.rules[n]})
	}
	return out
}

// writeRules mirrors kube-proxy's writeIptablesRules for IPVS mode. Rules
// that match a set are written only while the set has entries, so their
// number does not depend on the number of Services.
func (fr *familyRender) writeRules(fs *FamilyState) {
	nat, filter := newRuleWriter(natChains), newRuleWriter(filterChains)
	set := func(base string) *Set { return fs.Set(base) }
	empty := func(base string) bool { return len(set(base).Entries) == 0 }
	comment := func(base string) []string {
		return []string{"-m", "comment", "--comment", `"` + set(base).Comment + `"`}
	}
	match := func(base, dir string) []string {
		return []string{"-m", "set", "--match-set", set(base).Name, dir}
	}

	// Connections from localhost are not Service traffic here: IPVS mode
	// serves no localhost NodePorts.
	lo := "127.0.0.0/8"
	if fr.f == IPv6 {
		lo = "::1/128"
	}
	nat.add(kubeServicesChain, "-s", lo, "-j", "RETURN")

	// kube-proxy's ipsetWithIptablesChain, in its order.
	type setJump struct {
		set, table, chain, target, dir, proto string
	}
	for _, j := range []setJump{
		{setLoopBack, tableNAT, kubePostroutingChain, "MASQUERADE", "dst,dst,src", ""},
		{setLoadBalancer, tableNAT, kubeServicesChain, kubeLoadBalancerChain, "dst,dst", ""},
		{setLoadBalancerLocal, tableNAT, kubeLoadBalancerChain, "RETURN", "dst,dst", ""},
		{setNodePortLocalTCP, tableNAT, kubeNodePortChain, "RETURN", "dst", "tcp"},
		{setNodePortTCP, tableNAT, kubeNodePortChain, kubeMarkMasqChain, "dst", "tcp"},
		{setNodePortLocalUDP, tableNAT, kubeNodePortChain, "RETURN", "dst", "udp"},
		{setNodePortUDP, tableNAT, kubeNodePortChain, kubeMarkMasqChain, "dst", "udp"},
		{setNodePortLocalSCTP, tableNAT, kubeNodePortChain, "RETURN", "dst,dst", "sctp"},
		{setNodePortSCTP, tableNAT, kubeNodePortChain, kubeMarkMasqChain, "dst,dst", "sctp"},
		{setLoadBalancerFW, tableFilter, kubeProxyFirewallChain, kubeSourceRangesFirewallChain, "dst,dst", ""},
		{setLoadBalancerSrcCIDR, tableFilter, kubeSourceRangesFirewallChain, "RETURN", "dst,dst,src", ""},
		{setLoadBalancerSrcIP, tableFilter, kubeSourceRangesFirewallChain, "RETURN", "dst,dst,src", ""},
	} {
		if empty(j.set) {
			continue
		}
		var words []string
		if j.proto != "" {
			words = append(words, "-p", j.proto)
		}
		words = append(words, comment(j.set)...)
		words = append(words, match(j.set, j.dir)...)
		words = append(words, "-j", j.target)
		if j.table == tableFilter {
			filter.add(j.chain, words...)
		} else {
			nat.add(j.chain, words...)
		}
	}

	if !empty(setClusterIP) {
		args := append(comment(setClusterIP), "-m", "set", "--match-set", set(setClusterIP).Name)
		switch {
		case fr.proxy.MasqueradeAll:
			nat.add(kubeServicesChain, append(args, "dst,dst", "-j", kubeMarkMasqChain)...)
		case fr.clusterCIDR.IsValid():
			// Off-cluster traffic to a VIP (a static route to the
			// Service range) may bounce to another node: masquerade it.
			nat.add(kubeServicesChain, append(args, "dst,dst", "!", "-s", fr.clusterCIDR.String(), "-j", kubeMarkMasqChain)...)
		default:
			// Without a detector, masquerade node traffic that picked a
			// VIP as its source (VIPs are local on kube-ipvs0, so a
			// connection from the node to a VIP starts from that VIP).
			nat.add(kubeServicesChain, append(args, "src,dst", "-j", kubeMarkMasqChain)...)
		}
	}

	// externalIPs: accept traffic from off the machine, and traffic to an
	// external IP that is local anyway (cloud LBs that add it to the
	// local routing table).
	externalIPRules := func(base string) {
		args := append(comment(base), match(base, "dst,dst")...)
		nat.add(kubeServicesChain, append(slices.Clone(args), "-m", "physdev", "!", "--physdev-is-in", "-m", "addrtype", "!", "--src-type", "LOCAL", "-j", "ACCEPT")...)
		nat.add(kubeServicesChain, append(slices.Clone(args), "-m", "addrtype", "--dst-type", "LOCAL", "-j", "ACCEPT")...)
	}
	if !empty(setExternalIP) {
		nat.add(kubeServicesChain, append(append(comment(setExternalIP), match(setExternalIP, "dst,dst")...), "-j", kubeMarkMasqChain)...)
		externalIPRules(setExternalIP)
	}
	if !empty(setExternalIPLocal) {
		externalIPRules(setExternalIPLocal)
	}

	nat.add(kubeServicesChain, "-m", "addrtype", "--dst-type", "LOCAL", "-j", kubeNodePortChain)
	nat.add(kubeLoadBalancerChain, "-j", kubeMarkMasqChain)
	filter.add(kubeSourceRangesFirewallChain, "-j", "DROP")

	for _, e := range fr.lbNoNodeAccess {
		filter.add(kubeIPVSOutFilterChain, "-s", e.ip.String(), "-m", "ipvs", "--vaddr", e.ip.String(),
			"--vproto", e.proto, "--vport", strconv.Itoa(int(e.port)), "-j", "DROP")
	}

	// Accept what IPVS will handle, in case other rules would drop it.
	for _, base := range []string{setClusterIP, setLoadBalancer} {
		if !empty(base) {
			nat.add(kubeServicesChain, append(match(base, "dst,dst"), "-j", "ACCEPT")...)
		}
	}

	filter.add(kubeForwardChain, "-m", "comment", "--comment", `"kubernetes forwarding rules"`,
		"-m", "mark", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "ACCEPT")
	filter.add(kubeForwardChain, "-m", "comment", "--comment", `"kubernetes forwarding conntrack rule"`,
		"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	filter.add(kubeNodePortChain, append(append(comment(setHealthCheckNodePort), match(setHealthCheckNodePort, "dst")...), "-j", "ACCEPT")...)

	// KUBE-IPVS-FILTER: a VIP is a local address, so without this any
	// listener on the node would answer on it. Known Service ports
	// return; anything else new to a VIP is rejected (this is why IPVS
	// mode REJECTs wrong ports on a ClusterIP, CONFORMANCE.md CIP-05).
	for _, r := range []struct{ base, dir string }{
		{setLoadBalancer, "dst,dst"}, {setClusterIP, "dst,dst"}, {setExternalIP, "dst,dst"},
		{setExternalIPLocal, "dst,dst"}, {setHealthCheckNodePort, "dst"},
	} {
		filter.add(kubeIPVSFilterChain, append(match(r.base, r.dir), "-j", "RETURN")...)
	}
	filter.add(kubeIPVSFilterChain, append([]string{"-m", "conntrack", "--ctstate", "NEW"}, append(match(setIPVSIPs, "dst"), "-j", "REJECT")...)...)

	nat.add(kubePostroutingChain, "-m", "mark", "!", "--mark", masqueradeMark+"/"+masqueradeMark, "-j", "RETURN")
	// Clear the mark so a packet that re-traverses the stack is not
	// masqueraded twice.
	nat.add(kubePostroutingChain, "-j", "MARK", "--xor-mark", masqueradeMark)
	masq := []string{"-m", "comment", "--comment", `"kubernetes service traffic requiring SNAT"`, "-j", "MASQUERADE"}
	if fr.env.RandomFully {
		masq = append(masq, "--random-fully")
	}
	nat.add(kubePostroutingChain, masq...)
	nat.add(kubeMarkMasqChain, "-j", "MARK", "--or-mark", masqueradeMark)

	fs.NAT = nat.chains()
	fs.Filter = filter.chains()
}
