// Package nftables is proxyrig's reference nftables datapath. It mirrors
// kube-proxy's nftables mode (pkg/proxy/nftables/proxier.go): one
// "kube-proxy" table per family, the same base chains, verdict maps, sets,
// hashed chain names, comments and rules, and the same partial-sync
// strategy, so its per-packet and per-sync costs are the real ones. See
// README.md for the layout and the deliberate divergences from iptables.
//
// Rendering (render.go) is a pure function of the node's view; planning
// (plan.go) turns it into one knftables transaction; this file applies it
// inside the node's network namespace.
package nftables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/knftables"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// Name is the registered name of this datapath.
const Name = "nftables"

func init() {
	datapaths.Register(datapaths.Registration{
		Name:        Name,
		Description: "kube-proxy's nftables mode: one kube-proxy table per family, service-ips/service-nodeports verdict maps, numgen load balancing, atomic partial transactions",
		New:         New,
		Check:       checkRegistration,
	})
}

// Proxier programs one node. Calls are serialised, as kube-proxy
// serialises syncProxyRules.
type Proxier struct {
	cfg datapaths.Config
	log *slog.Logger

	mu sync.Mutex
	// nft is created on first use: creating it runs nft in the namespace.
	nft nftClient
	// applied is what the last successful syncs wrote, per family.
	applied map[knftables.Family]*familyApplied
	// needFull forces the next sync to be full: at start, and after any
	// failure (the element bookkeeping may then disagree with the kernel).
	needFull bool
	// baseChainsRecreated is kube-proxy's "flushed": the first full sync of
	// a proxier deletes and recreates the base chains.
	baseChainsRecreated bool
	// sysctlOrig holds the values of the sysctls we changed, for Cleanup.
	sysctlOrig map[string]string
	// names keeps hashed chain names from one sync to the next.
	names *nameCache
	// layout is kube-proxy's, or nftables-flat's (flat.go).
	layout layout

	// now is the clock for stale-chain deletion (tests move it).
	now func() time.Time
	// hostOps are the node-level side effects besides nftables (conntrack
	// cleanup, sysctls); unit tests on a fake leave them out.
	hostOps bool
	// hookTransaction, when set by tests, may alter the main transaction
	// of a sync before it runs; used to inject failures.
	hookTransaction func(*knftables.Transaction)
}

var _ datapaths.Datapath = (*Proxier)(nil)

// New creates the datapath for one node. It touches nothing yet.
func New(cfg datapaths.Config) (datapaths.Datapath, error) {
	if cfg.NS.Name == "" {
		return nil, errors.New("nftables datapath: Config.NS names no network namespace")
	}
	p := newProxier(cfg, nil)
	p.hostOps = true
	return p, nil
}

// newProxier builds a proxier around an nft client; nil means the real
// one, created in cfg.NS on first use.
func newProxier(cfg datapaths.Config, nft nftClient) *Proxier {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxier{
		cfg:        cfg,
		log:        log.With("datapath", Name, "node", cfg.Node, "netns", cfg.NS.Name),
		nft:        nft,
		needFull:   true,
		sysctlOrig: map[string]string{},
		names:      newNameCache(),
		now:        time.Now,
	}
	p.resetApplied()
	return p
}

func (p *Proxier) resetApplied() {
	p.applied = map[knftables.Family]*familyApplied{}
	for _, f := range families {
		p.applied[f] = newFamilyApplied(f)
	}
}

// Name implements datapaths.Datapath.
func (p *Proxier) Name() string {
	if p.layout == layoutFlat {
		return FlatName
	}
	return Name
}

func (p *Proxier) client() (nftClient, error) {
	if p.nft != nil {
		return p.nft, nil
	}
	c, err := newNSClient(p.cfg.NS)
	if err != nil {
		return nil, err
	}
	p.nft = c
	return c, nil
}

// Check reports whether the node's namespace can run this datapath. It
// changes nothing: it asks the kernel to validate (nft --check) a small
// ruleset that uses every expression this datapath writes.
func (p *Proxier) Check(ctx context.Context) error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	if !netnsutil.Exists(p.cfg.NS.Name) {
		return fmt.Errorf("check nftables: network namespace %q does not exist", p.cfg.NS.Name)
	}
	return checkIn(ctx, p.cfg.NS)
}

