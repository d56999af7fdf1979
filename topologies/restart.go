package topologies

import (
	"context"
	"fmt"

	"proxyrig/datapaths"
)

// RestartDatapath replaces node's datapath instance with a fresh one and
// syncs the current cluster through it, as a kube-proxy restart does
// (CONFORMANCE.md SYNC-04). The old instance is dropped without Cleanup:
// whatever it programmed stays in the kernel, as after a crash or a
// rolling upgrade, and the new instance, which remembers nothing, must
// rebuild the state from the cluster alone (its first Sync is a full one).
// Health-check servers keep listening through the restart; their health
// follows the new instance's Sync.
func (l *Lab) RestartDatapath(ctx context.Context, node string) error {
	l.op.Lock()
	defer l.op.Unlock()
	if l.closed {
		return fmt.Errorf("lab %s is closed", l.opts.Name)
	}
	if l.reg == nil {
		return fmt.Errorf("restart datapath on node %s: lab %s runs no datapath", node, l.opts.Name)
	}
	n := l.plan.node(node)
	if n == nil {
		return fmt.Errorf("restart datapath: lab %s has no node %s", l.opts.Name, node)
	}
	if !n.datapath {
		return fmt.Errorf("restart datapath: node %s of lab %s runs no datapath", node, l.opts.Name)
	}
	dp, err := l.reg.New(l.dpConfig(node))
	if err != nil {
		return fmt.Errorf("restart datapath %s on node %s: %w", l.reg.Name, node, err)
	}
	l.mu.Lock()
	l.dps[node] = dp
	healthy := l.healthy[node]
	l.mu.Unlock()

	view := &datapaths.NodeView{Cluster: l.plan.cluster, Node: n.node, Proxy: l.plan.proxy}
	st, err := dp.Sync(ctx, view, datapaths.SyncOptions{})
	healthy.Store(err == nil)
	if err != nil {
		return fmt.Errorf("sync %s on node %s after restart: %w", dp.Name(), node, err)
	}
	l.mu.Lock()
	l.last[node] = st
	if st.Backend != "" {
		l.backend = st.Backend
	}
	l.mu.Unlock()
	return nil
}

// Datapath returns the datapath instance programming node, or nil if the
// node runs none. Tests use it to reach optional interfaces such as
// datapaths.FaultInjector; calling Sync on it directly bypasses the lab's
// bookkeeping (health, LastSync).
func (l *Lab) Datapath(node string) datapaths.Datapath {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.dps[node]
}
