package ebpf

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"proxyrig/datapaths"
	"proxyrig/internal/netnsutil"
	"proxyrig/model"
)

// These tests run the tc programs on crafted packets with
// BPF_PROG_TEST_RUN: no interfaces are attached and no packet is sent.
// The programs run inside a throwaway namespace ("prx-t<random>-bpf") so
// their route lookups see a small, known table: 198.18.0.0/16 on a veth,
// the node address 198.18.0.11 local, and one permanent neighbour.

const (
	tcActOK       = 0
	tcActShot     = 2
	tcActRedirect = 7
)

// neighbourMAC is the permanent neighbour entry for 198.18.64.10.
var neighbourMAC = net.HardwareAddr{0x02, 0x70, 0x79, 0, 0, 0x10}

type progHarness struct {
	objs    *lbObjects
	ns      netnsutil.NS
	ids     *idTable
	applied *desired
}

func newProgHarness(t *testing.T) *progHarness {
	t.Helper()
	requireRoot(t)
	if err := checkKernel(Name); err != nil {
		t.Fatalf("kernel check: %v", err)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	name := "prx-t" + hex.EncodeToString(rnd[:]) + "-bpf"
	ns, err := netnsutil.Create(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netnsutil.Delete(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	setupRoutedNS(t, ns)

	spec, err := loadSpec(mapSizes{Services: 1024, Slots: 1024, Backends: 1024, Members: 1024, SrcRanges: 64, CT: 4096})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := loadObjects(spec, nil)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("load: %+v", ve)
		}
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	return &progHarness{objs: objs, ns: ns}
}

// setupRoutedNS gives the namespace a veth pair with the node address, a
// route to the lab's /16 and a permanent neighbour, and turns forwarding
// on, so the programs' FIB lookups succeed as on a lab node.
// Equivalent to: ip link add prxt0 type veth peer prxt1; ip addr add
// 198.18.0.11/32 dev prxt0; ip route add 198.18.0.0/16 dev prxt0;
// ip neigh add 198.18.64.10 lladdr 02:70:79:00:00:10 dev prxt0 nud permanent
func setupRoutedNS(t *testing.T, ns netnsutil.NS) {
	t.Helper()
	if err := ns.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	h, err := ns.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = "prxt0"
	la.Flags = net.FlagUp
	v := netlink.NewVeth(la)
	v.PeerName = "prxt1"
	if err := h.LinkAdd(v); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, n := range []string{"lo", "prxt0", "prxt1"} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	l, err := h.LinkByName("prxt0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeAIP.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatalf("add address: %v", err)
	}
	_, dst, _ := net.ParseCIDR("198.18.0.0/16")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatalf("add route: %v", err)
	}
	if err := h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.ParseIP("198.18.64.10"), HardwareAddr: neighbourMAC}); err != nil {
		t.Fatalf("add neighbour: %v", err)
	}
}

// sync writes the view into the maps the way Datapath.Sync does.
func (h *progHarness) sync(t *testing.T, v *datapaths.NodeView) {
	t.Helper()
	want, ids, err := render(v, h.ids)
	if err != nil {
		t.Fatal(err)
	}
	h.ids = ids
	have := h.applied
	if have == nil {
		have = &desired{}
	}
	if err := planSync(want, have, h.applied).apply(&h.objs.lbMaps, want, false); err != nil {
		t.Fatal(err)
	}
	h.applied = cloneDesired(want)
}

// run runs prog on one packet and returns the verdict and the packet as
// the program left it.
func (h *progHarness) run(t *testing.T, prog *ebpf.Program, pkt []byte) (uint32, []byte) {
	t.Helper()
	opts := &ebpf.RunOptions{Data: pkt, DataOut: make([]byte, 2048)}
	var ret uint32
	err := h.ns.Do(func() error {
		var err error
		ret, err = prog.Run(opts)
		return err
	})
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return ret, opts.DataOut
}