// checkRegistration is the registry's node-less Check. With an existing
// namespace in cfg it checks there; otherwise in a throwaway namespace, so
// the root namespace's ruleset is never touched, not even by a check.
func checkRegistration(ctx context.Context, cfg datapaths.Config) error {
	if err := checkPrivileges(); err != nil {
		return err
	}
	if cfg.NS.Name != "" && netnsutil.Exists(cfg.NS.Name) {
		return checkIn(ctx, cfg.NS)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	ns, err := netnsutil.Create("prx-nftchk" + hex.EncodeToString(rnd[:]))
	if err != nil {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "cannot create a network namespace to probe nftables: " + err.Error()}
	}
	defer func() { _ = netnsutil.Delete(ns.Name) }()
	return checkIn(ctx, ns)
}

func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "needs root (CAP_NET_ADMIN) to program nftables"}
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "nft not found in PATH (Debian package nftables)"}
	}
	return nil
}

// checkView exercises every kind of rule the renderer writes: NodePorts,
// LB source ranges, eTP=Local short-circuits (fib), affinity sets with
// timeouts, numgen maps, reject and drop, both families.
func checkView() *datapaths.NodeView {
	a := netip.MustParseAddr
	ep := func(ip string) *model.Endpoint {
		return &model.Endpoint{IP: a(ip), Port: 8080, NodeName: "check", Ready: true, Serving: true}
	}
	svc := &model.Service{
		Name: model.ServiceName{Namespace: "proxyrig", Name: "check"}, Type: model.LoadBalancer,
		ClusterIPs:      []netip.Addr{a("198.19.0.1"), a("2001:db8:19::1")},
		LoadBalancerIPs: []netip.Addr{a("198.19.200.1"), a("2001:db8:200::1")},
		LoadBalancerSourceRanges: []netip.Prefix{
			netip.MustParsePrefix("198.18.0.0/16"), netip.MustParsePrefix("2001:db8:18::/64"),
		},
		SessionAffinity: true, AffinityTimeout: 10 * time.Second,
		ExternalTrafficPolicy: model.PolicyLocal, InternalTrafficPolicy: model.PolicyCluster,
		Ports: []*model.ServicePort{
			{Name: "tcp", Protocol: model.TCP, Port: 80, NodePort: 30080, Endpoints: []*model.Endpoint{ep("198.18.64.1"), ep("2001:db8:64::1")}},
			{Name: "udp", Protocol: model.UDP, Port: 53, NodePort: 30053},
		},
	}
	node := &model.Node{Name: "check", Addresses: []netip.Addr{a("198.18.0.1"), a("2001:db8:18::1")}}
	return &datapaths.NodeView{
		Cluster: &model.Cluster{Services: []*model.Service{svc}, Nodes: []*model.Node{node}},
		Node:    node,
		Proxy: datapaths.ProxyConfig{
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.64.0/18"), netip.MustParsePrefix("2001:db8:64::/48")},
			ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("2001:db8:19::/108")},
		},
	}
}

func checkIn(ctx context.Context, ns netnsutil.NS) error {
	c, err := newNSClient(ns)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &datapaths.NotSupportedError{Datapath: Name, Reason: err.Error()}
	}
	tx, err := fullTransactionFor(ctx, c, checkView())
	if err != nil {
		return err
	}
	if err := c.Check(ctx, tx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "kernel refuses the kube-proxy nftables ruleset (nft --check): " + strings.TrimSpace(err.Error())}
	}
	return nil
}

// fullTransactionFor is the transaction a first full sync of view writes
// through c, planned against whatever c lists.
func fullTransactionFor(ctx context.Context, c nftClient, view *datapaths.NodeView) (*knftables.Transaction, error) {
	return fullTransactionLayout(ctx, c, view, layoutKubeProxy)
}

// fullTransactionLayout is fullTransactionFor in either layout.
func fullTransactionLayout(ctx context.Context, c nftClient, view *datapaths.NodeView, lay layout) (*knftables.Transaction, error) {
	rs, err := renderLayout(view, nil, lay)
	if err != nil {
		return nil, err
	}
	applied := map[knftables.Family]*familyApplied{}
	for _, f := range families {
		applied[f] = newFamilyApplied(f)
	}
	plan := planSync(ctx, c.NewTransaction(), rs, applied, true, true, c.List, time.Now())
	return plan.tx, nil
}

