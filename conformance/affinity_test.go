package conformance

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"proxyrig/datapaths/flowtest"
	"proxyrig/model"
)

// Category J: session affinity (CONFORMANCE.md §J). kube-proxy's iptables
// mode keeps one `recent` list per endpoint, keyed by the client's source
// address as the node first sees it (before any SNAT); nftables uses
// affinity sets and IPVS persistence templates (Appendix 1). What every
// datapath must show is the same: consecutive new connections from one
// client go to one endpoint, and after the timeout of idleness they may go
// elsewhere.

const (
	// stickyProbes consecutive new connections must all reach one
	// endpoint (the e2e tests require the last 15 of ≥15 requests).
	stickyProbes = 20
	// spreadProbes new connections without affinity must reach more than
	// one endpoint: with k ≥ 2 endpoints, all landing on one has
	// probability k·(1/k)^30 < 2e-9.
	spreadProbes = 30
	// shortAffinity is the affinity timeout of AFF-04, kept short so the
	// spec can wait it out.
	shortAffinity = 3
	// affinityExpiryMargin is waited beyond the timeout before each probe
	// that checks expiry: IPVS persistence templates can outlive their
	// timeout by ~2 s (the e2e test waits timeout+5 s).
	affinityExpiryMargin = 3 * time.Second
	// ipvsTimeWait is how long IPVS keeps a TCP connection closed with FIN
	// in its table (IP_VS_TCP_S_TIME_WAIT, 2 minutes, not configurable),
	// and so how long its persistence template outlives timeoutSeconds
	// (flowtest.WhyIPVSAffinityLinger). AFF-04 idles this much longer on
	// ipvs. IPVS' round-robin scheduler then sends the first new
	// connection to another endpoint, so one idle period suffices.
	ipvsTimeWait = 120 * time.Second
	// expiryTries bounds the attempts to see another endpoint after
	// expiry; with 4 endpoints each attempt lands elsewhere with
	// probability 3/4, so 8 all missing has probability 1.5e-5.
	expiryTries = 8
)

// Pods shared by the affinity labs: three on node-a, one on node-b.
var (
	affA1 = bEndpoint{Name: "pod-a1", IP: "198.18.64.91", Node: "node-a"}
	affA2 = bEndpoint{Name: "pod-a2", IP: "198.18.64.92", Node: "node-a"}
	affA3 = bEndpoint{Name: "pod-a3", IP: "198.18.64.93", Node: "node-a"}
	affB1 = bEndpoint{Name: "pod-b1", IP: "198.18.65.91", Node: "node-b"}
)

func affinitySpecs(dp string) {
	describeAffinitySticky(dp)
	describeAffinitySwitch(dp)
	describeAffinityExpiry(dp)
}

// expectSticky sends stickyProbes new connections and requires one
// endpoint, among allowed, to answer them all.
func (h *harness) expectSticky(ctx context.Context, t probeTarget, allowed []string, src sourceRule, node string) string {
	got := distinctNames(h.forward(ctx, t, stickyProbes, fwdCheck{endpoints: allowed, source: src, node: node}))
	Expect(got).To(HaveLen(1), "%s: with ClientIP affinity %d consecutive connections must reach one endpoint; reached %v", t, stickyProbes, got)
	return got[0]
}

// expectSpread sends spreadProbes new connections and requires more than
// one endpoint to answer.
func (h *harness) expectSpread(ctx context.Context, t probeTarget, allowed []string, src sourceRule, node string) {
	got := distinctNames(h.forward(ctx, t, spreadProbes, fwdCheck{endpoints: allowed, source: src, node: node}))
	Expect(len(got)).To(BeNumerically(">", 1), "%s: without affinity %d connections must reach more than one endpoint; reached %v", t, spreadProbes, got)
}

