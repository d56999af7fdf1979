// Package fake is an in-memory datapaths.Datapath for unit tests of
// everything above the datapath layer (the lab, the CLI, the benchmarks),
// plus a reference packet tracer that computes, from the model alone, what
// kube-proxy's iptables mode would do with a packet.
//
// The fake programs nothing: Sync records the NodeView it was given, so a
// test can assert on what the layer above asked for, and can be told to fail
// the next Sync to exercise error paths. It registers itself as "fake" only
// when a test calls Register, so that it never shows up in the conformance
// suite or the CLI by accident.
package fake

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Name is the fake's registered name.
const Name = "fake"

var _ datapaths.Datapath = (*Fake)(nil)

// Fake is an in-memory datapath bound to one node. It is safe for
// concurrent use.
type Fake struct {
	node string

	mu       sync.Mutex
	views    []*datapaths.NodeView // every view Sync was given
	current  *datapaths.NodeView   // the view in force
	syncs    int
	failed   int
	failNext error
	cleanups int
	// needFull is set by a failed Sync and by Cleanup: the next Sync must
	// rewrite everything.
	needFull bool
}

// New returns a Fake for the node named in cfg.
func New(cfg datapaths.Config) *Fake { return &Fake{node: cfg.Node, needFull: true} }

// Name implements datapaths.Datapath.
func (f *Fake) Name() string { return Name }

// Node is the node the fake was created for.
func (f *Fake) Node() string { return f.node }

// Check implements datapaths.Datapath: the fake runs anywhere.
func (f *Fake) Check(context.Context) error { return nil }

// Sync implements datapaths.Datapath. It records the view and makes it the
// one in force, unless told to fail: then the previous view stays in force
// (a real datapath keeps forwarding with its old state) and the next Sync is
// a full one.
func (f *Fake) Sync(ctx context.Context, view *datapaths.NodeView, opts datapaths.SyncOptions) (datapaths.SyncStats, error) {
	if err := ctx.Err(); err != nil {
		return datapaths.SyncStats{}, fmt.Errorf("fake sync on %s: %w", f.node, err)
	}
	if view == nil || view.Cluster == nil {
		return datapaths.SyncStats{}, fmt.Errorf("fake sync on %s: no cluster in the view", f.node)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	f.views = append(f.views, view)
	if err := f.failNext; err != nil {
		f.failNext = nil
		f.failed++
		f.needFull = true
		return datapaths.SyncStats{}, fmt.Errorf("fake sync on %s: %w", f.node, err)
	}
	full := opts.ForceFull || f.needFull
	f.needFull = false
	f.current = view
	objects := 0
	for _, svc := range view.Cluster.Services {
		if svc.IsProxied() {
			objects += len(svc.Ports)
		}
	}
	return datapaths.SyncStats{Full: full, Objects: objects, Written: objects, Backend: Name}, nil
}

// Cleanup implements datapaths.Datapath: nothing is programmed afterwards.
func (f *Fake) Cleanup(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups++
	f.current = nil
	f.needFull = true
	return nil
}

// FailNextSync makes the next Sync return err (wrapped) without changing
// the state in force.
func (f *Fake) FailNextSync(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// Syncs is the number of Sync calls that reached the fake, failed ones
// included.
func (f *Fake) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// FailedSyncs is the number of Sync calls that failed on request.
func (f *Fake) FailedSyncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// Cleanups is the number of Cleanup calls.
func (f *Fake) Cleanups() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cleanups
}

// Views returns every view Sync was given, in order, failed ones included.
func (f *Fake) Views() []*datapaths.NodeView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.views)
}

// Current is the view in force: the last successful Sync's, or nil when
// nothing is programmed (never synced, or cleaned up since).
func (f *Fake) Current() *datapaths.NodeView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current
}

// Trace runs the reference tracer against the view in force. With nothing
// programmed every packet passes untouched.
func (f *Fake) Trace(pkt Packet) Result {
	v := f.Current()
	if v == nil {
		return Result{Verdict: Passed, Why: "nothing programmed"}
	}
	return Trace(v, pkt)
}

// Dump prints the programmed state as plain text, one line per Service
// port and entry point, so tests can compare it with cmp.Diff.
func (f *Fake) Dump() string {
	v := f.Current()
	if v == nil {
		return ""
	}
	return Dump(v)
}

// Dump prints what a view asks a node to program, the way the fake sees it:
//
//	default/svc1:http 80/TCP clusterIP 198.19.0.41 -> cluster[198.18.64.1:80] local[]
func Dump(v *datapaths.NodeView) string {
	var b strings.Builder
	for _, svc := range v.Cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		for _, sp := range svc.Ports {
			cat := model.Categorize(svc, sp, v.Node)
			fmt.Fprintf(&b, "%s:%s %d/%s", svc.Name, sp.Name, sp.Port, sp.Protocol)
			for _, ip := range svc.ClusterIPs {
				fmt.Fprintf(&b, " clusterIP %s", ip)
			}
			for _, ip := range svc.ExternalIPs {
				fmt.Fprintf(&b, " externalIP %s", ip)
			}
			for _, ip := range svc.LoadBalancerIPs {
				fmt.Fprintf(&b, " lb %s", ip)
			}
			if sp.NodePort != 0 {
				fmt.Fprintf(&b, " nodePort %d", sp.NodePort)
			}
			fmt.Fprintf(&b, " -> cluster%s local%s", epList(cat.Cluster), epList(cat.Local))
			if !cat.HasAny {
				b.WriteString(" (no endpoints: reject)")
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func epList(eps []*model.Endpoint) string {
	s := make([]string, len(eps))
	for i, ep := range eps {
		s[i] = ep.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

var (
	regOnce   sync.Once
	instMu    sync.Mutex
	instances []*Fake
)

// Register adds the fake to the datapath registry as "fake". Call it from
// tests that want the lab or the CLI to use the fake; calling it twice is
// harmless.
func Register() {
	regOnce.Do(func() {
		datapaths.Register(datapaths.Registration{
			Name:        Name,
			Description: "in-memory fake for unit tests: records every view, programs nothing",
			New: func(cfg datapaths.Config) (datapaths.Datapath, error) {
				f := New(cfg)
				instMu.Lock()
				instances = append(instances, f)
				instMu.Unlock()
				return f, nil
			},
		})
	})
}

// Instances returns every Fake the registered factory has created, in
// creation order, so a test can inspect what the lab synced on each node.
func Instances() []*Fake {
	instMu.Lock()
	defer instMu.Unlock()
	return slices.Clone(instances)
}
