package topologies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// Scale mode: a lab for thousands of Services and a hundred thousand
// endpoints. The realistic lab gives every endpoint a namespace, which is
// absurd at that size; here each node has one "backend" namespace behind one
// veth, and every endpoint address of the node is local there:
//
//	ip -n prx-L-b-<node> route add local 198.18.64.0/24 dev lo   (per prefix)
//
// makes every address of the prefix local without adding it to any link
// (the "AnyIP" trick), so one listener per port bound to 0.0.0.0 answers on
// all of them, and it names itself after the address the connection or
// datagram arrived on. The node routes each prefix (one route per prefix,
// not per endpoint) via a link-local next hop whose neighbour entry is
// permanent, so the node never ARPs for endpoint addresses and its neighbour
// table stays at one entry however many endpoints there are.
//
//	 prx-L-n-<node>                         prx-L-b-<node>
//	 198.18.64.0/24 via 169.254.1.2 ──veth── eth0 (no address)
//	   dev prxbN onlink                      local 198.18.64.0/24 dev lo
//	 neigh 169.254.1.2 lladdr <eth0 MAC>     default via 169.254.1.1
//	                                         echo servers on 0.0.0.0:<port>
//
// What the datapath sees is the same as in the realistic lab: endpoint
// addresses routed via their node. Nodes, the fabric, the external client
// and the client pods are built exactly as there.

// ScaleRRPort is the TCP port on which every scale-mode backend runs a
// request/response server: it sends the usual echo line on accept, then
// echoes back every byte it reads until the client closes.
const ScaleRRPort = 7

// scaleGateway is the link-local next hop a node uses for its backend.
var scaleGateway = netip.MustParseAddr("169.254.1.2")

const (
	kindBackend     = "b"
	backendPortFmt  = "prxb%d"
	blastPrefix     = "blast"
	scaleNoteHealth = "scale mode runs no health-check servers"
)

// ScaleEndpointName is the name a scale-mode backend answers with for an
// endpoint address: "ep-198-18-64-5-8000". Generators name their endpoints
// the same way so that a probe's answer names the endpoint that served it.
func ScaleEndpointName(ap netip.AddrPort) string {
	a := strings.NewReplacer(".", "-", ":", "-").Replace(ap.Addr().Unmap().String())
	return fmt.Sprintf("ep-%s-%d", a, ap.Port())
}

// ScaleOptions configure a scale lab.
type ScaleOptions struct {
	// Name of the lab, as for Options.Name.
	Name string
	// Datapath is a registered datapath name; "" builds no datapath.
	Datapath        string
	DatapathOptions map[string]string
	IPTablesBackend string
	// DatapathNodes run the datapath; empty means every node. Other nodes
	// are plain routers.
	DatapathNodes []string
	// Proxy is given to the datapath; empty ClusterCIDRs and ServiceCIDRs
	// get the lab's defaults.
	Proxy datapaths.ProxyConfig
	// Backends lists, per node name, the prefixes whose every address is a
	// local endpoint address in that node's backend namespace. Every
	// endpoint of a cluster applied to the lab must fall in its node's
	// prefixes (an endpoint without a node belongs to the first node).
	Backends map[string][]netip.Prefix
	// ExternalRoutes are routed from the external client via the first node
	// (the ingress), in addition to the Service CIDRs: for example the
	// range LoadBalancer IPs come from.
	ExternalRoutes []netip.Prefix
	Logger         *slog.Logger
}

// ScaleLab is a built scale-mode lab. Datapath instances are created at
// Build but not synced: the caller decides when and how to Sync, so it can
// time exactly that. Methods may be called from several goroutines, but
// Sync of one node must not run concurrently with ResetDatapath of it.
type ScaleLab struct {
	opts   ScaleOptions
	log    *slog.Logger
	reg    *datapaths.Registration
	fabric netnsutil.NS
	plan   *plan // nodes, externals, clients; no pods
	proxy  datapaths.ProxyConfig

	mu       sync.Mutex
	created  []string
	seq      int
	dps      map[string]datapaths.Datapath
	backends map[string]*scaleBackend // by node name
	closed   bool
	notes    []string
}

