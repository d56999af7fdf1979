package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths/flowtest"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
	"proxyrig/topologies"
)

// Category D: conntrack behaviour across endpoint churn (CONFORMANCE.md §D).
// Every lab has two datapath nodes: clients on node-a, backends on node-b,
// so the node that DNATs (and holds the conntrack entry that matters) is
// not the backend's.

const (
	// reSteerTimeout bounds how long a pinned UDP 5-tuple may take to
	// reach the new backend after the old one is gone. The datapath
	// flushes stale entries in the Sync that Apply waits for, so the first
	// probe normally succeeds; the bound only stops a broken datapath from
	// hanging the spec (the e2e test allows 60 s).
	reSteerTimeout = 20 * time.Second
	// closeWaitTimeout is kube-proxy's --conntrack-tcp-timeout-close-wait
	// default (1 h), and closeWaitEpsilon the e2e test's tolerance.
	closeWaitTimeout = 3600
	closeWaitEpsilon = 60
)

// closeWaitOverrides holds documented per-datapath values of the netfilter
// CLOSE_WAIT timeout (CT-06) for a datapath that sets
// nf_conntrack_tcp_timeout_close_wait to something else than kube-proxy.
// Empty: every datapath that relies on netfilter conntrack so far is held
// to kube-proxy's value. A datapath with its own connection tracking is
// listed in ownConntrack instead.
var closeWaitOverrides = map[string]struct {
	Seconds int
	Why     string
}{}

// ownConntrack lists the datapaths that track the flows they translate in
// their own tables instead of netfilter's conntrack, with the reason. For
// them the checks that read the node's netfilter conntrack table (CT-01's
// premise, CT-04's entry-level precision, CT-06's CLOSE_WAIT timeout) do
// not apply: CT-01 keeps only its traffic check, CT-04 and CT-06 record a
// deviation with the reason and check by traffic the behaviour the item
// protects.
var ownConntrack = map[string]string{
	"ebpf":        ebpfOwnConntrack,
	"ebpf-socket": ebpfOwnConntrack,
}

const ebpfOwnConntrack = "the eBPF datapath tracks the flows it translates in its own BPF LRU map (ct) and bypasses netfilter conntrack: " +
	"conntrack -L shows none of them and the nf_conntrack sysctls do not apply (datapaths/ebpf/README.md, \"Own conntrack, not netfilter's\")"

// socketTranslated lists the datapaths that translate a pod's connection to
// a ClusterIP at its socket, so that the connection carries the backend's
// own address on the wire and nothing reverse-NATs it: CT-05's "no
// un-NATed segment reaches the client" does not hold by design; the
// connection must still survive the INVALID segments.
var socketTranslated = map[string]string{
	"ebpf-socket": "ebpf-socket translates a pod's ClusterIP connection at the socket (connect4/sendmsg4), so the connection carries the backend's address " +
		"on the wire and nothing on the path reverse-NATs it; a segment from the pod's own address is that connection's, not a leak " +
		"(datapaths/ebpf/README.md, \"ebpf-socket translates a pod's connection at the socket\")",
}

func conntrackSpecs(dp string) {
	describeUDPReSteer(dp)
	describeLocalBlackHole(dp)
	describeCleanupPrecise(dp)
	describeInvalidDropped(dp)
	describeCloseWait(dp)
}

// CT-01: a UDP client that keeps one 5-tuple alive (fixed source port)
// must reach the new backend once the old one is gone. Without the
// datapath flushing stale entries, conntrack would keep steering it to the
// dead backend for as long as the client keeps talking.
func describeUDPReSteer(dp string) {
	svc := bService{
		Name: "udp", Type: model.LoadBalancer, ClusterIP: "198.19.0.71", LBIP: "198.19.2.71",
		Ports: []bPort{{Name: "udp", Port: 80, Proto: model.UDP, NodePort: 30711}},
	}
	backend1 := bEndpoint{Name: "backend-1", IP: "198.18.65.71", Node: "node-b"}
	backend2 := bEndpoint{Name: "backend-2", IP: "198.18.65.72", Node: "node-b"}
	fixture := func(eps ...bEndpoint) string { return fixtureOf(bNodeA, bNodeB, svc.yaml(eps)) }

	variants := []struct {
		name string
		// to picks the namespace and destination; the source port is
		// fixed per variant, as e2e's `nc -u -p <port>`.
		to      func(h *harness) probeTarget
		srcPort uint16
	}{
		{"pod on node-a to the ClusterIP", func(h *harness) probeTarget {
			return probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.UDP, dst: addrPortOf(svc.ClusterIP, 80)}
		}, 12345},
		{"node-a itself (a hostNetwork client) to the ClusterIP", func(h *harness) probeTarget {
			return probeTarget{what: "node-a to ClusterIP", ns: h.fromNode("node-a"), proto: model.UDP, dst: addrPortOf(svc.ClusterIP, 80)}
		}, 12346},
		{"external client to node-a's NodePort", func(h *harness) probeTarget {
			return probeTarget{what: "external to node-a NodePort", ns: h.fromExternal(), proto: model.UDP, dst: nodePortOn(nodeAIP, 30711)}
		}, 12347},
		{"external client to the load-balancer IP", func(h *harness) probeTarget {
			return probeTarget{what: "external to LB IP", ns: h.fromExternal(), proto: model.UDP, dst: addrPortOf(svc.LBIP, 80)}
		}, 54321},
	}
	for _, v := range variants {
		It(fmt.Sprintf("CT-01 UDP with a fixed source port re-steers after its endpoint is removed: %s", v.name), Label("CT-01"), func(ctx SpecContext) {
			h := newBehaviourLab(ctx, dp, "CT-01", "UDP re-steers after endpoint removal", fixture(backend1))
			t := v.to(h).withSrcPort(v.srcPort)
			h.forward(ctx, t, 3, fwdCheck{endpoints: []string{backend1.Name}})
			if why, own := ownConntrack[dp]; own {
				// The premise lives in the datapath's own table; the
				// traffic below is the check.
				By("not reading node-a's netfilter conntrack table: " + why)
			} else {
				h.expectUDPEntry(ctx, t, "node-a", backend1.IP)
			}

			// A flow whose endpoint still serves keeps it: the cleanup
			// must only touch entries to endpoints that are gone.
			h.applyFixture(ctx, "backend-2 added", fixture(backend1, backend2))
			h.forward(ctx, t, 3, fwdCheck{endpoints: []string{backend1.Name}})

			h.applyFixture(ctx, "backend-1 removed", fixture(backend2))
			h.eventuallyAnsweredBy(ctx, t, backend2.Name)
			h.forward(ctx, t, 3, fwdCheck{endpoints: []string{backend2.Name}})
		}, SpecTimeout(specTimeout))
	}
}

