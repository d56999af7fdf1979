package ipvs

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
)

// TestLabEndToEnd builds a two-node lab running this datapath on both
// nodes (examples/hello.yaml) and checks real traffic: ClusterIP from a
// pod (all endpoints, source kept), NodePort from outside (masqueraded),
// hairpin (masqueraded), a Service without endpoints and a wrong port on a
// VIP (both refused), and an endpoint removal.
func TestLabEndToEnd(t *testing.T) {
	requireIPVS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := model.ParseFiles("../../examples/hello.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lab, err := topologies.Build(ctx, cl, topologies.Options{Name: "ipvs" + randomHex(t)[:6], Datapath: Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	if got := lab.Info().Backend; got != "ipvs-rr/iptables-legacy" {
		t.Errorf("lab backend %q", got)
	}
	all := []string{"hello-7d4b9c-abcde", "hello-7d4b9c-fghij", "hello-7d4b9c-klmno"}
	vip := netip.MustParseAddrPort("198.19.0.80:80")
	pod, podIP := lab.ClientNS("node-a"), lab.ClientIP("node-a", false)
	ext, nodeA := lab.ExternalNS(0), lab.NodeIP("node-a", false)

	seen := func(what string, n int, do func() topologies.ProbeResult, check func(topologies.ProbeResult)) []string {
		t.Helper()
		var names []string
		for range n {
			r := do()
			if r.Outcome != topologies.Answered {
				t.Errorf("%s: %s (%s)", what, r.Outcome, r.Err)
				continue
			}
			names = append(names, r.Endpoint)
			if check != nil {
				check(r)
			}
		}
		slices.Sort(names)
		return slices.Compact(names)
	}

	// ClusterIP from a pod: every endpoint in turn, the pod's own source.
	got := seen("pod to ClusterIP", 6, func() topologies.ProbeResult {
		return topologies.Probe(ctx, pod, topologies.ProbeSpec{Proto: "TCP", Dst: vip})
	}, func(r topologies.ProbeResult) {
		if r.SeenSource.Addr() != podIP {
			t.Errorf("pod to ClusterIP: backend saw %s, want the pod's %s (no masquerade)", r.SeenSource, podIP)
		}
	})
	if !slices.Equal(got, all) {
		t.Errorf("pod to ClusterIP reached %v, want %v", got, all)
	}

	// NodePort from outside, on both nodes: masqueraded.
	for _, node := range []string{"node-a", "node-b"} {
		ip := lab.NodeIP(node, false)
		got := seen("external to NodePort on "+node, 3, func() topologies.ProbeResult {
			return topologies.Probe(ctx, ext, topologies.ProbeSpec{Proto: "TCP", Dst: netip.AddrPortFrom(ip, 30080)})
		}, func(r topologies.ProbeResult) {
			if r.SeenSource.Addr() == lab.ExternalIP(0, false) {
				t.Errorf("external to NodePort on %s was not masqueraded (backend saw %s)", node, r.SeenSource)
			}
		})
		if !slices.Equal(got, all) {
			t.Errorf("external to NodePort on %s reached %v, want %v", node, got, all)
		}
	}

	// Hairpin: an endpoint reaching itself through the Service is
	// masqueraded (KUBE-LOOP-BACK), so it sees a node address.
	self := all[0]
	selfIP := netip.MustParseAddr("198.18.64.10")
	hair := lab.EndpointNS(self)
	for range 6 {
		r := topologies.Probe(ctx, hair, topologies.ProbeSpec{Proto: "TCP", Dst: vip})
		if r.Outcome != topologies.Answered {
			t.Errorf("hairpin probe: %s (%s)", r.Outcome, r.Err)
			continue
		}
		if r.Endpoint == self && r.SeenSource.Addr() == selfIP {
			t.Errorf("hairpin to itself was not masqueraded (it saw its own address %s)", r.SeenSource)
		}
	}

	// No endpoints, and a port the VIP does not serve: refused at once.
	for _, dst := range []string{"198.19.0.81:80", "198.19.0.80:81"} {
		r := topologies.Probe(ctx, pod, topologies.ProbeSpec{Proto: "TCP", Dst: netip.MustParseAddrPort(dst)})
		if r.Outcome != topologies.Refused {
			t.Errorf("pod to %s: %s (%s), want refused", dst, r.Outcome, r.Err)
		}
	}
	if r := topologies.Probe(ctx, ext, topologies.ProbeSpec{Proto: "TCP", Dst: netip.AddrPortFrom(nodeA, 30081)}); r.Outcome == topologies.Answered {
		t.Errorf("external to an unused NodePort answered: %+v", r)
	}

	// The node-b endpoint leaves: traffic stops reaching it.
	cl2 := *cl
	cl2.Services = nil
	for _, s := range cl.Services {
		s2 := *s
		s2.Ports = nil
		for _, p := range s.Ports {
			p2 := *p
			p2.Endpoints = slices.DeleteFunc(slices.Clone(p.Endpoints), func(e *model.Endpoint) bool { return e.Name == all[2] })
			s2.Ports = append(s2.Ports, &p2)
		}
		cl2.Services = append(cl2.Services, &s2)
	}
	if err := lab.Apply(ctx, &cl2); err != nil {
		t.Fatal(err)
	}
	if st := lab.LastSync()["node-a"]; st.Full || st.ChangedServices != 1 {
		t.Errorf("node-a's sync after removing an endpoint: %+v, want a partial sync of one Service", st)
	}
	got = seen("pod to ClusterIP after removal", 6, func() topologies.ProbeResult {
		return topologies.Probe(ctx, pod, topologies.ProbeSpec{Proto: "TCP", Dst: vip})
	}, nil)
	if !slices.Equal(got, all[:2]) {
		t.Errorf("after removing %s, pod to ClusterIP reached %v", all[2], got)
	}
}

