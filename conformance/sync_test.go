package conformance

import (
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Category N: sync correctness and resilience (CONFORMANCE.md §N; SYNC-05,
// 06 and 07 are benchmarks, owned by the load generator). A datapath is
// level-triggered: every Sync gets the whole cluster and must leave the
// kernel forwarding exactly that, whatever happened before: endpoint
// churn, a sequence of partial syncs, a failed sync, or a restart that
// forgot everything.

func syncSpecs(dp string) {
	describeEndpointUpdates(dp)
	describeIncrementalSync(dp)
	describeFailedSync(dp)
	describeRestart(dp)
}

// answeredByAll is a check that every one of eps answers, and no other.
func answeredByAll(eps ...bEndpoint) fwdCheck {
	return fwdCheck{endpoints: endpointNames(eps), all: true}
}

// SYNC-01: removing and adding endpoints changes which endpoints answer,
// for TCP and UDP, from pods on both nodes.
func describeEndpointUpdates(dp string) {
	svc := bService{Name: "update", ClusterIP: "198.19.0.101",
		Ports: []bPort{{Name: "tcp", Port: 80}, {Name: "udp", Port: 80, Proto: model.UDP}}}
	a1 := bEndpoint{Name: "pod-a1", IP: "198.18.64.101", Node: "node-a"}
	b1 := bEndpoint{Name: "pod-b1", IP: "198.18.65.101", Node: "node-b"}
	b2 := bEndpoint{Name: "pod-b2", IP: "198.18.65.102", Node: "node-b"}
	b3 := bEndpoint{Name: "pod-b3", IP: "198.18.65.103", Node: "node-b"}
	fixture := func(eps ...bEndpoint) string { return fixtureOf(bNodeA, bNodeB, svc.yaml(eps)) }

	It("SYNC-01 endpoint removals and additions propagate, TCP and UDP", Label("SYNC-01"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "SYNC-01", "endpoint updates propagate", fixture(a1, b1, b2))
		check := func(eps ...bEndpoint) {
			for _, node := range []string{"node-a", "node-b"} {
				for _, proto := range []model.Protocol{model.TCP, model.UDP} {
					t := probeTarget{what: fmt.Sprintf("pod on %s to ClusterIP", node), ns: h.fromPod(node), proto: proto, dst: addrPortOf(svc.ClusterIP, 80)}
					// Twice the table suite's count: e2e probes 2×MaxTries.
					h.forward(ctx, t, 2*connsPerEndpoint*len(eps), answeredByAll(eps...))
				}
			}
		}
		check(a1, b1, b2)
		h.applyFixture(ctx, "pod-b1 deleted", fixture(a1, b2))
		check(a1, b2)
		h.applyFixture(ctx, "pod-b3 added", fixture(a1, b2, b3))
		check(a1, b2, b3)
	}, SpecTimeout(specTimeout))
}

// Services of the incremental-sync specs, all on node-a; svc3 shares
// svc1's pod, so deleting svc3 leaves its backend in place (which lets the
// failed-sync spec see the old rules still forwarding).
var (
	syncP1 = bEndpoint{Name: "pod-1", IP: "198.18.64.111", Node: "node-a"}
	syncP2 = bEndpoint{Name: "pod-2", IP: "198.18.64.112", Node: "node-a"}
	syncP4 = bEndpoint{Name: "pod-4", IP: "198.18.64.114", Node: "node-a"}
	syncP5 = bEndpoint{Name: "pod-5", IP: "198.18.64.115", Node: "node-a"}

	syncSvc = func(n int) bService {
		return bService{Name: fmt.Sprintf("svc%d", n), ClusterIP: fmt.Sprintf("198.19.0.%d", 110+n), Ports: []bPort{{Name: "tcp", Port: 80}}}
	}
)

// syncTarget is the pod on node-a to svc<n>'s ClusterIP.
func (h *harness) syncTarget(n int) probeTarget {
	return probeTarget{what: fmt.Sprintf("pod on node-a to svc%d", n), ns: h.fromPod("node-a"), proto: model.TCP, dst: addrPortOf(syncSvc(n).ClusterIP, 80)}
}

// expectPartialSync checks what node-a's datapath reports of its last
// Sync: if it says the Sync was partial, it must have rewritten no more
// Services than changed. (A datapath that always syncs fully is not held
// to this.)
func (h *harness) expectPartialSync(changed int) {
	st, ok := h.lab.LastSync()["node-a"]
	Expect(ok).To(BeTrue(), "node-a has no successful sync")
	if st.Full {
		By("the datapath reports a full sync; it is not held to rewriting only what changed")
		return
	}
	Expect(st.ChangedServices).To(BeNumerically("<=", changed), "a partial sync rewrote %d Services; %d changed", st.ChangedServices, changed)
}

// SYNC-02, first half (kube-proxy TestSyncProxyRulesRepeated): a sequence
// of incremental changes, each checked by traffic to every Service.
func describeIncrementalSync(dp string) {
	It("SYNC-02 incremental syncs are exact: add, delete, endpoint-less then filled Services", Label("SYNC-02"), func(ctx SpecContext) {
		s1, s2, s3, s4 := syncSvc(1), syncSvc(2), syncSvc(3), syncSvc(4)
		h := newBehaviourLab(ctx, dp, "SYNC-02", "incremental sync is exact",
			fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s2.yaml([]bEndpoint{syncP2})))
		t1, t2, t3, t4 := h.syncTarget(1), h.syncTarget(2), h.syncTarget(3), h.syncTarget(4)
		one := func(ep bEndpoint) fwdCheck { return fwdCheck{endpoints: []string{ep.Name}} }

		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t2, 3, one(syncP2))

		h.applyFixture(ctx, "svc3 and its slice added", fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s2.yaml([]bEndpoint{syncP2}), s3.yaml([]bEndpoint{syncP1})))
		h.expectPartialSync(1)
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t2, 3, one(syncP2))
		h.forward(ctx, t3, 3, one(syncP1))

		h.applyFixture(ctx, "svc2 deleted", fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s3.yaml([]bEndpoint{syncP1})))
		h.expectPartialSync(1)
		h.notServed(ctx, t2)
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t3, 3, one(syncP1))

		h.applyFixture(ctx, "svc4 added without an EndpointSlice", fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s3.yaml([]bEndpoint{syncP1}), s4.yaml(nil)))
		h.expectPartialSync(1)
		h.refused(ctx, t4)
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t3, 3, one(syncP1))

		h.applyFixture(ctx, "svc4's EndpointSlice added", fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s3.yaml([]bEndpoint{syncP1}), s4.yaml([]bEndpoint{syncP4})))
		h.expectPartialSync(1)
		h.forward(ctx, t4, 3, one(syncP4))
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t3, 3, one(syncP1))
		h.notServed(ctx, t2)
	}, SpecTimeout(specTimeout))
}