// BuildScale builds a scale lab for cluster c: fabric, nodes, one external
// client, a client pod and a backend namespace per node, echo servers for
// every port c's endpoints use, and (unsynced) datapath instances. On any
// error it tears down what it made.
func BuildScale(ctx context.Context, c *model.Cluster, opts ScaleOptions) (*ScaleLab, error) {
	if err := ValidateName(opts.Name); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &ScaleLab{
		opts:     opts,
		log:      opts.Logger.With("lab", opts.Name),
		fabric:   netnsutil.NS{Name: fabricNSName(opts.Name)},
		dps:      map[string]datapaths.Datapath{},
		backends: map[string]*scaleBackend{},
		notes:    []string{scaleNoteHealth},
	}
	if opts.Datapath != "" {
		reg, err := datapaths.Lookup(opts.Datapath)
		if err != nil {
			return nil, err
		}
		if reg.Check != nil {
			if err := reg.Check(ctx, l.dpConfig("")); err != nil {
				return nil, err
			}
		}
		l.reg = &reg
	}
	p, err := makeScalePlan(c, opts)
	if err != nil {
		return nil, fmt.Errorf("scale lab %s: %w", opts.Name, err)
	}
	l.plan = p
	l.proxy = p.proxy
	if err := checkCoverage(p.cluster, p, opts.Backends); err != nil {
		return nil, fmt.Errorf("scale lab %s: %w", opts.Name, err)
	}
	existing, err := netnsutil.List(labPrefix(opts.Name))
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	if len(existing) > 0 {
		return nil, fmt.Errorf("lab %s already exists (%d namespaces such as %s): take it down or run `proxyrig cleanup --name %s`",
			opts.Name, len(existing), existing[0], opts.Name)
	}
	if err := l.build(ctx, p); err != nil {
		if terr := l.teardown(context.WithoutCancel(ctx)); terr != nil {
			err = errors.Join(err, fmt.Errorf("tear down after failure: %w", terr))
		}
		return nil, fmt.Errorf("build scale lab %s: %w", opts.Name, err)
	}
	return l, nil
}

// makeScalePlan lays out nodes, the external client and client pods with
// the realistic lab's rules (and its checks), but no pods: endpoints live
// in backends.
func makeScalePlan(c *model.Cluster, opts ScaleOptions) (*plan, error) {
	if c == nil {
		return nil, errors.New("no cluster given")
	}
	if clusterUsesIPv6(c) {
		return nil, errors.New("scale mode is IPv4-only; the cluster uses IPv6")
	}
	p := &plan{lab: opts.Name, servers: map[serverKey]string{}, hc: map[string]map[int32]hcPlan{}}
	if err := p.layoutNodes(c); err != nil {
		return nil, err
	}
	if err := p.layoutExternals(1); err != nil {
		return nil, err
	}
	taken := map[netip.Addr]string{PodGateway: "the pod gateway", scaleGateway: "the backend gateway"}
	for _, n := range p.nodes {
		for _, a := range n.addrs {
			if who, dup := taken[a]; dup {
				return nil, fmt.Errorf("node %s: address %s is also %s", n.name, a, who)
			}
			taken[a] = "node " + n.name
		}
	}
	for _, x := range p.externals {
		for _, a := range x.addrs {
			taken[a] = x.name
		}
	}
	if err := p.layoutClients(taken); err != nil {
		return nil, err
	}
	p.ingress = p.nodes[0].name
	if len(opts.DatapathNodes) == 0 {
		for _, n := range p.nodes {
			n.datapath = opts.Datapath != ""
		}
	}
	for _, name := range opts.DatapathNodes {
		n := p.node(name)
		if n == nil {
			return nil, fmt.Errorf("datapath node %q is not a node of the cluster", name)
		}
		n.datapath = opts.Datapath != ""
	}
	for node, pfxs := range opts.Backends {
		if p.node(node) == nil {
			return nil, fmt.Errorf("backend prefixes given for node %q, which is not a node of the cluster", node)
		}
		for _, pf := range pfxs {
			if !pf.Addr().Is4() {
				return nil, fmt.Errorf("backend prefix %s of node %s: scale mode is IPv4-only", pf, node)
			}
			for a, who := range taken {
				if pf.Contains(a) {
					return nil, fmt.Errorf("backend prefix %s of node %s contains %s, which is %s", pf, node, a, who)
				}
			}
		}
	}
	var all []netip.Prefix
	for _, pfxs := range opts.Backends {
		all = append(all, pfxs...)
	}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if all[i].Overlaps(all[j]) {
				return nil, fmt.Errorf("backend prefixes %s and %s overlap", all[i], all[j])
			}
		}
	}
	p.proxy = opts.Proxy
	if len(p.proxy.ClusterCIDRs) == 0 && !p.proxy.NoLocalTrafficDetector {
		p.proxy.ClusterCIDRs = []netip.Prefix{ClusterCIDR}
	}
	if len(p.proxy.ServiceCIDRs) == 0 {
		p.proxy.ServiceCIDRs = []netip.Prefix{ServiceCIDR}
	}
	for _, pf := range p.proxy.ServiceCIDRs {
		if pf.Addr().Is4() {
			p.vipRoutes = append(p.vipRoutes, pf.Masked())
		}
	}
	for _, pf := range opts.ExternalRoutes {
		p.vipRoutes = append(p.vipRoutes, pf.Masked())
	}
	return p, nil
}

