package topologies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// buildParallelism bounds how many pods are wired at once. Each one costs a
// namespace, two netlink handles and a handful of round trips; beyond a few
// workers the kernel's rtnl lock serialises them anyway.
const buildParallelism = 8

// Lab is a built lab. Build, Apply, Resync and Close must be called from one
// goroutine at a time (they serialise on a mutex); the accessors may be
// called from any goroutine at any time.
type Lab struct {
	op sync.Mutex // serialises Build/Apply/Resync/Close

	opts   Options
	log    *slog.Logger
	reg    *datapaths.Registration
	fabric netnsutil.NS

	// mu guards everything below for the accessors; holders of op take it
	// only for short updates.
	mu      sync.RWMutex
	plan    *plan                     // desired state, last validated
	created []string                  // namespaces made, in order
	pods    map[string]*podState      // wired pod namespaces by name
	servers map[serverKey]*echoServer // running echo servers
	hc      map[string]map[int32]*hcServer
	dps     map[string]datapaths.Datapath
	healthy map[string]*atomic.Bool // per datapath node: last Sync succeeded
	last    map[string]datapaths.SyncStats
	vips    map[netip.Prefix]bool // VIP routes present on external clients
	backend string
	sctp    bool
	notes   []string
	seq     int // link counter: prxpN, prxfN, pod MACs
	closed  bool
}

// podState is a pod namespace that exists (clients included).
type podState struct {
	plan   *podPlan
	hostIf string // prxpN in the node
}