// CT-03 (kubernetes#126934): with iTP=Local, a pod whose node loses its
// last local endpoint is black-holed (DROP); when a local endpoint
// reappears, the same pinned 5-tuple must reach it.
func describeLocalBlackHole(dp string) {
	svc := bService{Name: "itp", ClusterIP: "198.19.0.73", ITP: model.PolicyLocal, Ports: []bPort{{Name: "udp", Port: 80, Proto: model.UDP}}}
	backend1 := bEndpoint{Name: "backend-1", IP: "198.18.64.73", Node: "node-a"}
	backend2 := bEndpoint{Name: "backend-2", IP: "198.18.65.73", Node: "node-b"}
	backend3 := bEndpoint{Name: "backend-3", IP: "198.18.64.74", Node: "node-a"}
	fixture := func(eps ...bEndpoint) string { return fixtureOf(bNodeA, bNodeB, svc.yaml(eps)) }

	It("CT-03 iTP=Local UDP: the black hole clears when a local endpoint reappears", Label("CT-03"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "CT-03", "iTP=Local UDP black hole cleared", fixture(backend1, backend2))
		t := probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.UDP, dst: addrPortOf(svc.ClusterIP, 80)}.withSrcPort(12373)
		h.forward(ctx, t, 3, fwdCheck{endpoints: []string{backend1.Name}})

		h.applyFixture(ctx, "the only local endpoint removed", fixture(backend2))
		// Only a remote endpoint is left: iTP=Local drops (NOEP-06). The
		// client keeps sending on the same 5-tuple meanwhile, as e2e's
		// once-a-second client does.
		if dp == "ipvs" {
			// IPVS mode has no drop rule: the ClusterIP virtual server is
			// left without real servers and IPVS refuses (NOEP-06's
			// override). The old flow's IPVS entry, whose real server is
			// gone, is expired by the packet that finds it
			// (expire_nodest_conn), and that packet is dropped; the next
			// ones are refused.
			recordDeviation(flowtest.WhyIPVSLocalNoEndpoint)
			By(fmt.Sprintf("re-sending %s until it is refused", t))
			var last topologies.ProbeResult
			Eventually(func() topologies.Outcome {
				last = t.probe(ctx, rejectTimeout)
				return last.Outcome
			}).WithContext(ctx).WithTimeout(reSteerTimeout).WithPolling(200*time.Millisecond).Should(Equal(topologies.Refused),
				"%s was never refused; last probe: %s", t, describe(last))
			h.refused(ctx, t)
		} else {
			h.dropped(ctx, t)
		}

		h.applyFixture(ctx, "a new local endpoint", fixture(backend2, backend3))
		h.eventuallyAnsweredBy(ctx, t, backend3.Name)
		h.forward(ctx, t, 3, fwdCheck{endpoints: []string{backend3.Name}})
	}, SpecTimeout(specTimeout))
}

// CT-04: the cleanup deletes exactly the UDP entries whose Service
// frontend now DNATs to an endpoint that is gone, and nothing else:
// established TCP to the removed pod, UDP that reached the pod directly
// (not through a Service), and UDP flows to endpoints that still serve
// are kept. Observed in node-a's conntrack table, and by traffic.
func describeCleanupPrecise(dp string) {
	svc := bService{
		Name: "precise", Type: model.NodePort, ClusterIP: "198.19.0.74",
		Ports: []bPort{{Name: "tcp", Port: 80, NodePort: 30740}, {Name: "udp", Port: 80, Proto: model.UDP, NodePort: 30741}},
	}
	keep := bEndpoint{Name: "keep", IP: "198.18.65.41", Node: "node-b"}
	gone := bEndpoint{Name: "gone", IP: "198.18.65.42", Node: "node-b"}
	fixture := func(eps ...bEndpoint) string { return fixtureOf(bNodeA, bNodeB, svc.yaml(eps)) }

	It("CT-04 conntrack cleanup deletes only stale UDP Service entries", Label("CT-04"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "CT-04", "conntrack cleanup is precise", fixture(keep, gone))
		pod := probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.UDP, dst: addrPortOf(svc.ClusterIP, 80)}
		np := probeTarget{what: "external to node-a NodePort", ns: h.fromExternal(), proto: model.UDP, dst: nodePortOn(nodeAIP, 30741)}
		if why, own := ownConntrack[dp]; own {
			recordDeviation(why + "; there is no conntrack entry to delete: a UDP flow whose backend left its endpoint set is re-steered on its next packet " +
				"and TCP keeps its entry, so CT-04 is checked by traffic only: after the churn UDP reaches only serving endpoints and " +
				"an established TCP connection to the remaining endpoint keeps working")
			cleanupByTraffic(ctx, h, pod, np, addrPortOf(svc.ClusterIP, 80), keep, gone, func() { h.applyFixture(ctx, "endpoint gone removed", fixture(keep)) })
			return
		}
		tcp := probeTarget{what: "pod on node-a to ClusterIP", ns: h.fromPod("node-a"), proto: model.TCP, dst: addrPortOf(svc.ClusterIP, 80)}
		direct := probeTarget{what: "pod on node-a straight to the gone pod", ns: h.fromPod("node-a"), proto: model.UDP, dst: addrPortOf(gone.IP, 80)}.withSrcPort(22000)

		By("making pinned UDP flows to both endpoints through the ClusterIP and the NodePort, TCP connections to the doomed one, and UDP straight to it")
		podFlows := h.pinnedFlowsTo(ctx, pod, 20000, []string{keep.Name, gone.Name})
		npFlows := h.pinnedFlowsTo(ctx, np, 21000, []string{gone.Name})
		tcpFlows := h.tcpFlowsTo(ctx, tcp, gone.Name)
		directFlow := h.forward(ctx, direct, 1, fwdCheck{endpoints: []string{gone.Name}})
		Expect(directFlow).To(HaveLen(1))

		type entry struct {
			what    string
			proto   uint8
			src     netip.AddrPort
			dst     netip.AddrPort
			backend string // IP the entry DNATs (or goes) to
			stays   bool
		}
		var entries []entry
		for ep, srcs := range podFlows {
			for _, s := range srcs {
				ip := map[string]string{keep.Name: keep.IP, gone.Name: gone.IP}[ep]
				entries = append(entries, entry{"UDP ClusterIP flow to " + ep, unix.IPPROTO_UDP, s, pod.dst, ip, ep == keep.Name})
			}
		}
		for ep, srcs := range npFlows {
			for _, s := range srcs {
				ip := map[string]string{keep.Name: keep.IP, gone.Name: gone.IP}[ep]
				entries = append(entries, entry{"UDP NodePort flow to " + ep, unix.IPPROTO_UDP, s, np.dst, ip, ep == keep.Name})
			}
		}
		for _, s := range tcpFlows {
			entries = append(entries, entry{"TCP ClusterIP connection to gone", unix.IPPROTO_TCP, s, tcp.dst, gone.IP, true})
		}
		entries = append(entries, entry{"UDP straight to the gone pod (no Service)", unix.IPPROTO_UDP,
			netip.AddrPortFrom(h.lab.ClientIP("node-a", false), 22000), direct.dst, gone.IP, true})

		check := func(after bool) {
			flows := h.conntrackFlows("node-a")
			var problems []string
			for _, e := range entries {
				f := findFlow(flows, e.proto, e.src, e.dst)
				switch {
				case f == nil && (!after || e.stays):
					problems = append(problems, fmt.Sprintf("%s %s -> %s: no entry (want one)", e.what, e.src, e.dst))
				case f != nil && after && !e.stays:
					problems = append(problems, fmt.Sprintf("%s %s -> %s: entry still DNATs to %s (want it deleted)", e.what, e.src, e.dst, f.Reverse.SrcIP))
				case f != nil && f.Reverse.SrcIP.String() != e.backend:
					problems = append(problems, fmt.Sprintf("%s %s -> %s: entry goes to %s, want %s", e.what, e.src, e.dst, f.Reverse.SrcIP, e.backend))
				}
			}
			Expect(problems).To(BeEmpty(), "conntrack entries on node-a (after removal: %v):\n  %s", after, strings.Join(problems, "\n  "))
		}
		By("checking node-a's conntrack table holds every flow")
		check(false)

		h.applyFixture(ctx, "endpoint gone removed", fixture(keep))
		By("checking node-a's conntrack table: only the UDP Service flows to gone were deleted")
		check(true)

		By("checking the pinned UDP flows that went to gone now reach keep")
		for _, s := range podFlows[gone.Name] {
			h.forward(ctx, pod.withSrcPort(s.Port()), 1, fwdCheck{endpoints: []string{keep.Name}})
		}
		for _, s := range npFlows[gone.Name] {
			h.forward(ctx, np.withSrcPort(s.Port()), 1, fwdCheck{endpoints: []string{keep.Name}})
		}
	}, SpecTimeout(specTimeout))
}

