package iptables

import (
	"fmt"
	"net/netip"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Fixtures are built from model structs directly (no YAML), on the lab's
// address plan: nodes, pods and external hosts in 198.18.0.0/16, VIPs in
// 198.19.0.0/16, IPv6 in 2001:db8::/32.

const (
	nodeA = "node-a" // the node under test
	nodeB = "node-b" // a remote node
)

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, addr(s))
	}
	return out
}

// ep is a ready endpoint.
func ep(ip string, port int32, node string) *model.Endpoint {
	return &model.Endpoint{IP: addr(ip), Port: port, Name: ip, NodeName: node, Ready: true, Serving: true}
}

// terminating is a serving, terminating endpoint (not ready).
func terminating(ip string, port int32, node string) *model.Endpoint {
	e := ep(ip, port, node)
	e.Ready, e.Terminating = false, true
	return e
}

// dead is terminating and no longer serving: never used.
func dead(ip string, port int32, node string) *model.Endpoint {
	e := terminating(ip, port, node)
	e.Serving = false
	return e
}

func port(name string, proto model.Protocol, p, nodePort int32, eps ...*model.Endpoint) *model.ServicePort {
	return &model.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: nodePort, Endpoints: eps}
}

func service(ns, name string, typ model.ServiceType, clusterIPs []netip.Addr, ports ...*model.ServicePort) *model.Service {
	return &model.Service{
		Name:                  model.ServiceName{Namespace: ns, Name: name},
		Type:                  typ,
		ClusterIPs:            clusterIPs,
		ExternalTrafficPolicy: model.PolicyCluster,
		InternalTrafficPolicy: model.PolicyCluster,
		Ports:                 ports,
	}
}

func testNode() *model.Node {
	return &model.Node{Name: nodeA, Addresses: addrs("198.18.0.2", "2001:db8:18::2")}
}

func testProxy() datapaths.ProxyConfig {
	return datapaths.ProxyConfig{
		ClusterCIDRs: []netip.Prefix{prefix("198.18.64.0/18"), prefix("2001:db8:64::/48")},
		ServiceCIDRs: []netip.Prefix{prefix("198.19.0.0/16"), prefix("2001:db8:19::/108")},
	}
}

func view(svcs ...*model.Service) *datapaths.NodeView {
	return &datapaths.NodeView{
		Cluster: &model.Cluster{
			Services: svcs,
			Nodes:    []*model.Node{testNode(), {Name: nodeB, Addresses: addrs("198.18.0.3")}},
		},
		Node:  testNode(),
		Proxy: testProxy(),
	}
}

var goldenEnv = Env{RandomFully: true}

// goldenCase is one rendered fixture, compared with testdata/<name>.golden.
type goldenCase struct {
	name string
	view *datapaths.NodeView
	env  Env
}