func (h *progHarness) stat(t *testing.T, idx uint32) uint64 {
	t.Helper()
	var per []uint64
	if err := h.objs.Stats.Lookup(idx, &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func tcpSyn(src, dst string, seq uint32) []byte {
	return buildPacket(pktSpec{proto: protoTCP, src: ap(src), dst: ap(dst), flags: tcpSYN, seq: seq})
}

func tcpSynAck(src, dst string) []byte {
	return buildPacket(pktSpec{proto: protoTCP, src: ap(src), dst: ap(dst), flags: tcpSYN | tcpACK, seq: 7, ack: 1001})
}

func udpPkt(src, dst string) []byte {
	return buildPacket(pktSpec{proto: protoUDP, src: ap(src), dst: ap(dst), payload: []byte("probe\n")})
}

// flowState carries what earlier steps of a case observed.
type flowState struct {
	backend netip.AddrPort // where the request went
	snat    netip.AddrPort // the source the backend saw
}

// flowStep is one packet of a table case and what must come out of it.
type flowStep struct {
	prog    string // lbProgFromDev or lbProgToDev
	pkt     func(s *flowState) []byte
	verdict uint32
	// check inspects the output packet; nil checks only the verdict.
	check func(t *testing.T, s *flowState, out parsedPacket)
}

func (h *progHarness) prog(name string) *ebpf.Program {
	switch name {
	case lbProgFromDev:
		return h.objs.FromDev
	case lbProgToDev:
		return h.objs.ToDev
	}
	return nil
}

func fixed(b []byte) func(*flowState) []byte { return func(*flowState) []byte { return b } }

// toBackend expects the request to keep src and go to one of backends; it
// records the backend and the source as seen.
func toBackend(src string, backends ...string) func(*testing.T, *flowState, parsedPacket) {
	return func(t *testing.T, s *flowState, p parsedPacket) {
		t.Helper()
		ok := false
		for _, b := range backends {
			ok = ok || p.dst == ap(b)
		}
		if !ok || (src != "" && p.src != ap(src)) {
			t.Fatalf("got %s, want %s -> one of %v", p, src, backends)
		}
		s.backend, s.snat = p.dst, p.src
	}
}

// snatToNode expects the request to come from the node's address and go
// to one of backends.
func snatToNode(backends ...string) func(*testing.T, *flowState, parsedPacket) {
	return func(t *testing.T, s *flowState, p parsedPacket) {
		t.Helper()
		toBackend("", backends...)(t, s, p)
		if p.src.Addr() != nodeAIP {
			t.Fatalf("got %s, want the source SNATed to the node %s", p, nodeAIP)
		}
	}
}

func wantTuple(src, dst string) func(*testing.T, *flowState, parsedPacket) {
	return func(t *testing.T, _ *flowState, p parsedPacket) {
		t.Helper()
		if p.src != ap(src) || p.dst != ap(dst) {
			t.Errorf("got %s, want %s -> %s", p, src, dst)
		}
	}
}

// replyFromBackend is the backend's SYN-ACK to whatever source it saw.
func replyFromBackend(s *flowState) []byte {
	return buildPacket(pktSpec{proto: protoTCP, src: s.backend, dst: s.snat, flags: tcpSYN | tcpACK, seq: 7, ack: 1001})
}

func TestProgPacketFlows(t *testing.T) {
	h := newProgHarness(t)
	h.sync(t, view(helloService(), emptyService(), localService(), remoteOnlyLocalService(), firewalledService(),
		udpService(ep("198.18.65.53", 5353, nodeB)),
		service("udp-empty", model.ClusterIP, "198.19.0.54", port("", model.UDP, 53, 0)),
		// hairpin: the only endpoint is the client itself
		service("self", model.ClusterIP, "198.19.0.90", port("", model.TCP, 80, 0, ep("198.18.64.90", 8080, nodeA))),
		// a host-network endpoint on this node
		service("hostnet", model.ClusterIP, "198.19.0.91", port("", model.TCP, 80, 0, ep("198.18.0.11", 10250, nodeA))),
		// iTP=Local whose only endpoint is remote: DROP here
		func() *model.Service {
			s := service("itp", model.ClusterIP, "198.19.0.92", port("", model.TCP, 80, 0, ep("198.18.65.92", 8080, nodeB)))
			s.InternalTrafficPolicy = model.PolicyLocal
			return s
		}(),
	))
	hello := []string{"198.18.64.10:8080", "198.18.64.11:8080", "198.18.65.10:8080"}

	cases := []struct {
		name  string
		steps []flowStep
	}{
		{"pod to ClusterIP: DNAT, pod source kept, reply reverse-NATed", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.20:40000", "198.19.0.80:80", 1000)), verdict: tcActRedirect,
				check: func(t *testing.T, s *flowState, p parsedPacket) {
					toBackend("198.18.64.20:40000", hello...)(t, s, p)
					if p.ttl != 63 {
						t.Errorf("ttl %d, want 63: a forwarded packet", p.ttl)
					}
					if p.dst == ap("198.18.64.10:8080") && p.dstMAC.String() != neighbourMAC.String() {
						t.Errorf("dst MAC %s, want the neighbour's %s", p.dstMAC, neighbourMAC)
					}
				}},
			{prog: lbProgFromDev, verdict: tcActRedirect,
				pkt: fixed(buildPacket(pktSpec{proto: protoTCP, src: ap("198.18.64.20:40000"), dst: ap("198.19.0.80:80"), flags: tcpACK, seq: 1001, ack: 8})),
				check: func(t *testing.T, s *flowState, p parsedPacket) {
					if p.dst != s.backend {
						t.Errorf("later packet went to %s, the first to %s", p.dst, s.backend)
					}
				}},
			// A remote backend's reply arrives on the uplink.
			{prog: lbProgFromDev, pkt: replyFromBackend, verdict: tcActRedirect, check: wantTuple("198.19.0.80:80", "198.18.64.20:40000")},
		}},
		{"external client to NodePort (eTP=Cluster): SNAT to the node, reply restored", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.200:50000", "198.18.0.11:30080", 5)), verdict: tcActRedirect, check: snatToNode(hello...)},
			{prog: lbProgFromDev, pkt: replyFromBackend, verdict: tcActRedirect, check: wantTuple("198.18.0.11:30080", "198.18.0.200:50000")},
		}},
		{"external client to ClusterIP: SNAT (source outside the cluster CIDR)", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.200:50001", "198.19.0.80:80", 5)), verdict: tcActRedirect, check: snatToNode(hello...)},
			{prog: lbProgFromDev, pkt: replyFromBackend, verdict: tcActRedirect, check: wantTuple("198.19.0.80:80", "198.18.0.200:50001")},
		}},
		{"eTP=Local NodePort keeps the client source and uses only local endpoints", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.200:50002", "198.18.0.11:30082", 5)), verdict: tcActRedirect,
				check: toBackend("198.18.0.200:50002", "198.18.64.20:8080")},
			{prog: lbProgFromDev, pkt: replyFromBackend, verdict: tcActRedirect, check: wantTuple("198.18.0.11:30082", "198.18.0.200:50002")},
		}},
		{"eTP=Local LoadBalancer IP from a pod: short-circuit to all endpoints, source kept", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.21:40000", "198.18.1.82:80", 5)), verdict: tcActRedirect,
				check: toBackend("198.18.64.21:40000", "198.18.64.20:8080", "198.18.65.20:8080")},
		}},
		{"eTP=Local without local endpoints: external traffic dropped", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.200:50003", "198.18.0.11:30083", 5)), verdict: tcActShot},
		}},
		{"eTP=Local without local endpoints: pod traffic still served", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.22:40000", "198.18.0.11:30083", 5)), verdict: tcActRedirect,
				check: toBackend("198.18.64.22:40000", "198.18.65.30:8080")},
		}},
		{"iTP=Local without local endpoints: dropped", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.23:40000", "198.19.0.92:80", 5)), verdict: tcActShot},
		}},
		{"no endpoints, TCP: RST generated and bounced back", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.24:40000", "198.19.0.81:80", 1000)), verdict: tcActRedirect,
				check: func(t *testing.T, _ *flowState, p parsedPacket) {
					wantTuple("198.19.0.81:80", "198.18.64.24:40000")(t, nil, p)
					if p.flags != tcpRST|tcpACK || p.ack != 1001 || p.seq != 0 {
						t.Errorf("got %s, want RST|ACK seq=0 ack=1001", p)
					}
					if p.dstMAC.String() != testSrcMAC.String() || p.srcMAC.String() != testDstMAC.String() {
						t.Errorf("MACs %s -> %s, want swapped %s -> %s", p.srcMAC, p.dstMAC, testDstMAC, testSrcMAC)
					}
				}},
		}},
		{"no endpoints, TCP ACK: RST with the acknowledged sequence", []flowStep{
			{prog: lbProgFromDev, verdict: tcActRedirect,
				pkt: fixed(buildPacket(pktSpec{proto: protoTCP, src: ap("198.18.0.200:50004"), dst: ap("198.19.0.81:80"), flags: tcpACK | tcpPSH, seq: 10, ack: 4242, payload: []byte("hello")})),
				check: func(t *testing.T, _ *flowState, p parsedPacket) {
					if p.flags != tcpRST || p.seq != 4242 {
						t.Errorf("got %s, want RST seq=4242", p)
					}
				}},
		}},
		{"no endpoints, UDP: ICMP port unreachable quoting the datagram", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(udpPkt("198.18.64.25:40000", "198.19.0.54:53")), verdict: tcActRedirect,
				check: func(t *testing.T, _ *flowState, p parsedPacket) {
					if p.proto != 1 || p.icmpType != 3 || p.icmpCode != 3 || p.src.Addr() != addr("198.19.0.54") || p.dst.Addr() != addr("198.18.64.25") ||
						p.innerSrc != ap("198.18.64.25:40000") || p.innerDst != ap("198.19.0.54:53") {
						t.Errorf("got %s, want ICMP port unreachable 198.19.0.54 -> 198.18.64.25 quoting the datagram", p)
					}
				}},
		}},
		{"source ranges: allowed client served", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.200:50005", "198.18.1.85:80", 5)), verdict: tcActRedirect, check: snatToNode("198.18.64.50:8080")},
		}},
		{"source ranges: other client dropped", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.201:50005", "198.18.1.85:80", 5)), verdict: tcActShot},
		}},
		{"source ranges do not apply to the NodePort", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.0.201:50006", "198.18.0.11:30085", 5)), verdict: tcActRedirect, check: snatToNode("198.18.64.50:8080")},
		}},
		{"hairpin: an endpoint reaching itself is SNATed to the node", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.90:40000", "198.19.0.90:80", 5)), verdict: tcActRedirect, check: snatToNode("198.18.64.90:8080")},
			{prog: lbProgFromDev, pkt: replyFromBackend, verdict: tcActRedirect, check: wantTuple("198.19.0.90:80", "198.18.64.90:40000")},
		}},
		{"host-network endpoint on this node: delivered locally, reply NATed at egress", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.26:40000", "198.19.0.91:80", 5)), verdict: tcActOK,
				check: toBackend("198.18.64.26:40000", "198.18.0.11:10250")},
			{prog: lbProgToDev, pkt: replyFromBackend, verdict: tcActOK, check: wantTuple("198.19.0.91:80", "198.18.64.26:40000")},
		}},
		{"UDP to ClusterIP and back", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(udpPkt("198.18.64.27:40000", "198.19.0.53:53")), verdict: tcActRedirect,
				check: toBackend("198.18.64.27:40000", "198.18.65.53:5353")},
			{prog: lbProgFromDev, pkt: func(s *flowState) []byte {
				return buildPacket(pktSpec{proto: protoUDP, src: s.backend, dst: s.snat, payload: []byte("answer\n")})
			}, verdict: tcActRedirect, check: wantTuple("198.19.0.53:53", "198.18.64.27:40000")},
		}},
		{"not a Service: passed untouched", []flowStep{
			{prog: lbProgFromDev, pkt: fixed(tcpSyn("198.18.64.28:40000", "198.18.65.10:8080", 5)), verdict: tcActOK,
				check: wantTuple("198.18.64.28:40000", "198.18.65.10:8080")},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &flowState{}
			for i, st := range tc.steps {
				ret, out := h.run(t, h.prog(st.prog), st.pkt(s))
				if ret != st.verdict {
					t.Fatalf("step %d (%s): verdict %d, want %d", i, st.prog, ret, st.verdict)
				}
				if st.check == nil {
					continue
				}
				p, err := parsePacket(out)
				if err != nil {
					t.Fatalf("step %d (%s): output: %v", i, st.prog, err)
				}
				st.check(t, s, p)
			}
		})
	}
	if n := h.stat(t, 5 /* STAT_DROP_NO_LOCAL */); n != 2 {
		t.Errorf("no-local drops counted %d, want 2", n)
	}
	if n := h.stat(t, 6 /* STAT_DROP_SRC_RANGE */); n != 1 {
		t.Errorf("source-range drops counted %d, want 1", n)
	}
}