// checkCoverage makes sure every endpoint address is answered by its
// node's backend: an endpoint outside would be silently unreachable, and a
// benchmark would measure timeouts.
func checkCoverage(c *model.Cluster, p *plan, backends map[string][]netip.Prefix) error {
	first := p.nodes[0].name
	for _, s := range c.Services {
		for _, sp := range s.Ports {
			for _, ep := range sp.Endpoints {
				node := ep.NodeName
				if node == "" {
					node = first
				}
				if p.node(node) == nil {
					return fmt.Errorf("%s: endpoint %s is on node %q, which is not in the lab", s.Origin, ep, node)
				}
				if !slices.ContainsFunc(backends[node], func(pf netip.Prefix) bool { return pf.Contains(ep.IP) }) {
					return fmt.Errorf("%s: endpoint %s on node %s is outside that node's backend prefixes %v", s.Origin, ep, node, backends[node])
				}
				if sp.Protocol != model.TCP && sp.Protocol != model.UDP {
					return fmt.Errorf("%s: scale mode serves TCP and UDP only, not %s", s.Origin, sp.Protocol)
				}
			}
		}
	}
	return nil
}

func (l *ScaleLab) dpConfig(node string) datapaths.Config {
	cfg := datapaths.Config{
		Node:            node,
		IPTablesBackend: l.opts.IPTablesBackend,
		Options:         l.opts.DatapathOptions,
		Logger:          l.log,
	}
	if node != "" {
		cfg.NS = l.NodeNS(node)
		cfg.Logger = l.log.With("node", node)
	}
	return cfg
}

func (l *ScaleLab) createNS(ctx context.Context, name string, role nsRole) (netnsutil.NS, error) {
	if err := ctx.Err(); err != nil {
		return netnsutil.NS{}, err
	}
	l.mu.Lock()
	l.created = append(l.created, name)
	l.mu.Unlock()
	ns, err := netnsutil.Create(name)
	if err != nil {
		return netnsutil.NS{}, err
	}
	if err := setupNS(ns, role); err != nil {
		return netnsutil.NS{}, err
	}
	return ns, nil
}

func (l *ScaleLab) nextSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

func backendNSName(lab, node string) string { return nsName(lab, kindBackend, node) }