// SYNC-02, second half: a sync that fails partway through applying leaves
// the previous rules forwarding, and the next sync is a full one that
// converges: the Service deleted in the failed sync stops, the one added
// starts.
func describeFailedSync(dp string) {
	It("SYNC-02 a failed partial sync keeps the old state forwarding and the next sync is full and exact", Label("SYNC-02"), func(ctx SpecContext) {
		s1, s3, s4, s5 := syncSvc(1), syncSvc(3), syncSvc(4), syncSvc(5)
		h := newBehaviourLab(ctx, dp, "SYNC-02", "recovery from a failed sync",
			fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s3.yaml([]bEndpoint{syncP1}), s4.yaml([]bEndpoint{syncP4})))
		t1, t3, t4, t5 := h.syncTarget(1), h.syncTarget(3), h.syncTarget(4), h.syncTarget(5)
		one := func(ep bEndpoint) fwdCheck { return fwdCheck{endpoints: []string{ep.Name}} }
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t3, 3, one(syncP1))
		h.forward(ctx, t4, 3, one(syncP4))

		inj, ok := h.lab.Datapath("node-a").(datapaths.FaultInjector)
		if !ok {
			skipUnlessCI(fmt.Sprintf("datapath %s does not implement datapaths.FaultInjector, so a failed sync cannot be provoked", dp))
		}
		By("arming a fault in node-a's next sync: " + inj.FailNextSync())
		next := fixtureOf(bNodeA, s1.yaml([]bEndpoint{syncP1}), s4.yaml([]bEndpoint{syncP4}), s5.yaml([]bEndpoint{syncP5}))
		cl, err := model.Parse("SYNC-02 svc3 deleted, svc5 added.yaml", []byte(next))
		Expect(err).NotTo(HaveOccurred())
		By("applying svc3 deleted and svc5 added: the sync must fail")
		Expect(h.lab.Apply(ctx, cl)).NotTo(Succeed(), "the sync with an injected fault succeeded")
		h.step = -2

		By("the failed sync left the previous rules forwarding")
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t3, 3, one(syncP1))
		h.forward(ctx, t4, 3, one(syncP4))
		h.notServed(ctx, t5)

		By("syncing again: it must succeed, be full, and converge")
		Expect(h.lab.Resync(ctx, false)).To(Succeed())
		st := h.lab.LastSync()["node-a"]
		Expect(st.Full).To(BeTrue(), "the sync after a failed one must be full (datapaths.Datapath.Sync contract); stats %+v", st)
		h.forward(ctx, t5, 3, one(syncP5))
		h.notServed(ctx, t3)
		h.forward(ctx, t1, 3, one(syncP1))
		h.forward(ctx, t4, 3, one(syncP4))
	}, SpecTimeout(specTimeout))
}

