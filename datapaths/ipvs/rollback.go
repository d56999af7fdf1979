package ipvs

import (
	"context"
	"errors"
	"fmt"

	"proxyrig/datapaths"
)

// rollback puts back the state of the last successful sync after a sync
// failed partway. A sync writes iptables, then set entries and VIPs, then
// the IPVS table: when the IPVS table refuses a change (EBUSY, EINTR),
// the set entries and VIPs of the new state are already in place, and a
// Service deleted or re-added in that sync is neither as before nor as
// asked (a VIP bound with no virtual server behind it answers with a
// RST: found by datapaths/robustness TestFaults). So the previous view is
// synced again, in full, and the next sync is full either way.
// It returns cause, joined with the rollback's own failure if any.
func (p *Proxier) rollback(ctx context.Context, cause error) error {
	defer func() { p.needFull = true }()
	if p.lastView == nil {
		return cause
	}
	if _, err := p.syncLocked(ctx, p.lastView, datapaths.SyncOptions{ForceFull: true}); err != nil {
		return errors.Join(cause, fmt.Errorf("roll back to the last synced state in netns %s: %w", p.cfg.NS.Name, err))
	}
	return cause
}
