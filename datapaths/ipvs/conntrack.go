package ipvs

// This file is a copy of datapaths/iptables/conntrack.go: kube-proxy runs
// the same conntrack.CleanStaleEntries after every sync in every mode, and
// the iptables package keeps its filter unexported. Keep the two in step.

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// staleUDPFilter selects the UDP conntrack entries that kube-proxy's
// conntrack.CleanStaleEntries deletes after a sync: entries whose original
// destination is a Service frontend (ClusterIP, externalIP or LB IP with
// the Service port, or any address with a NodePort) and whose reply source
// (where the flow was DNATed to) is not a serving endpoint of that Service
// port. Such an entry would otherwise keep steering a long-lived UDP
// 5-tuple to a gone endpoint (or keep a black hole) forever. TCP and SCTP
// are left alone: established connections to removed endpoints die on
// their own, and the proxy must not cut them.
//
// It implements netlink.CustomConntrackFilter.
type staleUDPFilter struct {
	// frontends maps Service IP:port to the serving endpoints (IP:port).
	frontends map[netip.AddrPort]map[netip.AddrPort]bool
	// nodePorts maps a NodePort to the serving endpoints.
	nodePorts map[uint16]map[netip.AddrPort]bool
}

var _ netlink.CustomConntrackFilter = (*staleUDPFilter)(nil)

// newStaleUDPFilter builds the filter for one family from the view. Like
// kube-proxy, it ignores traffic policies, topology and terminating state:
// any serving endpoint keeps its flows, and a Service port with no serving
// endpoint at all is skipped (its entries are left to expire).
func newStaleUDPFilter(view *datapaths.NodeView, f Family) *staleUDPFilter {
	flt := &staleUDPFilter{
		frontends: map[netip.AddrPort]map[netip.AddrPort]bool{},
		nodePorts: map[uint16]map[netip.AddrPort]bool{},
	}
	if view == nil || view.Cluster == nil {
		return flt
	}
	for _, svc := range view.Cluster.Services {
		clusterIP, ok := clusterIPOf(svc, f)
		if !ok {
			continue
		}
		for _, p := range svc.Ports {
			if p.Protocol != model.UDP {
				continue
			}
			serving := map[netip.AddrPort]bool{}
			for _, ep := range p.Endpoints {
				if f.has(ep.IP) && ep.Serving {
					serving[netip.AddrPortFrom(ep.IP.Unmap(), uint16(ep.Port))] = true
				}
			}
			if len(serving) == 0 {
				continue
			}
			port := uint16(p.Port)
			flt.frontends[netip.AddrPortFrom(clusterIP.Unmap(), port)] = serving
			for _, ip := range filterAddrs(svc.LoadBalancerIPs, f) {
				flt.frontends[netip.AddrPortFrom(ip.Unmap(), port)] = serving
			}
			for _, ip := range filterAddrs(svc.ExternalIPs, f) {
				flt.frontends[netip.AddrPortFrom(ip.Unmap(), port)] = serving
			}
			if p.NodePort != 0 {
				flt.nodePorts[uint16(p.NodePort)] = serving
			}
		}
	}
	return flt
}

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// MatchConntrackFlow reports whether the flow is a stale UDP Service flow.
func (f *staleUDPFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow == nil || flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	reply := addrPort(flow.Reverse.SrcIP, flow.Reverse.SrcPort)
	if eps, ok := f.frontends[addrPort(flow.Forward.DstIP, flow.Forward.DstPort)]; ok && !eps[reply] {
		return true
	}
	if eps, ok := f.nodePorts[flow.Forward.DstPort]; ok && !eps[reply] {
		return true
	}
	return false
}

// cleanStaleUDP deletes stale UDP entries of both families in the node's
// namespace and returns how many it deleted.
// Equivalent to, per stale entry: conntrack -D -p udp --orig-dst <vip> --orig-port-dst <port> --reply-src <old endpoint>
func (p *Proxier) cleanStaleUDP(view *datapaths.NodeView) (int, error) {
	h, err := p.cfg.NS.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	total := 0
	for _, f := range families {
		family := netlink.InetFamily(unix.AF_INET)
		if f == IPv6 {
			family = netlink.InetFamily(unix.AF_INET6)
		}
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, family, newStaleUDPFilter(view, f))
		total += int(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
