package topologies

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/internal/netnsutil"
)

// This file holds the kernel side of the lab: namespaces, veths, addresses,
// routes and neighbours, all through netlink handles bound to lab
// namespaces. Nothing here opens a handle on the root namespace, and every
// veth is created from a lab namespace with its peer placed straight into
// another one, so no link exists in the root namespace even for a moment.

// nsRole decides a namespace's sysctls.
type nsRole int

const (
	roleLeaf   nsRole = iota // pod, client pod, external client
	roleNode                 // routes between its pods and the segment
	roleFabric               // holds the bridge, speaks no IP
)

// nsSysctls are written right after a namespace is made and before any link
// enters it, so links inherit the "default" values:
//   - rp_filter=0: addresses are /32s with host routes and a node forwards
//     replies for DNATed flows; strict reverse-path checks would drop them.
//     The effective value is max(all, dev), so all, default and lo are set.
//   - send_redirects=0: a node forwarding out the interface a packet came in
//     on (pod to pod on one node via the segment) must not teach hosts a
//     shortcut that bypasses the datapath under test.
//   - accept_dad=0: addresses must be usable the moment they are added;
//     IPv6 DAD would hold them "tentative" for a second.
//   - icmp_ratelimit=0 on nodes: a REJECT is an ICMP error, and the kernel
//     rate-limits those per destination (1/s after a burst of 6), which
//     would turn a burst of refusals into silence and make REJECT look like
//     DROP. A lab measures the datapath's verdict, not the ICMP budget.
func nsSysctls(role nsRole) [][2]string {
	s := [][2]string{
		{"net.ipv4.conf.all.rp_filter", "0"},
		{"net.ipv4.conf.default.rp_filter", "0"},
		{"net.ipv4.conf.lo.rp_filter", "0"},
		{"net.ipv4.conf.all.send_redirects", "0"},
		{"net.ipv4.conf.default.send_redirects", "0"},
	}
	if role == roleNode {
		s = append(s, [2]string{"net.ipv4.icmp_ratelimit", "0"})
	}
	if !ipv6Available() {
		if role == roleNode {
			s = append(s, [2]string{"net.ipv4.ip_forward", "1"})
		}
		return s
	}
	s = append(s,
		[2]string{"net.ipv6.conf.all.accept_dad", "0"},
		[2]string{"net.ipv6.conf.default.accept_dad", "0"},
	)
	switch role {
	case roleNode:
		s = append(s,
			[2]string{"net.ipv4.ip_forward", "1"},
			[2]string{"net.ipv6.conf.all.forwarding", "1"},
			[2]string{"net.ipv6.conf.default.forwarding", "1"},
			[2]string{"net.ipv6.icmp.ratelimit", "0"},
		)
	case roleFabric:
		// The bridge forwards IPv6 frames at L2 either way; without IPv6 on
		// its ports the fabric sends no router solicitations or MLD reports
		// of its own onto the segment.
		s = append(s,
			[2]string{"net.ipv6.conf.all.disable_ipv6", "1"},
			[2]string{"net.ipv6.conf.default.disable_ipv6", "1"},
		)
	}
	return s
}

func ipv6Available() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// setupNS writes the role's sysctls and brings lo up. Equivalent to:
// ip netns exec <ns> sysctl -w …; ip -n <ns> link set lo up
func setupNS(ns netnsutil.NS, role nsRole) error {
	err := ns.Do(func() error {
		for _, kv := range nsSysctls(role) {
			if err := netnsutil.WriteSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sysctls in %s: %w", ns.Name, err)
	}
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", ns.Name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", ns.Name, err)
	}
	return nil
}

// addBridge creates the segment's bridge. Equivalent to:
// ip -n <fabric> link add prxbr0 up type bridge mcast_snooping 0
func addBridge(h *netlink.Handle) (int, error) {
	off := false
	la := netlink.NewLinkAttrs()
	la.Name = bridgeName
	la.Flags = net.FlagUp
	// Without snooping the bridge floods multicast, so IPv6 neighbour
	// solicitations reach every host whether or not a querier exists.
	br := &netlink.Bridge{LinkAttrs: la, MulticastSnooping: &off}
	if err := h.LinkAdd(br); err != nil {
		return 0, fmt.Errorf("add bridge %s: %w", bridgeName, err)
	}
	return br.Attrs().Index, nil
}