// CT-05 (kubernetes#74839): a packet that conntrack deems INVALID (here, a
// TCP segment far outside the window) must be dropped. If it is forwarded
// instead, it reaches the client without the reverse NAT (from the pod's
// own address), the client answers it with a RST, and that RST kills the
// real connection. A "boom" server in the endpoint injects such a segment
// into every connection; the client must never see it, and every
// connection must carry its whole conversation.
func describeInvalidDropped(dp string) {
	svc := bService{Name: "boom", ClusterIP: "198.19.0.75", Ports: []bPort{{Name: "tcp", Port: 9000}}}
	boom := bEndpoint{Name: "boom", IP: "198.18.65.75", Node: "node-b"}

	It("CT-05 out-of-window TCP segments are dropped, never delivered un-NATed", Label("CT-05"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "CT-05", "INVALID packets are dropped", fixtureOf(bNodeA, bNodeB, svc.yaml([]bEndpoint{boom})))
		socketWhy, bySocket := socketTranslated[dp]
		if bySocket {
			recordDeviation(socketWhy + "; checked instead that every connection carries its whole conversation through the injected segments")
		}
		srv := startBoomServer(ctx, h, boom, 9000)
		DeferCleanup(srv.close)
		sniff, err := startLeakSniffer(h.fromPod("node-a"), netip.MustParseAddr(boom.IP))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(sniff.close)

		const conns = 3
		for i := range conns {
			By(fmt.Sprintf("connection %d of %d through the ClusterIP; the server injects %d out-of-window segments", i+1, conns, boomRounds))
			Expect(boomConversation(ctx, h.fromPod("node-a"), addrPortOf(svc.ClusterIP, 9000))).To(Succeed(),
				"connection %d broke: an INVALID segment was let through (and the client's RST reset the server)", i+1)
		}
		Expect(srv.err()).NotTo(HaveOccurred(), "boom server")
		Expect(srv.injected.Load()).To(BeEquivalentTo(conns*boomRounds), "the boom server must have injected a segment per round")
		// Give a leaked segment that raced the end of the last
		// conversation time to arrive before judging.
		time.Sleep(200 * time.Millisecond)
		if bySocket {
			By(fmt.Sprintf("not judging the %d segments from %s the client saw: its socket-translated connection talks to that address", len(sniff.leaks()), boom.IP))
			return
		}
		Expect(sniff.leaks()).To(BeEmpty(), "TCP segments from the pod's own address (not reverse-NATed) reached the client")
	}, SpecTimeout(specTimeout))
}

