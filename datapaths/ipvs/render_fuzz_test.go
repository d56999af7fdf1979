package ipvs

import (
	"net/netip"
	"reflect"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/internal/fuzzcluster"
)

// FuzzRender renders clusters built from fuzz input (examples/*.yaml and
// loadgen's seeded clusters, edited byte by byte) and checks what must hold
// for every valid cluster: no panic; two renders of equal input print the
// same state; the input is not modified; the iptables-restore input is
// well-formed (every chain jumped to is declared, names and comments fit
// the kernel's limits); every ClusterIP port has a virtual server whose
// real servers are endpoints of that port.
//
// Run: go test -run '^$' -fuzz '^FuzzRender$' -fuzztime 30s ./datapaths/ipvs
func FuzzRender(f *testing.F) {
	fuzzcluster.AddSeeds(f, "../..")
	f.Fuzz(func(t *testing.T, yaml []byte, seed uint64, size uint16, ops []byte) {
		view, ok := fuzzcluster.View(fuzzcluster.Input{YAML: yaml, Seed: seed, Size: size, Ops: ops})
		if !ok {
			t.Skip("not a valid cluster")
		}
		env := Env{RandomFully: seed&1 != 0, Scheduler: Schedulers[int(seed>>1)%len(Schedulers)]}
		if seed&0x100 != 0 && view.Node != nil {
			env.LocalAddrs = view.Node.Addresses
		}
		checkRender(t, view, env)
	})
}

func checkRender(t *testing.T, view *datapaths.NodeView, env Env) {
	t.Helper()
	before := view.Cluster.Clone()
	a, err := Render(view, env)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if !reflect.DeepEqual(before, view.Cluster) {
		t.Fatal("Render modified the cluster it was given")
	}
	again := *view
	again.Cluster = before
	b, err := Render(&again, env)
	if err != nil {
		t.Fatalf("second Render: %v", err)
	}
	ta, tb := a.Text(), b.Text()
	if ta != tb {
		t.Fatalf("two renders of one cluster differ:\n%s\n---\n%s", ta, tb)
	}
	if !reflect.DeepEqual(a.Services, b.Services) {
		t.Errorf("per-Service fingerprints differ between two renders of one cluster")
	}
	for _, fs := range a.Families {
		payload, _ := restorePayload(fs, true, nil)
		for _, p := range fuzzcluster.RestoreProblems(string(payload)) {
			t.Errorf("%s restore text: %s", fs.Family, p)
		}
	}
	vss := map[string]*VirtualServer{}
	for _, vs := range a.VirtualServers {
		vss[vs.Key()] = vs
	}
	for _, svc := range view.Cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		for _, ip := range svc.ClusterIPs {
			for _, p := range svc.Ports {
				key := (&VirtualServer{Address: ip, Port: uint16(p.Port), Protocol: p.Protocol}).Key()
				vs := vss[key]
				if vs == nil {
					t.Errorf("no virtual server %s for %s", key, svc.Name)
					continue
				}
				eps := map[netip.AddrPort]bool{}
				for _, ep := range p.Endpoints {
					eps[netip.AddrPortFrom(ep.IP, uint16(ep.Port))] = true
				}
				for _, rs := range vs.RealServers {
					if !eps[netip.AddrPortFrom(rs.Address, rs.Port)] {
						t.Errorf("virtual server %s of %s has real server %s, not one of its endpoints", key, svc.Name, rs.Key())
					}
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("state:\n%s", ta)
	}
}

// TestExtremeInputs renders each extreme but legal cluster (one Service
// with 100k endpoints, 30k Services on one port, 100 ports, names at their
// length limits, IPv6 only) with the fuzz target's checks. It asserts no
// duration, but a renderer that is quadratic in any of them makes it run
// for minutes.
func TestExtremeInputs(t *testing.T) {
	for _, e := range fuzzcluster.Extremes(fuzzcluster.DefaultSizes) {
		t.Run(e.Name, func(t *testing.T) {
			checkRender(t, e.View, Env{RandomFully: true})
		})
	}
}
