package nftables

// This file is self-contained (it needs only the model and netlink) so it
// can move to a package shared by every datapath.

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/model"
)

// staleUDPFilter selects the conntrack entries kube-proxy's
// conntrack.CleanStaleEntries deletes after every sync: UDP entries whose
// original destination is a Service frontend (a ClusterIP, external IP or
// load-balancer IP with the Service port, or any address with a NodePort)
// and whose reply source, the endpoint the flow was DNATed to, is not a
// serving endpoint of that Service port. A client that keeps sending from
// one UDP 5-tuple would otherwise stay pinned to a gone endpoint (or to a
// black hole installed while there was none) for as long as it keeps
// sending. TCP and SCTP entries are left alone: the proxy does not cut
// established connections.
//
// Like kube-proxy it ignores traffic policies, topology and terminating
// state (any serving endpoint keeps its flows, so UDP behaves like TCP),
// compares endpoint IPs only (not ports), and skips a Service port with no
// serving endpoint at all (its entries are left to expire).
//
// It implements netlink.CustomConntrackFilter.
type staleUDPFilter struct {
	// frontends maps Service IP:port to the serving endpoint IPs.
	frontends map[netip.AddrPort]map[netip.Addr]bool
	// nodePorts maps a NodePort to the serving endpoint IPs.
	nodePorts map[uint16]map[netip.Addr]bool
}

var _ netlink.CustomConntrackFilter = (*staleUDPFilter)(nil)

// newStaleUDPFilter builds the filter for one address family (ipv6 false:
// IPv4) from the whole cluster, as one family's kube-proxy sees it.
func newStaleUDPFilter(cluster *model.Cluster, ipv6 bool) *staleUDPFilter {
	flt := &staleUDPFilter{frontends: map[netip.AddrPort]map[netip.Addr]bool{}, nodePorts: map[uint16]map[netip.Addr]bool{}}
	if cluster == nil {
		return flt
	}
	inFamily := func(a netip.Addr) bool { return a.IsValid() && a.Unmap().Is4() != ipv6 }
	for _, svc := range cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		var clusterIP netip.Addr
		for _, ip := range svc.ClusterIPs {
			if inFamily(ip) {
				clusterIP = ip.Unmap()
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
			serving := map[netip.Addr]bool{}
			for _, ep := range p.Endpoints {
				if inFamily(ep.IP) && ep.Serving {
					serving[ep.IP.Unmap()] = true
				}
			}
			if len(serving) == 0 {
				continue
			}
			port := uint16(p.Port)
			flt.frontends[netip.AddrPortFrom(clusterIP, port)] = serving
			for _, ips := range [][]netip.Addr{svc.LoadBalancerIPs, svc.ExternalIPs} {
				for _, ip := range ips {
					if inFamily(ip) {
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

func netAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// MatchConntrackFlow reports whether flow is a stale UDP Service flow.
func (f *staleUDPFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow == nil || flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	replySrc := netAddr(flow.Reverse.SrcIP)
	if eps, ok := f.frontends[netip.AddrPortFrom(netAddr(flow.Forward.DstIP), flow.Forward.DstPort)]; ok && !eps[replySrc] {
		return true
	}
	if eps, ok := f.nodePorts[flow.Forward.DstPort]; ok && !eps[replySrc] {
		return true
	}
	return false
}

// empty reports whether the filter can match nothing, so the conntrack
// table need not be read at all.
func (f *staleUDPFilter) empty() bool { return len(f.frontends) == 0 && len(f.nodePorts) == 0 }

// cleanStaleUDPConntrack deletes the stale UDP entries of both families
// through h (a netlink handle in the node's namespace) and returns how many
// it deleted. Equivalent to, per stale entry:
//
//	conntrack -D -p udp --orig-dst <service IP> --orig-port-dst <port> --reply-src <old endpoint>
//	conntrack -D -p udp --orig-port-dst <nodePort> --reply-src <old endpoint>
func cleanStaleUDPConntrack(h *netlink.Handle, cluster *model.Cluster) (int, error) {
	total := 0
	for _, ipv6 := range []bool{false, true} {
		flt := newStaleUDPFilter(cluster, ipv6)
		if flt.empty() {
			continue
		}
		family, name := netlink.InetFamily(unix.AF_INET), "IPv4"
		if ipv6 {
			family, name = netlink.InetFamily(unix.AF_INET6), "IPv6"
		}
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, family, flt)
		total += int(n)
		if err != nil {
			return total, fmt.Errorf("delete stale %s UDP conntrack entries: %w", name, err)
		}
	}
	return total, nil
}
