package fake_test

import (
	"context"
	"os"
	"slices"
	"testing"

	"proxyrig/datapaths/fake"
	"proxyrig/model"
	"proxyrig/topologies"
)

// TestFakeInLab builds a real lab with the fake as its datapath and checks
// what the lab asked of it: one fake per node, each synced with the whole
// cluster and its own node. Needs root (it creates namespaces).
func TestFakeInLab(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and this would be skipped: needs root to create network namespaces")
		}
		t.Skip("needs root to create network namespaces")
	}
	fake.Register()
	cl, err := model.Parse("one.yaml", []byte(oneService))
	if err != nil {
		t.Fatal(err)
	}
	const name = "fakelab"
	ctx := context.Background()
	// A crashed earlier run of this very test may have left its lab.
	if _, err := topologies.Cleanup(ctx, name); err != nil {
		t.Fatal(err)
	}
	before := len(fake.Instances())
	lab, err := topologies.Build(ctx, cl, topologies.Options{Name: name, Datapath: fake.Name})
	if err != nil {
		_, _ = topologies.Cleanup(ctx, name)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(ctx); err != nil {
			t.Error(err)
		}
		if _, err := topologies.Cleanup(ctx, name); err != nil {
			t.Error(err)
		}
	})

	made := fake.Instances()[before:]
	if len(made) != 1 {
		t.Fatalf("the lab made %d fakes for a 1-node cluster", len(made))
	}
	f := made[0]
	v := f.Current()
	if v == nil || v.Node == nil || v.Node.Name != "node-a" || f.Node() != "node-a" {
		t.Fatalf("fake for %q holds view %+v", f.Node(), v)
	}
	if !slices.Contains(v.Proxy.ClusterCIDRs, topologies.ClusterCIDR) {
		t.Errorf("the lab did not hand its ClusterCIDR to the datapath: %v", v.Proxy.ClusterCIDRs)
	}
	n := f.Syncs()
	if err := lab.Resync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if f.Syncs() != n+1 {
		t.Errorf("Resync made %d syncs, want 1", f.Syncs()-n)
	}
}