// CT-06: the node's conntrack keeps a CLOSE_WAIT entry for an hour
// (kube-proxy's --conntrack-tcp-timeout-close-wait), so a peer that
// half-closed does not lose its NAT mapping while the other side still
// sends. Read from node-a's table for a Service flow and a plain
// pod-to-pod flow it forwards.
func describeCloseWait(dp string) {
	svc := bService{Name: "closewait", ClusterIP: "198.19.0.76", Ports: []bPort{{Name: "tcp", Port: 80}}}
	backend := bEndpoint{Name: "backend", IP: "198.18.65.76", Node: "node-b"}

	It("CT-06 the node's conntrack CLOSE_WAIT timeout is an hour", Label("CT-06"), func(ctx SpecContext) {
		h := newBehaviourLab(ctx, dp, "CT-06", "CLOSE_WAIT timeout", fixtureOf(bNodeA, bNodeB, svc.yaml([]bEndpoint{backend})))
		if why, own := ownConntrack[dp]; own {
			recordDeviation(why + "; its equivalent of the CLOSE_WAIT timeout is its own ct entry lifetime: CT_LIFETIME_TCP = 86400 s while open, " +
				"CT_LIFETIME_TCP_CLOSING = 10 s since the flow's last packet once a FIN or RST was seen (datapaths/ebpf/bpf/lb.h), " +
				"not netfilter's 3600 s; checked by traffic: a half-closed connection keeps its translation while the other side still sends")
			halfClosedByTraffic(ctx, h, backend, []netip.AddrPort{addrPortOf(svc.ClusterIP, 80), addrPortOf(backend.IP, 80)})
			return
		}
		want, why := closeWaitTimeout, ""
		if o, ok := closeWaitOverrides[dp]; ok {
			want, why = o.Seconds, o.Why
			By(fmt.Sprintf("expecting %d s on %s, not kube-proxy's %d s: %s", want, dp, closeWaitTimeout, why))
			recordDeviation(why)
		}
		for _, dst := range []netip.AddrPort{addrPortOf(svc.ClusterIP, 80), addrPortOf(backend.IP, 80)} {
			By(fmt.Sprintf("half-closing a connection from the pod on node-a to %s: the echo server closes, the client does not", dst))
			conn, line, err := dialAndRead(ctx, h.fromPod("node-a"), dst)
			Expect(err).NotTo(HaveOccurred(), "connect to %s", dst)
			DeferCleanup(func() { _ = conn.Close() })
			Expect(line).To(HavePrefix(backend.Name+" "), "answer from %s", dst)
			local := conn.LocalAddr().(*net.TCPAddr).AddrPort()

			var f *netlink.ConntrackFlow
			Eventually(func() uint8 {
				f = findFlow(h.conntrackFlows("node-a"), unix.IPPROTO_TCP, local, dst)
				if f == nil {
					return 0
				}
				return tcpState(f)
			}).WithContext(ctx).WithTimeout(10*time.Second).WithPolling(100*time.Millisecond).Should(
				Equal(uint8(tcpConntrackCloseWait)), "conntrack state of %s -> %s on node-a (5 = CLOSE_WAIT)", local, dst)
			// Until the client's ACK of the server's FIN passes, netfilter
			// caps the entry at its "unacknowledged" timeout (300 s); the
			// VM's emulated CPU was once caught in that gap. Read the entry
			// again until the ACK has passed (state still CLOSE_WAIT).
			Eventually(func() int {
				if g := findFlow(h.conntrackFlows("node-a"), unix.IPPROTO_TCP, local, dst); g != nil && tcpState(g) == tcpConntrackCloseWait {
					f = g
				}
				return int(f.TimeOut)
			}).WithContext(ctx).WithTimeout(10*time.Second).WithPolling(100*time.Millisecond).Should(
				BeNumerically("~", want, closeWaitEpsilon),
				"CLOSE_WAIT timeout of %s -> %s on node-a, in seconds (want %d ± %d)", local, dst, want, closeWaitEpsilon)
		}
	}, SpecTimeout(specTimeout))
}

// Conntrack helpers.

// tcpConntrackCloseWait is TCP_CONNTRACK_CLOSE_WAIT in the kernel's enum
// tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
const tcpConntrackCloseWait = 5

func tcpState(f *netlink.ConntrackFlow) uint8 {
	if p, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok {
		return p.State
	}
	return 0
}

// conntrackFlows lists a node's IPv4 conntrack table.
// Equivalent to: ip netns exec <node-ns> conntrack -L -f ipv4
func (h *harness) conntrackFlows(node string) []*netlink.ConntrackFlow {
	ns := h.lab.NodeNS(node)
	Expect(ns.Name).NotTo(BeEmpty(), "the lab has no node %s", node)
	hd, err := ns.Handle()
	Expect(err).NotTo(HaveOccurred())
	defer hd.Close()
	var flows []*netlink.ConntrackFlow
	for range 5 {
		// A dump racing table changes reports ErrDumpInterrupted; the
		// next one is usually clean.
		flows, err = hd.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	Expect(err).NotTo(HaveOccurred(), "list conntrack entries in %s", ns.Name)
	return flows
}

// findFlow finds the entry whose original direction is src -> dst.
func findFlow(flows []*netlink.ConntrackFlow, proto uint8, src, dst netip.AddrPort) *netlink.ConntrackFlow {
	for _, f := range flows {
		if f.Forward.Protocol != proto || f.Forward.SrcPort != src.Port() || f.Forward.DstPort != dst.Port() {
			continue
		}
		s, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		d, _ := netip.AddrFromSlice(f.Forward.DstIP)
		if s.Unmap() == src.Addr() && d.Unmap() == dst.Addr() {
			return f
		}
	}
	return nil
}

// expectUDPEntry checks the premise of CT-01: node holds an entry for the
// pinned flow that DNATs it to backendIP, which without a flush would keep
// steering it there.
func (h *harness) expectUDPEntry(ctx context.Context, t probeTarget, node, backendIP string) {
	src := t.src
	if !src.Addr().IsValid() {
		src = netip.AddrPortFrom(h.sourceAddrOf(ctx, t), t.src.Port())
	}
	f := findFlow(h.conntrackFlows(node), unix.IPPROTO_UDP, src, t.dst)
	Expect(f).NotTo(BeNil(), "%s: no conntrack entry %s -> %s on %s", t, src, t.dst, node)
	Expect(f.Reverse.SrcIP.String()).To(Equal(backendIP), "%s: the conntrack entry on %s goes to %s", t, node, f.Reverse.SrcIP)
}

// sourceAddrOf is the address a target's probes leave from: the client
// pod's, the external client's, or the node's own.
func (h *harness) sourceAddrOf(ctx context.Context, t probeTarget) netip.Addr {
	r := t.probe(ctx, fwdTimeout)
	Expect(r.Local.Addr().IsValid()).To(BeTrue(), "%s: %s", t, describe(r))
	return r.Local.Addr()
}

// eventuallyAnsweredBy re-sends t's pinned flow until endpoint answers.
func (h *harness) eventuallyAnsweredBy(ctx context.Context, t probeTarget, endpoint string) {
	By(fmt.Sprintf("re-sending %s until %s answers", t, endpoint))
	var last topologies.ProbeResult
	Eventually(func() string {
		last = t.probe(ctx, dropTimeout)
		return last.Endpoint
	}).WithContext(ctx).WithTimeout(reSteerTimeout).WithPolling(200*time.Millisecond).Should(Equal(endpoint),
		"%s never reached %s; last probe: %s", t, endpoint, describe(last))
}

// pinnedFlowsTo sends UDP datagrams from fixed source ports firstPort,
// firstPort+1, … until every endpoint in want has been reached from at
// least one port, and returns the source address:ports per endpoint.
func (h *harness) pinnedFlowsTo(ctx context.Context, t probeTarget, firstPort uint16, want []string) map[string][]netip.AddrPort {
	out := map[string][]netip.AddrPort{}
	done := func() bool {
		for _, ep := range want {
			if len(out[ep]) == 0 {
				return false
			}
		}
		return true
	}
	// With two endpoints, 40 ports all missing one of them has
	// probability 2^-39.
	for port := firstPort; port < firstPort+40 && !done(); port++ {
		r := t.withSrcPort(port).probe(ctx, fwdTimeout)
		Expect(r.Outcome).To(Equal(topologies.Answered), "%s: %s", t.withSrcPort(port), describe(r))
		out[r.Endpoint] = append(out[r.Endpoint], r.Local)
	}
	Expect(done()).To(BeTrue(), "%s: endpoints reached %v, want all of %v", t, out, want)
	return out
}

// tcpFlowsTo opens TCP connections until one reaches endpoint and returns
// the local address of each that did.
func (h *harness) tcpFlowsTo(ctx context.Context, t probeTarget, endpoint string) []netip.AddrPort {
	var out []netip.AddrPort
	for range 40 {
		r := t.probe(ctx, fwdTimeout)
		Expect(r.Outcome).To(Equal(topologies.Answered), "%s: %s", t, describe(r))
		if r.Endpoint == endpoint {
			out = append(out, r.Local)
			break
		}
	}
	Expect(out).NotTo(BeEmpty(), "%s: no connection reached %s", t, endpoint)
	return out
}

// dialAndRead connects from ns to dst, reads the echo line and waits for
// the server's FIN, leaving the connection half-closed (the client's side
// open). The caller closes it.
func dialAndRead(ctx context.Context, ns netnsutil.NS, dst netip.AddrPort) (*net.TCPConn, string, error) {
	var conn net.Conn
	var derr error
	if err := ns.Do(func() error {
		d := net.Dialer{Timeout: fwdTimeout}
		conn, derr = d.DialContext(ctx, "tcp4", dst.String())
		return nil
	}); err != nil {
		return nil, "", err
	}
	if derr != nil {
		return nil, "", derr
	}
	tc := conn.(*net.TCPConn)
	_ = tc.SetReadDeadline(time.Now().Add(fwdTimeout))
	buf := make([]byte, 0, 128)
	tmp := make([]byte, 128)
	for {
		n, err := tc.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return tc, string(buf), nil
			}
			tc.Close()
			return nil, string(buf), fmt.Errorf("read from %s: %w", dst, err)
		}
	}
}

