// Package staleudp is kube-proxy's conntrack.CleanStaleEntries for the
// modes that leave load balancing to the kernel's conntrack (iptables and
// IPVS share it, as kube-proxy's modes share pkg/proxy/conntrack; nftables
// keeps its own, which matches on the endpoint IP only, as kube-proxy's
// nftables mode does).
package staleudp

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Filter selects the UDP conntrack entries that kube-proxy's
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
type Filter struct {
	// frontends maps Service IP:port to the serving endpoints (IP:port).
	frontends map[netip.AddrPort]map[netip.AddrPort]bool
	// nodePorts maps a NodePort to the serving endpoints.
	nodePorts map[uint16]map[netip.AddrPort]bool
}

var _ netlink.CustomConntrackFilter = (*Filter)(nil)

// New builds the filter for one family (IPv6 when v6) from the view. Like
// kube-proxy, it ignores traffic policies, topology and terminating state:
// any serving endpoint keeps its flows, and a Service port with no serving
// endpoint at all is skipped (its entries are left to expire).
func New(view *datapaths.NodeView, v6 bool) *Filter {
	flt := &Filter{
		frontends: map[netip.AddrPort]map[netip.AddrPort]bool{},
		nodePorts: map[uint16]map[netip.AddrPort]bool{},
	}
	if view == nil || view.Cluster == nil {
		return flt
	}
	has := func(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is6() == v6 }
	for _, svc := range view.Cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		var clusterIP netip.Addr
		for _, ip := range svc.ClusterIPs {
			if has(ip) {
				clusterIP = ip
				break
			}
		}
		if !clusterIP.IsValid() {
			continue
		}
		for _, p := range svc.Ports {
			if p.Protocol != model.UDP {
				continue
			}
			serving := map[netip.AddrPort]bool{}
			for _, ep := range p.Endpoints {
				if has(ep.IP) && ep.Serving {
					serving[netip.AddrPortFrom(ep.IP.Unmap(), uint16(ep.Port))] = true
				}
			}
			if len(serving) == 0 {
				continue
			}
			port := uint16(p.Port)
			flt.frontends[netip.AddrPortFrom(clusterIP.Unmap(), port)] = serving
			for _, list := range [][]netip.Addr{svc.LoadBalancerIPs, svc.ExternalIPs} {
				for _, ip := range list {
					if has(ip) {
						flt.frontends[netip.AddrPortFrom(ip.Unmap(), port)] = serving
					}
				}
			}
			if p.NodePort != 0 {
				flt.nodePorts[uint16(p.NodePort)] = serving
			}
		}
	}
	return flt
}

// Frontends is how many Service IP:port frontends the filter watches.
func (f *Filter) Frontends() int { return len(f.frontends) }

func addrPort(ip net.IP, port uint16) netip.AddrPort {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port)
}

// MatchConntrackFlow reports whether the flow is a stale UDP Service flow.
func (f *Filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
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

// Clean deletes stale UDP entries of both families through h (a handle in
// the node's namespace) and returns how many it deleted.
// Equivalent to, per stale entry: conntrack -D -p udp --orig-dst <vip> --orig-port-dst <port> --reply-src <old endpoint>
func Clean(h *netlink.Handle, view *datapaths.NodeView) (int, error) {
	total := 0
	for _, v6 := range []bool{false, true} {
		family := netlink.InetFamily(unix.AF_INET)
		if v6 {
			family = netlink.InetFamily(unix.AF_INET6)
		}
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, family, New(view, v6))
		total += int(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
