// Package ipvs is proxyrig's reference IPVS datapath. It mirrors
// kube-proxy's IPVS mode (pkg/proxy/ipvs/proxier.go): every Service VIP
// is bound to the dummy interface kube-ipvs0 and served by an IPVS
// virtual server with one real server per endpoint, and a constant-size
// set of iptables rules matching ipsets does what IPVS cannot (masquerade,
// source ranges, filtering VIP ports). See README.md for the layout and
// for where it deliberately differs from iptables mode.
//
// Rendering (render.go) is a pure function of the node's view; this file
// applies it inside the node's network namespace with moby/ipvs, netlink,
// `ipset restore` and iptables-restore.
package ipvs

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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
)

// Name is the registered name of this datapath.
const Name = "ipvs"

// Options this datapath reads from datapaths.Config.Options.
const (
	// OptionScheduler picks the IPVS scheduler: rr (default), wrr, lc, sh
	// or mh (kube-proxy's --ipvs-scheduler).
	OptionScheduler = "scheduler"
	// OptionGracefulCheckInterval is how often real servers left at weight
	// 0 are checked for drained connections between syncs, as a Go
	// duration; kube-proxy checks every minute. Every Sync checks too.
	OptionGracefulCheckInterval = "graceful-check-interval"
)

// DefaultGracefulCheckInterval is kube-proxy's rsCheckDeleteInterval.
const DefaultGracefulCheckInterval = time.Minute

func init() {
	datapaths.Register(datapaths.Registration{
		Name:        Name,
		Description: "kube-proxy's IPVS mode: VIPs on kube-ipvs0, one IPVS virtual server per VIP:port with rr/wrr/lc/sh/mh scheduling, ipset-matching iptables rules for masquerade and filtering, graceful termination",
		New:         New,
		Check:       checkRegistration,
	})
}

// Proxier programs one node. Calls are serialised, as kube-proxy
// serialises syncProxyRules.
type Proxier struct {
	cfg         datapaths.Config
	backend     backend
	scheduler   string
	drainPeriod time.Duration
	log         *slog.Logger

	mu     sync.Mutex
	probed bool
	// randomFully: iptables supports MASQUERADE --random-fully.
	randomFully bool
	// needFull forces the next sync to be full: at start and after any
	// failure.
	needFull bool
	// services holds the per-Service fingerprints of the last successful
	// sync, to count the Services a sync changed.
	services map[string]uint64
	// grace lists the real servers draining at weight 0.
	grace graceful
	// drainGen identifies the current background drain loop; a loop whose
	// generation is stale exits. draining is true while one runs.
	drainGen int
	draining bool
	// sysctlOrig holds the values of the sysctls we changed, for Cleanup.
	sysctlOrig map[string]string

	// newClient opens an IPVS handle in the node's namespace; tests
	// replace it.
	newClient func() (ipvsClient, error)
	// hookRendered, when set, may alter the rendered state before it is
	// applied; FailNextSync and tests use it.
	hookRendered func(*State)
	// lastView is the view of the last successful sync: what a failed
	// sync rolls back to (rollback.go).
	lastView *datapaths.NodeView
}

var _ datapaths.Datapath = (*Proxier)(nil)

// New creates the datapath for one node. It touches nothing yet.
func New(cfg datapaths.Config) (datapaths.Datapath, error) {
	b, err := newBackend(cfg.IPTablesBackend)
	if err != nil {
		return nil, err
	}
	if cfg.NS.Name == "" {
		return nil, errors.New("ipvs datapath: Config.NS names no network namespace")
	}
	sched, period, err := parseOptions(cfg.Options)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxier{
		cfg:         cfg,
		backend:     b,
		scheduler:   sched,
		drainPeriod: period,
		log:         log.With("datapath", Name, "node", cfg.Node, "netns", cfg.NS.Name),
		needFull:    true,
		services:    map[string]uint64{},
		grace:       graceful{},
		sysctlOrig:  map[string]string{},
	}
	p.newClient = p.openClient
	return p, nil
}

