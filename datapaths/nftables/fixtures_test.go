package nftables

import (
	"net/netip"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Fixtures follow the lab's address plan: nodes, pods and external hosts
// in 198.18.0.0/16 (node-a's pods 198.18.64.x, node-b's 198.18.65.x),
// VIPs, external IPs and LB IPs in 198.19.0.0/16, IPv6 in 2001:db8::/32.

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

// terminating is serving and terminating, not ready.
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
	// A secondary IPv4 address: with the default --nodeport-addresses it
	// must not accept NodePorts (primary only).
	return &model.Node{Name: nodeA, Addresses: addrs("198.18.0.2", "198.18.1.2", "2001:db8:18::2")}
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
			Nodes:    []*model.Node{testNode(), {Name: nodeB, Addresses: addrs("198.18.0.3", "2001:db8:18::3")}},
		},
		Node:  testNode(),
		Proxy: testProxy(),
	}
}

// goldenCase is one fixture, compared with testdata/<name>.golden.
type goldenCase struct {
	name string
	view *datapaths.NodeView
}

// overallYAML is kube-proxy's TestOverallNFTablesRules moved into the lab's
// address plan, as kubectl would print it: a ClusterIP Service, an eTP=Local
// LoadBalancer whose only endpoint has no nodeName (so is not local), a
// NodePort, a ClusterIP Service with an external IP and a local endpoint (kube-proxy's
// test makes it a NodePort without a nodePort, which the model refuses), a
// LoadBalancer with source ranges and ClientIP affinity, and a Service
// without endpoints.
const overallYAML = `
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  clusterIP: 198.19.0.41
  ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: ns2}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 30000
  clusterIP: 198.19.0.42
  externalIPs: [198.19.99.22]
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]
status:
  loadBalancer: {ingress: [{ip: 198.19.200.4}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc3, namespace: ns3}
spec:
  type: NodePort
  clusterIP: 198.19.0.43
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3003}]
---
apiVersion: v1
kind: Service
metadata: {name: svc4, namespace: ns4}
spec:
  type: ClusterIP
  clusterIP: 198.19.0.44
  externalIPs: [198.19.99.33]
  ports: [{name: p80, port: 80, protocol: TCP, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: svc5, namespace: ns5}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Cluster
  clusterIP: 198.19.0.45
  loadBalancerSourceRanges: [" 198.18.0.128/25"]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10800}}
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3002}]
status:
  loadBalancer: {ingress: [{ip: 198.19.200.8}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc6, namespace: ns6}
spec:
  clusterIP: 198.19.0.46
  ports: [{name: p80, port: 80, protocol: TCP, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-abc, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
endpoints: [{addresses: [198.18.65.1]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc2-abc, namespace: ns2, labels: {kubernetes.io/service-name: svc2}}
addressType: IPv4
endpoints: [{addresses: [198.18.65.2]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc3-abc, namespace: ns3, labels: {kubernetes.io/service-name: svc3}}
addressType: IPv4
endpoints: [{addresses: [198.18.65.3]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc4-abc, namespace: ns4, labels: {kubernetes.io/service-name: svc4}}
addressType: IPv4
endpoints:
- {addresses: [198.18.65.4]}
- {addresses: [198.18.64.5], nodeName: node-a}
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc5-abc, namespace: ns5, labels: {kubernetes.io/service-name: svc5}}
addressType: IPv4
endpoints: [{addresses: [198.18.65.3]}]
ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 198.18.0.2}]
`

// overallView parses overallYAML as `proxyrig lab` would.
func overallView() (*datapaths.NodeView, error) {
	c, err := model.Parse("overall.yaml", []byte(overallYAML))
	if err != nil {
		return nil, err
	}
	return &datapaths.NodeView{Cluster: c, Node: c.Node(nodeA), Proxy: testProxy()}, nil
}