// AFF-01, AFF-03 and AFF-05 on one lab that the specs only read: each
// spec's client (address) and Service are its own, and affinity state is
// per client address and Service, so they do not interact.
func describeAffinitySticky(dp string) {
	cip := bService{Name: "aff", ClusterIP: "198.19.0.91", Affinity: true,
		Ports: []bPort{{Name: "tcp", Port: 80}, {Name: "udp", Port: 80, Proto: model.UDP}}}
	lbCluster := bService{Name: "aff-cluster", Type: model.LoadBalancer, ClusterIP: "198.19.0.92", LBIP: "198.19.2.92", Affinity: true,
		Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30920}}}
	lbLocal := bService{Name: "aff-local", Type: model.LoadBalancer, ClusterIP: "198.19.0.93", LBIP: "198.19.2.93", Affinity: true,
		ETP: model.PolicyLocal, HCNP: 30932, Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30930}}}
	eps := []bEndpoint{affA1, affA2, affB1}
	all := endpointNames(eps)
	local := []string{affA1.Name, affA2.Name}
	fixture := fixtureOf(bNodeA, bNodeB, cip.yaml(eps), lbCluster.yaml(eps), lbLocal.yaml(eps))

	Describe("ClientIP affinity holds", Ordered, func() {
		var h *harness
		BeforeAll(func(ctx SpecContext) {
			h = newBehaviourLab(ctx, dp, "AFF-01", "ClientIP affinity", fixture)
		}, NodeTimeout(buildTimeout))

		It("AFF-01 on a ClusterIP: consecutive TCP connections from a pod reach one endpoint", Label("AFF-01"), func(ctx SpecContext) {
			for _, node := range []string{"node-a", "node-b"} {
				t := probeTarget{what: "pod on " + node + " to ClusterIP", ns: h.fromPod(node), proto: model.TCP, dst: addrPortOf(cip.ClusterIP, 80)}
				h.expectSticky(ctx, t, all, clientSource, "")
			}
		}, SpecTimeout(specTimeout))

		It("AFF-05 on a ClusterIP over UDP: datagrams from fresh source ports reach one endpoint", Label("AFF-05"), func(ctx SpecContext) {
			t := probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.UDP, dst: addrPortOf(cip.ClusterIP, 80)}
			h.expectSticky(ctx, t, all, clientSource, "")
		}, SpecTimeout(specTimeout))

		It("AFF-03 via NodePort and LB IP with eTP=Cluster: one endpoint per client, masqueraded", Label("AFF-03"), func(ctx SpecContext) {
			for _, t := range []probeTarget{
				{what: "external to node-a NodePort", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeAIP, 30920)},
				{what: "external to LB IP", ns: h.fromExternal(), proto: model.TCP, dst: addrPortOf(lbCluster.LBIP, 80)},
			} {
				h.expectSticky(ctx, t, all, nodeSource, "node-a")
			}
		}, SpecTimeout(specTimeout))

		It("AFF-03 via NodePort and LB IP with eTP=Local: one local endpoint per client, client address kept", Label("AFF-03"), func(ctx SpecContext) {
			for _, t := range []probeTarget{
				{what: "external to node-a NodePort", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeAIP, 30930)},
				{what: "external to LB IP", ns: h.fromExternal(), proto: model.TCP, dst: addrPortOf(lbLocal.LBIP, 80)},
			} {
				h.expectSticky(ctx, t, local, clientSource, "")
			}
		}, SpecTimeout(specTimeout))
	})
}

// AFF-02 and AFF-03's switching variants: None <-> ClientIP at runtime.
func describeAffinitySwitch(dp string) {
	It("AFF-02 switching a ClusterIP's affinity ClientIP -> None -> ClientIP", Label("AFF-02"), func(ctx SpecContext) {
		svc := bService{Name: "switch", ClusterIP: "198.19.0.94", Affinity: true, Ports: []bPort{{Name: "tcp", Port: 80}}}
		eps := []bEndpoint{affA1, affA2, affA3}
		fixture := func(s bService) string { return fixtureOf(bNodeA, s.yaml(eps)) }
		none := svc
		none.Affinity = false

		h := newBehaviourLab(ctx, dp, "AFF-02", "switching affinity", fixture(svc))
		t := probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.TCP, dst: addrPortOf(svc.ClusterIP, 80)}
		h.expectSticky(ctx, t, endpointNames(eps), clientSource, "")
		h.applyFixture(ctx, "sessionAffinity: None", fixture(none))
		h.expectSpread(ctx, t, endpointNames(eps), clientSource, "")
		h.applyFixture(ctx, "sessionAffinity: ClientIP again", fixture(svc))
		h.expectSticky(ctx, t, endpointNames(eps), clientSource, "")
	}, SpecTimeout(specTimeout))

	It("AFF-03 switching affinity via NodePort and LB IP, eTP=Cluster and eTP=Local", Label("AFF-03"), func(ctx SpecContext) {
		lbCluster := bService{Name: "switch-cluster", Type: model.LoadBalancer, ClusterIP: "198.19.0.95", LBIP: "198.19.2.95", Affinity: true,
			Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30950}}}
		lbLocal := bService{Name: "switch-local", Type: model.LoadBalancer, ClusterIP: "198.19.0.96", LBIP: "198.19.2.96", Affinity: true,
			ETP: model.PolicyLocal, HCNP: 30962, Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30960}}}
		eps := []bEndpoint{affA1, affA2, affB1}
		fixture := func(affinity bool) string {
			c, l := lbCluster, lbLocal
			c.Affinity, l.Affinity = affinity, affinity
			return fixtureOf(bNodeA, bNodeB, c.yaml(eps), l.yaml(eps))
		}
		h := newBehaviourLab(ctx, dp, "AFF-03", "switching affinity via NodePort and LB IP", fixture(true))
		type variant struct {
			t       probeTarget
			allowed []string
			src     sourceRule
		}
		all, local := endpointNames(eps), []string{affA1.Name, affA2.Name}
		variants := []variant{
			{probeTarget{what: "external to node-a NodePort, eTP=Cluster", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeAIP, 30950)}, all, nodeSource},
			{probeTarget{what: "external to LB IP, eTP=Cluster", ns: h.fromExternal(), proto: model.TCP, dst: addrPortOf(lbCluster.LBIP, 80)}, all, nodeSource},
			{probeTarget{what: "external to node-a NodePort, eTP=Local", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeAIP, 30960)}, local, clientSource},
			{probeTarget{what: "external to LB IP, eTP=Local", ns: h.fromExternal(), proto: model.TCP, dst: addrPortOf(lbLocal.LBIP, 80)}, local, clientSource},
		}
		sticky := func() {
			for _, v := range variants {
				h.expectSticky(ctx, v.t, v.allowed, v.src, "node-a")
			}
		}
		sticky()
		h.applyFixture(ctx, "sessionAffinity: None", fixture(false))
		for _, v := range variants {
			h.expectSpread(ctx, v.t, v.allowed, v.src, "node-a")
		}
		h.applyFixture(ctx, "sessionAffinity: ClientIP again", fixture(true))
		sticky()
	}, SpecTimeout(specTimeout))
}