func parseOptions(opts map[string]string) (string, time.Duration, error) {
	sched, period := DefaultScheduler, DefaultGracefulCheckInterval
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := opts[k]
		switch k {
		case OptionScheduler:
			if v == "" {
				continue
			}
			if !slices.Contains(Schedulers, v) {
				return "", 0, fmt.Errorf("ipvs datapath: option %s=%q: want one of %s", k, v, strings.Join(Schedulers, ", "))
			}
			sched = v
		case OptionGracefulCheckInterval:
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return "", 0, fmt.Errorf("ipvs datapath: option %s=%q: want a positive duration such as 1m", k, v)
			}
			period = d
		default:
			return "", 0, fmt.Errorf("ipvs datapath: unknown option %q (known: %s, %s)", k, OptionScheduler, OptionGracefulCheckInterval)
		}
	}
	return sched, period, nil
}

// Name implements datapaths.Datapath.
func (p *Proxier) Name() string { return Name }

// label is what SyncStats.Backend records: the scheduler and the iptables
// flavour, both of which change what a figure means.
func (p *Proxier) label() string { return "ipvs-" + p.scheduler + "/" + p.backend.label() }

// openClient opens an IPVS netlink socket in the node's namespace. It is
// opened per use and closed after, so no socket pins a namespace that the
// lab deletes, even if this instance is dropped without Cleanup.
func (p *Proxier) openClient() (ipvsClient, error) {
	if err := checkIPVS(); err != nil {
		return nil, err
	}
	h, err := libipvs.New(p.cfg.NS.Path())
	if err != nil {
		return nil, fmt.Errorf("open IPVS netlink socket in netns %s: %w", p.cfg.NS.Name, err)
	}
	return h, nil
}

// checkIPVS asks for IPVS' generic netlink family, which exists exactly
// when the kernel has IPVS. It only reads; where ip_vs is a module that is
// not loaded yet, the kernel's own autoloader loads it on this lookup (the
// module carries the genl family alias), as it would for kube-proxy.
func checkIPVS() error {
	if _, err := netlink.GenlFamilyGet("IPVS"); err != nil {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "kernel lacks IPVS"}
	}
	return nil
}

// Check implements datapaths.Datapath. It changes nothing in the node: it
// asks the kernel for IPVS, and tries kube-ipvs0, ipset and iptables in a
// throwaway namespace.
func (p *Proxier) Check(ctx context.Context) error {
	if !netnsutil.Exists(p.cfg.NS.Name) {
		return fmt.Errorf("check %s: network namespace %q does not exist", Name, p.cfg.NS.Name)
	}
	return check(ctx, p.backend)
}

// checkRegistration is the registry's node-less Check.
func checkRegistration(ctx context.Context, cfg datapaths.Config) error {
	b, err := newBackend(cfg.IPTablesBackend)
	if err != nil {
		return err
	}
	if _, _, err := parseOptions(cfg.Options); err != nil {
		return err
	}
	return check(ctx, b)
}

func check(ctx context.Context, b backend) error {
	if os.Geteuid() != 0 {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "needs root (CAP_NET_ADMIN) to program IPVS and netfilter"}
	}
	if err := checkIPVS(); err != nil {
		return err
	}
	for _, bin := range append(b.binaries(), "ipset") {
		if _, err := exec.LookPath(bin); err != nil {
			pkg := "iptables"
			if bin == "ipset" {
				pkg = "ipset"
			}
			return &datapaths.NotSupportedError{Datapath: Name, Reason: bin + " not found in PATH (Debian package " + pkg + ")"}
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	ns, err := netnsutil.Create("prx-ipvschk" + hex.EncodeToString(rnd[:]))
	if err != nil {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "cannot create a network namespace to probe the kernel: " + err.Error()}
	}
	defer func() { _ = netnsutil.Delete(ns.Name) }()
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: dummyDevice}}); err != nil {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "kernel lacks dummy interfaces (" + err.Error() + ")"}
	}
	// Equivalent to: ip netns exec <scratch> ipset list -n
	if _, err := ns.Run(ctx, nil, "ipset", "list", "-n"); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "kernel lacks ipset: " + err.Error()}
	}
	for _, f := range families {
		for _, table := range []string{tableNAT, tableFilter} {
			if _, err := ns.Run(ctx, nil, b.saveCmd(f), "-t", table); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return &datapaths.NotSupportedError{Datapath: Name, Reason: fmt.Sprintf("kernel refuses %s %s table: %v", b.label(), table, err)}
			}
		}
	}
	return nil
}

