package iptables

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"proxyrig/datapaths"
)

var (
	_ datapaths.FaultInjector = (*Proxier)(nil)
	_ datapaths.FaultKinds    = (*Proxier)(nil)
	_ datapaths.StateDumper   = (*Proxier)(nil)
)

// faultChain is a chain no sync ever declares. A rule jumping to it makes
// iptables-restore reject the whole table it sits in ("Couldn't load
// target"), which is how real restore failures look: the table's COMMIT
// never happens and the kernel keeps the previous rules.
const faultChain = "KUBE-PROXYRIG-FAULT"

// FailNextSync implements datapaths.FaultInjector. The next Sync gets a
// rule appended to nat KUBE-SERVICES that jumps to faultChain. Top-level
// chains are written by partial syncs too, so the fault hits whatever kind
// of sync comes next, inside the real iptables-restore call: the filter
// table (written first) commits, the nat table is rejected, the Sync
// rolls the filter table back (rollback.go) and returns the restore error
// with the next Sync forced to be full.
func (p *Proxier) FailNextSync() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.hookRendered
	p.hookRendered = func(rs *Ruleset) {
		// One shot. Sync calls the hook with p.mu held, so this write is
		// serialised with every other use of the field.
		p.hookRendered = prev
		if prev != nil {
			prev(rs)
		}
		for _, fr := range rs.Families {
			for i := range fr.NAT {
				if fr.NAT[i].Name == kubeServicesChain {
					fr.NAT[i].Rules = append(slices.Clone(fr.NAT[i].Rules), "-j "+faultChain)
				}
			}
		}
	}
	return "nat " + kubeServicesChain + " jumps to the missing chain " + faultChain + ", so iptables-restore rejects the nat table"
}

// Faults implements datapaths.FaultKinds. This datapath's apply path is
// iptables-restore; its only netlink use (stale UDP conntrack cleanup)
// does not fail a sync, as in kube-proxy, so no netlink kind applies.
func (p *Proxier) Faults() []string { return []string{datapaths.FaultRestoreMidway} }

// InjectFault implements datapaths.FaultKinds.
func (p *Proxier) InjectFault(kind string) (datapaths.Fault, error) {
	switch kind {
	case datapaths.FaultRestoreMidway:
		return datapaths.Fault{Kind: kind, Desc: p.FailNextSync(), Cause: "restore"}, nil
	}
	return datapaths.Fault{}, fmt.Errorf("iptables datapath: no fault kind %q (have %v)", kind, p.Faults())
}

// counterRE matches the packet and byte counters of a chain line.
var counterRE = regexp.MustCompile(`\s*\[\d+:\d+\]$`)

// DumpState implements datapaths.StateDumper: the nat and filter tables of
// both families, comments and counters stripped.
// Equivalent to: iptables-save -t nat; iptables-save -t filter (and ip6tables-save).
func (p *Proxier) DumpState(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, f := range families {
		for _, table := range []string{tableNAT, tableFilter} {
			out, err := p.cfg.NS.Run(ctx, nil, p.backend.saveCmd(f), "-t", table)
			if err != nil {
				return "", fmt.Errorf("dump %s %s table in netns %s: %w", f, table, p.cfg.NS.Name, err)
			}
			b.WriteString(NormalizeSave(string(out)))
		}
	}
	return b.String(), nil
}

// NormalizeSave strips iptables-save output of what differs between two
// equal rule sets: comment lines (dates, versions) and chain counters.
func NormalizeSave(save string) string {
	var b strings.Builder
	for line := range strings.Lines(save) {
		line = strings.TrimRight(line, "\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, ":") {
			line = counterRE.ReplaceAllString(line, "")
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// WipeState implements datapaths.StateDumper: it flushes nat
// KUBE-SERVICES of IPv4 behind the datapath's back, which stops every
// ClusterIP, external IP and LoadBalancer IP from being translated.
func (p *Proxier) WipeState(ctx context.Context) (string, error) {
	argv := []string{p.backend.cmd, "-t", tableNAT, "-F", kubeServicesChain}
	if _, err := p.cfg.NS.Run(ctx, nil, argv...); err != nil {
		return "", fmt.Errorf("wipe in netns %s: %w", p.cfg.NS.Name, err)
	}
	return strings.Join(argv, " "), nil
}
