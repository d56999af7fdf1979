package iptables

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"proxyrig/model"
)

func flow(proto uint8, origDst string, origDport uint16, replySrc string, replySport uint16) *netlink.ConntrackFlow {
	f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET}
	f.Forward = netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP("198.18.0.200"), SrcPort: 40000, DstIP: net.ParseIP(origDst), DstPort: origDport}
	f.Reverse = netlink.IPTuple{Protocol: proto, SrcIP: net.ParseIP(replySrc), SrcPort: replySport, DstIP: net.ParseIP("198.18.0.200"), DstPort: 40000}
	return f
}

// The scenario of kube-proxy's conntrack cleanup tests (CT-04), on the lab's
// address plan: one Service with TCP, UDP and SCTP ports, a serving
// endpoint, a non-serving one, and one that was deleted.
func TestStaleUDPFilter(t *testing.T) {
	serving := &model.Endpoint{IP: addr("198.18.64.4"), Port: 8000, NodeName: nodeA, Ready: true, Serving: true}
	notServing := &model.Endpoint{IP: addr("198.18.65.5"), Port: 8000, NodeName: nodeB, Terminating: true}
	eps := []*model.Endpoint{serving, notServing}
	svc := service("default", "ct", model.LoadBalancer, addrs("198.19.1.1"),
		port("tcp", model.TCP, 8000, 0, eps...),
		port("udp", model.UDP, 8000, 32000, eps...),
		port("sctp", model.SCTP, 8000, 32001, eps...))
	svc.ExternalIPs = addrs("198.19.100.100")
	svc.LoadBalancerIPs = addrs("198.19.200.4")
	empty := service("default", "empty", model.ClusterIP, addrs("198.19.1.2"), port("udp", model.UDP, 53, 0))
	flt := newStaleUDPFilter(view(svc, empty), IPv4)

	const udp, tcp, sctp = unix.IPPROTO_UDP, unix.IPPROTO_TCP, unix.IPPROTO_SCTP
	cases := []struct {
		name string
		flow *netlink.ConntrackFlow
		want bool
	}{
		{"UDP to ClusterIP, serving endpoint", flow(udp, "198.19.1.1", 8000, "198.18.64.4", 8000), false},
		{"UDP to ClusterIP, non-serving endpoint", flow(udp, "198.19.1.1", 8000, "198.18.65.5", 8000), true},
		{"UDP to ClusterIP, deleted endpoint", flow(udp, "198.19.1.1", 8000, "198.18.66.6", 8000), true},
		{"UDP to ClusterIP, serving IP but old port", flow(udp, "198.19.1.1", 8000, "198.18.64.4", 9000), true},
		{"UDP to ClusterIP, never DNATed (black hole)", flow(udp, "198.19.1.1", 8000, "198.19.1.1", 8000), true},
		{"UDP to external IP, deleted endpoint", flow(udp, "198.19.100.100", 8000, "198.18.66.6", 8000), true},
		{"UDP to LB IP, deleted endpoint", flow(udp, "198.19.200.4", 8000, "198.18.66.6", 8000), true},
		{"UDP to LB IP, serving endpoint", flow(udp, "198.19.200.4", 8000, "198.18.64.4", 8000), false},
		{"UDP to NodePort, deleted endpoint", flow(udp, "198.18.0.2", 32000, "198.18.66.6", 8000), true},
		{"UDP to NodePort, serving endpoint", flow(udp, "198.18.0.2", 32000, "198.18.64.4", 8000), false},
		{"UDP to a non-Service port", flow(udp, "198.19.1.1", 3000, "198.18.66.6", 3000), false},
		{"UDP to a Service without serving endpoints", flow(udp, "198.19.1.2", 53, "198.18.66.6", 53), false},
		{"TCP to ClusterIP, deleted endpoint", flow(tcp, "198.19.1.1", 8000, "198.18.66.6", 8000), false},
		{"SCTP to ClusterIP, deleted endpoint", flow(sctp, "198.19.1.1", 8000, "198.18.66.6", 8000), false},
		{"SCTP to its NodePort, deleted endpoint", flow(sctp, "198.18.0.2", 32001, "198.18.66.6", 8000), false},
	}
	for _, c := range cases {
		if got := flt.MatchConntrackFlow(c.flow); got != c.want {
			t.Errorf("%s: delete = %v, want %v", c.name, got, c.want)
		}
	}
	if flt.MatchConntrackFlow(nil) {
		t.Error("nil flow matched")
	}
}

func TestStaleUDPFilterPerFamily(t *testing.T) {
	dual := service("default", "dual", model.ClusterIP, addrs("198.19.0.31", "2001:db8:19::31"),
		port("dns", model.UDP, 53, 0, ep("198.18.64.11", 5353, nodeA), ep("2001:db8:64::11", 5353, nodeA)))
	v := view(dual)
	f4, f6 := newStaleUDPFilter(v, IPv4), newStaleUDPFilter(v, IPv6)
	if f4.Frontends() != 1 || f6.Frontends() != 1 {
		t.Fatalf("frontends: v4 %d, v6 %d", f4.Frontends(), f6.Frontends())
	}
	stale6 := &netlink.ConntrackFlow{FamilyType: unix.AF_INET6}
	stale6.Forward = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, DstIP: net.ParseIP("2001:db8:19::31"), DstPort: 53}
	stale6.Reverse = netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.ParseIP("2001:db8:64::99"), SrcPort: 5353}
	if !f6.MatchConntrackFlow(stale6) {
		t.Error("stale IPv6 flow not matched")
	}
	stale6.Reverse.SrcIP = net.ParseIP("2001:db8:64::11")
	if f6.MatchConntrackFlow(stale6) {
		t.Error("IPv6 flow to a serving endpoint matched")
	}
}
