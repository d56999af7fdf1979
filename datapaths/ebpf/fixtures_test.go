package ebpf

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Fixtures follow the lab's address plan: nodes in 198.18.0.0/24, pods in
// 198.18.64.0/18 (node-a's 198.18.64.0/24, node-b's 198.18.65.0/24),
// external clients at 198.18.0.200+, VIPs in 198.19.0.0/16.

const (
	nodeA = "node-a" // the node under test
	nodeB = "node-b" // a remote node
)

var (
	nodeAIP    = netip.MustParseAddr("198.18.0.11")
	nodeBIP    = netip.MustParseAddr("198.18.0.12")
	externalIP = netip.MustParseAddr("198.18.0.200")
)

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

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

func port(name string, proto model.Protocol, p, nodePort int32, eps ...*model.Endpoint) *model.ServicePort {
	return &model.ServicePort{Name: name, Protocol: proto, Port: p, NodePort: nodePort, Endpoints: eps}
}

func service(name string, typ model.ServiceType, clusterIP string, ports ...*model.ServicePort) *model.Service {
	return &model.Service{
		Name:                  model.ServiceName{Namespace: "default", Name: name},
		Type:                  typ,
		ClusterIPs:            []netip.Addr{addr(clusterIP)},
		ExternalTrafficPolicy: model.PolicyCluster,
		InternalTrafficPolicy: model.PolicyCluster,
		Ports:                 ports,
	}
}

func testProxy() datapaths.ProxyConfig {
	return datapaths.ProxyConfig{
		ClusterCIDRs: []netip.Prefix{prefix("198.18.64.0/18")},
		ServiceCIDRs: []netip.Prefix{prefix("198.19.0.0/16")},
	}
}

func view(svcs ...*model.Service) *datapaths.NodeView {
	na := &model.Node{Name: nodeA, Addresses: []netip.Addr{nodeAIP}}
	return &datapaths.NodeView{
		Cluster: &model.Cluster{
			Services: svcs,
			Nodes:    []*model.Node{na, {Name: nodeB, Addresses: []netip.Addr{nodeBIP}}},
		},
		Node:  na,
		Proxy: testProxy(),
	}
}

// helloService is examples/hello.yaml's Service: two endpoints on node-a,
// one on node-b, ClusterIP 198.19.0.80:80, NodePort 30080.
func helloService() *model.Service {
	return service("hello", model.NodePort, "198.19.0.80",
		port("", model.TCP, 80, 30080,
			ep("198.18.64.10", 8080, nodeA), ep("198.18.64.11", 8080, nodeA), ep("198.18.65.10", 8080, nodeB)))
}

func emptyService() *model.Service {
	return service("empty", model.ClusterIP, "198.19.0.81", port("", model.TCP, 80, 0))
}

func localService() *model.Service {
	s := service("local", model.LoadBalancer, "198.19.0.82",
		port("", model.TCP, 80, 30082, ep("198.18.64.20", 8080, nodeA), ep("198.18.65.20", 8080, nodeB)))
	s.ExternalTrafficPolicy = model.PolicyLocal
	s.LoadBalancerIPs = []netip.Addr{addr("198.18.1.82")}
	return s
}

func remoteOnlyLocalService() *model.Service {
	s := service("remote-local", model.NodePort, "198.19.0.83",
		port("", model.TCP, 80, 30083, ep("198.18.65.30", 8080, nodeB)))
	s.ExternalTrafficPolicy = model.PolicyLocal
	return s
}

func affinityService() *model.Service {
	s := service("sticky", model.ClusterIP, "198.19.0.84",
		port("", model.TCP, 80, 0, ep("198.18.64.41", 8080, nodeA), ep("198.18.64.42", 8080, nodeA), ep("198.18.65.43", 8080, nodeB)))
	s.SessionAffinity = true
	s.AffinityTimeout = 60 * time.Second
	return s
}

func firewalledService() *model.Service {
	s := service("fw", model.LoadBalancer, "198.19.0.85",
		port("", model.TCP, 80, 30085, ep("198.18.64.50", 8080, nodeA)))
	s.LoadBalancerIPs = []netip.Addr{addr("198.18.1.85")}
	s.LoadBalancerSourceRanges = []netip.Prefix{prefix("198.18.0.200/32")}
	return s
}

func udpService(eps ...*model.Endpoint) *model.Service {
	return service("dns", model.ClusterIP, "198.19.0.53", port("dns", model.UDP, 53, 0, eps...))
}

// requireRoot skips (or, with CI=true, fails) a test that needs root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const reason = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to load BPF programs and create network namespaces"
	if os.Getenv("CI") == "true" {
		t.Fatal(reason + "; CI=true, so this must not be skipped")
	}
	t.Skip(reason)
}
