// Package iptables is proxyrig's reference iptables datapath. It mirrors
// kube-proxy's iptables mode (pkg/proxy/iptables/proxier.go): the same
// chains, the same rules in the same order, the same hashed chain names,
// the same partial-sync strategy, so that its per-packet and per-sync cost
// curves are the real ones. See README.md for the chain layout.
//
// Rendering (render.go) is a pure function of the node's view; applying
// (this file) runs iptables-restore inside the node's network namespace.
package iptables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
)

// Name is the registered name of this datapath.
const Name = "iptables"

func init() {
	datapaths.Register(datapaths.Registration{
		Name:        Name,
		Description: "kube-proxy's iptables mode: KUBE-SERVICES/SVC/SEP chains, statistic load balancing, iptables-restore partial syncs (legacy or nft backend)",
		New:         New,
		Check:       checkRegistration,
	})
}

// backend names the iptables flavour and its binaries.
type backend struct {
	name    string    // "legacy" or "nft"
	cmd     string    // iptables-legacy, for --version
	save    [2]string // IPv4, IPv6
	restore [2]string
}

func newBackend(name string) (backend, error) {
	switch name {
	case "", "legacy":
		name = "legacy"
	case "nft":
	default:
		return backend{}, fmt.Errorf("iptables backend %q: want \"legacy\" or \"nft\"", name)
	}
	return backend{
		name:    name,
		cmd:     "iptables-" + name,
		save:    [2]string{"iptables-" + name + "-save", "ip6tables-" + name + "-save"},
		restore: [2]string{"iptables-" + name + "-restore", "ip6tables-" + name + "-restore"},
	}, nil
}

// label is what SyncStats.Backend records.
func (b backend) label() string { return "iptables-" + b.name }

func (b backend) saveCmd(f Family) string {
	if f == IPv6 {
		return b.save[1]
	}
	return b.save[0]
}

func (b backend) restoreCmd(f Family) string {
	if f == IPv6 {
		return b.restore[1]
	}
	return b.restore[0]
}

// Proxier programs one node. It is safe for concurrent use; calls are
// serialised, as kube-proxy serialises syncProxyRules.
type Proxier struct {
	cfg     datapaths.Config
	backend backend
	log     *slog.Logger

	mu     sync.Mutex
	probed bool
	env    Env
	// applied is what the last successful sync wrote, per family; nil
	// entries (or needFull) force the next sync to be full.
	applied  map[Family]*appliedFamily
	needFull bool
	// lastGood is the rendered rules of the last successful restore, per
	// family: what a failed restore rolls back to (rollback.go).
	lastGood map[Family]*FamilyRules
	// sysctlOrig holds the values of sysctls we changed, to restore them
	// in Cleanup.
	sysctlOrig map[string]string
	// cache keeps each unchanged Service's rendered output between syncs.
	cache *renderCache

	// hookRendered, when set (by tests), may alter the rendered rules
	// before they are planned and applied; used to inject failures.
	hookRendered func(*Ruleset)
}

var _ datapaths.Datapath = (*Proxier)(nil)

