package iptables

import (
	"reflect"
	"testing"

	"proxyrig/datapaths"
	"proxyrig/internal/fuzzcluster"
)

// FuzzRender renders clusters built from fuzz input (examples/*.yaml and
// loadgen's seeded clusters, edited byte by byte) and checks what must hold
// for every valid cluster: no panic; two renders of equal input are
// byte-identical; the input is not modified; the restore text is
// well-formed (every chain jumped to is declared, names and comments fit
// the kernel's limits); every ClusterIP of the family is matched.
//
// Run: go test -run '^$' -fuzz '^FuzzRender$' -fuzztime 30s ./datapaths/iptables
func FuzzRender(f *testing.F) {
	fuzzcluster.AddSeeds(f, "../..")
	f.Fuzz(func(t *testing.T, yaml []byte, seed uint64, size uint16, ops []byte) {
		view, ok := fuzzcluster.View(fuzzcluster.Input{YAML: yaml, Seed: seed, Size: size, Ops: ops})
		if !ok {
			t.Skip("not a valid cluster")
		}
		checkRender(t, view, Env{RandomFully: seed&1 != 0, ConntrackTCPLiberal: seed&2 != 0})
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
	// An equal cluster made of other pointers renders the same bytes.
	again := *view
	again.Cluster = before
	b, err := Render(&again, env)
	if err != nil {
		t.Fatalf("second Render: %v", err)
	}
	for _, f := range families {
		ta := string(planSync(a.Family(f), nil, true, nil).payload)
		tb := string(planSync(b.Family(f), nil, true, nil).payload)
		if ta != tb {
			t.Fatalf("%s: two renders of one cluster differ:\n%s\n---\n%s", f, ta, tb)
		}
		for _, p := range fuzzcluster.RestoreProblems(ta) {
			t.Errorf("%s restore text: %s", f, p)
		}
		dsts := fuzzcluster.Destinations(ta)
		for _, svc := range view.Cluster.Services {
			ip, ok := clusterIPOf(svc, f)
			if ok && !dsts[ip.String()] {
				t.Errorf("%s: ClusterIP %s of %s matched by no rule", f, ip, svc.Name)
			}
		}
		if t.Failed() {
			t.Logf("%s restore text:\n%s", f, ta)
			return
		}
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
