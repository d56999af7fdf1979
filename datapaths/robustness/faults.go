package robustness

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
	"proxyrig/topologies"
)

// The fault lab: one node running the datapath, five pods on it, and two
// cluster states that differ in every way a sync must handle: endpoints
// replaced, a Service losing all endpoints (forwarding → refused), one
// gaining its first (refused → forwarding), one deleted, one added, TCP
// and UDP. The "keep" Service uses every pod in both states, so the lab
// never deletes a pod and the old state can be seen still forwarding
// after a failed sync.

const node = "node-a"

type pod struct{ name, ip string }

var pods = []pod{
	{"pod-1", "198.18.64.21"}, {"pod-2", "198.18.64.22"}, {"pod-3", "198.18.64.23"},
	{"pod-4", "198.18.64.24"}, {"pod-5", "198.18.64.25"},
}

func podsNamed(names ...string) []pod {
	var out []pod
	for _, n := range names {
		for _, p := range pods {
			if p.name == n {
				out = append(out, p)
			}
		}
	}
	return out
}

type svcSpec struct {
	name string
	vip  string
	udp  bool
	eps  []pod // nil: no EndpointSlice at all; empty: a slice with none
}

// state is one cluster: Services by name.
type state struct {
	name string
	svcs []svcSpec
}

var (
	stateOne = state{"state 1", []svcSpec{
		{name: "keep", vip: "198.19.0.200", udp: true, eps: pods},
		{name: "svc-a", vip: "198.19.0.201", udp: true, eps: podsNamed("pod-1", "pod-2")},
		{name: "svc-b", vip: "198.19.0.202", eps: podsNamed("pod-3")},
		{name: "svc-c", vip: "198.19.0.203", eps: []pod{}},
		{name: "svc-d", vip: "198.19.0.204", eps: podsNamed("pod-4")},
	}}
	stateTwo = state{"state 2", []svcSpec{
		{name: "keep", vip: "198.19.0.200", udp: true, eps: pods},
		{name: "svc-a", vip: "198.19.0.201", udp: true, eps: podsNamed("pod-1", "pod-5")},
		{name: "svc-b", vip: "198.19.0.202", eps: []pod{}},
		{name: "svc-c", vip: "198.19.0.203", eps: podsNamed("pod-3")},
		{name: "svc-e", vip: "198.19.0.205", eps: podsNamed("pod-4")},
	}}
	// targets are probed in every state; a VIP no Service holds must not
	// answer. (keep has a UDP port so that every pod serves UDP in both
	// states: the lab stops servers no Service uses.)
	targets = []target{
		{"keep", "198.19.0.200", "TCP"}, {"svc-a", "198.19.0.201", "TCP"}, {"svc-a", "198.19.0.201", "UDP"},
		{"svc-b", "198.19.0.202", "TCP"}, {"svc-c", "198.19.0.203", "TCP"}, {"svc-d", "198.19.0.204", "TCP"},
		{"svc-e", "198.19.0.205", "TCP"},
	}
)

type target struct{ svc, vip, proto string }

func (t target) String() string { return fmt.Sprintf("%s %s:80/%s", t.svc, t.vip, t.proto) }

func (s state) yaml() string {
	parts := []string{"apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus:\n  addresses:\n  - {type: InternalIP, address: 198.18.0.11}\n"}
	for _, sv := range s.svcs {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: default}\nspec:\n  clusterIP: %s\n  ports:\n  - {name: tcp, port: 80, protocol: TCP, targetPort: 80}\n", sv.name, sv.vip)
		if sv.udp {
			b.WriteString("  - {name: udp, port: 80, protocol: UDP, targetPort: 80}\n")
		}
		if sv.eps != nil {
			fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: %s-abcde\n  namespace: default\n  labels: {kubernetes.io/service-name: %s}\naddressType: IPv4\nports:\n- {name: tcp, port: 80, protocol: TCP}\n", sv.name, sv.name)
			if sv.udp {
				b.WriteString("- {name: udp, port: 80, protocol: UDP}\n")
			}
			if len(sv.eps) == 0 {
				b.WriteString("endpoints: []\n")
			} else {
				b.WriteString("endpoints:\n")
				for _, p := range sv.eps {
					fmt.Fprintf(&b, "- addresses: [%s]\n  nodeName: node-a\n  targetRef: {kind: Pod, namespace: default, name: %s}\n", p.ip, p.name)
				}
			}
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, "---\n")
}

