package ipvs

import (
	"slices"

	"proxyrig/datapaths"
)

var _ datapaths.FaultInjector = (*Proxier)(nil)

// faultChain is a chain no sync ever declares. A rule jumping to it makes
// iptables-restore reject the whole table it sits in, which is how a real
// restore failure looks: the table's COMMIT never happens.
const faultChain = "KUBE-PROXYRIG-FAULT"

// FailNextSync implements datapaths.FaultInjector. The next Sync gets a
// rule appended to the IPv4 nat KUBE-SERVICES that jumps to faultChain.
// Sync restores iptables before it changes any set entry, VIP or IPVS
// virtual server, and nat is the first table of the payload, so the
// failed Sync leaves the previous state forwarding untouched; the Sync
// after it is full.
func (p *Proxier) FailNextSync() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.hookRendered
	p.hookRendered = func(st *State) {
		// One shot; Sync calls the hook with p.mu held.
		p.hookRendered = prev
		if prev != nil {
			prev(st)
		}
		fs := st.Family(IPv4)
		for i := range fs.NAT {
			if fs.NAT[i].Name == kubeServicesChain {
				fs.NAT[i].Rules = append(slices.Clone(fs.NAT[i].Rules), "-j "+faultChain)
			}
		}
	}
	return "IPv4 nat " + kubeServicesChain + " jumps to the missing chain " + faultChain + ", so iptables-restore rejects the nat table before any IPVS change"
}
