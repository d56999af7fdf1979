package iptables

import (
	"context"
	"fmt"
)

// rollback puts back the rules of the last successful sync after a
// restore failed. iptables-restore commits table by table (legacy
// iptables has no transaction across tables): when the nat table of a
// payload is rejected, the filter table before it is already in the
// kernel, and a Service that just gained endpoints would lose its REJECT
// rule without gaining its DNAT, neither the old state nor the new one
// (found by datapaths/robustness TestFaults). So every family this sync
// wrote, up to and including the failing one, is rewritten in full from
// the rules it had before. A family never synced has nothing to return
// to and is left alone; the next sync is full either way.
//
// Equivalent to: iptables-save; iptables-restore --noflush < (the previous rules, in full)
func (p *Proxier) rollback(ctx context.Context, rs *Ruleset, failed Family) error {
	for _, fr := range rs.Families {
		prev := p.lastGood[fr.Family]
		if prev != nil {
			out, err := p.cfg.NS.Run(ctx, nil, p.backend.saveCmd(fr.Family))
			if err != nil {
				return fmt.Errorf("roll back %s rules in netns %s: read the current rules: %w", fr.Family, p.cfg.NS.Name, err)
			}
			plan := planSync(prev, nil, true, parseSave(out))
			if _, err := p.cfg.NS.Run(ctx, plan.payload, p.backend.restoreCmd(fr.Family), "--noflush", "-w"); err != nil {
				return fmt.Errorf("roll back %s rules in netns %s: %w", fr.Family, p.cfg.NS.Name, err)
			}
		}
		if fr.Family == failed {
			return nil
		}
	}
	return nil
}