func (l *ScaleLab) build(ctx context.Context, p *plan) error {
	if _, err := l.createNS(ctx, l.fabric.Name, roleFabric); err != nil {
		return err
	}
	fh, err := l.fabric.Handle()
	if err != nil {
		return err
	}
	defer fh.Close()
	brIdx, err := addBridge(fh)
	if err != nil {
		return fmt.Errorf("in %s: %w", l.fabric.Name, err)
	}

	var hosts []*hostPlan
	for _, n := range p.nodes {
		hosts = append(hosts, &n.hostPlan)
	}
	hosts = append(hosts, p.externals...)
	var segment []netip.Addr
	for _, h := range hosts {
		segment = append(segment, h.addrs...)
	}
	for i, h := range hosts {
		role := roleLeaf
		if i < len(p.nodes) {
			role = roleNode
		}
		ns, err := l.createNS(ctx, h.ns, role)
		if err != nil {
			return err
		}
		port := fmt.Sprintf(fabPortFmt, l.nextSeq())
		if _, err := addVeth(fh, port, nil, brIdx, ns, uplinkName, nil); err != nil {
			return fmt.Errorf("in %s: %w", l.fabric.Name, err)
		}
		var others []netip.Addr
		for _, a := range segment {
			if !slices.Contains(h.addrs, a) {
				others = append(others, a)
			}
		}
		if err := configureUplink(ns, h.addrs, others, role == roleNode); err != nil {
			return err
		}
	}
	if err := l.routeExternals(p); err != nil {
		return err
	}
	for _, cp := range p.clients {
		ns, err := l.createNS(ctx, cp.ns, roleLeaf)
		if err != nil {
			return err
		}
		seq := l.nextSeq()
		if err := wirePod(netnsutil.NS{Name: p.node(cp.node).ns}, ns, fmt.Sprintf(podPortFmt, seq), seq, cp.ips); err != nil {
			return err
		}
	}
	for _, n := range p.nodes {
		if err := l.addBackend(ctx, n); err != nil {
			return err
		}
	}
	if err := l.routeNodes(p); err != nil {
		return err
	}
	if err := l.ensureServers(p.cluster); err != nil {
		return err
	}
	if l.reg != nil {
		for _, n := range p.nodes {
			if !n.datapath {
				continue
			}
			dp, err := l.reg.New(l.dpConfig(n.name))
			if err != nil {
				return fmt.Errorf("datapath %s on node %s: %w", l.reg.Name, n.name, err)
			}
			l.mu.Lock()
			l.dps[n.name] = dp
			l.mu.Unlock()
		}
	}
	l.log.Debug("scale lab built", "nodes", len(p.nodes))
	return nil
}

// routeExternals routes the Service CIDRs and ExternalRoutes from every
// external client via the ingress node. Equivalent to:
// ip -n prx-L-x-0 route replace 198.19.0.0/16 via <node-0> dev eth0 onlink
func (l *ScaleLab) routeExternals(p *plan) error {
	gw := addrOf(p.node(p.ingress).addrs, false)
	for _, x := range p.externals {
		ns := netnsutil.NS{Name: x.ns}
		h, err := ns.Handle()
		if err != nil {
			return err
		}
		eth0, err := h.LinkByName(uplinkName)
		if err != nil {
			h.Close()
			return fmt.Errorf("find %s in %s: %w", uplinkName, x.ns, err)
		}
		for _, r := range p.vipRoutes {
			if err := viaRoute(h, eth0.Attrs().Index, r, gw); err != nil {
				h.Close()
				return fmt.Errorf("in %s: %w", x.ns, err)
			}
		}
		h.Close()
	}
	return nil
}