// The boom server (CT-05).

// boomRounds is how many out-of-window segments the boom server injects
// into each connection, each followed by a line the client must receive
// and answer.
const boomRounds = 3

// boomServer accepts connections for an endpoint and, in every round of
// the conversation, first injects a TCP segment from the endpoint's
// address and Service-facing port whose sequence number lies far beyond
// the receiver's window, then sends a line and waits for the client's
// answer.
//
// The lab already runs an echo server on the endpoint's address and port,
// so the boom server listens on another port and a REDIRECT rule in the
// endpoint's own namespace sends the endpoint port there. The injected
// segment is written to the pod's eth0 through an AF_PACKET socket, below
// the pod's netfilter, so it leaves with exactly the addresses and ports
// the client's flow has on the wire (the REDIRECT's reverse translation
// would otherwise not apply to a crafted packet).
type boomServer struct {
	ln       *net.TCPListener
	inject   func(local, remote netip.AddrPort, seq, ack uint32) error
	port     uint16 // the Service-facing endpoint port
	injected atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	firstErr error
}

// boomListenOffset: the boom server listens on the endpoint port + this.
const boomListenOffset = 1

func startBoomServer(ctx context.Context, h *harness, ep bEndpoint, port uint16) *boomServer {
	ns := h.lab.EndpointNS(ep.Name)
	Expect(ns.Name).NotTo(BeEmpty(), "the lab has no namespace for endpoint %s", ep.Name)
	ipt := "iptables-legacy"
	if *iptablesBackend == "nft" {
		ipt = "iptables-nft"
	}
	if _, err := exec.LookPath(ipt); err != nil {
		skipUnlessCI(fmt.Sprintf("CT-05 needs %s (Debian package iptables) to redirect the endpoint's port to the boom server", ipt))
	}
	listen := port + boomListenOffset
	// Equivalent to: ip netns exec <pod> iptables -t nat -A PREROUTING -p tcp -d <ip> --dport 9000 -j REDIRECT --to-ports 9001
	_, err := ns.Run(ctx, nil, ipt, "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-d", ep.IP,
		"--dport", fmt.Sprint(port), "-j", "REDIRECT", "--to-ports", fmt.Sprint(listen))
	Expect(err).NotTo(HaveOccurred(), "redirect %s:%d to the boom server in %s", ep.IP, port, ns.Name)

	s := &boomServer{port: port}
	s.inject, err = newInjector(ns)
	Expect(err).NotTo(HaveOccurred(), "raw packet socket in %s", ns.Name)
	err = ns.Do(func() error {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(netip.MustParseAddr(ep.IP), listen).String())
		if err == nil {
			s.ln = ln.(*net.TCPListener)
		}
		return err
	})
	Expect(err).NotTo(HaveOccurred(), "boom server listen in %s", ns.Name)
	s.wg.Go(s.serve)
	return s
}

func (s *boomServer) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstErr == nil {
		s.firstErr = err
	}
}

func (s *boomServer) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

func (s *boomServer) close() {
	s.ln.Close()
	s.wg.Wait()
}

func (s *boomServer) serve() {
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			return
		}
		s.wg.Go(func() {
			defer c.Close()
			if err := s.converse(c); err != nil {
				s.fail(fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err))
			}
		})
	}
}