// addVeth creates a veth pair from the handle's namespace: local end named
// local (up, optionally enslaved to master), peer named peer inside peerNS.
// macs may be nil for kernel-chosen addresses. Equivalent to:
// ip -n <here> link add <local> type veth peer name <peer> netns <peerNS>
func addVeth(h *netlink.Handle, local string, localMAC net.HardwareAddr, master int, peerNS netnsutil.NS, peer string, peerMAC net.HardwareAddr) (int, error) {
	fd, err := peerNS.Fd()
	if err != nil {
		return 0, fmt.Errorf("open netns %s: %w", peerNS.Name, err)
	}
	defer fd.Close()
	la := netlink.NewLinkAttrs()
	la.Name = local
	la.Flags = net.FlagUp
	la.HardwareAddr = localMAC
	la.MasterIndex = master
	v := netlink.NewVeth(la)
	v.PeerName = peer
	v.PeerHardwareAddr = peerMAC
	v.PeerNamespace = netlink.NsFd(int(fd))
	if err := h.LinkAdd(v); err != nil {
		return 0, fmt.Errorf("add veth %s (peer %s in %s): %w", local, peer, peerNS.Name, err)
	}
	return v.Attrs().Index, nil
}

func v4or6(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addHostAddr puts a as a /32 (/128) on the link; IPv6 skips DAD. With host
// prefixes, reachability is exactly the routes the lab installs, so any
// user addresses can share one segment. Equivalent to:
// ip addr add <a>/32 dev <link> (nodad)
func addHostAddr(h *netlink.Handle, link netlink.Link, a netip.Addr) error {
	addr := &netlink.Addr{IPNet: ipNet(hostPrefix(a))}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add address %s to %s: %w", a, link.Attrs().Name, err)
	}
	return nil
}

// onLinkRoute: ip route replace <dst> dev <link> [scope link].
func onLinkRoute(h *netlink.Handle, linkIndex int, dst netip.Prefix) error {
	r := &netlink.Route{LinkIndex: linkIndex, Dst: ipNet(dst), Family: v4or6(dst.Addr())}
	if dst.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s dev #%d: %w", dst, linkIndex, err)
	}
	return nil
}

// viaRoute: ip route replace <dst> via <gw> dev <link> onlink.
// onlink because the gateway is reachable through a host route (or, for a
// pod, a link-local address) and the kernel need not check it again.
func viaRoute(h *netlink.Handle, linkIndex int, dst netip.Prefix, gw netip.Addr) error {
	r := &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipNet(dst),
		Gw:        gw.AsSlice(),
		Flags:     int(netlink.FLAG_ONLINK),
		Family:    v4or6(dst.Addr()),
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// delRoute removes a route to dst whatever its next hop; a missing route is
// not an error (it went with its link, or was never made).
func delRoute(h *netlink.Handle, dst netip.Prefix) error {
	r := &netlink.Route{Dst: ipNet(dst), Family: v4or6(dst.Addr())}
	err := h.RouteDel(r)
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s: %w", dst, err)
	}
	return nil
}

// permanentNeigh: ip neigh replace <ip> lladdr <mac> dev <link> nud permanent.
// Static entries both ways let a pod and its node talk with no ARP/NDP and
// no address on the node side of the veth.
func permanentNeigh(h *netlink.Handle, linkIndex int, ip netip.Addr, mac net.HardwareAddr) error {
	n := &netlink.Neigh{
		LinkIndex:    linkIndex,
		Family:       v4or6(ip),
		State:        netlink.NUD_PERMANENT,
		IP:           ip.AsSlice(),
		HardwareAddr: mac,
	}
	if err := h.NeighSet(n); err != nil {
		return fmt.Errorf("neighbour %s lladdr %s: %w", ip, mac, err)
	}
	return nil
}

// configureUplink brings eth0 of a segment host up with its addresses,
// on-link host routes to every other host on the segment, and, for nodes,
// an on-link default route.
//
// The default route matters: a host-network client connecting to a
// ClusterIP needs *some* route before the datapath's OUTPUT DNAT runs, as
// on a real node. Unknown destinations then simply go unanswered on the
// segment.
func configureUplink(ns netnsutil.NS, addrs []netip.Addr, others []netip.Addr, defaultRoute bool) error {
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(uplinkName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", uplinkName, ns.Name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", uplinkName, ns.Name, err)
	}
	for _, a := range addrs {
		if err := addHostAddr(h, link, a); err != nil {
			return fmt.Errorf("in %s: %w", ns.Name, err)
		}
	}
	idx := link.Attrs().Index
	has6 := addrOf(addrs, true).IsValid()
	for _, o := range others {
		if o.Is6() && !has6 {
			continue
		}
		if err := onLinkRoute(h, idx, hostPrefix(o)); err != nil {
			return fmt.Errorf("in %s: %w", ns.Name, err)
		}
	}
	if defaultRoute {
		if err := onLinkRoute(h, idx, netip.MustParsePrefix("0.0.0.0/0")); err != nil {
			return fmt.Errorf("in %s: %w", ns.Name, err)
		}
		if has6 {
			if err := onLinkRoute(h, idx, netip.MustParsePrefix("::/0")); err != nil {
				return fmt.Errorf("in %s: %w", ns.Name, err)
			}
		}
	}
	return nil
}

