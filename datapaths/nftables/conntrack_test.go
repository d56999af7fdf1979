package nftables

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/model"
)

// ctFlow is a conntrack entry from a client to origDst:origDport that was
// DNATed to replySrc:replySport.
func ctFlow(proto uint8, origDst string, origDport uint16, replySrc string, replySport uint16) *netlink.ConntrackFlow {
	client := "198.18.127.1"
	family := uint8(unix.AF_INET)
	// netlink sends IPv4 tuples as they are: 4 bytes, not net.IP's 16.
	ip := func(s string) net.IP { return net.ParseIP(s).To4() }
	if net.ParseIP(origDst).To4() == nil {
		client, family = "2001:db8:127::1", unix.AF_INET6
		ip = net.ParseIP
	}
	return &netlink.ConntrackFlow{
		FamilyType: family,
		Forward:    netlink.IPTuple{Protocol: proto, SrcIP: ip(client), SrcPort: 40000, DstIP: ip(origDst), DstPort: origDport},
		Reverse:    netlink.IPTuple{Protocol: proto, SrcIP: ip(replySrc), SrcPort: replySport, DstIP: ip(client), DstPort: 40000},
	}
}

// conntrackCluster is kube-proxy's TestCleanStaleEntries scenario (CT-04)
// on the lab's plan: a dual-stack Service with TCP, UDP and SCTP on port
// 8000, a serving, a non-serving and a deleted endpoint per family, and a
// UDP Service without endpoints.
func conntrackCluster() *model.Cluster {
	serving := &model.Endpoint{IP: addr("198.18.64.4"), Port: 8000, NodeName: nodeA, Ready: true, Serving: true}
	notServing := &model.Endpoint{IP: addr("198.18.65.5"), Port: 8000, NodeName: nodeB, Terminating: true}
	serving6 := &model.Endpoint{IP: addr("2001:db8:64::4"), Port: 8000, NodeName: nodeA, Ready: true, Serving: true}
	// Terminating but still serving: kube-proxy keeps its flows.
	draining := &model.Endpoint{IP: addr("198.18.65.7"), Port: 8000, NodeName: nodeB, Serving: true, Terminating: true}
	eps := []*model.Endpoint{serving, notServing, serving6, draining}
	svc := service("default", "ct", model.LoadBalancer, addrs("198.19.1.1", "2001:db8:19::1:1"),
		port("tcp", model.TCP, 8000, 0, eps...),
		port("udp", model.UDP, 8000, 32000, eps...),
		port("sctp", model.SCTP, 8000, 32001, eps...))
	svc.ExternalIPs = addrs("198.19.100.100")
	svc.LoadBalancerIPs = addrs("198.19.200.4", "2001:db8:200::4")
	empty := service("default", "empty", model.ClusterIP, addrs("198.19.1.2"), port("udp", model.UDP, 53, 0))
	headless := service("default", "headless", model.ClusterIP, nil, port("udp", model.UDP, 53, 0, serving))
	headless.Headless = true
	return &model.Cluster{Services: []*model.Service{svc, empty, headless}}
}

type ctCase struct {
	name   string
	flow   *netlink.ConntrackFlow
	delete bool
}

func conntrackCases() []ctCase {
	const udp, tcp, sctp = unix.IPPROTO_UDP, unix.IPPROTO_TCP, unix.IPPROTO_SCTP
	return []ctCase{
		{"UDP to ClusterIP, serving endpoint", ctFlow(udp, "198.19.1.1", 8000, "198.18.64.4", 8000), false},
		{"UDP to ClusterIP, draining endpoint", ctFlow(udp, "198.19.1.1", 8000, "198.18.65.7", 8000), false},
		{"UDP to ClusterIP, non-serving endpoint", ctFlow(udp, "198.19.1.1", 8000, "198.18.65.5", 8000), true},
		{"UDP to ClusterIP, deleted endpoint", ctFlow(udp, "198.19.1.1", 8000, "198.18.66.6", 8000), true},
		// kube-proxy compares endpoint IPs, not ports.
		{"UDP to ClusterIP, serving IP on another port", ctFlow(udp, "198.19.1.1", 8000, "198.18.64.4", 9000), false},
		{"UDP to ClusterIP, never DNATed (a black hole)", ctFlow(udp, "198.19.1.1", 8000, "198.19.1.1", 8000), true},
		{"UDP to external IP, deleted endpoint", ctFlow(udp, "198.19.100.100", 8000, "198.18.66.6", 8000), true},
		{"UDP to LB IP, deleted endpoint", ctFlow(udp, "198.19.200.4", 8000, "198.18.66.6", 8000), true},
		{"UDP to LB IP, serving endpoint", ctFlow(udp, "198.19.200.4", 8000, "198.18.64.4", 8000), false},
		{"UDP to NodePort, deleted endpoint", ctFlow(udp, "198.18.0.2", 32000, "198.18.66.6", 8000), true},
		{"UDP to NodePort, serving endpoint", ctFlow(udp, "198.18.0.2", 32000, "198.18.64.4", 8000), false},
		{"UDP to a port no Service has", ctFlow(udp, "198.19.1.1", 3000, "198.18.66.6", 3000), false},
		{"UDP to a Service without serving endpoints", ctFlow(udp, "198.19.1.2", 53, "198.18.66.6", 53), false},
		{"TCP to ClusterIP, deleted endpoint", ctFlow(tcp, "198.19.1.1", 8000, "198.18.66.6", 8000), false},
		{"SCTP to ClusterIP, deleted endpoint", ctFlow(sctp, "198.19.1.1", 8000, "198.18.66.6", 8000), false},
		{"SCTP to its NodePort, deleted endpoint", ctFlow(sctp, "198.18.0.2", 32001, "198.18.66.6", 8000), false},
		{"IPv6 UDP to ClusterIP, serving endpoint", ctFlow(udp, "2001:db8:19::1:1", 8000, "2001:db8:64::4", 8000), false},
		{"IPv6 UDP to ClusterIP, deleted endpoint", ctFlow(udp, "2001:db8:19::1:1", 8000, "2001:db8:66::6", 8000), true},
		{"IPv6 UDP to LB IP, deleted endpoint", ctFlow(udp, "2001:db8:200::4", 8000, "2001:db8:66::6", 8000), true},
		{"IPv6 UDP to NodePort, deleted endpoint", ctFlow(udp, "2001:db8:18::2", 32000, "2001:db8:66::6", 8000), true},
		// The IPv4-only external IP has no IPv6 frontend.
		{"IPv6 UDP to an IPv4 Service's port", ctFlow(udp, "2001:db8:19::9", 8000, "2001:db8:66::6", 8000), false},
	}
}

func TestStaleUDPFilter(t *testing.T) {
	c := conntrackCluster()
	v4, v6 := newStaleUDPFilter(c, false), newStaleUDPFilter(c, true)
	for _, tc := range conntrackCases() {
		flt := v4
		if tc.flow.FamilyType == unix.AF_INET6 {
			flt = v6
		}
		if got := flt.MatchConntrackFlow(tc.flow); got != tc.delete {
			t.Errorf("%s: delete = %v, want %v", tc.name, got, tc.delete)
		}
	}
	if !newStaleUDPFilter(&model.Cluster{}, false).empty() || newStaleUDPFilter(nil, true) == nil {
		t.Error("a cluster without UDP Services must give an empty filter")
	}
}