// New creates the datapath for one node. It touches nothing yet.
func New(cfg datapaths.Config) (datapaths.Datapath, error) {
	b, err := newBackend(cfg.IPTablesBackend)
	if err != nil {
		return nil, err
	}
	if cfg.NS.Name == "" {
		return nil, errors.New("iptables datapath: Config.NS names no network namespace")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxier{
		cfg:        cfg,
		backend:    b,
		log:        log.With("datapath", Name, "node", cfg.Node, "netns", cfg.NS.Name),
		applied:    map[Family]*appliedFamily{},
		lastGood:   map[Family]*FamilyRules{},
		needFull:   true,
		sysctlOrig: map[string]string{},
		cache:      newRenderCache(),
	}, nil
}

// Name implements datapaths.Datapath.
func (p *Proxier) Name() string { return Name }

// Check reports whether the node's namespace can run this datapath. It only
// reads: iptables-save of the nat and filter tables, both families.
func (p *Proxier) Check(ctx context.Context) error {
	return checkBackend(ctx, p.backend, p.cfg.NS)
}

// checkRegistration is the registry's node-less Check. With a namespace in
// cfg it reads there; without one it probes a throwaway namespace, so the
// root namespace's tables are never touched.
func checkRegistration(ctx context.Context, cfg datapaths.Config) error {
	b, err := newBackend(cfg.IPTablesBackend)
	if err != nil {
		return err
	}
	if err := checkPrivileges(b); err != nil {
		return err
	}
	if cfg.NS.Name != "" && netnsutil.Exists(cfg.NS.Name) {
		return checkBackend(ctx, b, cfg.NS)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	ns, err := netnsutil.Create("prx-iptchk" + hex.EncodeToString(rnd[:]))
	if err != nil {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "cannot create a network namespace to probe iptables: " + err.Error()}
	}
	defer func() { _ = netnsutil.Delete(ns.Name) }()
	return checkBackend(ctx, b, ns)
}

func checkPrivileges(b backend) error {
	if os.Geteuid() != 0 {
		return &datapaths.NotSupportedError{Datapath: Name, Reason: "needs root (CAP_NET_ADMIN) to program netfilter"}
	}
	for _, bin := range []string{b.cmd, b.save[0], b.save[1], b.restore[0], b.restore[1]} {
		if _, err := exec.LookPath(bin); err != nil {
			return &datapaths.NotSupportedError{Datapath: Name, Reason: bin + " not found in PATH (Debian package iptables)"}
		}
	}
	return nil
}

func checkBackend(ctx context.Context, b backend, ns netnsutil.NS) error {
	if err := checkPrivileges(b); err != nil {
		return err
	}
	if !netnsutil.Exists(ns.Name) {
		return fmt.Errorf("check %s: network namespace %q does not exist", b.label(), ns.Name)
	}
	for _, f := range families {
		for _, table := range []string{tableNAT, tableFilter} {
			// Equivalent to: ip netns exec <ns> iptables-legacy-save -t nat
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

var versionRE = regexp.MustCompile(`v(\d+)\.(\d+)\.(\d+)`)

// supportsRandomFully mirrors kube-proxy's HasRandomFully: MASQUERADE
// --random-fully exists since iptables 1.6.2.
func supportsRandomFully(versionOutput string) bool {
	m := versionRE.FindStringSubmatch(versionOutput)
	if m == nil {
		return false
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	min := [3]int{1, 6, 2}
	for i := range v {
		if v[i] != min[i] {
			return v[i] > min[i]
		}
	}
	return true
}

// probe detects, once, the facts that Render depends on.
func (p *Proxier) probe(ctx context.Context) error {
	if p.probed {
		return nil
	}
	// Equivalent to: ip netns exec <ns> iptables-legacy --version
	out, err := p.cfg.NS.Run(ctx, nil, p.backend.cmd, "--version")
	if err != nil {
		return fmt.Errorf("probe %s version in netns %s: %w", p.backend.cmd, p.cfg.NS.Name, err)
	}
	p.env.RandomFully = supportsRandomFully(string(out))
	// A missing key (no conntrack) reads as "not liberal", as in kube-proxy.
	if v, err := p.cfg.NS.ReadSysctl("net.netfilter.nf_conntrack_tcp_be_liberal"); err == nil && v != "" && v != "0" {
		p.env.ConntrackTCPLiberal = true
	}
	p.probed = true
	return nil
}

// Sync implements datapaths.Datapath. It renders the view, writes with
// iptables-restore --noflush only what changed (or everything on a full
// sync) and then deletes stale UDP conntrack entries.
func (p *Proxier) Sync(ctx context.Context, view *datapaths.NodeView, opts datapaths.SyncOptions) (datapaths.SyncStats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	stats := datapaths.SyncStats{Backend: p.backend.label()}

	applyStart := time.Now()
	if err := p.probe(ctx); err != nil {
		return stats, err
	}
	stats.Apply += time.Since(applyStart)

	renderStart := time.Now()
	rs, err := render(view, p.env, p.cache)
	if err != nil {
		return stats, err
	}
	if p.hookRendered != nil {
		// The hook may change what it is given; the cache must not see it.
		rs = rs.detach()
		p.hookRendered(rs)
	}
	stats.Render += time.Since(renderStart)

	full := opts.ForceFull || p.needFull
	stats.Full = full
	// Until every family has been written successfully, the next sync must
	// be full: a failed restore may have committed one table and not the
	// other, and our memory of what is in the kernel is then wrong.
	p.needFull = true
	changed := map[string]bool{}
	for _, fr := range rs.Families {
		stats.Objects += fr.Rules()
		var saved savedState
		if full {
			t := time.Now()
			// Equivalent to: ip netns exec <ns> iptables-legacy-save
			out, err := p.cfg.NS.Run(ctx, nil, p.backend.saveCmd(fr.Family))
			stats.Apply += time.Since(t)
			if err != nil {
				return stats, fmt.Errorf("read %s rules before full sync in netns %s: %w", fr.Family, p.cfg.NS.Name, err)
			}
			t = time.Now()
			saved = parseSave(out)
			stats.Render += time.Since(t)
		}

		t := time.Now()
		plan := planSync(fr, p.applied[fr.Family], full, saved)
		stats.Render += time.Since(t)

		t = time.Now()
		// Equivalent to: ip netns exec <ns> iptables-legacy-restore --noflush -w < payload
		_, err := p.cfg.NS.Run(ctx, plan.payload, p.backend.restoreCmd(fr.Family), "--noflush", "-w")
		stats.Apply += time.Since(t)
		if err != nil {
			delete(p.applied, fr.Family)
			err = fmt.Errorf("restore %s rules (%s sync) in netns %s: %w", fr.Family, syncKind(full), p.cfg.NS.Name, err)
			return stats, errors.Join(err, p.rollback(ctx, rs, fr.Family))
		}
		p.applied[fr.Family] = plan.applied
		stats.Written += plan.written
		for _, s := range plan.changed {
			changed[s] = true
		}
	}
	p.needFull = false
	for _, fr := range rs.Families {
		p.lastGood[fr.Family] = fr
	}
	stats.ChangedServices = len(changed)

	t := time.Now()
	if v4 := rs.Family(IPv4); v4 != nil && v4.LocalhostNodePorts {
		// NodePorts on 127.0.0.1 need the kernel to route loopback
		// destinations after DNAT (kubernetes#90259 for the risks, which
		// the KUBE-FIREWALL rule mitigates).
		if err := p.setSysctl("net.ipv4.conf.all.route_localnet", "1"); err != nil {
			return stats, err
		}
	}
	// kube-proxy's conntrack defaults (--conntrack-tcp-timeout-established
	// and -close-wait); both are per network namespace.
	for _, s := range [][2]string{
		{"net.netfilter.nf_conntrack_tcp_timeout_established", "86400"},
		{"net.netfilter.nf_conntrack_tcp_timeout_close_wait", "3600"},
	} {
		if err := p.setSysctl(s[0], s[1]); err != nil {
			p.log.Warn("cannot set conntrack timeout", "key", s[0], "err", err)
		}
	}
	n, err := p.cleanStaleUDP(view)
	stats.ConntrackFlushed = n
	if err != nil {
		// As in kube-proxy, a failed cleanup does not fail the sync: the
		// rules are in place, and the next sync tries again.
		p.log.Warn("stale UDP conntrack cleanup failed", "err", err)
	}
	stats.Apply += time.Since(t)
	return stats, nil
}

func syncKind(full bool) string {
	if full {
		return "full"
	}
	return "partial"
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

// Cleanup implements datapaths.Datapath: it removes every rule in a
// built-in chain that jumps to a KUBE-* chain and every KUBE-* chain, in
// the nat and filter tables of both families, and restores the sysctls it
// changed. It is safe to call when nothing is installed.
func (p *Proxier) Cleanup(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applied = map[Family]*appliedFamily{}
	p.lastGood = map[Family]*FamilyRules{}
	p.needFull = true
	var errs []error
	for _, f := range families {
		out, err := p.cfg.NS.Run(ctx, nil, p.backend.saveCmd(f))
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s rules for cleanup in netns %s: %w", f, p.cfg.NS.Name, err))
			continue
		}
		payload := planCleanup(parseSave(out))
		if payload == nil {
			continue
		}
		if _, err := p.cfg.NS.Run(ctx, payload, p.backend.restoreCmd(f), "--noflush", "-w"); err != nil {
			errs = append(errs, fmt.Errorf("remove %s KUBE-* chains in netns %s: %w", f, p.cfg.NS.Name, err))
		}
	}
	keys := make([]string, 0, len(p.sysctlOrig))
	for k := range p.sysctlOrig {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := p.cfg.NS.Sysctl(k, p.sysctlOrig[k]); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl in netns %s: %w", p.cfg.NS.Name, err))
			continue
		}
		delete(p.sysctlOrig, k)
	}
	return errors.Join(errs...)
}

// RestoreText renders the iptables-restore input that a full sync of view
// writes into an empty namespace, one section per family. It is what the
// golden files hold, and what `proxyrig` can show a person.
func RestoreText(view *datapaths.NodeView, env Env) (string, error) {
	rs, err := Render(view, env)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, fr := range rs.Families {
		cmd := "iptables-restore"
		if fr.Family == IPv6 {
			cmd = "ip6tables-restore"
		}
		fmt.Fprintf(&b, "# %s --noflush (%s)\n", cmd, fr.Family)
		b.Write(planSync(fr, nil, true, nil).payload)
	}
	return b.String(), nil
}
