package ebpf

import (
	"reflect"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/internal/fuzzcluster"
)

// FuzzRender renders clusters built from fuzz input (examples/*.yaml and
// loadgen's seeded clusters, edited byte by byte) into map contents and
// checks what must hold for every valid cluster: no panic; two renders of
// equal input dump the same maps; rendering again with the returned id
// table changes nothing (an unchanged Service writes no map entry); the
// input is not modified; every frontend's slots 1..count exist and point
// at a backend, and the member map agrees with the slot map; every
// ClusterIP port (TCP and UDP) has a frontend.
//
// Run: go test -run '^$' -fuzz '^FuzzRender$' -fuzztime 30s ./datapaths/ebpf
func FuzzRender(f *testing.F) {
	fuzzcluster.AddSeeds(f, "../..")
	f.Fuzz(func(t *testing.T, yaml []byte, seed uint64, size uint16, ops []byte) {
		view, ok := fuzzcluster.View(fuzzcluster.Input{YAML: yaml, Seed: seed, Size: size, Ops: ops})
		if !ok {
			t.Skip("not a valid cluster")
		}
		checkRender(t, view)
	})
}

func checkRender(t *testing.T, view *datapaths.NodeView) {
	t.Helper()
	before := view.Cluster.Clone()
	a, ids, err := render(view, nil)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	if !reflect.DeepEqual(before, view.Cluster) {
		t.Fatal("render modified the cluster it was given")
	}
	again := *view
	again.Cluster = before
	b, _, err := render(&again, nil)
	if err != nil {
		t.Fatalf("second render: %v", err)
	}
	da := a.dump()
	if db := b.dump(); da != db {
		t.Fatalf("two renders of one cluster differ:\n%s\n---\n%s", da, db)
	}
	c, _, err := render(view, ids)
	if err != nil {
		t.Fatalf("render with the previous ids: %v", err)
	}
	if dc := c.dump(); da != dc {
		t.Fatalf("rendering an unchanged cluster again with its id table changed the maps:\n%s\n---\n%s", da, dc)
	}

	checkGroup := func(front string, v lbSvcValue) {
		for slot := uint32(1); slot <= uint32(v.Count); slot++ {
			bid, ok := a.Slots[lbSlotKey{Id: v.Id, Slot: slot}]
			if !ok {
				t.Errorf("frontend %s: group %d has count %d but no slot %d", front, v.Id, v.Count, slot)
				continue
			}
			_, ok4 := a.Backends[bid]
			_, ok6 := a.Backends6[bid]
			if !ok4 && !ok6 {
				t.Errorf("frontend %s: slot %d/%d points at backend %d, which does not exist", front, v.Id, slot, bid)
			}
		}
	}
	for k, v := range a.Services {
		checkGroup(addrFromBE32(k.Addr).String(), v)
	}
	for k, v := range a.Services6 {
		checkGroup(addrFromBE128(k.Addr).String(), v)
	}
	for k, bid := range a.Slots {
		if got, ok := a.Members[lbMemberKey{Id: k.Id, BackendId: bid}]; !ok || got != k.Slot {
			t.Errorf("slot %d/%d -> backend %d, but the member map says slot %d (present %v)", k.Id, k.Slot, bid, got, ok)
		}
	}
	for _, svc := range view.Cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		for _, ip := range svc.ClusterIPs {
			for _, p := range svc.Ports {
				proto, ok := protoNumber(p.Protocol)
				if !ok {
					continue
				}
				found := false
				for _, scope := range []uint8{scopePrimary, scopeInternal} {
					if is4(ip) {
						_, found = a.Services[lbSvcKey{Addr: be32(ip), Port: be16(uint16(p.Port)), Proto: proto, Scope: scope}]
					} else {
						_, found = a.Services6[lbSvc6Key{Addr: be128(ip), Port: be16(uint16(p.Port)), Proto: proto, Scope: scope}]
					}
					if found {
						break
					}
				}
				if !found {
					t.Errorf("no frontend for ClusterIP %s port %d/%s of %s", ip, p.Port, p.Protocol, svc.Name)
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("maps:\n%s", da)
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
			checkRender(t, e.View)
		})
	}
}