// Sync implements datapaths.Datapath: render the view, delete stale chains
// that are due, plan one transaction (full or partial) for both families,
// run it with one `nft -f`, then delete stale UDP conntrack entries.
func (p *Proxier) Sync(ctx context.Context, view *datapaths.NodeView, opts datapaths.SyncOptions) (datapaths.SyncStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stats := datapaths.SyncStats{Backend: p.Name()}

	t := time.Now()
	rs, err := renderLayout(view, p.names, p.layout)
	if err != nil {
		return stats, err
	}
	stats.Render += time.Since(t)
	stats.Objects = rs.Objects()

	t = time.Now()
	nft, err := p.client()
	stats.Apply += time.Since(t)
	if err != nil {
		return stats, err
	}

	full := opts.ForceFull || p.needFull
	for _, fs := range rs.Families {
		if p.applied[fs.Family].base != fs.Base.key() {
			// The fixed part changed (node addresses, ServiceCIDRs,
			// --nodeport-addresses): kube-proxy gets those at start-up
			// or through a node change, both of which mean a full sync.
			full = true
		}
	}
	stats.Full = full

	now := p.now()
	t = time.Now()
	plan := planSync(ctx, nft.NewTransaction(), rs, p.applied, full, full && !p.baseChainsRecreated, nft.List, now)
	if p.hookTransaction != nil {
		p.hookTransaction(plan.tx)
	}
	stats.Render += time.Since(t) - plan.listTime
	stats.Apply += plan.listTime
	for _, w := range plan.warnings {
		p.log.Warn("nftables sync planning", "err", w)
	}

	t = time.Now()
	if plan.tx.NumOperations() > 0 {
		// An empty transaction changes nothing; nft would still read the
		// whole table into its cache first.
		err = nft.Run(ctx, plan.tx)
	}
	stats.Apply += time.Since(t)
	if err != nil {
		// Nothing was applied (a transaction is all or nothing), but the
		// element bookkeeping was advanced and the stale-chain times are
		// wrong: start over with a full sync next time.
		p.needFull = true
		for _, fa := range p.applied {
			clear(fa.staleChains)
		}
		return stats, fmt.Errorf("apply nftables %s sync (%d operations) in netns %s: %w", syncKind(full), plan.tx.NumOperations(), p.cfg.NS.Name, err)
	}
	for _, fs := range rs.Families {
		fa := p.applied[fs.Family]
		fa.services = plan.services[fs.Family]
		fa.base = fs.Base.key()
	}
	if full {
		p.baseChainsRecreated = true
	}
	p.needFull = false
	stats.Written += plan.tx.NumOperations()
	stats.ChangedServices = len(plan.changed)

	// Chains orphaned by earlier syncs, flushed since, are deleted in a
	// transaction of their own: failing it must not fail the sync. Not in
	// every sync, as kube-proxy does: deleting a chain makes nft 1.0.x read
	// every chain into its cache first (about 0.3 s at 10k Services),
	// which would cost a busy cluster's single changes ten times what
	// they cost otherwise. A flushed chain nothing refers to is inert, so
	// the due ones go in a sync that changed no Service (the periodic
	// resync), a full sync, or once staleChainBatch are due.
	if full || len(plan.changed) == 0 || staleChainsDue(p.applied, now) >= staleChainBatch {
		if tx := planStaleChainDeletion(nft.NewTransaction(), p.applied, now); tx != nil {
			t = time.Now()
			err := nft.Run(ctx, tx)
			stats.Apply += time.Since(t)
			if err != nil {
				p.log.Warn("cannot delete stale nftables chains; a later sync retries", "err", err)
			} else {
				stats.Written += tx.NumOperations()
			}
		}
	}

	if p.hostOps {
		t = time.Now()
		p.tuneConntrack()
		n, err := p.cleanStaleUDP(view.Cluster)
		stats.ConntrackFlushed = n
		if err != nil {
			// As in kube-proxy, a failed cleanup does not fail the sync:
			// the rules are in place, and the next sync tries again.
			p.log.Warn("stale UDP conntrack cleanup failed", "err", err)
		}
		stats.Apply += time.Since(t)
	}
	return stats, nil
}

func syncKind(full bool) string {
	if full {
		return "full"
	}
	return "partial"
}