func (s state) cluster(t *testing.T) *model.Cluster {
	t.Helper()
	c, err := model.Parse("robustness "+s.name+".yaml", []byte(s.yaml()))
	if err != nil {
		t.Fatalf("fixture %s: %v", s.name, err)
	}
	return c
}

// expect is what a target does in a state: answered by exactly these
// endpoints, "refused", or "unserved" (never answered).
func (s state) expect(tg target) string {
	for _, sv := range s.svcs {
		if sv.name != tg.svc {
			continue
		}
		if len(sv.eps) == 0 {
			return "refused"
		}
		var names []string
		for _, p := range sv.eps {
			names = append(names, p.name)
		}
		return "answered by " + strings.Join(names, ",")
	}
	return "unserved"
}

// observe probes tg and classifies what came back in the terms of expect.
// A forwarding target to k endpoints gets enough probes n that, with
// backends picked at random, some endpoint goes unseen with probability
// k·(1-1/k)ⁿ under 10⁻⁶: a run makes about a hundred such checks, and
// the earlier 8k probes (about 7·10⁻⁴ per check with five endpoints)
// made a run fail now and then with nothing wrong.
func observe(ctx context.Context, lab *topologies.Lab, tg target, want string) string {
	n := 3
	if strings.HasPrefix(want, "answered by ") {
		n = probesToSeeAll(len(strings.Split(strings.TrimPrefix(want, "answered by "), ",")))
	}
	spec := topologies.ProbeSpec{Proto: tg.proto, Dst: netip.AddrPortFrom(netip.MustParseAddr(tg.vip), 80), Timeout: 2 * time.Second}
	if want == "unserved" || want == "refused" {
		spec.Timeout = time.Second
	}
	seen := map[string]bool{}
	var refused, silent int
	var odd []string
	for range n {
		r := topologies.Probe(ctx, lab.ClientNS(node), spec)
		switch r.Outcome {
		case topologies.Answered:
			seen[r.Endpoint] = true
		case topologies.Refused:
			refused++
		case topologies.TimedOut:
			silent++
		default:
			odd = append(odd, fmt.Sprintf("%s: %s", r.Outcome, r.Err))
		}
	}
	switch {
	case len(odd) > 0:
		return "probe failures: " + strings.Join(odd, "; ")
	case len(seen) > 0:
		names := make([]string, 0, len(seen))
		for _, p := range pods {
			if seen[p.name] {
				names = append(names, p.name)
			}
		}
		for e := range seen {
			if !slices.Contains(names, e) {
				names = append(names, e)
			}
		}
		s := "answered by " + strings.Join(names, ",")
		if refused+silent > 0 {
			s += fmt.Sprintf(" (and %d refused, %d unanswered)", refused, silent)
		}
		return s
	case refused == n:
		return "refused"
	}
	return "unserved"
}

// probesToSeeAll is how many uniformly random picks among k endpoints
// miss one of them with probability under 10⁻⁶.
func probesToSeeAll(k int) int {
	if k <= 1 {
		return 3
	}
	return int(math.Ceil(math.Log(1e-6/float64(k)) / math.Log(1-1/float64(k))))
}

// checkProbes requires every target to behave as in st.
func checkProbes(ctx context.Context, t *testing.T, lab *topologies.Lab, st state, when string) {
	t.Helper()
	for _, tg := range targets {
		want := st.expect(tg)
		if got := observe(ctx, lab, tg, want); got != want {
			t.Errorf("%s: %s is %s, want %s (as in %s)", when, tg, got, want, st.name)
		}
	}
}

// settle lets deferred work of the datapath happen, as the next periodic
// sync would: nftables deletes chains a sync orphaned only a second later
// (kube-proxy's stale-chain delay), so a dump right after a sync still
// lists them, flushed.
func settle(ctx context.Context, t *testing.T, lab *topologies.Lab) {
	t.Helper()
	time.Sleep(1100 * time.Millisecond)
	if err := lab.Resync(ctx, false); err != nil {
		t.Fatalf("settling sync: %v", err)
	}
}