// TestProgAffinity checks sessionAffinity: ClientIP: every new connection
// of one client lands on one backend, while without affinity they spread.
func TestProgAffinity(t *testing.T) {
	h := newProgHarness(t)
	plain := affinityService()
	plain.Name.Name = "spread"
	plain.SessionAffinity = false
	plain.ClusterIPs = []netip.Addr{addr("198.19.0.86")}
	h.sync(t, view(affinityService(), plain))

	backends := func(vip string) map[netip.AddrPort]int {
		seen := map[netip.AddrPort]int{}
		for i := range 60 {
			src := netip.AddrPortFrom(addr("198.18.64.30"), uint16(41000+i))
			ret, out := h.run(t, h.objs.FromDev, buildPacket(pktSpec{proto: protoTCP, src: src, dst: ap(vip), flags: tcpSYN}))
			if ret != tcActRedirect {
				t.Fatalf("verdict %d, want redirect", ret)
			}
			p, err := parsePacket(out)
			if err != nil {
				t.Fatal(err)
			}
			seen[p.dst]++
		}
		return seen
	}
	if got := backends("198.19.0.84:80"); len(got) != 1 {
		t.Errorf("with affinity, 60 connections of one client reached %v, want one backend", got)
	}
	// Without affinity, 60 uniform picks among 3 all landing on one
	// backend has probability 3^-59: a failure here is a bug.
	if got := backends("198.19.0.86:80"); len(got) < 2 {
		t.Errorf("without affinity, 60 connections reached only %v", got)
	}
}

