package iptables

import (
	"slices"

	"proxyrig/datapaths"
)

var _ datapaths.FaultInjector = (*Proxier)(nil)

// faultChain is a chain no sync ever declares. A rule jumping to it makes
// iptables-restore reject the whole table it sits in ("Couldn't load
// target"), which is how real restore failures look: the table's COMMIT
// never happens and the kernel keeps the previous rules.
const faultChain = "KUBE-PROXYRIG-FAULT"

// FailNextSync implements datapaths.FaultInjector. The next Sync gets a
// rule appended to nat KUBE-SERVICES that jumps to faultChain. Top-level
// chains are written by partial syncs too, so the fault hits whatever kind
// of sync comes next, inside the real iptables-restore call: the filter
// table (written first) commits, the nat table is rejected, and the Sync
// returns the restore error with the next Sync forced to be full.
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