func goldenCases() []goldenCase {
	v4 := func(s string) []netip.Addr { return addrs(s) }
	var cases []goldenCase
	add := func(name string, v *datapaths.NodeView) { cases = append(cases, goldenCase{name: name, view: v}) }

	if v, err := overallView(); err == nil {
		add("overall-yaml", v)
	} else {
		panic(err)
	}

	add("empty", view())

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

	// kube-proxy's TestClusterIPGeneral: several ports, a targetPort, and
	// TCP, UDP and SCTP on the same port number; an unnamed port.
	add("clusterip-general", view(
		service("ns2", "svc2", model.ClusterIP, v4("198.19.0.42"),
			port("http", model.TCP, 80, 0, ep("198.18.64.1", 80, nodeA), ep("198.18.65.1", 80, nodeB)),
			port("https", model.TCP, 443, 0, ep("198.18.64.1", 8443, nodeA), ep("198.18.65.1", 8443, nodeB)),
			port("dns-udp", model.UDP, 53, 0, ep("198.18.64.1", 53, nodeA), ep("198.18.65.1", 53, nodeB)),
			port("dns-tcp", model.TCP, 53, 0, ep("198.18.64.1", 5353, nodeA), ep("198.18.65.1", 5353, nodeB)),
			port("dns-sctp", model.SCTP, 53, 0, ep("198.18.64.1", 53, nodeA), ep("198.18.65.1", 53, nodeB))),
		service("default", "unnamed", model.ClusterIP, v4("198.19.0.13"),
			port("", model.TCP, 80, 0, ep("198.18.64.12", 8080, nodeA))),
	))

	noEp := service("default", "empty", model.LoadBalancer, v4("198.19.0.14"), port("http", model.TCP, 80, 30080))
	noEp.ExternalIPs = v4("198.19.100.14")
	noEp.LoadBalancerIPs = v4("198.19.200.14")
	// Endpoints exist but none is usable: still "no endpoints" (REJECT).
	unusable := service("default", "unusable", model.ClusterIP, v4("198.19.0.15"),
		port("http", model.TCP, 80, 0, dead("198.18.64.20", 8080, nodeA), &model.Endpoint{IP: addr("198.18.65.20"), Port: 8080, NodeName: nodeB, Serving: true}))
	add("no-endpoints", view(noEp, unusable))

	add("nodeport", view(
		service("default", "np", model.NodePort, v4("198.19.0.16"),
			port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB))),
	))

	// Explicit --nodeport-addresses: the secondary IP is in, localhost is
	// ignored (never served in nftables mode).
	npa := view(service("default", "np", model.NodePort, v4("198.19.0.16"),
		port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA))))
	npa.Proxy.NodePortAddresses = []netip.Prefix{prefix("198.18.0.0/23"), prefix("127.0.0.1/32"), prefix("2001:db8:18::/64")}
	add("nodeport-addresses", npa)

	// --nodeport-addresses 0.0.0.0/0 (and nothing for IPv6, which falls
	// back to the same): every local address but localhost.
	npAll := view(service("default", "np", model.NodePort, v4("198.19.0.16"),
		port("http", model.TCP, 80, 30016, ep("198.18.64.10", 8080, nodeA))))
	npAll.Proxy.NodePortAddresses = []netip.Prefix{prefix("0.0.0.0/0")}
	npAll.Proxy.LocalhostNodePorts = true // iptables-only; ignored here
	add("nodeport-match-all", npAll)

	// kube-proxy's TestLoadBalancer: two LB IPs, source ranges that
	// include the node (so the LB IPs themselves are allowed as sources).
	lb := service("ns1", "svc1", model.LoadBalancer, v4("198.19.0.41"),
		port("p80", model.TCP, 80, 3001, ep("198.18.65.1", 80, nodeB)))
	lb.LoadBalancerIPs = addrs("198.19.200.4", "198.19.200.8")
	lb.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.0/24"), prefix("198.18.128.0/25")}
	// Source ranges without the node: no LB-IP sources.
	lbNoNode := service("ns1", "svc2", model.LoadBalancer, v4("198.19.0.42"),
		port("p80", model.TCP, 80, 3002, ep("198.18.65.2", 80, nodeB)))
	lbNoNode.LoadBalancerIPs = addrs("198.19.200.12")
	lbNoNode.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.128.0/25")}
	add("loadbalancer-source-ranges", view(lb, lbNoNode))

	// eTP=Local with a local and a remote endpoint, and with only a remote
	// one; a HCNP (served by the lab, not by rules).
	etp := service("default", "lb", model.LoadBalancer, v4("198.19.0.17"),
		port("http", model.TCP, 80, 30017, ep("198.18.64.10", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
	etp.ExternalTrafficPolicy = model.PolicyLocal
	etp.HealthCheckNodePort = 32017
	etp.ExternalIPs = v4("198.19.100.17")
	etp.LoadBalancerIPs = v4("198.19.200.17")
	etpRemote := service("default", "lb-remote", model.LoadBalancer, v4("198.19.0.18"),
		port("http", model.TCP, 80, 30018, ep("198.18.65.11", 8080, nodeB)))
	etpRemote.ExternalTrafficPolicy = model.PolicyLocal
	etpRemote.HealthCheckNodePort = 32018
	etpRemote.LoadBalancerIPs = v4("198.19.200.18")
	add("etp-local", view(etp, etpRemote))

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
	both := service("default", "itp-etp", model.NodePort, v4("198.19.0.24"),
		port("http", model.TCP, 80, 30024, ep("198.18.64.12", 8080, nodeA), ep("198.18.65.12", 8080, nodeB)))
	both.InternalTrafficPolicy = model.PolicyLocal
	both.ExternalTrafficPolicy = model.PolicyLocal
	add("itp-local", view(itp, itpRemote, both))

	termCluster := service("default", "term-cluster", model.ClusterIP, v4("198.19.0.25"),
		port("http", model.TCP, 80, 0,
			terminating("198.18.64.10", 8080, nodeA),
			dead("198.18.64.11", 8080, nodeA),
			terminating("198.18.65.10", 8080, nodeB)))
	termLocal := service("default", "term-local", model.LoadBalancer, v4("198.19.0.26"),
		port("http", model.TCP, 80, 30026,
			terminating("198.18.64.12", 8080, nodeA),
			dead("198.18.64.13", 8080, nodeA),
			ep("198.18.65.12", 8080, nodeB)))
	termLocal.ExternalTrafficPolicy = model.PolicyLocal
	termLocal.HealthCheckNodePort = 32026
	termLocal.LoadBalancerIPs = v4("198.19.200.26")
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
	add("ipv6-dual-stack", view(v6, dual))

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

	// No local-traffic detector and no ServiceCIDRs: no "ip saddr !=
	// <podCIDR>" masquerade, no pod short-circuit, no unallocated-IP drop.
	noDet := view(
		service("default", "web", model.ClusterIP, v4("198.19.0.10"),
			port("http", model.TCP, 80, 0, ep("198.18.64.10", 8080, nodeA))),
		etpRemote)
	noDet.Proxy.ClusterCIDRs = nil
	noDet.Proxy.ServiceCIDRs = nil
	noDet.Proxy.NoLocalTrafficDetector = true
	add("no-detector", noDet)
	return cases
}