// addBackend makes a node's backend namespace and wires it (see the
// picture at the top of this file).
func (l *ScaleLab) addBackend(ctx context.Context, n *nodePlan) error {
	bns, err := l.createNS(ctx, backendNSName(l.opts.Name, n.name), roleLeaf)
	if err != nil {
		return err
	}
	seq := l.nextSeq()
	hostMAC, backendMAC := podMACs(seq)
	nodeNS := netnsutil.NS{Name: n.ns}
	nh, err := nodeNS.Handle()
	if err != nil {
		return err
	}
	defer nh.Close()
	hostIf := fmt.Sprintf(backendPortFmt, seq)
	hostIdx, err := addVeth(nh, hostIf, hostMAC, 0, bns, uplinkName, backendMAC)
	if err != nil {
		return fmt.Errorf("in %s: %w", n.ns, err)
	}
	bh, err := bns.Handle()
	if err != nil {
		return err
	}
	defer bh.Close()
	eth0, err := bh.LinkByName(uplinkName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", uplinkName, bns.Name, err)
	}
	if err := bh.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("set %s up in %s: %w", uplinkName, bns.Name, err)
	}
	idx := eth0.Attrs().Index
	if err := onLinkRoute(bh, idx, hostPrefix(PodGateway)); err != nil {
		return fmt.Errorf("in %s: %w", bns.Name, err)
	}
	if err := permanentNeigh(bh, idx, PodGateway, hostMAC); err != nil {
		return fmt.Errorf("in %s: %w", bns.Name, err)
	}
	if err := viaRoute(bh, idx, netip.MustParsePrefix("0.0.0.0/0"), PodGateway); err != nil {
		return fmt.Errorf("in %s: %w", bns.Name, err)
	}
	lo, err := bh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", bns.Name, err)
	}
	if err := permanentNeigh(nh, hostIdx, scaleGateway, backendMAC); err != nil {
		return fmt.Errorf("in %s: %w", n.ns, err)
	}
	for _, pf := range l.opts.Backends[n.name] {
		if err := localRoute(bh, lo.Attrs().Index, pf); err != nil {
			return fmt.Errorf("in %s: %w", bns.Name, err)
		}
		if err := viaRoute(nh, hostIdx, pf, scaleGateway); err != nil {
			return fmt.Errorf("in %s: %w", n.ns, err)
		}
	}
	l.mu.Lock()
	l.backends[n.name] = &scaleBackend{ns: bns, servers: map[scalePort]*scaleServer{}}
	l.mu.Unlock()
	return nil
}

// localRoute makes every address of dst local. Equivalent to:
// ip route replace local <dst> dev lo table local
func localRoute(h *netlink.Handle, loIndex int, dst netip.Prefix) error {
	r := &netlink.Route{
		LinkIndex: loIndex,
		Dst:       ipNet(dst),
		Type:      unix.RTN_LOCAL,
		Table:     unix.RT_TABLE_LOCAL,
		Scope:     netlink.SCOPE_HOST,
		Family:    netlink.FAMILY_V4,
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("local route %s dev lo: %w", dst, err)
	}
	return nil
}

