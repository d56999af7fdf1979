// Package datapaths defines the interface every reference Service datapath
// implements (iptables, nftables, IPVS, eBPF), the registry through which the
// lab, the benchmarks and the conformance suite find them, and the per-node
// view of the cluster that a datapath is asked to make true.
//
// A datapath instance is bound to one node's network namespace, just as one
// kube-proxy runs on each node. It renders its desired kernel state as plain
// data first (deterministic, testable without root) and applies it second.
package datapaths

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// ErrNotSupported is wrapped by every error that means "this machine cannot
// run it", so callers can skip with the reason rather than fail.
var ErrNotSupported = errors.New("not supported")

// NotSupportedError says why a datapath (or one of its features) cannot run
// here. It matches ErrNotSupported with errors.Is.
type NotSupportedError struct {
	Datapath string
	Reason   string // exact and human: "kernel lacks IPVS"
}

func (e *NotSupportedError) Error() string {
	return fmt.Sprintf("%s: not supported on this machine: %s", e.Datapath, e.Reason)
}

func (e *NotSupportedError) Is(target error) bool { return target == ErrNotSupported }

// Datapath programs Service forwarding into one node's kernel.
type Datapath interface {
	// Name is the registered name, e.g. "iptables".
	Name() string
	// Check reports whether this machine can run the datapath; it wraps
	// ErrNotSupported with the reason when it cannot.
	Check(ctx context.Context) error
	// Sync makes the node's kernel state equal to the desired state. It is
	// level-triggered: it always receives the whole view and decides itself
	// whether it may apply only the difference. A failed Sync leaves the
	// previous state forwarding as before, and the next Sync is a full one.
	Sync(ctx context.Context, view *NodeView, opts SyncOptions) (SyncStats, error)
	// Cleanup removes everything the datapath ever installed in the node.
	Cleanup(ctx context.Context) error
}

// ConntrackFlusher is implemented by datapaths that keep connection
// state of their own beside the kernel's conntrack table (the eBPF
// datapath's CT maps). Whoever flushes a node's kernel conntrack to start
// a measurement from a clean slate (the load generator does, before every
// sync and programming-latency sample) calls it too; otherwise a probe
// that reuses a 5-tuple rides an entry the kernel flush could not reach,
// and the figure measures the harness's leftovers.
type ConntrackFlusher interface {
	// FlushConntrack deletes every connection-tracking entry the
	// datapath holds, and returns how many it deleted. Service state
	// (frontends, backends, affinity) is left alone, as a conntrack -F
	// leaves kube-proxy's rules alone.
	FlushConntrack(ctx context.Context) (int, error)
}

// SyncOptions tunes one Sync call.
type SyncOptions struct {
	// ForceFull rewrites everything, as kube-proxy does every sync period,
	// so state wiped or altered out of band is repaired.
	ForceFull bool
}

// SyncStats describes what one Sync did. Durations are wall time.
type SyncStats struct {
	Full bool `json:"full"`
	// Render is the time spent computing the desired state and the diff;
	// Apply is the time spent in the kernel or the tools (iptables-restore).
	// Render/(Render+Apply) is proxyrig's own overhead.
	Render time.Duration `json:"renderNs"`
	Apply  time.Duration `json:"applyNs"`
	// Objects is the number of kernel objects (rules, map entries) in the
	// desired state; Written is how many were (re)written by this sync.
	Objects int `json:"objects"`
	Written int `json:"written"`
	// ChangedServices is the number of Services whose state was rewritten.
	ChangedServices int `json:"changedServices"`
	// Backend records implementation choices that change what a figure
	// means, e.g. "iptables-legacy" or "iptables-nft".
	Backend string `json:"backend,omitempty"`
	// ConntrackFlushed counts stale UDP conntrack entries deleted.
	ConntrackFlushed int `json:"conntrackFlushed"`
}

// Config is what a datapath needs to attach to one node.
type Config struct {
	// Node is the node's name, matching model.Node.Name.
	Node string
	// NS is the node's network namespace. Datapaths touch nothing outside it.
	NS netnsutil.NS
	// IPTablesBackend is "legacy" or "nft" ("" picks the default, legacy)
	// for datapaths that use iptables.
	IPTablesBackend string
	// Options carries datapath-specific settings from the command line,
	// e.g. "scheduler=rr" for IPVS.
	Options map[string]string
	Logger  *slog.Logger
}

// NodeView is the desired state for one node: the whole cluster, which node
// this is, and the node-level proxy settings kube-proxy takes as flags.
type NodeView struct {
	Cluster *model.Cluster
	Node    *model.Node
	Proxy   ProxyConfig
}

// ProxyConfig holds the kube-proxy flags that change datapath semantics.
type ProxyConfig struct {
	// ClusterCIDRs is the local-traffic detector (--cluster-cidr): traffic
	// from these sources is "from a pod". Empty means no detector, which
	// changes masquerade and eTP short-circuit behaviour as in kube-proxy.
	ClusterCIDRs []netip.Prefix
	// ServiceCIDRs is the Service range; nftables drops traffic to unused
	// addresses in it.
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses restricts which node addresses accept NodePorts
	// (--nodeport-addresses). Empty means the datapath's default.
	NodePortAddresses []netip.Prefix
	// MasqueradeAll SNATs every ClusterIP flow (--masquerade-all).
	MasqueradeAll bool
	// LocalhostNodePorts serves NodePorts on 127.0.0.1 (iptables IPv4 only).
	LocalhostNodePorts bool
	// NoLocalTrafficDetector asks for kube-proxy without a local-traffic
	// detector (its no-op detector: detect-local-mode ClusterCIDR with no
	// --cluster-cidr). Datapaths see it as empty ClusterCIDRs; the flag
	// exists because the lab and the flow tables otherwise fill empty
	// ClusterCIDRs with the address plan's pod range. Leave ClusterCIDRs
	// empty when setting it.
	NoLocalTrafficDetector bool
}

// Factory creates a datapath bound to one node.
type Factory func(cfg Config) (Datapath, error)

// Registration is one entry of the registry.
type Registration struct {
	Name        string
	Description string
	New         Factory
	// Check reports whether this machine can run the datapath at all,
	// without a node; nil means always.
	Check func(ctx context.Context, cfg Config) error
}

var (
	regMu    sync.RWMutex
	registry = map[string]Registration{}
)

// Register adds a datapath. It panics on a duplicate name: that is a
// programming error caught by any test that imports both.
func Register(r Registration) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[r.Name]; dup {
		panic("datapaths: duplicate registration of " + r.Name)
	}
	registry[r.Name] = r
}

// Lookup finds a registered datapath.
func Lookup(name string) (Registration, error) {
	regMu.RLock()
	defer regMu.RUnlock()
	r, ok := registry[name]
	if !ok {
		return Registration{}, fmt.Errorf("unknown datapath %q (known: %v)", name, namesLocked())
	}
	return r, nil
}

// Names lists registered datapaths, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	return namesLocked()
}

func namesLocked() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