// Build makes the lab for cluster c: fabric, nodes, external clients, client
// pods, endpoint pods, echo servers, the datapath on every datapath node and
// the health-check servers. On any error, and when ctx is cancelled, it
// tears down what it made before returning.
func Build(ctx context.Context, c *model.Cluster, opts Options) (*Lab, error) {
	if err := ValidateName(opts.Name); err != nil {
		return nil, err
	}
	switch opts.Topology {
	case "":
		opts.Topology = "direct"
	case "direct":
	default:
		return nil, fmt.Errorf("topology %q is not implemented (have: direct)", opts.Topology)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Lab{
		opts:    opts,
		log:     opts.Logger.With("lab", opts.Name),
		fabric:  netnsutil.NS{Name: fabricNSName(opts.Name)},
		pods:    map[string]*podState{},
		servers: map[serverKey]*echoServer{},
		hc:      map[string]map[int32]*hcServer{},
		dps:     map[string]datapaths.Datapath{},
		healthy: map[string]*atomic.Bool{},
		last:    map[string]datapaths.SyncStats{},
		vips:    map[netip.Prefix]bool{},
		sctp:    true,
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
	p, err := makePlan(c, opts, false)
	if err != nil {
		return nil, fmt.Errorf("lab %s: %w", opts.Name, err)
	}
	if p.v6 && !ipv6Available() {
		return nil, fmt.Errorf("lab %s: the cluster uses IPv6 but this kernel has no IPv6", opts.Name)
	}
	existing, err := netnsutil.List(labPrefix(opts.Name))
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	if len(existing) > 0 {
		return nil, fmt.Errorf("lab %s already exists (%d namespaces such as %s): take it down or run `proxyrig cleanup --name %s`",
			opts.Name, len(existing), existing[0], opts.Name)
	}

	l.op.Lock()
	defer l.op.Unlock()
	l.plan = p
	if err := l.build(ctx, p); err != nil {
		if terr := l.teardown(context.WithoutCancel(ctx)); terr != nil {
			err = errors.Join(err, fmt.Errorf("tear down after failure: %w", terr))
		}
		return nil, fmt.Errorf("build lab %s: %w", opts.Name, err)
	}
	return l, nil
}

func (l *Lab) dpConfig(node string) datapaths.Config {
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

// createNS records the name before creating it, so a teardown after any
// failure (or cancellation) removes it even if Create half-succeeded.
func (l *Lab) createNS(ctx context.Context, name string, role nsRole) (netnsutil.NS, error) {
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

func (l *Lab) nextSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

func (l *Lab) build(ctx context.Context, p *plan) error {
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
	sctp, err := sctpSupported(l.fabric)
	if err != nil {
		return fmt.Errorf("check SCTP sockets: %w", err)
	}
	l.mu.Lock()
	l.sctp = sctp
	l.mu.Unlock()

	// Segment hosts: nodes and external clients, each with eth0 on the bridge.
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
	if err := l.syncVIPRoutes(ctx, p, false); err != nil {
		return err
	}

	// Pods: client pods and endpoint pods, in parallel.
	var wired []*podPlan
	if err := l.addPods(ctx, p, append(slices.Clone(p.clients), p.pods...), &wired); err != nil {
		return err
	}
	if err := l.routePods(ctx, p, wired); err != nil {
		return err
	}
	if err := l.syncServers(ctx, p, false); err != nil {
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
			l.healthy[n.name] = &atomic.Bool{}
			l.mu.Unlock()
		}
		if err := l.syncAll(ctx, p, datapaths.SyncOptions{}); err != nil {
			return err
		}
	}
	if err := l.syncHealthChecks(p); err != nil {
		return err
	}
	l.log.Debug("lab built", "nodes", len(p.nodes), "pods", len(p.pods), "clients", len(p.clients)+len(p.externals), "servers", len(p.servers))
	return nil
}

// addPods creates and wires pod namespaces (hostNetwork groups need none).
// wired collects the plans that now exist, for routing.
func (l *Lab) addPods(ctx context.Context, p *plan, pods []*podPlan, wired *[]*podPlan) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(buildParallelism)
	var mu sync.Mutex
	for _, pp := range pods {
		if pp.hostNetwork {
			continue
		}
		seq := l.nextSeq()
		hostIf := fmt.Sprintf(podPortFmt, seq)
		g.Go(func() error {
			ns, err := l.createNS(gctx, pp.ns, roleLeaf)
			if err != nil {
				return err
			}
			ps := &podState{plan: pp, hostIf: hostIf}
			l.mu.Lock()
			l.pods[pp.ns] = ps
			l.mu.Unlock()
			if err := wirePod(netnsutil.NS{Name: p.node(pp.node).ns}, ns, hostIf, seq, pp.ips); err != nil {
				// Forget the half-wired pod, so the next Apply makes it anew
				// instead of taking it for done.
				return errors.Join(err, l.removePod(p, ps))
			}
			mu.Lock()
			*wired = append(*wired, pp)
			mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// routePods installs, on every node but a pod's own, a route to the pod via
// its node: the "direct" topology, like flannel host-gw or Calico BGP.
func (l *Lab) routePods(ctx context.Context, p *plan, pods []*podPlan) error {
	if len(pods) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(buildParallelism)
	for _, n := range p.nodes {
		g.Go(func() error {
			ns := netnsutil.NS{Name: n.ns}
			h, err := ns.Handle()
			if err != nil {
				return err
			}
			defer h.Close()
			eth0, err := h.LinkByName(uplinkName)
			if err != nil {
				return fmt.Errorf("find %s in %s: %w", uplinkName, n.ns, err)
			}
			for _, pp := range pods {
				if pp.node == n.name || pp.hostNetwork {
					continue
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				owner := p.node(pp.node)
				for _, ip := range pp.ips {
					gw := addrOf(owner.addrs, ip.Is6())
					if err := viaRoute(h, eth0.Attrs().Index, hostPrefix(ip), gw); err != nil {
						return fmt.Errorf("in %s: %w", n.ns, err)
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// unroutePods removes other nodes' routes to addresses no pod holds any more.
func (l *Lab) unroutePods(p *plan, ips []netip.Addr) error {
	if len(ips) == 0 {
		return nil
	}
	var errs []error
	for _, n := range p.nodes {
		ns := netnsutil.NS{Name: n.ns}
		h, err := ns.Handle()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, ip := range ips {
			if err := delRoute(h, hostPrefix(ip)); err != nil {
				errs = append(errs, fmt.Errorf("in %s: %w", n.ns, err))
			}
		}
		h.Close()
	}
	return errors.Join(errs...)
}

// removePod stops the pod's servers, unplugs it from its node and deletes
// its namespace.
func (l *Lab) removePod(p *plan, ps *podState) error {
	l.stopServersIn(ps.plan.ns)
	var errs []error
	if node := p.node(ps.plan.node); node != nil {
		if err := unwirePod(netnsutil.NS{Name: node.ns}, ps.hostIf); err != nil {
			errs = append(errs, err)
		}
	}
	if err := netnsutil.Delete(ps.plan.ns); err != nil {
		errs = append(errs, err)
	}
	l.mu.Lock()
	delete(l.pods, ps.plan.ns)
	l.created = slices.DeleteFunc(l.created, func(s string) bool { return s == ps.plan.ns })
	l.mu.Unlock()
	return errors.Join(errs...)
}

// syncVIPRoutes makes every external client route exactly p.vipRoutes via
// the ingress node. With prune, routes no longer wanted are removed.
func (l *Lab) syncVIPRoutes(ctx context.Context, p *plan, prune bool) error {
	ingress := p.node(p.ingress)
	want := map[netip.Prefix]bool{}
	for _, r := range p.vipRoutes {
		want[r] = true
	}
	l.mu.RLock()
	var add, del []netip.Prefix
	for _, r := range p.vipRoutes {
		if !l.vips[r] {
			add = append(add, r)
		}
	}
	if prune {
		for r := range l.vips {
			if !want[r] {
				del = append(del, r)
			}
		}
	}
	l.mu.RUnlock()
	if len(add)+len(del) == 0 {
		return nil
	}
	for _, x := range p.externals {
		if err := ctx.Err(); err != nil {
			return err
		}
		ns := netnsutil.NS{Name: x.ns}
		h, err := ns.Handle()
		if err != nil {
			return err
		}
		err = func() error {
			defer h.Close()
			eth0, err := h.LinkByName(uplinkName)
			if err != nil {
				return fmt.Errorf("find %s in %s: %w", uplinkName, x.ns, err)
			}
			for _, r := range add {
				gw := addrOf(ingress.addrs, r.Addr().Is6())
				if !gw.IsValid() {
					continue
				}
				if err := viaRoute(h, eth0.Attrs().Index, r, gw); err != nil {
					return fmt.Errorf("in %s: %w", x.ns, err)
				}
			}
			for _, r := range del {
				if err := delRoute(h, r); err != nil {
					return fmt.Errorf("in %s: %w", x.ns, err)
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	l.mu.Lock()
	for _, r := range add {
		l.vips[r] = true
	}
	for _, r := range del {
		delete(l.vips, r)
	}
	l.mu.Unlock()
	return nil
}

// syncAll runs Sync on every datapath node in parallel and records the
// stats and each node's health (kube-proxy reports itself unhealthy when
// its syncs fail, and health checks then answer 503).
func (l *Lab) syncAll(ctx context.Context, p *plan, opts datapaths.SyncOptions) error {
	l.mu.RLock()
	dps := make(map[string]datapaths.Datapath, len(l.dps))
	for k, v := range l.dps {
		dps[k] = v
	}
	l.mu.RUnlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for name, dp := range dps {
		view := &datapaths.NodeView{Cluster: p.cluster, Node: p.node(name).node, Proxy: p.proxy}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := dp.Sync(ctx, view, opts)
			l.healthy[name].Store(err == nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("sync %s on node %s: %w", dp.Name(), name, err))
				return
			}
			l.mu.Lock()
			l.last[name] = st
			if st.Backend != "" {
				l.backend = st.Backend
			}
			l.mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// Apply reconciles the lab to cluster c: pods, echo servers, health checks
// and external routes, then Syncs every datapath node. A cluster that fails
// validation (or needs different nodes) changes nothing.
//
// Order matters for measurements: new pods and their servers exist before
// the datapath points at them, and removed ones go only after the datapath
// stops pointing at them, so a probe never sees a backend that is routed
// but not there.
func (l *Lab) Apply(ctx context.Context, c *model.Cluster) error {
	l.op.Lock()
	defer l.op.Unlock()
	if l.closed {
		return fmt.Errorf("lab %s is closed", l.opts.Name)
	}
	np, err := makePlan(c, l.opts, l.plan.v6)
	if err != nil {
		return fmt.Errorf("apply to lab %s: %w", l.opts.Name, err)
	}
	if err := sameNodes(l.plan, np); err != nil {
		return fmt.Errorf("apply to lab %s: %w", l.opts.Name, err)
	}
	// The datapath nodes were fixed at Build.
	for _, n := range np.nodes {
		n.datapath = l.plan.node(n.name).datapath
	}
	np.layoutHealthChecks()

	want := map[string]*podPlan{}
	for _, pp := range append(slices.Clone(np.clients), np.pods...) {
		if !pp.hostNetwork {
			want[pp.ns] = pp
		}
	}
	l.mu.RLock()
	var stale, changed []*podState
	for ns, ps := range l.pods {
		if w, ok := want[ns]; !ok {
			stale = append(stale, ps)
		} else if !w.sameWiring(ps.plan) {
			changed = append(changed, ps)
		}
	}
	var add []*podPlan
	for ns, pp := range want {
		if ps, ok := l.pods[ns]; !ok || !pp.sameWiring(ps.plan) {
			add = append(add, pp)
		}
	}
	l.mu.RUnlock()
	sortPods := func(s []*podState) {
		sort.Slice(s, func(i, j int) bool { return s[i].plan.ns < s[j].plan.ns })
	}
	sortPods(stale)
	sortPods(changed)
	sort.Slice(add, func(i, j int) bool { return add[i].ns < add[j].ns })

	var errs []error
	// A pod whose namespace name stays but whose wiring changes (it moved
	// node, or gained an address) has to go first: its name is reused.
	for _, ps := range changed {
		if err := l.removePod(l.plan, ps); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Lock()
	l.plan = np
	for ns, ps := range l.pods {
		if w, ok := want[ns]; ok && w.sameWiring(ps.plan) {
			ps.plan = w // same links; name and ports may have changed
		}
	}
	l.mu.Unlock()

	var wired []*podPlan
	if err := l.addPods(ctx, np, add, &wired); err != nil {
		errs = append(errs, err)
	}
	if err := l.routePods(ctx, np, wired); err != nil {
		errs = append(errs, err)
	}
	if err := l.syncServers(ctx, np, false); err != nil {
		errs = append(errs, err)
	}
	if err := l.syncVIPRoutes(ctx, np, false); err != nil {
		errs = append(errs, err)
	}
	if err := l.syncHealthChecks(np); err != nil {
		errs = append(errs, err)
	}
	if err := l.syncAll(ctx, np, datapaths.SyncOptions{}); err != nil {
		errs = append(errs, err)
	}

	// Now the datapath no longer sends anything to what goes away.
	if err := l.syncServers(ctx, np, true); err != nil {
		errs = append(errs, err)
	}
	for _, ps := range stale {
		if err := l.removePod(np, ps); err != nil {
			errs = append(errs, err)
		}
	}
	var gone []netip.Addr
	held := map[netip.Addr]bool{}
	for _, pp := range want {
		for _, ip := range pp.ips {
			held[ip] = true
		}
	}
	for _, ps := range append(stale, changed...) {
		for _, ip := range ps.plan.ips {
			if !held[ip] {
				gone = append(gone, ip)
			}
		}
	}
	if err := l.unroutePods(np, gone); err != nil {
		errs = append(errs, err)
	}
	if err := l.syncVIPRoutes(ctx, np, true); err != nil {
		errs = append(errs, err)
	}
	l.log.Debug("cluster applied", "added", len(add), "removed", len(stale), "rewired", len(changed))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apply to lab %s: %w", l.opts.Name, err)
	}
	return nil
}

// Resync re-runs Sync on every datapath node with the current cluster;
// force makes it a full rewrite, repairing state changed out of band.
func (l *Lab) Resync(ctx context.Context, force bool) error {
	l.op.Lock()
	defer l.op.Unlock()
	if l.closed {
		return fmt.Errorf("lab %s is closed", l.opts.Name)
	}
	return l.syncAll(ctx, l.plan, datapaths.SyncOptions{ForceFull: force})
}

// LastSync returns the stats of each datapath node's last successful Sync.
func (l *Lab) LastSync() map[string]datapaths.SyncStats {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make(map[string]datapaths.SyncStats, len(l.last))
	for k, v := range l.last {
		out[k] = v
	}
	return out
}

// Close stops every server, runs each datapath's Cleanup and deletes every
// namespace of the lab. A second Close does nothing.
func (l *Lab) Close(ctx context.Context) error {
	l.op.Lock()
	defer l.op.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if err := l.teardown(ctx); err != nil {
		return fmt.Errorf("close lab %s: %w", l.opts.Name, err)
	}
	return nil
}

// teardown undoes whatever exists, in the reverse order of building:
// servers first (their sockets pin namespaces), then the datapaths, then
// the namespaces, newest first.
func (l *Lab) teardown(ctx context.Context) error {
	var errs []error
	l.stopHealthChecks()
	l.stopServersIn("")
	l.mu.Lock()
	dps := l.dps
	l.dps = map[string]datapaths.Datapath{}
	created := slices.Clone(l.created)
	l.mu.Unlock()
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
	l.mu.Lock()
	l.created = nil
	l.pods = map[string]*podState{}
	l.vips = map[netip.Prefix]bool{}
	l.mu.Unlock()
	return errors.Join(errs...)
}

// Info describes the lab for people and scripts.
func (l *Lab) Info() Info {
	l.mu.RLock()
	defer l.mu.RUnlock()
	p := l.plan
	info := Info{
		Name:     l.opts.Name,
		Datapath: l.opts.Datapath,
		Backend:  l.backend,
		Topology: l.opts.Topology,
		Fabric:   l.fabric.Name,
		SCTP:     l.sctp,
		Notes:    slices.Clone(l.notes),
	}
	for _, n := range p.nodes {
		info.Nodes = append(info.Nodes, NodeInfo{
			Name: n.name, Netns: n.ns, IPs: addrStrings(n.addrs), Zone: n.node.Zone, Datapath: n.datapath,
		})
	}
	for _, pp := range p.pods {
		info.Endpoints = append(info.Endpoints, EndpointInfo{
			Name: pp.name, Netns: pp.ns, IPs: addrStrings(pp.ips), Node: pp.node,
			HostNetwork: pp.hostNetwork, Ports: slices.Clone(pp.ports),
		})
	}
	sort.SliceStable(info.Endpoints, func(i, j int) bool { return info.Endpoints[i].Name < info.Endpoints[j].Name })
	for _, x := range p.externals {
		info.Clients = append(info.Clients, ClientInfo{Name: x.name, Kind: "external", Netns: x.ns, IPs: addrStrings(x.addrs)})
	}
	for _, c := range p.clients {
		info.Clients = append(info.Clients, ClientInfo{Name: c.name, Kind: "pod", Netns: c.ns, IPs: addrStrings(c.ips), Node: c.node})
	}
	return info
}

func addrStrings(a []netip.Addr) []string {
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = x.String()
	}
	return out
}

// Cluster is the effective cluster: the input with the lab's implicit node
// (if it had none) and default node addresses filled in.
func (l *Lab) Cluster() *model.Cluster {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.plan.cluster
}

// NodeNS is the namespace of a node; the zero NS if there is no such node.
func (l *Lab) NodeNS(node string) netnsutil.NS {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n := l.plan.node(node); n != nil {
		return netnsutil.NS{Name: n.ns}
	}
	return netnsutil.NS{}
}

// ClientNS is the namespace of a node's client pod.
func (l *Lab) ClientNS(node string) netnsutil.NS {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, c := range l.plan.clients {
		if c.node == node {
			return netnsutil.NS{Name: c.ns}
		}
	}
	return netnsutil.NS{}
}

// ExternalNS is the namespace of external client i.
func (l *Lab) ExternalNS(i int) netnsutil.NS {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i >= 0 && i < len(l.plan.externals) {
		return netnsutil.NS{Name: l.plan.externals[i].ns}
	}
	return netnsutil.NS{}
}

// EndpointNS finds an endpoint's namespace by name (targetRef name) or by
// one of its IPs; a host-network endpoint lives in its node's namespace.
func (l *Lab) EndpointNS(name string) netnsutil.NS {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, pp := range l.plan.pods {
		if pp.name == name {
			return netnsutil.NS{Name: pp.ns}
		}
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		for _, pp := range l.plan.pods {
			if slices.Contains(pp.ips, ip) {
				return netnsutil.NS{Name: pp.ns}
			}
		}
	}
	return netnsutil.NS{}
}

// NodeIP is a node's first address of the family; invalid if none.
func (l *Lab) NodeIP(node string, v6 bool) netip.Addr {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n := l.plan.node(node); n != nil {
		return addrOf(n.addrs, v6)
	}
	return netip.Addr{}
}

// ClientIP is the address of a node's client pod.
func (l *Lab) ClientIP(node string, v6 bool) netip.Addr {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, c := range l.plan.clients {
		if c.node == node {
			return addrOf(c.ips, v6)
		}
	}
	return netip.Addr{}
}

// ExternalIP is the address of external client i.
func (l *Lab) ExternalIP(i int, v6 bool) netip.Addr {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i >= 0 && i < len(l.plan.externals) {
		return addrOf(l.plan.externals[i].addrs, v6)
	}
	return netip.Addr{}
}

// note records something a person reading Info should know, once.
func (l *Lab) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.notes, s) {
		l.notes = append(l.notes, s)
	}
}
