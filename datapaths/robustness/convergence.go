package robustness

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/loadgen"
	"proxyrig/model"
	"proxyrig/topologies"
)

// ConvergenceOptions sizes a convergence run.
type ConvergenceOptions struct {
	// Seeds are run one after the other; each gives one cluster and one
	// sequence of changes (loadgen's generator and churn).
	Seeds []uint64
	// Changes is the length of each sequence.
	Changes int
	// Services and EndpointsPerService size the generated cluster.
	Services, EndpointsPerService int
}

// sequence is the clusters a run syncs, in order: the generated one, then
// one per change. A shrunk sequence is a subsequence of it.
type sequence struct {
	seed     uint64
	clusters []*model.Cluster
	changes  []string // changes[i] made clusters[i+1]
}

func makeSequence(seed uint64, o ConvergenceOptions) (*sequence, error) {
	spec := loadgen.Spec{Services: o.Services, EndpointsPerService: o.EndpointsPerService, Seed: seed}
	c, err := loadgen.Generate(spec)
	if err != nil {
		return nil, err
	}
	ch, err := loadgen.NewChurn(c, spec, seed, nil)
	if err != nil {
		return nil, err
	}
	s := &sequence{seed: seed, clusters: []*model.Cluster{c}}
	for range o.Changes {
		chg, err := ch.Next()
		if err != nil {
			return nil, err
		}
		s.clusters = append(s.clusters, ch.Cluster())
		s.changes = append(s.changes, chg.String())
	}
	return s, nil
}

// describe names the clusters of a subsequence by the changes that made them.
func (s *sequence) describe(idx []int) string {
	var parts []string
	for _, i := range idx {
		if i == 0 {
			parts = append(parts, "the generated cluster")
			continue
		}
		parts = append(parts, fmt.Sprintf("after change %d (%s)", i, s.changes[i-1]))
	}
	return strings.Join(parts, " → ")
}

// scratch is a datapath on a namespace of its own, with no lab around it:
// convergence compares kernel state, which needs no traffic.
type scratch struct {
	ns netnsutil.NS
	dp datapaths.Datapath
}

func newScratch(t *testing.T, reg datapaths.Registration) *scratch {
	t.Helper()
	ns, err := netnsutil.Create("prx-rbc" + shortID(8))
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	dp, err := reg.New(datapaths.Config{Node: "node-00", NS: ns})
	if err != nil {
		_ = netnsutil.Delete(ns.Name)
		t.Fatalf("new %s: %v", reg.Name, err)
	}
	return &scratch{ns: ns, dp: dp}
}

func (s *scratch) close(t *testing.T) {
	t.Helper()
	if err := s.dp.Cleanup(context.Background()); err != nil {
		t.Errorf("cleanup %s in %s: %v", s.dp.Name(), s.ns.Name, err)
	}
	if err := netnsutil.Delete(s.ns.Name); err != nil {
		t.Errorf("delete namespace %s: %v", s.ns.Name, err)
	}
}

func viewOf(c *model.Cluster) *datapaths.NodeView {
	return &datapaths.NodeView{Cluster: c, Node: c.Node("node-00"), Proxy: datapaths.ProxyConfig{
		ClusterCIDRs: []netip.Prefix{topologies.ClusterCIDR},
		ServiceCIDRs: []netip.Prefix{topologies.ServiceCIDR},
	}}
}

func (s *scratch) dump(ctx context.Context) (string, error) {
	sd, ok := s.dp.(datapaths.StateDumper)
	if !ok {
		return "", fmt.Errorf("datapath %s does not implement datapaths.StateDumper", s.dp.Name())
	}
	return sd.DumpState(ctx)
}