// SYNC-04: restarting the datapath agent (a fresh instance that remembers
// nothing, over the rules the old one left) keeps both Services reachable,
// and the new instance keeps syncing.
func describeRestart(dp string) {
	one := bService{Name: "one", ClusterIP: "198.19.0.121", Ports: []bPort{{Name: "tcp", Port: 80}}}
	two := bService{Name: "two", Type: model.NodePort, ClusterIP: "198.19.0.122",
		Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 31220}, {Name: "udp", Port: 80, Proto: model.UDP, NodePort: 31221}}}
	oneEps := []bEndpoint{
		{Name: "pod-a1", IP: "198.18.64.121", Node: "node-a"},
		{Name: "pod-a2", IP: "198.18.64.122", Node: "node-a"},
		{Name: "pod-b1", IP: "198.18.65.121", Node: "node-b"},
	}
	twoEps := []bEndpoint{
		{Name: "pod-a3", IP: "198.18.64.123", Node: "node-a"},
		{Name: "pod-b2", IP: "198.18.65.122", Node: "node-b"},
		{Name: "pod-b3", IP: "198.18.65.123", Node: "node-b"},
	}
	fixture := func(oneEps []bEndpoint) string { return fixtureOf(bNodeA, bNodeB, one.yaml(oneEps), two.yaml(twoEps)) }

	It("SYNC-04 both Services stay reachable across a datapath restart on every node", Label("SYNC-04"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "SYNC-04", "datapath restart", fixture(oneEps))
		check := func(oneEps []bEndpoint) {
			h.forward(ctx, probeTarget{what: "pod on node-a to one", ns: h.fromPod("node-a"), proto: model.TCP, dst: addrPortOf(one.ClusterIP, 80)},
				connsPerEndpoint*len(oneEps), answeredByAll(oneEps...))
			h.forward(ctx, probeTarget{what: "pod on node-b to two", ns: h.fromPod("node-b"), proto: model.UDP, dst: addrPortOf(two.ClusterIP, 80)},
				connsPerEndpoint*len(twoEps), answeredByAll(twoEps...))
			c := answeredByAll(twoEps...)
			c.source, c.node = nodeSource, "node-b"
			h.forward(ctx, probeTarget{what: "external to node-b NodePort of two", ns: h.fromExternal(), proto: model.TCP, dst: nodePortOn(nodeBIP, 31220)},
				connsPerEndpoint*len(twoEps), c)
		}
		check(oneEps)
		for _, node := range []string{"node-a", "node-b"} {
			By("restarting the datapath on " + node)
			Expect(h.lab.RestartDatapath(ctx, node)).To(Succeed())
			Expect(h.lab.LastSync()[node].Full).To(BeTrue(), "the first sync of a restarted datapath on %s must be full", node)
		}
		check(oneEps)
		h.applyFixture(ctx, "pod-a2 deleted after the restart", fixture([]bEndpoint{oneEps[0], oneEps[2]}))
		check([]bEndpoint{oneEps[0], oneEps[2]})
	}, SpecTimeout(specTimeout))
}
