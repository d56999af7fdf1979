package datapaths

import "context"

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

// Fault kinds, as FaultKinds names them. Each one is a failure a real
// kernel or tool produces; a datapath offers the ones its apply path can
// meet.
const (
	// FaultRestoreMidway: iptables-restore (or ipset restore) rejects its
	// input partway through.
	FaultRestoreMidway = "restore-midway"
	// FaultNFTTransaction: nft rejects a transaction.
	FaultNFTTransaction = "nft-transaction"
	// FaultMapFull: a BPF map update fails partway through a sync because
	// the map has no room (E2BIG).
	FaultMapFull = "map-full"
	// FaultNetlinkEBUSY and FaultNetlinkEINTR: a netlink request the
	// datapath makes while applying returns EBUSY or EINTR.
	FaultNetlinkEBUSY = "netlink-ebusy"
	FaultNetlinkEINTR = "netlink-eintr"
	// FaultDumpInterrupted: a netlink dump the datapath reads returns a
	// partial result and netlink.ErrDumpInterrupted (NLM_F_DUMP_INTR: the
	// table changed while it was being dumped). Datapaths retry such
	// dumps, so this fault is absorbed: the sync succeeds.
	FaultDumpInterrupted = "dump-interrupted"
)

// Fault describes one armed fault.
type Fault struct {
	Kind string
	// Desc is a one-line description for test logs.
	Desc string
	// Absorbed is true when the datapath is expected to recover inside
	// the same Sync (a retried dump): the Sync succeeds. Otherwise the
	// Sync must fail with an error whose text contains Cause, leaving the
	// previous state forwarding.
	Absorbed bool
	// Cause is what the failed Sync's error must say ("EBUSY", "device
	// or resource busy", "iptables-restore"); empty means anything.
	Cause string
}

// FaultKinds is implemented by datapaths that can inject several kinds of
// real failures into their own apply path (issue 8): one small seam per
// call, armed one-shot, in front of the real kernel or tool call; nothing
// is mocked. The robustness tests (datapaths/robustness) run every kind
// of every datapath against real packets.
type FaultKinds interface {
	// Faults lists the kinds this datapath supports, in a fixed order.
	Faults() []string
	// InjectFault arms kind for the next Sync; it fails for a kind not in
	// Faults.
	InjectFault(kind string) (Fault, error)
}

// StateDumper is implemented by datapaths that can print the kernel state
// they own in a canonical form, so that two nodes (or one node before and
// after) holding the same Services compare equal as text whatever
// sequence of syncs produced it: counters, handles, generated ids and
// listing order are left out or normalized.
type StateDumper interface {
	// DumpState prints the datapath's kernel state in the node.
	// Equivalent to, e.g.: iptables-save | strip counters.
	DumpState(ctx context.Context) (string, error)
	// WipeState removes part of that state out of band, the way a person
	// or another program would (iptables -F of a proxy chain, nft delete
	// table, ipvsadm -C, emptying a BPF map), without telling the
	// datapath. It returns the equivalent command. The next full Sync
	// must repair it.
	WipeState(ctx context.Context) (string, error)
}
