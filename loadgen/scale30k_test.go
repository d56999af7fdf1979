//go:build nightly

// This file belongs to the nightly job (go test -tags nightly), not to
// make test: it builds the largest scale of the matrix, which takes a
// minute or two on this machine.

package loadgen

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/topologies"
)

// TestScale30kFits builds the largest scale of the matrix, 30k Services ×
// 5 endpoints, in a scale lab, programs it with iptables, checks a few VIPs
// answer and that the harness's peak RSS stays under 4 GiB.
func TestScale30kFits(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	spec := Spec{Services: 30000, Seed: 1}.Defaults()
	c, err := Generate(spec)
	if err != nil {
		t.Fatal(err)
	}
	c = withRRService(c, spec)
	backends := map[string][]netip.Prefix{}
	for i := range spec.Nodes {
		backends[NodeName(i)] = NodePrefixes(i, spec.Nodes)
	}
	lab, err := topologies.BuildScale(ctx, c, topologies.ScaleOptions{
		Name: "big30k", Datapath: "iptables", DatapathNodes: []string{NodeName(0)},
		Proxy:    datapaths.ProxyConfig{ClusterCIDRs: []netip.Prefix{PodRange}},
		Backends: backends, ExternalRoutes: []netip.Prefix{LoadBalancerRange},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	p, err := lab.Prepare(c)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	st, err := lab.Datapath(NodeName(0)).Sync(ctx, lab.View(NodeName(0), p), datapaths.SyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full sync of %d Services: %s, %d objects, backend %s", len(c.Services), time.Since(t0), st.Objects, st.Backend)
	cs := &cellState{cell: &Cell{}, lab: lab, node: NodeName(0), client: lab.ClientNS(NodeName(0)), tg: findTargets(p, p.Node(NodeName(0)))}
	r := &runner{}
	if err := r.checkProgrammed(ctx, cs); err != nil {
		t.Error(err)
	}
	rss := maxRSS()
	t.Logf("peak RSS %.0f MiB", float64(rss)/(1<<20))
	if rss > 4<<30 {
		t.Errorf("peak RSS %d bytes exceeds 4 GiB", rss)
	}
}