// converse plays the server's side of boomConversation, injecting before
// every line it sends.
func (s *boomServer) converse(c *net.TCPConn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	// On the wire the flow uses the Service-facing port, not the one the
	// REDIRECT delivered it to.
	local = netip.AddrPortFrom(local.Addr(), s.port)
	buf := make([]byte, 64)
	for i := range boomRounds {
		sndNxt, rcvNxt, err := tcpSequences(c)
		if err != nil {
			return err
		}
		// 2^30 past the next byte: over the receiver's window by any
		// measure, yet "after" it in sequence space, which conntrack
		// calls INVALID ("SEQ is over the upper bound").
		if err := s.inject(local, remote, sndNxt+1<<30, rcvNxt); err != nil {
			return fmt.Errorf("inject: %w", err)
		}
		s.injected.Add(1)
		if _, err := fmt.Fprintf(c, "boom %d\n", i); err != nil {
			return err
		}
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("read answer %d: %w", i, err)
		}
		if got, want := string(buf[:n]), fmt.Sprintf("ok %d\n", i); got != want {
			return fmt.Errorf("answer %d: got %q, want %q", i, got, want)
		}
	}
	_, err := fmt.Fprintf(c, "bye\n")
	return err
}

// boomConversation is the client's side: for each round read "boom i" and
// answer "ok i", then read "bye". Any reset fails it.
func boomConversation(ctx context.Context, ns netnsutil.NS, dst netip.AddrPort) error {
	var conn net.Conn
	var derr error
	if err := ns.Do(func() error {
		d := net.Dialer{Timeout: fwdTimeout}
		conn, derr = d.DialContext(ctx, "tcp4", dst.String())
		return nil
	}); err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for i := range boomRounds {
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("round %d: read: %w", i, err)
		}
		if got, want := string(buf[:n]), fmt.Sprintf("boom %d\n", i); got != want {
			return fmt.Errorf("round %d: got %q, want %q", i, got, want)
		}
		if _, err := fmt.Fprintf(conn, "ok %d\n", i); err != nil {
			return fmt.Errorf("round %d: write: %w", i, err)
		}
	}
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("read bye: %w", err)
	}
	if string(buf[:n]) != "bye\n" {
		return fmt.Errorf("got %q, want \"bye\\n\"", buf[:n])
	}
	return nil
}

// TCP_REPAIR_QUEUE selectors (include/uapi/linux/tcp.h enum); x/sys/unix
// has the option names but not these values.
const (
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// tcpSequences reads a connection's next send and receive sequence numbers
// by putting the socket in repair mode for an instant (CAP_NET_ADMIN), the
// way CRIU checkpoints a connection. Leaving with TCP_REPAIR_OFF_NO_WP sends
// nothing.
func tcpSequences(c *net.TCPConn) (sndNxt, rcvNxt uint32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var serr error
	cerr := rc.Control(func(fd uintptr) {
		f := int(fd)
		if serr = unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); serr != nil {
			serr = fmt.Errorf("enter TCP repair mode: %w", serr)
			return
		}
		defer func() {
			if err := unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil && serr == nil {
				serr = fmt.Errorf("leave TCP repair mode: %w", err)
			}
		}()
		var v int
		if serr = unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue); serr != nil {
			return
		}
		if v, serr = unix.GetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); serr != nil {
			return
		}
		sndNxt = uint32(v)
		if serr = unix.SetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpRecvQueue); serr != nil {
			return
		}
		if v, serr = unix.GetsockoptInt(f, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); serr != nil {
			return
		}
		rcvNxt = uint32(v)
	})
	return sndNxt, rcvNxt, errors.Join(cerr, serr)
}

// newInjector opens an AF_PACKET socket on the pod's eth0 and returns a
// function that writes one TCP segment (ACK|PSH, a few bytes of payload)
// from local to remote, framed for the pod's gateway.
func newInjector(ns netnsutil.NS) (func(local, remote netip.AddrPort, seq, ack uint32) error, error) {
	hd, err := ns.Handle()
	if err != nil {
		return nil, err
	}
	defer hd.Close()
	link, err := hd.LinkByName("eth0")
	if err != nil {
		return nil, fmt.Errorf("find eth0 in %s: %w", ns.Name, err)
	}
	neighs, err := hd.NeighList(link.Attrs().Index, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list neighbours in %s: %w", ns.Name, err)
	}
	var gwMAC net.HardwareAddr
	for _, n := range neighs {
		if n.IP.Equal(topologies.PodGateway.AsSlice()) && len(n.HardwareAddr) == 6 {
			gwMAC = n.HardwareAddr
		}
	}
	if gwMAC == nil {
		return nil, fmt.Errorf("no neighbour entry for the pod gateway %s in %s", topologies.PodGateway, ns.Name)
	}
	srcMAC := link.Attrs().HardwareAddr
	ifindex := link.Attrs().Index

	var fd int
	err = ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: send only
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket in %s: %w", ns.Name, err)
	}
	DeferCleanup(func() { unix.Close(fd) })
	return func(local, remote netip.AddrPort, seq, ack uint32) error {
		frame := tcpFrame(srcMAC, gwMAC, local, remote, seq, ack, []byte("boom!\n"))
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex, Halen: 6}
		copy(sa.Addr[:], gwMAC)
		return unix.Sendto(fd, frame, 0, sa)
	}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// tcpFrame builds an Ethernet frame holding an IPv4 TCP segment with
// valid checksums.
func tcpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.AddrPort, seq, ack uint32, payload []byte) []byte {
	const ethLen, ipLen, tcpLen = 14, 20, 20
	b := make([]byte, ethLen+ipLen+tcpLen+len(payload))
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_IP)

	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen+tcpLen+len(payload)))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], inetChecksum(ip, 0))

	tcp := b[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:2], src.Port())
	binary.BigEndian.PutUint16(tcp[2:4], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:8], seq)
	binary.BigEndian.PutUint32(tcp[8:12], ack)
	tcp[12] = 5 << 4                            // data offset: 5 words
	tcp[13] = 0x18                              // PSH|ACK
	binary.BigEndian.PutUint16(tcp[14:16], 502) // window
	copy(tcp[tcpLen:], payload)
	// Pseudo-header: addresses, protocol, TCP length.
	var pseudo uint32
	for i := 0; i < 4; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(s4[i:])) + uint32(binary.BigEndian.Uint16(d4[i:]))
	}
	pseudo += unix.IPPROTO_TCP + uint32(len(tcp))
	binary.BigEndian.PutUint16(tcp[16:18], inetChecksum(tcp, pseudo))
	return b
}