// TestProgUDPResteer checks that a UDP flow leaves a backend that left the
// Service, while a TCP flow stays (and fails there, as with kube-proxy).
func TestProgUDPResteer(t *testing.T) {
	h := newProgHarness(t)
	tcp := service("web", model.ClusterIP, "198.19.0.87", port("", model.TCP, 80, 0, ep("198.18.65.61", 8080, nodeB)))
	udp := udpService(ep("198.18.65.61", 5353, nodeB))
	h.sync(t, view(tcp, udp))

	send := func(pkt []byte) parsedPacket {
		t.Helper()
		ret, out := h.run(t, h.objs.FromDev, pkt)
		if ret != tcActRedirect {
			t.Fatalf("verdict %d, want redirect", ret)
		}
		p, err := parsePacket(out)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	udpPacket := udpPkt("198.18.64.31:40000", "198.19.0.53:53")
	tcpPacket := buildPacket(pktSpec{proto: protoTCP, src: ap("198.18.64.31:40001"), dst: ap("198.19.0.87:80"), flags: tcpSYN})
	if p := send(udpPacket); p.dst != ap("198.18.65.61:5353") {
		t.Fatalf("UDP went to %s", p.dst)
	}
	if p := send(tcpPacket); p.dst != ap("198.18.65.61:8080") {
		t.Fatalf("TCP went to %s", p.dst)
	}

	// The endpoint is replaced by another one.
	tcp = service("web", model.ClusterIP, "198.19.0.87", port("", model.TCP, 80, 0, ep("198.18.65.62", 8080, nodeB)))
	udp = udpService(ep("198.18.65.62", 5353, nodeB))
	h.sync(t, view(tcp, udp))

	if p := send(udpPacket); p.dst != ap("198.18.65.62:5353") {
		t.Errorf("UDP flow still goes to %s after its backend left, want 198.18.65.62:5353", p.dst)
	}
	tcpAck := buildPacket(pktSpec{proto: protoTCP, src: ap("198.18.64.31:40001"), dst: ap("198.19.0.87:80"), flags: tcpACK})
	if p := send(tcpAck); p.dst != ap("198.18.65.61:8080") {
		t.Errorf("established TCP flow moved to %s, want it to stay on 198.18.65.61:8080", p.dst)
	}
	if n := h.stat(t, 9 /* STAT_UDP_RESTEER */); n != 1 {
		t.Errorf("UDP re-steers counted %d, want 1", n)
	}
}

// TestFlushConntrack checks the harness's clean slate: a SYN on a tuple
// whose connection never closed rides its conntrack entry to the old
// backend (a retransmission, as in the kernel's conntrack), and after
// FlushConntrack the same tuple is load-balanced afresh, while the
// Service entries stay.
func TestFlushConntrack(t *testing.T) {
	h := newProgHarness(t)
	h.sync(t, view(service("web", model.ClusterIP, "198.19.0.87", port("", model.TCP, 80, 0, ep("198.18.65.61", 8080, nodeB)))))
	syn := buildPacket(pktSpec{proto: protoTCP, src: ap("198.18.64.31:40001"), dst: ap("198.19.0.87:80"), flags: tcpSYN})
	send := func() netip.AddrPort {
		t.Helper()
		ret, out := h.run(t, h.objs.FromDev, syn)
		if ret != tcActRedirect {
			t.Fatalf("verdict %d, want redirect", ret)
		}
		p, err := parsePacket(out)
		if err != nil {
			t.Fatal(err)
		}
		return p.dst
	}
	if dst := send(); dst != ap("198.18.65.61:8080") {
		t.Fatalf("SYN went to %s", dst)
	}
	h.sync(t, view(service("web", model.ClusterIP, "198.19.0.87", port("", model.TCP, 80, 0, ep("198.18.65.62", 8080, nodeB)))))
	if dst := send(); dst != ap("198.18.65.61:8080") {
		t.Fatalf("retransmitted SYN went to %s, want it on its conntrack entry's 198.18.65.61:8080", dst)
	}
	d := &Datapath{objs: h.objs, cfg: datapaths.Config{NS: h.ns}}
	n, err := d.FlushConntrack(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n < 1 {
		t.Errorf("flushed %d entries, want the flow's", n)
	}
	if left, err := readAll[lbCtKey, lbCtEntry](h.objs.Ct, lbMapCt); err != nil || len(left) != 0 {
		t.Errorf("ct holds %d entries after the flush (%v)", len(left), err)
	}
	if dst := send(); dst != ap("198.18.65.62:8080") {
		t.Errorf("SYN after the flush went to %s, want the current backend 198.18.65.62:8080", dst)
	}
}

// TestProgTupleReusedDirect: a client that closed a connection through a
// ClusterIP and then opens one straight to the same endpoint from the same
// source port reuses the translated flow's tuple on the wire. The new
// connection's SYN-ACK must reach it as the endpoint sent it, not
// reverse-NATed to the ClusterIP by the closed flow's reply entry (the
// client would reset it, and the connection time out).
func TestProgTupleReusedDirect(t *testing.T) {
	h := newProgHarness(t)
	h.sync(t, view(service("web", model.ClusterIP, "198.19.0.87", port("", model.TCP, 80, 0, ep("198.18.65.61", 8080, nodeB)))))
	client, vip, backend := ap("198.18.64.31:40001"), ap("198.19.0.87:80"), ap("198.18.65.61:8080")
	pkt := func(src, dst netip.AddrPort, flags uint8) []byte {
		return buildPacket(pktSpec{proto: protoTCP, src: src, dst: dst, flags: flags})
	}
	step := func(what string, in []byte, wantRet uint32, wantSrc, wantDst netip.AddrPort) {
		t.Helper()
		ret, out := h.run(t, h.objs.FromDev, in)
		if ret != wantRet {
			t.Fatalf("%s: verdict %d, want %d", what, ret, wantRet)
		}
		p, err := parsePacket(out)
		if err != nil {
			t.Fatal(err)
		}
		if p.src != wantSrc || p.dst != wantDst {
			t.Fatalf("%s: %s -> %s, want %s -> %s", what, p.src, p.dst, wantSrc, wantDst)
		}
	}
	// Through the ClusterIP, then closed from both ends.
	step("SYN to the ClusterIP", pkt(client, vip, tcpSYN), tcActRedirect, client, backend)
	step("its SYN-ACK", pkt(backend, client, tcpSYN|tcpACK), tcActRedirect, vip, client)
	step("client FIN", pkt(client, vip, tcpFIN|tcpACK), tcActRedirect, client, backend)
	step("endpoint FIN", pkt(backend, client, tcpFIN|tcpACK), tcActRedirect, vip, client)
	// Straight to the endpoint, same source port.
	step("SYN to the endpoint", pkt(client, backend, tcpSYN), tcActOK, client, backend)
	step("the endpoint's SYN-ACK", pkt(backend, client, tcpSYN|tcpACK), tcActOK, backend, client)
	step("the endpoint's next segment", pkt(backend, client, tcpACK), tcActOK, backend, client)
}

// TestProgFragments checks that both fragments of a large UDP datagram are
// translated, the second one with the ports its first fragment carried,
// and that the reassembled datagram's checksum is still right.
func TestProgFragments(t *testing.T) {
	h := newProgHarness(t)
	h.sync(t, view(udpService(ep("198.18.65.53", 5353, nodeB))))
	payload := make([]byte, 2000)
	for i := range payload {
		payload[i] = byte(i)
	}
	whole := buildPacket(pktSpec{proto: protoUDP, src: ap("198.18.64.32:40000"), dst: ap("198.19.0.53:53"), payload: payload})
	f1, f2 := fragment(whole, 1480)

	var l4 []byte
	for i, f := range [][]byte{f1, f2} {
		ret, out := h.run(t, h.objs.FromDev, f)
		if ret != tcActRedirect {
			t.Fatalf("fragment %d: verdict %d, want redirect", i, ret)
		}
		src, dst, err := parseIPv4Only(out)
		if err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		if src != addr("198.18.64.32") || dst != addr("198.18.65.53") {
			t.Errorf("fragment %d: %s -> %s, want 198.18.64.32 -> 198.18.65.53", i, src, dst)
		}
		l4 = append(l4, out[34:]...)
	}
	// Reassemble and check ports and checksum.
	if got := netip.AddrPortFrom(addr("198.18.65.53"), uint16(l4[2])<<8|uint16(l4[3])); got != ap("198.18.65.53:5353") {
		t.Errorf("reassembled datagram to port %d, want 5353", got.Port())
	}
	if c := csumFold(csumAdd(pseudoSum(addr("198.18.64.32"), addr("198.18.65.53"), protoUDP, len(l4)), l4)); c != 0 {
		t.Errorf("reassembled UDP checksum is wrong (residue %#x)", c)
	}
}

// TestProgLocalhostNodePort checks a node socket bound to 127.0.0.1
// reaching a localhost NodePort: SNAT to the node on the way out, and the
// reply handed back to the loopback device.
func TestProgLocalhostNodePort(t *testing.T) {
	h := newProgHarness(t)
	v := view(helloService())
	v.Proxy.LocalhostNodePorts = true
	h.sync(t, v)

	s := &flowState{}
	ret, out := h.run(t, h.objs.FromHost, tcpSyn("127.0.0.1:40000", "127.0.0.1:30080", 1))
	if ret != tcActRedirect {
		t.Fatalf("verdict %d, want redirect", ret)
	}
	p, err := parsePacket(out)
	if err != nil {
		t.Fatal(err)
	}
	snatToNode("198.18.64.10:8080", "198.18.64.11:8080", "198.18.65.10:8080")(t, s, p)

	ret, out = h.run(t, h.objs.FromDev, replyFromBackend(s))
	if ret != tcActRedirect {
		t.Fatalf("reply verdict %d, want redirect (to lo)", ret)
	}
	if p, err = parsePacket(out); err != nil {
		t.Fatal(err)
	}
	wantTuple("127.0.0.1:30080", "127.0.0.1:40000")(t, s, p)
	if p.dstMAC.String() != "00:00:00:00:00:00" {
		t.Errorf("reply dst MAC %s, want lo's 00:00:00:00:00:00", p.dstMAC)
	}
}

// TestProgIPv6 runs the IPv6 path through the same decisions: ClusterIP
// DNAT and reverse NAT, NodePort SNAT to the node's IPv6 address, and the
// two rejects.
func TestProgIPv6(t *testing.T) {
	h := newProgHarness(t)
	v := view(
		&model.Service{
			Name: model.ServiceName{Namespace: "default", Name: "web6"}, Type: model.NodePort,
			ClusterIPs:            []netip.Addr{addr("2001:db8:19::80")},
			ExternalTrafficPolicy: model.PolicyCluster, InternalTrafficPolicy: model.PolicyCluster,
			Ports: []*model.ServicePort{port("", model.TCP, 80, 30080, ep("2001:db8:64:1::10", 8080, nodeA), ep("2001:db8:64:2::10", 8080, nodeB))},
		},
		&model.Service{
			Name: model.ServiceName{Namespace: "default", Name: "empty6"}, Type: model.ClusterIP,
			ClusterIPs:            []netip.Addr{addr("2001:db8:19::81")},
			ExternalTrafficPolicy: model.PolicyCluster, InternalTrafficPolicy: model.PolicyCluster,
			Ports: []*model.ServicePort{port("tcp", model.TCP, 80, 0), port("udp", model.UDP, 81, 0)},
		},
	)
	v.Node.Addresses = append(v.Node.Addresses, addr("2001:db8:18::b"))
	v.Proxy.ClusterCIDRs = append(v.Proxy.ClusterCIDRs, prefix("2001:db8:64::/48"))
	h.sync(t, v)
	backends := []string{"[2001:db8:64:1::10]:8080", "[2001:db8:64:2::10]:8080"}

	run := func(prog *ebpf.Program, pkt []byte, want uint32) parsedPacket {
		t.Helper()
		ret, out := h.run(t, prog, pkt)
		if ret != want {
			t.Fatalf("verdict %d, want %d", ret, want)
		}
		p, err := parsePacket6(out)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// No IPv6 route in the test namespace: translated packets go up the
	// stack (TC_ACT_OK) rather than being redirected.
	s := &flowState{}
	p := run(h.objs.FromDev, buildPacket6(pktSpec{proto: protoTCP, src: ap("[2001:db8:64:1::20]:40000"), dst: ap("[2001:db8:19::80]:80"), flags: tcpSYN}), tcActOK)
	toBackend("[2001:db8:64:1::20]:40000", backends...)(t, s, p)
	p = run(h.objs.FromDev, buildPacket6(pktSpec{proto: protoTCP, src: s.backend, dst: s.snat, flags: tcpSYN | tcpACK}), tcActOK)
	wantTuple("[2001:db8:19::80]:80", "[2001:db8:64:1::20]:40000")(t, s, p)

	p = run(h.objs.FromDev, buildPacket6(pktSpec{proto: protoTCP, src: ap("[2001:db8:18::c8]:50000"), dst: ap("[2001:db8:18::b]:30080"), flags: tcpSYN}), tcActOK)
	toBackend("", backends...)(t, s, p)
	if p.src.Addr() != addr("2001:db8:18::b") {
		t.Errorf("NodePort over IPv6: source %s, want the node's 2001:db8:18::b", p.src)
	}
	p = run(h.objs.FromDev, buildPacket6(pktSpec{proto: protoTCP, src: s.backend, dst: s.snat, flags: tcpSYN | tcpACK}), tcActOK)
	wantTuple("[2001:db8:18::b]:30080", "[2001:db8:18::c8]:50000")(t, s, p)

	p = run(h.objs.FromDev, buildPacket6(pktSpec{proto: protoTCP, src: ap("[2001:db8:64:1::21]:40000"), dst: ap("[2001:db8:19::81]:80"), flags: tcpSYN, seq: 99}), tcActRedirect)
	if p.flags != tcpRST|tcpACK || p.ack != 100 || p.src != ap("[2001:db8:19::81]:80") {
		t.Errorf("TCP reject over IPv6: %s, want RST|ACK ack=100 from the ClusterIP", p)
	}
	p = run(h.objs.FromDev, buildPacket6(pktSpec{proto: protoUDP, src: ap("[2001:db8:64:1::21]:40000"), dst: ap("[2001:db8:19::81]:81"), payload: []byte("x")}), tcActRedirect)
	if p.proto != 58 || p.icmpType != 1 || p.icmpCode != 4 || p.innerDst != ap("[2001:db8:19::81]:81") {
		t.Errorf("UDP reject over IPv6: %s, want ICMPv6 port unreachable quoting the datagram", p)
	}
}