// TestLabLoadBalancer runs examples/loadbalancer.yaml (LB IP and
// externalIP, eTP=Local, loadBalancerSourceRanges 198.18.0.200/31,
// ClientIP affinity, both endpoints on node-a) with three external
// clients, two inside the source range and one outside.
func TestLabLoadBalancer(t *testing.T) {
	requireIPVS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := model.ParseFiles("../../examples/loadbalancer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lab, err := topologies.Build(ctx, cl, topologies.Options{Name: "ipvs" + randomHex(t)[:6], Datapath: Name,
		DatapathOptions: map[string]string{OptionScheduler: "wrr"}, ExternalClients: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(context.Background()); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	if got := lab.Info().Backend; got != "ipvs-wrr/iptables-legacy" {
		t.Errorf("lab backend %q", got)
	}
	lbIP := netip.MustParseAddrPort("198.19.200.1:80")
	short := func(ns netnsutil.NS, dst netip.AddrPort) topologies.ProbeResult {
		return topologies.Probe(ctx, ns, topologies.ProbeSpec{Proto: "TCP", Dst: dst, Timeout: 3 * time.Second})
	}

	// Allowed external client: local endpoints, source kept, and sticky.
	var first string
	for i := range 4 {
		r := short(lab.ExternalNS(0), lbIP)
		if r.Outcome != topologies.Answered {
			t.Fatalf("allowed external client to LB IP: %s (%s)", r.Outcome, r.Err)
		}
		if r.SeenSource.Addr() != lab.ExternalIP(0, false) {
			t.Errorf("eTP=Local LB traffic was masqueraded: backend saw %s", r.SeenSource)
		}
		if i == 0 {
			first = r.Endpoint
		} else if r.Endpoint != first {
			t.Errorf("ClientIP affinity broke: %s then %s", first, r.Endpoint)
		}
	}
	// Outside the source range: dropped. The same client may use the
	// NodePort, which source ranges never cover.
	if r := short(lab.ExternalNS(2), lbIP); r.Outcome != topologies.TimedOut {
		t.Errorf("blocked external client to LB IP: %s, want a timeout (DROP)", r.Outcome)
	}
	if r := short(lab.ExternalNS(2), netip.AddrPortFrom(lab.NodeIP("node-a", false), 30100)); r.Outcome != topologies.Answered {
		t.Errorf("blocked client to the NodePort: %s (%s), want an answer", r.Outcome, r.Err)
	}
	// A pod (outside the range) and the node itself (outside it too, so
	// KUBE-IPVS-OUT-FILTER applies) do not reach the LB IP either.
	if r := short(lab.ClientNS("node-a"), lbIP); r.Outcome == topologies.Answered {
		t.Errorf("pod outside the source range reached the LB IP (%s)", r.Endpoint)
	}
	if r := short(lab.NodeNS("node-a"), lbIP); r.Outcome == topologies.Answered {
		t.Errorf("node outside the source range reached the LB IP (%s)", r.Endpoint)
	}
	// The externalIP has no source ranges: any client, source kept.
	if r := short(lab.ExternalNS(2), netip.MustParseAddrPort("198.19.200.10:80")); r.Outcome != topologies.Answered || r.SeenSource.Addr() != lab.ExternalIP(2, false) {
		t.Errorf("external client to the externalIP: %+v", r)
	}
	// node-b has no local endpoint: IPVS mode forwards to node-a's
	// endpoints unmasqueraded (kubernetes#97081), so the reply bypasses
	// node-b and the client never completes the connection.
	if r := short(lab.ExternalNS(0), netip.AddrPortFrom(lab.NodeIP("node-b", false), 30100)); r.Outcome == topologies.Answered {
		t.Errorf("eTP=Local NodePort on a node without local endpoints answered (%s)", r.Endpoint)
	}
}