// inetChecksum is the Internet checksum (RFC 1071) of b, starting from sum.
func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// leakSniffer reads every TCP segment delivered to a namespace (a raw
// IPPROTO_TCP socket gets a copy of each, whether a socket wants it or
// not) and records those from one address: the endpoint's own, which a
// client talking to a ClusterIP must never see.
type leakSniffer struct {
	fd   int
	from netip.Addr
	stop atomic.Bool
	done chan struct{}
	mu   sync.Mutex
	seen []string
}

func startLeakSniffer(ns netnsutil.NS, from netip.Addr) (*leakSniffer, error) {
	s := &leakSniffer{from: from, done: make(chan struct{})}
	err := ns.Do(func() error {
		var err error
		s.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw TCP socket in %s: %w", ns.Name, err)
	}
	// A receive timeout lets the reader notice close.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(s.fd)
		return nil, err
	}
	go s.run()
	return s, nil
}

func (s *leakSniffer) run() {
	defer close(s.done)
	buf := make([]byte, 65536)
	for !s.stop.Load() {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		src := netip.AddrFrom4([4]byte(buf[12:16]))
		if src != s.from || n < ihl+14 {
			continue
		}
		sport := binary.BigEndian.Uint16(buf[ihl:])
		dport := binary.BigEndian.Uint16(buf[ihl+2:])
		flags := buf[ihl+13]
		s.mu.Lock()
		s.seen = append(s.seen, fmt.Sprintf("%s:%d -> port %d flags %#02x", src, sport, dport, flags))
		s.mu.Unlock()
	}
}

func (s *leakSniffer) leaks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *leakSniffer) close() {
	s.stop.Store(true)
	<-s.done
	unix.Close(s.fd)
}

// TestTCPFrame checks the boom server's hand-made frame: headers where
// they belong and both checksums verifying to zero. It needs no root.
func TestTCPFrame(t *testing.T) {
	src := netip.MustParseAddrPort("198.18.65.75:9000")
	dst := netip.MustParseAddrPort("198.18.127.1:40000")
	smac, dmac := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	payload := []byte("boom!\n") // even length
	for _, p := range [][]byte{payload, payload[:5]} {
		f := tcpFrame(smac, dmac, src, dst, 0x80000001, 12345, p)
		if got, want := len(f), 14+20+20+len(p); got != want {
			t.Fatalf("frame length %d, want %d", got, want)
		}
		if !bytes.Equal(f[0:6], dmac) || !bytes.Equal(f[6:12], smac) || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
			t.Errorf("Ethernet header % x", f[:14])
		}
		ip, tcp := f[14:34], f[34:]
		if inetChecksum(ip, 0) != 0 {
			t.Errorf("IPv4 header checksum does not verify: % x", ip)
		}
		var pseudo uint32
		for i := 12; i < 20; i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		pseudo += unix.IPPROTO_TCP + uint32(len(tcp))
		if inetChecksum(tcp, pseudo) != 0 {
			t.Errorf("TCP checksum does not verify for payload %q", p)
		}
		if binary.BigEndian.Uint16(tcp[0:]) != 9000 || binary.BigEndian.Uint16(tcp[2:]) != 40000 ||
			binary.BigEndian.Uint32(tcp[4:]) != 0x80000001 || binary.BigEndian.Uint32(tcp[8:]) != 12345 || tcp[13] != 0x18 {
			t.Errorf("TCP header % x", tcp[:20])
		}
	}
}

// Traffic-only checks for datapaths with their own connection tracking
// (ownConntrack).

// cleanupByTraffic is CT-04 for a datapath whose conntrack the suite cannot
// read: pinned UDP flows to both endpoints and an established TCP
// connection to keep, then removeGone, then every UDP flow (pinned or new)
// must reach keep only and the TCP connection must still carry data.
func cleanupByTraffic(ctx context.Context, h *harness, pod, np probeTarget, tcpDst netip.AddrPort, keep, gone bEndpoint, removeGone func()) {
	By("making pinned UDP flows to both endpoints through the ClusterIP and the NodePort, and a held TCP connection to keep")
	podFlows := h.pinnedFlowsTo(ctx, pod, 20000, []string{keep.Name, gone.Name})
	npFlows := h.pinnedFlowsTo(ctx, np, 21000, []string{keep.Name, gone.Name})
	srv := startHeldServer(ctx, h, keep, tcpDst.Port())
	DeferCleanup(srv.close)
	held := dialHeldTo(ctx, h.fromPod("node-a"), tcpDst, keep.Name)
	DeferCleanup(held.close)
	Expect(held.ping(0)).To(Succeed(), "held TCP connection to %s before the churn", keep.Name)

	removeGone()

	By("checking the pinned UDP flows that went to gone now reach keep, and those that went to keep still do")
	for _, flows := range []struct {
		t   probeTarget
		eps map[string][]netip.AddrPort
	}{{pod, podFlows}, {np, npFlows}} {
		for _, srcs := range flows.eps {
			for _, s := range srcs {
				h.forward(ctx, flows.t.withSrcPort(s.Port()), 1, fwdCheck{endpoints: []string{keep.Name}})
			}
		}
	}
	By("checking new UDP flows reach only keep")
	h.forward(ctx, pod, 5, fwdCheck{endpoints: []string{keep.Name}})
	h.forward(ctx, np, 5, fwdCheck{endpoints: []string{keep.Name}})
	By("checking the held TCP connection to keep still carries data")
	Expect(held.ping(1)).To(Succeed(), "held TCP connection to %s after gone was removed", keep.Name)
	Expect(srv.err()).NotTo(HaveOccurred(), "held-connection server")
}

// halfClosedByTraffic is CT-06 for a datapath whose conntrack the suite
// cannot read: for each destination the client half-closes its connection
// and the server, now in CLOSE_WAIT, keeps sending; every line must reach
// the client through the translation until the server's FIN.
func halfClosedByTraffic(ctx context.Context, h *harness, backend bEndpoint, dsts []netip.AddrPort) {
	srv := startHeldServer(ctx, h, backend, dsts[0].Port())
	DeferCleanup(srv.close)
	for _, dst := range dsts {
		By(fmt.Sprintf("half-closing a connection from the pod on node-a to %s: the client closes, the server keeps sending", dst))
		held := dialHeldTo(ctx, h.fromPod("node-a"), dst, backend.Name)
		DeferCleanup(held.close)
		Expect(held.ping(0)).To(Succeed(), "connection to %s", dst)
		Expect(held.c.CloseWrite()).To(Succeed(), "half-close the connection to %s", dst)
		for i := range heldAfterFin {
			line, err := held.r.ReadString('\n')
			Expect(err).NotTo(HaveOccurred(), "line %d the server sent to %s after the client's FIN", i, dst)
			Expect(line).To(Equal(fmt.Sprintf("after-fin %d\n", i)), "line %d from %s after the client's FIN", i, dst)
		}
		_, err := held.r.ReadString('\n')
		Expect(err).To(MatchError(io.EOF), "the server's FIN after its last line, from %s", dst)
	}
	Expect(srv.err()).NotTo(HaveOccurred(), "held-connection server")
}