func goldenCases() []goldenCase {
	v4 := func(s string) []netip.Addr { return addrs(s) }
	var cases []goldenCase
	add := func(name string, v *datapaths.NodeView) {
		cases = append(cases, goldenCase{name: name, view: v, env: goldenEnv})
	}

	add("clusterip-simple", view(
		service("default", "web", model.ClusterIP, v4("198.19.0.10"),
			port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA))),
	))

	add("clusterip-multi-endpoints", view(
		service("default", "web", model.ClusterIP, v4("198.19.0.11"),
			port("http", model.TCP, 80, 0,
				ep("198.18.64.10", 8080, nodeA),
				ep("198.18.65.10", 8080, nodeB),
				ep("198.18.65.11", 8080, nodeB))),
	))

	// More than 16 endpoints: the render then finds chain names and
	// endpoint chains through maps rather than linear scans (linearChains),
	// and this pins that path's output.
	var many []*model.Endpoint
	for i := range 20 {
		node := nodeA
		if i%2 == 1 {
			node = nodeB
		}
		many = append(many, ep(fmt.Sprintf("198.18.%d.%d", 64+i%2, 30+i), 8080, node))
	}
	add("nodeport-many-endpoints", view(
		service("default", "wide", model.NodePort, v4("198.19.0.40"),
			port("http", model.TCP, 80, 30040, many...)),
	))

	// targetPort names resolve per endpoint: each port lists the endpoints
	// (and port numbers) its EndpointSlice port of the same name carried.
	// The unnamed-port Service shows the name without ":port".
	named := service("default", "multi", model.ClusterIP, v4("198.19.0.12"),
		port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA)),
		port("metrics", model.TCP, 9090, 0, ep("198.18.64.11", 9100, nodeA)))
	named.Ports[0].TargetPort = "web"
	named.Ports[1].TargetPort = "prom"
	add("named-target-ports", view(named,
		service("default", "unnamed", model.ClusterIP, v4("198.19.0.13"),
			port("", model.TCP, 80, 0, ep("198.18.64.12", 8080, nodeA))),
	))

	noEp := service("default", "empty", model.LoadBalancer, v4("198.19.0.14"), port("http", model.TCP, 80, 30080))
	noEp.ExternalIPs = v4("198.19.100.14")
	noEp.LoadBalancerIPs = v4("198.19.200.14")
	// Endpoints exist but none is usable: still "no endpoints".
	unusable := service("default", "unusable", model.ClusterIP, v4("198.19.0.15"),
		port("http", model.TCP, 80, 0, dead("198.18.64.20", 8080, nodeA), &model.Endpoint{IP: addr("198.18.65.20"), Port: 8080, NodeName: nodeB, Serving: true}))
	add("no-endpoints", view(noEp, unusable))

	add("nodeport", view(
		service("default", "np", model.NodePort, v4("198.19.0.16"),
			port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB))),
	))

	npa := view(service("default", "np", model.NodePort, v4("198.19.0.16"),
		port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA))))
	npa.Node.Addresses = addrs("198.18.0.2", "198.18.1.2", "2001:db8:18::2")
	npa.Proxy.NodePortAddresses = []netip.Prefix{prefix("198.18.0.0/24"), prefix("127.0.0.1/32"), prefix("2001:db8:18::/64")}
	add("nodeport-addresses", npa)

	lh := view(service("default", "np", model.NodePort, v4("198.19.0.16"),
		port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA))))
	lh.Proxy.LocalhostNodePorts = true
	add("nodeport-localhost", lh)

	// LB, eTP=Local with a local endpoint, source ranges that include the
	// node (so the node's own src=LB-IP traffic is allowed), HCNP.
	lb := service("default", "lb", model.LoadBalancer, v4("198.19.0.17"),
		port("http", model.TCP, 80, 30017, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	lb.ExternalTrafficPolicy = model.PolicyLocal
	lb.HealthCheckNodePort = 32017
	lb.ExternalIPs = v4("198.19.100.17")
	lb.LoadBalancerIPs = v4("198.19.200.17")
	lb.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.192/26"), prefix("198.18.0.0/28")}
	// LB, eTP=Local, only a remote endpoint: external traffic DROPs, pods
	// and the node are short-circuited to the cluster-wide endpoints.
	lbRemote := service("default", "lb-remote", model.LoadBalancer, v4("198.19.0.18"),
		port("http", model.TCP, 80, 30018, ep("198.18.65.11", 8080, nodeB)))
	lbRemote.ExternalTrafficPolicy = model.PolicyLocal
	lbRemote.HealthCheckNodePort = 32018
	lbRemote.LoadBalancerIPs = v4("198.19.200.18")
	lbRemote.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.192/26")}
	// LB, eTP=Cluster with a HCNP set: the HCNP is not opened (kube-proxy
	// opens it only for eTP=Local).
	lbCluster := service("default", "lb-cluster", model.LoadBalancer, v4("198.19.0.19"),
		port("http", model.TCP, 80, 30019, ep("198.18.65.12", 8080, nodeB)))
	lbCluster.HealthCheckNodePort = 32019
	lbCluster.LoadBalancerIPs = v4("198.19.200.19")
	add("loadbalancer", view(lb, lbRemote, lbCluster))

	aff := service("default", "sticky", model.NodePort, v4("198.19.0.20"),
		port("http", model.TCP, 80, 30020, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	aff.SessionAffinity = true
	aff.AffinityTimeout = 600 * time.Second
	affDefault := service("default", "sticky-default", model.ClusterIP, v4("198.19.0.21"),
		port("http", model.TCP, 80, 0, ep("198.18.64.11", 8080, nodeA)))
	affDefault.SessionAffinity = true
	add("affinity", view(aff, affDefault))

	itp := service("default", "itp", model.ClusterIP, v4("198.19.0.22"),
		port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	itp.InternalTrafficPolicy = model.PolicyLocal
	itpRemote := service("default", "itp-remote", model.ClusterIP, v4("198.19.0.23"),
		port("http", model.TCP, 80, 0, ep("198.18.65.11", 8080, nodeB)))
	itpRemote.InternalTrafficPolicy = model.PolicyLocal
	// iTP=Local and eTP=Local on an externally accessible Service: the
	// KUBE-SVC chain must still exist for the EXT chain's short-circuit.
	both := service("default", "itp-etp", model.NodePort, v4("198.19.0.24"),
		port("http", model.TCP, 80, 30024, ep("198.18.64.12", 8080, nodeA), ep("198.18.65.12", 8080, nodeB)))
	both.InternalTrafficPolicy = model.PolicyLocal
	both.ExternalTrafficPolicy = model.PolicyLocal
	add("itp-local", view(itp, itpRemote, both))

	// Cluster policy: no ready endpoint anywhere, so the serving and
	// terminating ones are used; the non-serving one never is.
	termCluster := service("default", "term-cluster", model.ClusterIP, v4("198.19.0.25"),
		port("http", model.TCP, 80, 0,
			terminating("198.18.64.10", 8080, nodeA),
			dead("198.18.64.11", 8080, nodeA),
			terminating("198.18.65.10", 8080, nodeB)))
	// Local policy: local endpoints are only terminating, a remote one is
	// ready: external traffic goes to the local terminating ones, cluster
	// traffic to the remote ready one.
	termLocal := service("default", "term-local", model.LoadBalancer, v4("198.19.0.26"),
		port("http", model.TCP, 80, 30026,
			terminating("198.18.64.12", 8080, nodeA),
			dead("198.18.64.13", 8080, nodeA),
			ep("198.18.65.12", 8080, nodeB)))
	termLocal.ExternalTrafficPolicy = model.PolicyLocal
	termLocal.HealthCheckNodePort = 32026
	termLocal.LoadBalancerIPs = v4("198.19.200.26")
	// eTP=Local, only a remote terminating endpoint: DROP for external
	// traffic (not REJECT: the endpoint exists), cluster fallback inside.
	termRemote := service("default", "term-remote", model.LoadBalancer, v4("198.19.0.27"),
		port("http", model.TCP, 80, 30027, terminating("198.18.65.13", 8080, nodeB)))
	termRemote.ExternalTrafficPolicy = model.PolicyLocal
	termRemote.HealthCheckNodePort = 32027
	termRemote.LoadBalancerIPs = v4("198.19.200.27")
	add("terminating-fallback", view(termCluster, termLocal, termRemote))

	v6 := service("default", "web6", model.NodePort, addrs("2001:db8:19::10"),
		port("http", model.TCP, 80, 30030, ep("2001:db8:64::10", 8080, nodeA), ep("2001:db8:65::10", 8080, nodeB)))
	dual := service("default", "dual", model.LoadBalancer, addrs("198.19.0.31", "2001:db8:19::31"),
		port("dns", model.UDP, 53, 30031,
			ep("198.18.64.11", 5353, nodeA), ep("2001:db8:64::11", 5353, nodeA)))
	dual.ExternalIPs = addrs("198.19.100.31", "2001:db8:100::31")
	dual.LoadBalancerIPs = addrs("198.19.200.31", "2001:db8:200::31")
	dual.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.192/26"), prefix("2001:db8:18::/64")}
	add("ipv6", view(v6, dual))

	add("sctp-udp", view(
		service("default", "sip", model.NodePort, v4("198.19.0.40"),
			port("sip", model.SCTP, 5060, 30040, ep("198.18.64.10", 5060, nodeA)),
			port("sip-udp", model.UDP, 5060, 30041, ep("198.18.64.10", 5060, nodeA))),
	))

	headless := service("default", "headless", model.ClusterIP, nil,
		port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA)))
	headless.Headless = true
	extName := service("default", "extname", model.ExternalName, v4("198.19.55.4"),
		port("http", model.TCP, 80, 0))
	add("headless-externalname", view(headless, extName))

	masqAll := view(service("default", "web", model.ClusterIP, v4("198.19.0.10"),
		port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA))))
	masqAll.Proxy.MasqueradeAll = true
	add("masquerade-all", masqAll)

	// No local-traffic detector: no "! -s <podCIDR>" masquerade, no pod
	// short-circuit in EXT chains; no random-fully, liberal conntrack.
	noDet := view(
		service("default", "web", model.ClusterIP, v4("198.19.0.10"),
			port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA))),
		lbRemote)
	noDet.Proxy.ClusterCIDRs = nil
	cases = append(cases, goldenCase{name: "no-detector", view: noDet, env: Env{RandomFully: false, ConntrackTCPLiberal: true}})
	return cases
}
