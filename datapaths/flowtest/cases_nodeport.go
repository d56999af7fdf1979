package flowtest

import (
	"net/netip"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Category E: NodePort (CONFORMANCE.md §E).

// svcNodePort is kube-proxy's TestNodePorts Service: one local and one
// remote endpoint, TCP and UDP NodePorts.
const svcNodePort = `
apiVersion: v1
kind: Service
metadata: {name: np, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.41
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30002}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np-abcde
  namespace: default
  labels: {kubernetes.io/service-name: np}
addressType: IPv4
ports:
- {name: tcp, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

const svcNodePortDelete = `
apiVersion: v1
kind: Service
metadata: {name: np6, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.46
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80, nodePort: 30006}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30007}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np6-abcde
  namespace: default
  labels: {kubernetes.io/service-name: np6}
addressType: IPv4
ports:
- {name: tcp, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// svcSourceRanges admits only external client 0 through its LB IP.
const svcSourceRanges = `
apiVersion: v1
kind: Service
metadata: {name: ranged, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  loadBalancerSourceRanges: ["198.18.0.200/32", " 198.18.1.0/24"]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30008}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ranged-abcde
  namespace: default
  labels: {kubernetes.io/service-name: ranged}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// svcNodePortIPv6 is svcNodePort, single-stack IPv6.
const svcNodePortIPv6 = `
apiVersion: v1
kind: Service
metadata: {name: np6, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIP: 2001:db8:19::41
  clusterIPs: [2001:db8:19::41]
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np6-abcde
  namespace: default
  labels: {kubernetes.io/service-name: np6}
addressType: IPv6
ports:
- {name: tcp, port: 80, protocol: TCP}
endpoints:
- addresses: [2001:db8:64::1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [2001:db8:64:1::1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

const (
	whyNFTPrimaryOnly  = "kube-proxy nftables defaults to --nodeport-addresses=primary"
	whyNFTNoLocalhost  = "kube-proxy nftables never serves NodePorts on localhost"
	whyIPVSNoLocalhost = "kube-proxy ipvs does not serve NodePorts on localhost"
)

func nodePortCases() []Case {
	both := FWD("pod-a1", "pod-b1").Masq()
	return []Case{
		{
			ID: "NP-01", Name: "external to NodePort reaches every endpoint, masqueraded",
			Fixture: docs(nodeA, nodeB, svcNodePort),
			Flows: []Flow{
				{Name: "external to node-a NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "external to node-b NodePort", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "external to node-a NodePort, UDP", From: External(0), To: NodeIPOf("node-a"), Port: 30002, Proto: model.UDP, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-02", Name: "NodePorts on every node address by default",
			Fixture: docs(nodeAWithSecondary, nodeB, svcNodePort),
			Flows: []Flow{
				{Name: "external to the primary address", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "external to the secondary address", From: External(0), To: SecondaryNodeIPOf("node-a"), Port: 30001, Expect: both.On("nftables", Pass(), whyNFTPrimaryOnly), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-02", Name: "NodePorts only on the addresses --nodeport-addresses lists",
			Fixture: docs(nodeAWithSecondary, nodeB, svcNodePort),
			Proxy:   datapaths.ProxyConfig{NodePortAddresses: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/28")}},
			Flows: []Flow{
				{Name: "external to the listed primary address", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "external to the unlisted secondary address", From: External(0), To: SecondaryNodeIPOf("node-a"), Port: 30001, Expect: Pass(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-03", Name: "node to its own NodePort",
			Fixture: docs(nodeA, nodeB, svcNodePort),
			Flows: []Flow{
				{Name: "node to its own address", From: NodeItself("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "node to its own address, UDP", From: NodeItself("node-a"), To: NodeIPOf("node-a"), Port: 30002, Proto: model.UDP, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-04", Name: "localhost NodePorts when enabled",
			Fixture: docs(nodeA, nodeB, svcNodePort),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: true},
			Flows: []Flow{
				{Name: "127.0.0.1 to 127.0.0.1:NodePort", From: NodeLocalhost("node-a"), To: Localhost(), Port: 30001,
					Expect: both.On("nftables", Pass(), whyNFTNoLocalhost).On("ipvs", Pass(), whyIPVSNoLocalhost), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-04", Name: "localhost NodePorts when disabled",
			Fixture: docs(nodeA, nodeB, svcNodePort),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: false},
			Flows: []Flow{
				{Name: "127.0.0.1 to 127.0.0.1:NodePort is not served", From: NodeLocalhost("node-a"), To: Localhost(), Port: 30001, Expect: Pass(), Line: getLine()},
				{Name: "the node address still is", From: NodeItself("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// route_localnet, which localhost NodePorts rely on, exists
			// only for IPv4: ::1 is never served, whatever the setting.
			ID: "NP-04", Name: "localhost NodePorts are IPv4 only",
			Fixture: docs(nodeADualStack, nodeBDualStack, svcNodePortIPv6),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: true},
			Flows: []Flow{
				{Name: "::1 to [::1]:NodePort is not served", From: NodeLocalhost("node-a"), To: Localhost6(), Port: 30001, Expect: Pass(), Line: getLine()},
				{Name: "the node's IPv6 address is", From: NodeItself("node-a"), To: NodeIP6Of("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "external to the node's IPv6 address", From: External(0), To: NodeIP6Of("node-a"), Port: 30001, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-05", Name: "pod to NodePort on its own and on another node",
			Fixture: docs(nodeA, nodeB, svcNodePort),
			Flows: []Flow{
				{Name: "pod to its own node", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "pod to another node", From: PodOn("node-a"), To: NodeIPOf("node-b"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "pod on node-b to node-a", From: PodOn("node-b"), To: NodeIPOf("node-a"), Port: 30001, Expect: both, Line: getLine()},
				{Name: "pod to its own node, UDP", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30002, Proto: model.UDP, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NP-06", Name: "deleting a NodePort Service stops forwarding and frees the port",
			Fixture: docs(nodeA, nodeB, svcNodePortDelete),
			Flows: []Flow{
				{Name: "served, TCP", From: External(0), To: NodeIPOf("node-a"), Port: 30006, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				{Name: "served, UDP", From: External(0), To: NodeIPOf("node-a"), Port: 30007, Proto: model.UDP, Expect: FWD("pod-a1").Masq(), Line: getLine()},
			},
			Then: []Step{
				{
					Name:    "Service deleted",
					Fixture: docs(nodeA, nodeB),
					Flows: []Flow{
						{Name: "no longer served, TCP", From: External(0), To: NodeIPOf("node-a"), Port: 30006, Expect: Pass(), Line: getLine()},
						{Name: "no longer served, UDP", From: External(0), To: NodeIPOf("node-a"), Port: 30007, Proto: model.UDP, Expect: Pass(), Line: getLine()},
					},
					FreePorts: []PortProto{{Port: 30006, Proto: model.TCP}, {Port: 30007, Proto: model.UDP}},
					Line:      getLine(),
				},
				{
					Name:    "Service recreated with the same nodePort",
					Fixture: docs(nodeA, nodeB, svcNodePortDelete),
					Flows: []Flow{
						{Name: "served again, TCP", From: External(0), To: NodeIPOf("node-a"), Port: 30006, Expect: FWD("pod-a1").Masq(), Line: getLine()},
						{Name: "served again, UDP", From: External(0), To: NodeIPOf("node-a"), Port: 30007, Proto: model.UDP, Expect: FWD("pod-a1").Masq(), Line: getLine()},
					},
					Line: getLine(),
				},
			},
			Line: getLine(),
		},
		{
			ID: "NP-08", Name: "NodePort bypasses loadBalancerSourceRanges",
			Fixture: docs(nodeA, nodeB, svcSourceRanges),
			Flows: []Flow{
				{Name: "blocked client to NodePort", From: External(1), To: NodeIPOf("node-a"), Port: 30008, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				// Contrast: the ranges are in force on the LB IP.
				{Name: "allowed client to LB IP", From: External(0), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				{Name: "blocked client to LB IP", From: External(1), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: Drop(), Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