// routeNodes gives every node routes to the other nodes' backend prefixes
// and client pods via their node: the "direct" topology.
func (l *ScaleLab) routeNodes(p *plan) error {
	for _, n := range p.nodes {
		ns := netnsutil.NS{Name: n.ns}
		h, err := ns.Handle()
		if err != nil {
			return err
		}
		err = func() error {
			defer h.Close()
			eth0, err := h.LinkByName(uplinkName)
			if err != nil {
				return fmt.Errorf("find %s in %s: %w", uplinkName, n.ns, err)
			}
			for _, o := range p.nodes {
				if o.name == n.name {
					continue
				}
				gw := addrOf(o.addrs, false)
				dsts := slices.Clone(l.opts.Backends[o.name])
				for _, cp := range p.clients {
					if cp.node == o.name {
						for _, ip := range cp.ips {
							dsts = append(dsts, hostPrefix(ip))
						}
					}
				}
				for _, d := range dsts {
					if err := viaRoute(h, eth0.Attrs().Index, d, gw); err != nil {
						return fmt.Errorf("in %s: %w", n.ns, err)
					}
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}

// Prepare checks that the lab can serve cluster c (every endpoint inside
// its node's backend prefixes, the same nodes as at Build), starts echo
// servers for ports it has not served yet, and returns c as the datapath
// should see it (node addresses filled in). Call it before handing c to a
// datapath, so the datapath never points at a port nobody answers.
func (l *ScaleLab) Prepare(c *model.Cluster) (*model.Cluster, error) {
	if c == nil {
		return nil, errors.New("no cluster given")
	}
	if len(c.Nodes) != len(l.plan.nodes) {
		return nil, fmt.Errorf("the cluster has %d nodes, the scale lab %d: rebuild the lab", len(c.Nodes), len(l.plan.nodes))
	}
	for i, n := range c.Nodes {
		if n.Name != l.plan.nodes[i].name {
			return nil, fmt.Errorf("node %s is not in the scale lab (it has %s)", n.Name, l.plan.nodes[i].name)
		}
	}
	eff := &model.Cluster{Services: c.Services, Nodes: l.plan.cluster.Nodes, Warnings: c.Warnings}
	if err := checkCoverage(eff, l.plan, l.opts.Backends); err != nil {
		return nil, err
	}
	if err := l.ensureServers(eff); err != nil {
		return nil, err
	}
	return eff, nil
}

// View is the NodeView a datapath on node gets for a prepared cluster.
func (l *ScaleLab) View(node string, prepared *model.Cluster) *datapaths.NodeView {
	var n *model.Node
	if np := l.plan.node(node); np != nil {
		n = np.node
	}
	return &datapaths.NodeView{Cluster: prepared, Node: n, Proxy: l.proxy}
}

// Datapath returns the datapath instance of a node, or nil.
func (l *ScaleLab) Datapath(node string) datapaths.Datapath {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dps[node]
}

// DatapathNodes lists the nodes that run the datapath, in node order.
func (l *ScaleLab) DatapathNodes() []string {
	var out []string
	for _, n := range l.plan.nodes {
		if n.datapath {
			out = append(out, n.name)
		}
	}
	return out
}

// Nodes lists the lab's nodes in order.
func (l *ScaleLab) Nodes() []string {
	out := make([]string, len(l.plan.nodes))
	for i, n := range l.plan.nodes {
		out[i] = n.name
	}
	return out
}

// ResetDatapath runs Cleanup on a node's datapath and replaces it with a
// fresh instance, so the next Sync starts from an empty node.
func (l *ScaleLab) ResetDatapath(ctx context.Context, node string) error {
	l.mu.Lock()
	dp := l.dps[node]
	l.mu.Unlock()
	if dp == nil || l.reg == nil {
		return fmt.Errorf("node %s runs no datapath", node)
	}
	if err := dp.Cleanup(ctx); err != nil {
		return fmt.Errorf("clean up %s on node %s: %w", dp.Name(), node, err)
	}
	fresh, err := l.reg.New(l.dpConfig(node))
	if err != nil {
		return fmt.Errorf("datapath %s on node %s: %w", l.reg.Name, node, err)
	}
	l.mu.Lock()
	l.dps[node] = fresh
	l.mu.Unlock()
	return nil
}

// FlushConntrack empties a node's conntrack table. A datapath that
// reconciles conntrack on every Sync (as kube-proxy's iptables mode does
// for UDP) dumps the whole table, so a Sync's cost depends on the traffic
// that came before it; a benchmark flushes first to measure every Sync
// against the same, empty table. Equivalent to:
// ip netns exec prx-L-n-<node> conntrack -F, plus the datapath's
// datapaths.ConntrackFlusher where it has one.
func (l *ScaleLab) FlushConntrack(node string) error {
	ns := l.NodeNS(node)
	if ns.Name == "" {
		return fmt.Errorf("no node %s", node)
	}
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	// Scale mode is IPv4-only, and an AF_INET flush empties the IPv4
	// entries.
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack in %s: %w", ns.Name, err)
	}
	// A datapath with connection tracking of its own (eBPF) empties it
	// too: the kernel flush alone would leave its flows pinned.
	if f, ok := l.Datapath(node).(datapaths.ConntrackFlusher); ok {
		if _, err := f.FlushConntrack(context.Background()); err != nil {
			return err
		}
	}
	return nil
}

// NodeNS, ClientNS, ExternalNS and BackendNS name the lab's namespaces.
func (l *ScaleLab) NodeNS(node string) netnsutil.NS {
	if n := l.plan.node(node); n != nil {
		return netnsutil.NS{Name: n.ns}
	}
	return netnsutil.NS{}
}

func (l *ScaleLab) ClientNS(node string) netnsutil.NS {
	for _, c := range l.plan.clients {
		if c.node == node {
			return netnsutil.NS{Name: c.ns}
		}
	}
	return netnsutil.NS{}
}

func (l *ScaleLab) ExternalNS(i int) netnsutil.NS {
	if i >= 0 && i < len(l.plan.externals) {
		return netnsutil.NS{Name: l.plan.externals[i].ns}
	}
	return netnsutil.NS{}
}

func (l *ScaleLab) BackendNS(node string) netnsutil.NS {
	if l.plan.node(node) == nil {
		return netnsutil.NS{}
	}
	return netnsutil.NS{Name: backendNSName(l.opts.Name, node)}
}

// NodeIP, ClientIP and ExternalIP are the IPv4 addresses of those hosts.
func (l *ScaleLab) NodeIP(node string) netip.Addr {
	if n := l.plan.node(node); n != nil {
		return addrOf(n.addrs, false)
	}
	return netip.Addr{}
}

func (l *ScaleLab) ClientIP(node string) netip.Addr {
	for _, c := range l.plan.clients {
		if c.node == node {
			return addrOf(c.ips, false)
		}
	}
	return netip.Addr{}
}

func (l *ScaleLab) ExternalIP(i int) netip.Addr {
	if i >= 0 && i < len(l.plan.externals) {
		return addrOf(l.plan.externals[i].addrs, false)
	}
	return netip.Addr{}
}

// Notes are things a reader of the lab's figures should know.
func (l *ScaleLab) Notes() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.notes)
}

// Counters sums what every backend's servers saw since Build.
func (l *ScaleLab) Counters() ScaleCounters {
	l.mu.Lock()
	defer l.mu.Unlock()
	var c ScaleCounters
	for _, b := range l.backends {
		c.add(b.counters())
	}
	return c
}

// Info describes the lab for people and scripts. Endpoints are not listed
// one by one: a backend stands for all of them.
func (l *ScaleLab) Info() Info {
	info := Info{Name: l.opts.Name, Datapath: l.opts.Datapath, Topology: "direct", Fabric: l.fabric.Name, Notes: l.Notes()}
	for _, n := range l.plan.nodes {
		info.Nodes = append(info.Nodes, NodeInfo{Name: n.name, Netns: n.ns, IPs: addrStrings(n.addrs), Datapath: n.datapath})
		var ips []string
		for _, pf := range l.opts.Backends[n.name] {
			ips = append(ips, pf.String())
		}
		l.mu.Lock()
		var ports []string
		if b := l.backends[n.name]; b != nil {
			for k := range b.servers {
				ports = append(ports, fmt.Sprintf("%d/%s", k.port, k.proto))
			}
		}
		l.mu.Unlock()
		sort.Strings(ports)
		info.Endpoints = append(info.Endpoints, EndpointInfo{Name: "backend-" + n.name, Netns: backendNSName(l.opts.Name, n.name), IPs: ips, Node: n.name, Ports: ports})
	}
	for _, x := range l.plan.externals {
		info.Clients = append(info.Clients, ClientInfo{Name: x.name, Kind: "external", Netns: x.ns, IPs: addrStrings(x.addrs)})
	}
	for _, c := range l.plan.clients {
		info.Clients = append(info.Clients, ClientInfo{Name: c.name, Kind: "pod", Netns: c.ns, IPs: addrStrings(c.ips), Node: c.node})
	}
	return info
}

// Close stops every server, cleans up every datapath and deletes every
// namespace. A second Close does nothing.
func (l *ScaleLab) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if err := l.teardown(ctx); err != nil {
		return fmt.Errorf("close scale lab %s: %w", l.opts.Name, err)
	}
	return nil
}

func (l *ScaleLab) teardown(ctx context.Context) error {
	var errs []error
	l.mu.Lock()
	backends := l.backends
	l.backends = map[string]*scaleBackend{}
	dps := l.dps
	l.dps = map[string]datapaths.Datapath{}
	created := slices.Clone(l.created)
	l.created = nil
	l.mu.Unlock()
	for _, b := range backends {
		b.stop()
	}
	names := make([]string, 0, len(dps))
	for n := range dps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := dps[n].Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("datapath cleanup on node %s: %w", n, err))
		}
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := netnsutil.Delete(created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