// RunFaults runs the fault scenario against datapath dp (see the package
// documentation); every kind the datapath offers, in turn, alternating
// between the two cluster states, then an out-of-band wipe.
func RunFaults(t *testing.T, dp string) {
	requireDatapath(t, dp)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lab, err := topologies.Build(ctx, stateOne.cluster(t), topologies.Options{Name: "rb" + shortID(8), Datapath: dp})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	fk, ok := lab.Datapath(node).(datapaths.FaultKinds)
	if !ok {
		skipOrFatal(t, fmt.Sprintf("datapath %s does not implement datapaths.FaultKinds", dp))
	}
	if _, ok := lab.Datapath(node).(datapaths.StateDumper); !ok {
		skipOrFatal(t, fmt.Sprintf("datapath %s does not implement datapaths.StateDumper", dp))
	}
	checkProbes(ctx, t, lab, stateOne, "after the first sync")
	if t.Failed() {
		t.FailNow()
	}

	cur, next := stateOne, stateTwo
	for _, kind := range fk.Faults() {
		fk := lab.Datapath(node).(datapaths.FaultKinds) // RestartDatapath replaces it
		f, err := fk.InjectFault(kind)
		if err != nil {
			t.Fatalf("inject %s: %v", kind, err)
		}
		t.Logf("fault %s: %s; changing %s to %s", kind, f.Desc, cur.name, next.name)
		err = lab.Apply(ctx, next.cluster(t))
		switch {
		case f.Absorbed:
			if err != nil {
				t.Errorf("fault %s should be absorbed by a retry, but the sync failed: %v", kind, err)
			}
			checkProbes(ctx, t, lab, next, "after a sync that absorbed "+kind)
		default:
			if err == nil {
				t.Fatalf("fault %s: the sync succeeded", kind)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(f.Cause)) {
				t.Errorf("fault %s: the error does not name the cause %q: %v", kind, f.Cause, err)
			}
			t.Logf("fault %s: the sync failed as it should: %v", kind, err)
			checkProbes(ctx, t, lab, cur, "after the sync failed by "+kind)
			if err := lab.Resync(ctx, false); err != nil {
				t.Fatalf("the sync after fault %s failed: %v", kind, err)
			}
			if st := lab.LastSync()[node]; !st.Full {
				t.Errorf("the sync after fault %s was not full (datapaths.Datapath.Sync contract): %+v", kind, st)
			}
			checkProbes(ctx, t, lab, next, "after the sync following "+kind)
		}
		compareWithFresh(ctx, t, lab, "after fault "+kind)
		if t.Failed() {
			t.FailNow()
		}
		cur, next = next, cur
	}

	sd := lab.Datapath(node).(datapaths.StateDumper)
	before, err := sd.DumpState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	what, err := sd.WipeState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wiped out of band: %s", what)
	if err := lab.Resync(ctx, true); err != nil {
		t.Fatalf("forced resync after the wipe: %v", err)
	}
	checkProbes(ctx, t, lab, cur, "after a wipe ("+what+") and a forced resync")
	after, err := sd.DumpState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("a forced resync after %q did not restore the state:\n%s", what, diffText(before, after))
	}
}

// compareWithFresh requires the node's kernel state to equal what a fresh
// datapath writes for the same cluster: the old one cleans up, a new one
// syncs once.
func compareWithFresh(ctx context.Context, t *testing.T, lab *topologies.Lab, when string) {
	t.Helper()
	settle(ctx, t, lab)
	got, err := lab.Datapath(node).(datapaths.StateDumper).DumpState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Datapath(node).Cleanup(ctx); err != nil {
		t.Fatalf("cleanup before a fresh sync: %v", err)
	}
	if err := lab.RestartDatapath(ctx, node); err != nil {
		t.Fatalf("fresh sync: %v", err)
	}
	want, err := lab.Datapath(node).(datapaths.StateDumper).DumpState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("%s: the kernel state differs from a fresh full sync of the same cluster (- converged, + fresh):\n%s", when, diffText(got, want))
	}
}