// podMACs returns the node-side and pod-side MAC of pod veth number n:
// locally administered (02:…), unique within a lab.
func podMACs(n int) (host, pod net.HardwareAddr) {
	host = net.HardwareAddr{0x02, 0x70, 0x78, byte(n >> 16), byte(n >> 8), byte(n)}
	pod = net.HardwareAddr{0x02, 0x70, 0x79, byte(n >> 16), byte(n >> 8), byte(n)}
	return host, pod
}

// wirePod connects a pod namespace to its node the way Calico does:
//
//	pod:  <ip>/32 dev eth0; 169.254.1.1 dev eth0 scope link;
//	      default via 169.254.1.1 dev eth0 (v6: default via fe80::1)
//	      neigh 169.254.1.1 / fe80::1 lladdr <node-side MAC> permanent
//	node: <ip>/32 dev prxpN; neigh <ip> lladdr <pod MAC> permanent
//
// The node side of the veth has no address, so a datapath's MASQUERADE on
// the node picks the node's own address.
func wirePod(nodeNS, podNS netnsutil.NS, hostIf string, seq int, ips []netip.Addr) error {
	hostMAC, podMAC := podMACs(seq)
	nh, err := nodeNS.Handle()
	if err != nil {
		return err
	}
	defer nh.Close()
	hostIdx, err := addVeth(nh, hostIf, hostMAC, 0, podNS, uplinkName, podMAC)
	if err != nil {
		return fmt.Errorf("in %s: %w", nodeNS.Name, err)
	}

	ph, err := podNS.Handle()
	if err != nil {
		return err
	}
	defer ph.Close()
	eth0, err := ph.LinkByName(uplinkName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", uplinkName, podNS.Name, err)
	}
	if err := ph.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("set %s up in %s: %w", uplinkName, podNS.Name, err)
	}
	idx := eth0.Attrs().Index
	var has4, has6 bool
	for _, ip := range ips {
		if err := addHostAddr(ph, eth0, ip); err != nil {
			return fmt.Errorf("in %s: %w", podNS.Name, err)
		}
		has4 = has4 || ip.Is4()
		has6 = has6 || ip.Is6()
	}
	if has4 {
		if err := onLinkRoute(ph, idx, hostPrefix(PodGateway)); err != nil {
			return fmt.Errorf("in %s: %w", podNS.Name, err)
		}
		if err := permanentNeigh(ph, idx, PodGateway, hostMAC); err != nil {
			return fmt.Errorf("in %s: %w", podNS.Name, err)
		}
		if err := viaRoute(ph, idx, netip.MustParsePrefix("0.0.0.0/0"), PodGateway); err != nil {
			return fmt.Errorf("in %s: %w", podNS.Name, err)
		}
	}
	if has6 {
		if err := permanentNeigh(ph, idx, PodGateway6, hostMAC); err != nil {
			return fmt.Errorf("in %s: %w", podNS.Name, err)
		}
		if err := viaRoute(ph, idx, netip.MustParsePrefix("::/0"), PodGateway6); err != nil {
			return fmt.Errorf("in %s: %w", podNS.Name, err)
		}
	}
	for _, ip := range ips {
		if err := onLinkRoute(nh, hostIdx, hostPrefix(ip)); err != nil {
			return fmt.Errorf("in %s: %w", nodeNS.Name, err)
		}
		if err := permanentNeigh(nh, hostIdx, ip, podMAC); err != nil {
			return fmt.Errorf("in %s: %w", nodeNS.Name, err)
		}
	}
	return nil
}

// unwirePod deletes the node side of a pod's veth, which takes the pair,
// the node's route to the pod and its neighbour entries with it at once,
// rather than whenever the kernel gets round to destroying the namespace.
// Equivalent to: ip -n <node> link del <hostIf>
func unwirePod(nodeNS netnsutil.NS, hostIf string) error {
	h, err := nodeNS.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(hostIf)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find %s in %s: %w", hostIf, nodeNS.Name, err)
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("delete %s in %s: %w", hostIf, nodeNS.Name, err)
	}
	return nil
}
