package fake_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"

	"proxyrig/datapaths/fake"
	"proxyrig/datapaths/flowtest"
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

// TestLabViewsMatchTables builds, with the fake as datapath, the lab of
// every case that changes the lab's proxy defaults (no local-traffic
// detector, NodePort addresses, masquerade-all, localhost NodePorts), and
// traces each flow through the view the lab actually handed each node. The
// tables' own copy of those defaults (Case.ProxyConfig) must agree with
// the lab's, or the tracer's verdicts would not be the lab's. Needs root.
func TestLabViewsMatchTables(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and this would be skipped: needs root to create network namespaces")
		}
		t.Skip("needs root to create network namespaces")
	}
	fake.Register()
	ctx := context.Background()
	for i, c := range flowtest.All() {
		p := c.Proxy
		if !p.NoLocalTrafficDetector && len(p.NodePortAddresses) == 0 && !p.MasqueradeAll && !p.LocalhostNodePorts {
			continue
		}
		t.Run(c.Title(), func(t *testing.T) {
			cl, err := c.Cluster()
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("fakev%d", i)
			if _, err := topologies.Cleanup(ctx, name); err != nil {
				t.Fatal(err)
			}
			before := len(fake.Instances())
			lab, err := topologies.Build(ctx, cl, topologies.Options{
				Name: name, Datapath: fake.Name, Proxy: c.Proxy,
				ExternalClients: c.ExternalClients(), IngressNode: c.NodeUnderTest(),
			})
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
			fakes := map[string]*fake.Fake{}
			for _, f := range fake.Instances()[before:] {
				fakes[f.Node()] = f
			}
			want := c.ProxyConfig()
			for node, f := range fakes {
				got := f.Current().Proxy
				// The lab adds the IPv6 pod range only to dual-stack labs;
				// what must agree is whether there is a detector at all.
				if (len(got.ClusterCIDRs) == 0) != (len(want.ClusterCIDRs) == 0) {
					t.Errorf("node %s: the lab's detector %v, the tables' %v", node, got.ClusterCIDRs, want.ClusterCIDRs)
				}
			}
			labCl := lab.Cluster()
			for _, fl := range c.Flows {
				r, err := flowtest.Resolve(&c, labCl, fl)
				if err != nil {
					t.Fatalf("%s: %v", fl.Line, err)
				}
				f := fakes[r.Node.Name]
				if f == nil {
					t.Fatalf("%s: no fake on node %s", fl.Line, r.Node.Name)
				}
				got := f.Trace(fake.Packet{Src: r.Src, Dst: r.Dst, Proto: r.Proto, Port: r.Port})
				if exp, _ := fl.Expect.For("iptables"); !matches(got, exp) {
					t.Errorf("%s: %s through the lab's view: table says %s, tracer says %s", fl.Line, fl.Name, exp, got)
				}
			}
		})
	}
}