func (p *Proxier) cleanStaleUDP(cluster *model.Cluster) (int, error) {
	h, err := p.cfg.NS.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return cleanStaleUDPConntrack(h, cluster)
}

// OptionTCPBeLiberal is the Config.Options key that turns off (value
// "false") setting nf_conntrack_tcp_be_liberal; see tuneConntrack.
const OptionTCPBeLiberal = "conntrack-tcp-be-liberal"

// tuneConntrack applies kube-proxy's conntrack settings in the node's
// namespace (all three are per network namespace):
//   - --conntrack-tcp-timeout-established 24h and -close-wait 1h, which
//     kube-proxy sets in every mode;
//   - conntrack.tcpBeLiberal (nf_conntrack_tcp_be_liberal=1). nftables
//     mode has no "ct state invalid drop" rule (kubernetes#122663 removed
//     it): a TCP segment conntrack finds out of window would otherwise be
//     delivered un-NATed and answered with a RST that kills the
//     connection (CONFORMANCE CT-05). kube-proxy's nftables CI jobs run
//     with tcpBeLiberal set for that reason (kubernetes/test-infra#31591),
//     and so does proxyrig unless Options["conntrack-tcp-be-liberal"] is
//     "false".
func (p *Proxier) tuneConntrack() {
	settings := [][2]string{
		{"net.netfilter.nf_conntrack_tcp_timeout_established", "86400"},
		{"net.netfilter.nf_conntrack_tcp_timeout_close_wait", "3600"},
	}
	if p.cfg.Options[OptionTCPBeLiberal] != "false" {
		settings = append(settings, [2]string{"net.netfilter.nf_conntrack_tcp_be_liberal", "1"})
	}
	for _, s := range settings {
		if err := p.setSysctl(s[0], s[1]); err != nil {
			p.log.Warn("cannot set conntrack timeout", "key", s[0], "err", err)
		}
	}
}

// setSysctl writes a sysctl in the node's namespace, remembering the first
// value it replaced so Cleanup can put it back.
func (p *Proxier) setSysctl(key, value string) error {
	cur, err := p.cfg.NS.ReadSysctl(key)
	if err != nil {
		return fmt.Errorf("read sysctl %s in netns %s: %w", key, p.cfg.NS.Name, err)
	}
	if cur == value {
		return nil
	}
	if _, ok := p.sysctlOrig[key]; !ok {
		p.sysctlOrig[key] = cur
	}
	if err := p.cfg.NS.Sysctl(key, value); err != nil {
		return fmt.Errorf("set sysctl in netns %s: %w", p.cfg.NS.Name, err)
	}
	return nil
}

// Cleanup implements datapaths.Datapath: it deletes both kube-proxy tables
// (kube-proxy's CleanupLeftovers) and restores the sysctls it changed. It
// is safe to call when nothing is installed.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetApplied()
	p.needFull = true
	p.baseChainsRecreated = false
	var errs []error
	nft, err := p.client()
	if err != nil {
		errs = append(errs, err)
	} else {
		tx := nft.NewTransaction()
		cleanupTransaction(tx)
		if err := nft.Run(ctx, tx); err != nil {
			errs = append(errs, fmt.Errorf("delete kube-proxy tables in netns %s: %w", p.cfg.NS.Name, err))
		}
	}
	keys := make([]string, 0, len(p.sysctlOrig))
	for k := range p.sysctlOrig {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := p.cfg.NS.Sysctl(k, p.sysctlOrig[k]); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl in netns %s: %w", p.cfg.NS.Name, err))
			continue
		}
		delete(p.sysctlOrig, k)
	}
	return errors.Join(errs...)
}

// RulesetText renders what a full sync of view leaves in an empty node, as
// `nft -f` input ("add table ...", "add chain ...", "add rule ...", "add
// element ..."), both families. It is what the golden files hold, and what
// proxyrig can show a person. Equivalent to, after a sync:
// nft list table ip kube-proxy; nft list table ip6 kube-proxy.
func RulesetText(view *datapaths.NodeView) (string, error) {
	fake := newFakeClient()
	tx, err := fullTransactionFor(context.Background(), fake, view)
	if err != nil {
		return "", err
	}
	if err := fake.Run(context.Background(), tx); err != nil {
		return "", fmt.Errorf("render nftables ruleset: the transaction does not apply: %w", err)
	}
	return fake.Dump(), nil
}
