package datapaths

// FaultInjector is implemented by datapaths that can make one of their own
// Syncs fail partway through writing to the kernel, the way a real failure
// does (a restore input the kernel rejects, a map update that errors). The
// conformance suite uses it to check recovery (CONFORMANCE.md SYNC-02,
// kube-proxy's TestSyncProxyRulesRepeated): the failed Sync must leave the
// previous state forwarding, and the next Sync must be a full one that
// converges with no stale state left behind.
//
// It is optional: the suite looks for it with a type assertion and skips
// the fault step, with the reason, for datapaths that lack it (under
// CI=true that skip is a failure, so every datapath the suite runs should
// implement it).
type FaultInjector interface {
	// FailNextSync arms a one-shot fault: the next Sync renders as usual
	// and then fails inside its real apply path, returning an error; the
	// Sync after it runs normally. It returns a one-line description of
	// the fault, for test logs ("nat KUBE-SERVICES jumps to a missing
	// chain, so iptables-restore rejects the nat table").
	FailNextSync() string
}