// trial syncs the clusters idx of seq one by one on a fresh datapath, and
// the last of them once on another fresh datapath, and returns the
// difference of their kernel states ("" when equal).
func trial(ctx context.Context, t *testing.T, reg datapaths.Registration, seq *sequence, idx []int) (diff string, lines int) {
	t.Helper()
	inc := newScratch(t, reg)
	defer inc.close(t)
	for _, i := range idx {
		if _, err := inc.dp.Sync(ctx, viewOf(seq.clusters[i]), datapaths.SyncOptions{}); err != nil {
			return fmt.Sprintf("incremental sync of %s failed: %v", seq.describe([]int{i}), err), 0
		}
	}
	// Deferred deletions (nftables' stale-chain delay) happen in a later
	// sync, as they would in the next periodic one.
	time.Sleep(1100 * time.Millisecond)
	last := viewOf(seq.clusters[idx[len(idx)-1]])
	if _, err := inc.dp.Sync(ctx, last, datapaths.SyncOptions{}); err != nil {
		return fmt.Sprintf("settling sync failed: %v", err), 0
	}
	got, err := inc.dump(ctx)
	if err != nil {
		t.Fatal(err)
	}

	fresh := newScratch(t, reg)
	defer fresh.close(t)
	if _, err := fresh.dp.Sync(ctx, last, datapaths.SyncOptions{}); err != nil {
		t.Fatalf("fresh full sync: %v", err)
	}
	want, err := fresh.dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Count(want, "\n")
	if got != want {
		return diffText(got, want), lines
	}

	// Out-of-band wipe, then the periodic forced resync repairs it.
	if sd, ok := inc.dp.(datapaths.StateDumper); ok {
		what, err := sd.WipeState(ctx)
		if err != nil {
			t.Fatalf("wipe: %v", err)
		}
		// The dump must see the wipe, or comparing dumps proves nothing.
		if wiped, err := inc.dump(ctx); err != nil {
			t.Fatal(err)
		} else if wiped == want {
			t.Fatalf("%s: the state dump did not change after %q", reg.Name, what)
		}
		if _, err := inc.dp.Sync(ctx, last, datapaths.SyncOptions{ForceFull: true}); err != nil {
			return fmt.Sprintf("forced resync after %q failed: %v", what, err), lines
		}
		repaired, err := inc.dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if repaired != want {
			return fmt.Sprintf("after %q and a forced resync:\n%s", what, diffText(repaired, want)), lines
		}
	}
	return "", lines
}

// RunConvergence checks, for every seed, that applying the sequence of
// changes incrementally leaves the kernel state that one full sync of the
// final cluster leaves, and that an out-of-band wipe is repaired by a
// forced resync. A failure is shrunk: first to the shortest failing
// prefix, then by dropping intermediate syncs while it still fails; the
// report names the seed and the minimal sequence.
func RunConvergence(t *testing.T, dp string, o ConvergenceOptions) {
	reg := requireDatapath(t, dp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, seed := range o.Seeds {
		seq, err := makeSequence(seed, o)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		all := make([]int, len(seq.clusters))
		for i := range all {
			all[i] = i
		}
		diff, lines := trial(ctx, t, reg, seq, all)
		if diff == "" {
			t.Logf("seed %d: %d changes converge (kernel state of %d lines, equal to a fresh full sync; a wipe was repaired)", seed, o.Changes, lines)
			continue
		}
		// Shortest failing prefix.
		minimal := all
		for k := 1; k < len(all); k++ {
			if d, _ := trial(ctx, t, reg, seq, all[:k]); d != "" {
				minimal, diff = all[:k], d
				break
			}
		}
		// Drop intermediate syncs while it still fails.
		for i := len(minimal) - 2; i >= 0; i-- {
			cand := append(append([]int{}, minimal[:i]...), minimal[i+1:]...)
			if d, _ := trial(ctx, t, reg, seq, cand); d != "" {
				minimal, diff = cand, d
			}
		}
		t.Errorf("seed %d (%d Services × %d endpoints): incremental syncs do not converge to a full sync.\nminimal failing sequence of syncs: %s\ndifference (- incremental, + fresh):\n%s",
			seed, o.Services, o.EndpointsPerService, seq.describe(minimal), diff)
	}
}