// sysctls kube-proxy's IPVS mode sets (NewProxier), and the conntrack
// timeouts it sets in every mode. All are per network namespace.
var ipvsSysctls = [][2]string{
	{"net.ipv4.ip_forward", "1"},
	// Let netfilter see IPVS connections, so iptables can masquerade them.
	{"net.ipv4.vs.conntrack", "1"},
	// Drop (and expire) a connection's packets once its real server is
	// gone, so clients reconnect instead of hanging; this is what lets UDP
	// real servers be deleted at once.
	{"net.ipv4.vs.expire_nodest_conn", "1"},
	// Expire persistence templates pointing at a weight-0 real server, so
	// ClientIP affinity does not pin new connections to a draining one.
	{"net.ipv4.vs.expire_quiescent_template", "1"},
}

var conntrackSysctls = [][2]string{
	{"net.netfilter.nf_conntrack_tcp_timeout_established", "86400"},
	{"net.netfilter.nf_conntrack_tcp_timeout_close_wait", "3600"},
}

// probe sets the node-level sysctls and detects, once, what Render needs.
func (p *Proxier) probe(ctx context.Context) error {
	if p.probed {
		return nil
	}
	for _, s := range ipvsSysctls {
		if err := p.setSysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	// kube-proxy sets conn_reuse_mode=0 only on kernels older than 5.9,
	// where mode 1 stalls reused ports for a second (kubernetes#93297).
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil && kernelOlderThan(string(rel), 5, 9) {
		if err := p.setSysctl("net.ipv4.vs.conn_reuse_mode", "0"); err != nil {
			return err
		}
	}
	for _, s := range conntrackSysctls {
		if err := p.setSysctl(s[0], s[1]); err != nil {
			p.log.Warn("cannot set conntrack timeout", "key", s[0], "err", err)
		}
	}
	// Equivalent to: ip netns exec <ns> iptables-legacy --version
	out, err := p.cfg.NS.Run(ctx, nil, p.backend.cmd, "--version")
	if err != nil {
		return fmt.Errorf("probe %s version in netns %s: %w", p.backend.cmd, p.cfg.NS.Name, err)
	}
	p.randomFully = supportsRandomFully(string(out))
	p.probed = true
	return nil
}

// kernelOlderThan reports whether a kernel release ("6.1.0-56-amd64") is
// older than major.minor; unparseable releases count as new.
func kernelOlderThan(release string, major, minor int) bool {
	parts := strings.SplitN(strings.TrimSpace(release), ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma < major || (ma == major && mi < minor)
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

// Sync implements datapaths.Datapath. Every sync diffs against the kernel,
// as kube-proxy's IPVS mode does: it lists the IPVS table and the ipsets
// and writes only what differs; the constant-size iptables rules are
// restored whole. A full sync also puts back missing jump rules in the
// built-in chains. The order keeps a failure harmless: sets are created
// first (iptables rules reference them), then iptables-restore (which
// fails atomically), and only then do set entries, VIPs and the IPVS table
// change. A failure after that is rolled back (rollback.go).
func (p *Proxier) Sync(ctx context.Context, view *datapaths.NodeView, opts datapaths.SyncOptions) (datapaths.SyncStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stats, err := p.syncLocked(ctx, view, opts)
	if err != nil {
		return stats, p.rollback(ctx, err)
	}
	p.lastView = view
	return stats, nil
}

func (p *Proxier) syncLocked(ctx context.Context, view *datapaths.NodeView, opts datapaths.SyncOptions) (stats datapaths.SyncStats, err error) {
	stats.Backend = p.label()
	ns := p.cfg.NS

	t := time.Now()
	if err := p.probe(ctx); err != nil {
		return stats, err
	}
	h, err := ns.Handle()
	if err != nil {
		return stats, err
	}
	defer h.Close()
	idx, err := ensureDummy(h)
	if err != nil {
		return stats, fmt.Errorf("in netns %s: %w", ns.Name, err)
	}
	bound, others, err := localAddrs(h, idx)
	if err != nil {
		return stats, fmt.Errorf("in netns %s: %w", ns.Name, err)
	}
	// Equivalent to: ip netns exec <ns> ipset save
	setsOut, err := ns.Run(ctx, nil, "ipset", "save")
	if err != nil {
		return stats, fmt.Errorf("read ipsets in netns %s: %w", ns.Name, err)
	}
	stats.Apply += time.Since(t)

	t = time.Now()
	if others == nil {
		others = []netip.Addr{} // the node has no address: say so, not "unknown"
	}
	st, err := Render(view, Env{Scheduler: p.scheduler, LocalAddrs: others, RandomFully: p.randomFully})
	if err != nil {
		return stats, err
	}
	if p.hookRendered != nil {
		p.hookRendered(st)
	}
	stats.Objects = st.Objects()
	full := opts.ForceFull || p.needFull
	stats.Full = full
	// Until this sync succeeds, the next one must be full.
	p.needFull = true
	plan := planIPSets(st, parseIPSetSave(setsOut))
	stats.Render += time.Since(t)

	t = time.Now()
	// stats is the named result, so this counts on every return path.
	defer func() { stats.Apply += time.Since(t) }()
	if c := plan.createPayload(); c != nil {
		// Equivalent to: ip netns exec <ns> ipset restore -exist < creates
		if _, err := ns.Run(ctx, c, "ipset", "restore", "-exist"); err != nil {
			return stats, fmt.Errorf("create ipsets in netns %s: %w", ns.Name, err)
		}
	}
	for _, fs := range st.Families {
		var saved savedState
		if full {
			// Equivalent to: ip netns exec <ns> iptables-legacy-save
			out, err := ns.Run(ctx, nil, p.backend.saveCmd(fs.Family))
			if err != nil {
				return stats, fmt.Errorf("read %s rules in netns %s: %w", fs.Family, ns.Name, err)
			}
			saved = parseSave(out)
		}
		payload, n := restorePayload(fs, full, saved)
		// Equivalent to: ip netns exec <ns> iptables-legacy-restore --noflush -w < payload
		if _, err := ns.Run(ctx, payload, p.backend.restoreCmd(fs.Family), "--noflush", "-w"); err != nil {
			return stats, fmt.Errorf("restore %s rules in netns %s: %w", fs.Family, ns.Name, err)
		}
		stats.Written += n
	}
	if e := plan.entryPayload(); e != nil {
		// Equivalent to: ip netns exec <ns> ipset restore -exist < adds/dels
		if _, err := ns.Run(ctx, e, "ipset", "restore", "-exist"); err != nil {
			return stats, fmt.Errorf("update ipset entries in netns %s: %w", ns.Name, err)
		}
		stats.Written += plan.entries()
	}

	for _, a := range st.Bind {
		if !slices.Contains(bound, a) {
			if err := bindAddr(h, idx, a); err != nil {
				return stats, fmt.Errorf("in netns %s: %w", ns.Name, err)
			}
			stats.Written++
		}
	}

	c, err := p.newClient()
	if err != nil {
		return stats, err
	}
	defer c.Close()
	cur, err := readTable(c)
	if err != nil {
		return stats, fmt.Errorf("in netns %s: %w", ns.Name, err)
	}
	res, err := syncTable(c, st.VirtualServers, cur, p.grace)
	stats.Written += res.written
	if err != nil {
		return stats, fmt.Errorf("in netns %s: %w", ns.Name, err)
	}

	for _, a := range bound {
		if _, ok := slices.BinarySearchFunc(st.Bind, a, netip.Addr.Compare); !ok {
			if err := unbindAddr(h, idx, a); err != nil {
				return stats, fmt.Errorf("in netns %s: %w", ns.Name, err)
			}
			stats.Written++
		}
	}

	// Drain what can go now, and keep checking in the background.
	n, err := drain(c, p.grace)
	stats.Written += n
	if err != nil {
		p.log.Warn("graceful termination check failed", "err", err)
	}
	p.startDrainLoop()

	changed := map[string]bool{}
	for s := range res.changed {
		name, _, _ := strings.Cut(s, ":")
		changed[name] = true
	}
	for s, fp := range st.Services {
		if old, ok := p.services[s]; !ok || old != fp {
			changed[s] = true
		}
	}
	for s := range p.services {
		if _, ok := st.Services[s]; !ok {
			changed[s] = true
		}
	}
	stats.ChangedServices = len(changed)
	p.services = st.Services
	p.needFull = false

	flushed, err := p.cleanStaleUDP(view)
	stats.ConntrackFlushed = flushed
	if err != nil {
		// As in kube-proxy, a failed cleanup does not fail the sync.
		p.log.Warn("stale UDP conntrack cleanup failed", "err", err)
	}
	return stats, nil
}

// startDrainLoop checks the graceful list every drainPeriod until it is
// empty (kube-proxy's GracefulTerminationManager.Run). Called with p.mu.
func (p *Proxier) startDrainLoop() {
	if p.draining || len(p.grace) == 0 {
		return
	}
	p.draining = true
	p.drainGen++
	gen, period := p.drainGen, p.drainPeriod
	go func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for range tick.C {
			if !p.drainOnce(gen) {
				return
			}
		}
	}()
}

// drainOnce runs one background check; it returns false when the loop
// should end (list empty, namespace gone, or a newer loop took over).
func (p *Proxier) drainOnce(gen int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen != p.drainGen {
		return false
	}
	if !netnsutil.Exists(p.cfg.NS.Name) {
		clear(p.grace)
	} else if c, err := p.newClient(); err != nil {
		p.log.Warn("graceful termination check failed", "err", err)
	} else {
		if _, err := drain(c, p.grace); err != nil {
			p.log.Warn("graceful termination check failed", "err", err)
		}
		c.Close()
	}
	if len(p.grace) == 0 {
		p.draining = false
		return false
	}
	return true
}

// Draining lists the real servers waiting at weight 0 for their
// connections to end, as "<vip>:<port>/<proto>/<endpoint>".
func (p *Proxier) Draining() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.grace))
	for k := range p.grace {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Cleanup implements datapaths.Datapath: it flushes the IPVS table,
// deletes kube-ipvs0 (and with it every VIP), removes our iptables chains
// and the jumps to them, destroys our ipsets, and restores the sysctls it
// changed (kube-proxy's CleanupLeftovers). It is safe to call when nothing
// is installed.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drainGen++ // ends any background loop
	p.draining = false
	clear(p.grace)
	p.services = map[string]uint64{}
	p.needFull = true
	p.lastView = nil
	ns := p.cfg.NS
	var errs []error

	if checkIPVS() == nil {
		if c, err := p.newClient(); err != nil {
			errs = append(errs, err)
		} else {
			// Equivalent to: ip netns exec <ns> ipvsadm -C
			if err := c.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("flush IPVS table in netns %s: %w", ns.Name, err))
			}
			c.Close()
		}
	}
	if h, err := ns.Handle(); err != nil {
		errs = append(errs, err)
	} else {
		if err := deleteDummy(h); err != nil {
			errs = append(errs, fmt.Errorf("in netns %s: %w", ns.Name, err))
		}
		h.Close()
	}
	for _, f := range families {
		out, err := ns.Run(ctx, nil, p.backend.saveCmd(f))
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s rules for cleanup in netns %s: %w", f, ns.Name, err))
			continue
		}
		if payload := cleanupPayload(parseSave(out)); payload != nil {
			if _, err := ns.Run(ctx, payload, p.backend.restoreCmd(f), "--noflush", "-w"); err != nil {
				errs = append(errs, fmt.Errorf("remove %s chains in netns %s: %w", f, ns.Name, err))
			}
		}
	}
	// Sets go after the rules that reference them.
	if out, err := ns.Run(ctx, nil, "ipset", "save"); err != nil {
		errs = append(errs, fmt.Errorf("read ipsets for cleanup in netns %s: %w", ns.Name, err))
	} else if payload := destroyPayload(parseIPSetSave(out)); payload != nil {
		if _, err := ns.Run(ctx, payload, "ipset", "restore"); err != nil {
			errs = append(errs, fmt.Errorf("destroy ipsets in netns %s: %w", ns.Name, err))
		}
	}
	keys := make([]string, 0, len(p.sysctlOrig))
	for k := range p.sysctlOrig {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := ns.Sysctl(k, p.sysctlOrig[k]); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl in netns %s: %w", ns.Name, err))
			continue
		}
		delete(p.sysctlOrig, k)
	}
	p.probed = false
	return errors.Join(errs...)
}