// AFF-04: affinity expires after timeoutSeconds of idleness, through a
// ClusterIP and a NodePort. Each variant has its own lab so the two waits
// can run in parallel processes.
func describeAffinityExpiry(dp string) {
	svc := bService{Name: "short", Type: model.NodePort, ClusterIP: "198.19.0.97", Affinity: true, AffinitySeconds: shortAffinity,
		Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30970}}}
	eps := []bEndpoint{affA1, affA2, affA3, affB1}
	fixture := fixtureOf(bNodeA, bNodeB, svc.yaml(eps))

	for _, v := range []struct {
		name string
		to   func(h *harness) (probeTarget, sourceRule)
	}{
		{"ClusterIP", func(h *harness) (probeTarget, sourceRule) {
			return probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.TCP, dst: addrPortOf(svc.ClusterIP, 80)}, clientSource
		}},
		{"NodePort", func(h *harness) (probeTarget, sourceRule) {
			return probeTarget{what: "external to node-a NodePort", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeAIP, 30970)}, nodeSource
		}},
	} {
		timeout := specTimeout
		if dp == "ipvs" {
			// Room for two of its long idle periods.
			timeout += 2 * ipvsTimeWait
		}
		It(fmt.Sprintf("AFF-04 affinity with timeoutSeconds=%d expires after idling, via %s", shortAffinity, v.name), Label("AFF-04"), func(ctx SpecContext) {
			h := newBehaviourLab(ctx, dp, "AFF-04", "affinity timeout via "+v.name, fixture)
			t, src := v.to(h)
			all := endpointNames(eps)
			first := h.expectSticky(ctx, t, all, src, "node-a")

			idle := shortAffinity*time.Second + affinityExpiryMargin
			if dp == "ipvs" {
				// The persistence template lives on while the
				// connections it created linger in IPVS' TIME_WAIT.
				recordDeviation(flowtest.WhyIPVSAffinityLinger)
				idle += ipvsTimeWait + affinityExpiryMargin
			}
			seen := []string{first}
			for i := 0; i < expiryTries && len(seen) < 2; i++ {
				By(fmt.Sprintf("idling %s (timeout + %s), then one new connection", idle, idle-shortAffinity*time.Second))
				select {
				case <-ctx.Done():
					Fail("interrupted while idling")
				case <-time.After(idle):
				}
				got := h.forward(ctx, t, 1, fwdCheck{endpoints: all, source: src, node: "node-a"})
				By(fmt.Sprintf("answered by %s (affine endpoint before the idle period: %s)", got[0], first))
				seen = distinctNames(append(seen, got...))
			}
			Expect(len(seen)).To(BeNumerically(">", 1),
				"%s: after each of %d idle periods of %s the client still reached %s: affinity never expired", t, expiryTries, idle, first)
		}, SpecTimeout(timeout))
	}
}