// heldListenOffset: the held-connection server listens on the endpoint
// port + this (the boom server takes + boomListenOffset).
const heldListenOffset = 2

// heldAfterFin is how many lines the held-connection server sends after
// the client half-closed.
const heldAfterFin = 3

// heldServer keeps a TCP connection open for as long as the client wants:
// it greets with "held <endpoint>", answers "ping i" with "pong i" and,
// once the client half-closes, sends heldAfterFin lines before closing. As
// for the boom server, a REDIRECT rule in the endpoint's namespace sends
// the endpoint port to it, past the lab's echo server (which closes after
// one line).
type heldServer struct {
	ln       *net.TCPListener
	name     string
	wg       sync.WaitGroup
	mu       sync.Mutex
	firstErr error
}

func startHeldServer(ctx context.Context, h *harness, ep bEndpoint, port uint16) *heldServer {
	ns := h.lab.EndpointNS(ep.Name)
	Expect(ns.Name).NotTo(BeEmpty(), "the lab has no namespace for endpoint %s", ep.Name)
	ipt := "iptables-legacy"
	if *iptablesBackend == "nft" {
		ipt = "iptables-nft"
	}
	if _, err := exec.LookPath(ipt); err != nil {
		skipUnlessCI(fmt.Sprintf("the held-connection check needs %s (Debian package iptables) to redirect the endpoint's port", ipt))
	}
	listen := port + heldListenOffset
	// Equivalent to: ip netns exec <pod> iptables -t nat -A PREROUTING -p tcp -d <ip> --dport 80 -j REDIRECT --to-ports 82
	_, err := ns.Run(ctx, nil, ipt, "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-d", ep.IP,
		"--dport", fmt.Sprint(port), "-j", "REDIRECT", "--to-ports", fmt.Sprint(listen))
	Expect(err).NotTo(HaveOccurred(), "redirect %s:%d to the held-connection server in %s", ep.IP, port, ns.Name)
	s := &heldServer{name: ep.Name}
	err = ns.Do(func() error {
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(netip.MustParseAddr(ep.IP), listen).String())
		if err == nil {
			s.ln = ln.(*net.TCPListener)
		}
		return err
	})
	Expect(err).NotTo(HaveOccurred(), "held-connection server listen in %s", ns.Name)
	s.wg.Go(s.serve)
	return s
}

func (s *heldServer) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstErr
}

func (s *heldServer) close() {
	s.ln.Close()
	s.wg.Wait()
}

func (s *heldServer) serve() {
	var conns []*net.TCPConn
	var cmu sync.Mutex
	defer func() {
		// Unblock the handlers of connections the client never closed.
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
	}()
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			return
		}
		cmu.Lock()
		conns = append(conns, c)
		cmu.Unlock()
		s.wg.Go(func() {
			defer c.Close()
			if err := s.converse(c); err != nil {
				s.mu.Lock()
				if s.firstErr == nil {
					s.firstErr = fmt.Errorf("connection from %s: %w", c.RemoteAddr(), err)
				}
				s.mu.Unlock()
			}
		})
	}
}

func (s *heldServer) converse(c *net.TCPConn) error {
	if _, err := fmt.Fprintf(c, "held %s\n", s.name); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			// The client half-closed: keep talking from CLOSE_WAIT.
			for i := range heldAfterFin {
				if _, err := fmt.Fprintf(c, "after-fin %d\n", i); err != nil {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
			return nil
		}
		if err != nil {
			// The listener closing at cleanup ends connections the
			// client never half-closed: not the server's failure.
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		var i int
		if _, err := fmt.Sscanf(line, "ping %d\n", &i); err != nil {
			return fmt.Errorf("unexpected line %q", line)
		}
		if _, err := fmt.Fprintf(c, "pong %d\n", i); err != nil {
			return err
		}
	}
}

// heldConn is the client's side of a held connection.
type heldConn struct {
	c *net.TCPConn
	r *bufio.Reader
}

// dialHeldTo connects from ns to dst until a connection reaches endpoint's
// held-connection server (the Service may pick another endpoint, whose
// echo server answers and closes).
func dialHeldTo(ctx context.Context, ns netnsutil.NS, dst netip.AddrPort, endpoint string) *heldConn {
	var greetings []string
	for range 40 {
		var conn net.Conn
		var derr error
		Expect(ns.Do(func() error {
			d := net.Dialer{Timeout: fwdTimeout}
			conn, derr = d.DialContext(ctx, "tcp4", dst.String())
			return nil
		})).To(Succeed())
		Expect(derr).NotTo(HaveOccurred(), "connect from %s to %s", ns.Name, dst)
		hc := &heldConn{c: conn.(*net.TCPConn), r: bufio.NewReader(conn)}
		_ = hc.c.SetDeadline(time.Now().Add(fwdTimeout))
		line, err := hc.r.ReadString('\n')
		if err == nil && line == "held "+endpoint+"\n" {
			return hc
		}
		greetings = append(greetings, fmt.Sprintf("%q (%v)", line, err))
		hc.close()
	}
	Fail(fmt.Sprintf("no connection from %s to %s reached %s's held-connection server; greetings: %s", ns.Name, dst, endpoint, strings.Join(greetings, ", ")))
	return nil
}

// ping sends "ping i" and expects "pong i".
func (hc *heldConn) ping(i int) error {
	_ = hc.c.SetDeadline(time.Now().Add(fwdTimeout))
	if _, err := fmt.Fprintf(hc.c, "ping %d\n", i); err != nil {
		return fmt.Errorf("write ping %d: %w", i, err)
	}
	line, err := hc.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read pong %d: %w", i, err)
	}
	if want := fmt.Sprintf("pong %d\n", i); line != want {
		return fmt.Errorf("got %q, want %q", line, want)
	}
	return nil
}

func (hc *heldConn) close() { _ = hc.c.Close() }
