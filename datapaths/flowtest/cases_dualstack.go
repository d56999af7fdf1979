package flowtest

import (
	"net/netip"

	"proxyrig/datapaths"
	"proxyrig/model"
)

// Category L: IPv6 and dual-stack (CONFORMANCE.md §L), all in 2001:db8::/32.
// kube-proxy runs one proxier per family: a ClusterIP only ever reaches
// endpoints of its own family, from that family's EndpointSlices.

// svcIPv6 is kube-proxy's TestNodePorts ipv6 Service, remapped.
const svcIPv6 = `
apiVersion: v1
kind: Service
metadata: {name: v6, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIP: 2001:db8:19::41
  clusterIPs: [2001:db8:19::41]
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30002}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: v6-abcde
  namespace: default
  labels: {kubernetes.io/service-name: v6}
addressType: IPv6
ports:
- {name: tcp, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [2001:db8:64::1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [2001:db8:64:1::1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

// nodeADualStackAlt gives node-a a second IPv6 address, as kube-proxy's
// fixture has 2001:db8:1::2 beside 2001:db8::1.
const nodeADualStackAlt = `
apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: 198.18.0.11
  - type: InternalIP
    address: 2001:db8:18::b
  - type: InternalIP
    address: 2001:db8:18::15
`

// dualStackService is a RequireDualStack NodePort Service with the given
// families order ("IPv4, IPv6") and ClusterIPs.
func dualStackService(name, families, clusterIPs string, nodePort, udpNodePort string) string {
	ports := `  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: ` + nodePort + `}`
	if udpNodePort != "" {
		ports += `
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: ` + udpNodePort + `}`
	}
	return `
apiVersion: v1
kind: Service
metadata: {name: ` + name + `, namespace: default}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [` + families + `]
  clusterIPs: [` + clusterIPs + `]
  ports:
` + ports + `
`
}

// Dual-stack pods: one name, one address per family, one slice per family.
var (
	dualPodA4 = epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"}
	dualPodA6 = epSpec{Name: "pod-a1", IP: "2001:db8:64::1", Node: "node-a"}
	dualPodB4 = epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b"}
	dualPodB6 = epSpec{Name: "pod-b1", IP: "2001:db8:64:1::1", Node: "node-b"}
)

var svcDualStack = docs(
	dualStackService("ds46", "IPv4, IPv6", "198.19.0.61, 2001:db8:19::61", "30061", ""),
	endpointSlice("ds46-v4", "ds46", "IPv4", httpPort, dualPodA4, dualPodB4),
	endpointSlice("ds46-v6", "ds46", "IPv6", httpPort, dualPodA6, dualPodB6),
	// IPv6 first, and a different pod per family, so that an answer
	// shows which family's slice was used.
	dualStackService("ds64", "IPv6, IPv4", "2001:db8:19::62, 198.19.0.62", "30062", ""),
	endpointSlice("ds64-v4", "ds64", "IPv4", httpPort, epSpec{Name: "pod-a4", IP: "198.18.64.4", Node: "node-a"}),
	endpointSlice("ds64-v6", "ds64", "IPv6", httpPort, epSpec{Name: "pod-b6", IP: "2001:db8:64:1::6", Node: "node-b"}),
	`
apiVersion: v1
kind: Service
metadata: {name: single, namespace: default}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  clusterIP: 198.19.0.63
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("single-v4", "single", "IPv4", httpPort, dualPodA4),
)

// svcSecondaryFamily is DS-03's Service: IPv4 primary, every check made on
// its IPv6 side. The endpoints of step "endpoints" drop pod-b1; those of
// step "nodeport" move the NodePorts.
func svcSecondaryFamily(withB bool, np, udpNP string) string {
	v4, v6 := []epSpec{dualPodA4}, []epSpec{dualPodA6}
	if withB {
		v4, v6 = append(v4, dualPodB4), append(v6, dualPodB6)
	}
	return docs(
		dualStackService("sec", "IPv4, IPv6", "198.19.0.71, 2001:db8:19::71", np, udpNP),
		endpointSlice("sec-v4", "sec", "IPv4", httpUDPPorts, v4...),
		endpointSlice("sec-v6", "sec", "IPv6", httpUDPPorts, v6...),
		// One endpoint only, for the hairpin check: an endpoint reaching
		// itself is masqueraded, reaching another is not, and a flow
		// states one of the two.
		dualStackService("sec-self", "IPv4, IPv6", "198.19.0.72, 2001:db8:19::72", "30075", ""),
		endpointSlice("sec-self-v4", "sec-self", "IPv4", httpPort, dualPodA4),
		endpointSlice("sec-self-v6", "sec-self", "IPv6", httpPort, dualPodA6),
	)
}

const svcSecondarySCTP = `
apiVersion: v1
kind: Service
metadata: {name: sec-sctp, namespace: default}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [198.19.0.73, 2001:db8:19::73]
  ports:
  - {name: sctp, port: 5060, protocol: SCTP, targetPort: 5060}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sec-sctp-v6
  namespace: default
  labels: {kubernetes.io/service-name: sec-sctp}
addressType: IPv6
ports:
- {name: sctp, port: 5060, protocol: SCTP}
endpoints:
- addresses: [2001:db8:64::1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [2001:db8:64:1::1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

func dualStackCases() []Case {
	both := FWD("pod-a1", "pod-b1")
	v6nodeA := NodeIP6Of("node-a")
	return []Case{
		{
			ID: "DS-01", Name: "IPv6 single-stack behaves as IPv4",
			Fixture: docs(nodeADualStack, nodeBDualStack, svcIPv6),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: true},
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("v6"), Port: 80, Expect: both, Line: getLine()},
				{Name: "pod to ClusterIP, UDP", From: PodOn("node-a"), To: ClusterIPOf("v6"), Port: 80, Proto: model.UDP, Expect: both, Line: getLine()},
				{Name: "pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("v6"), Port: 80, Expect: both, Line: getLine()},
				{Name: "node to ClusterIP", From: NodeItself("node-a"), To: ClusterIPOf("v6"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to ClusterIP", From: External(0), To: ClusterIPOf("v6"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to NodePort", From: External(0), To: v6nodeA, Port: 30001, Expect: both.Masq(), Line: getLine()},
				{Name: "external to NodePort, UDP", From: External(0), To: v6nodeA, Port: 30002, Proto: model.UDP, Expect: both.Masq(), Line: getLine()},
				{Name: "external to node-b NodePort", From: External(0), To: NodeIP6Of("node-b"), Port: 30001, Expect: both.Masq(), Line: getLine()},
				{Name: "node to its NodePort", From: NodeItself("node-a"), To: v6nodeA, Port: 30001, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to NodePort", From: PodOn("node-a"), To: v6nodeA, Port: 30001, Expect: both.Masq(), Line: getLine()},
				{Name: "::1 NodePort is never served", From: NodeLocalhost("node-a"), To: Localhost6(), Port: 30001, Expect: Pass(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "DS-01", Name: "IPv6 NodePorts on every node address by default",
			Fixture: docs(nodeADualStackAlt, nodeBDualStack, svcIPv6),
			Flows: []Flow{
				{Name: "external to the primary IPv6 address", From: External(0), To: v6nodeA, Port: 30001, Expect: both.Masq(), Line: getLine()},
				{Name: "external to the alternate IPv6 address", From: External(0), To: SecondaryNodeIP6Of("node-a"), Port: 30001,
					Expect: both.Masq().On("nftables", Pass(), whyNFTPrimaryOnly), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "DS-01", Name: "IPv6 NodePorts only on the addresses --nodeport-addresses lists",
			Fixture: docs(nodeADualStackAlt, nodeBDualStack, svcIPv6),
			Proxy: datapaths.ProxyConfig{NodePortAddresses: []netip.Prefix{
				netip.MustParsePrefix("198.18.0.0/28"), netip.MustParsePrefix("2001:db8:18::/124"),
			}},
			Flows: []Flow{
				{Name: "external to the listed primary address", From: External(0), To: v6nodeA, Port: 30001, Expect: both.Masq(), Line: getLine()},
				{Name: "external to the unlisted alternate address", From: External(0), To: SecondaryNodeIP6Of("node-a"), Port: 30001, Expect: Pass(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "DS-02", Name: "dual-stack Services use both ClusterIPs, each with its own family's slices",
			Fixture: docs(nodeADualStack, nodeBDualStack, svcDualStack),
			Flows: []Flow{
				{Name: "IPv4,IPv6: pod to the IPv4 ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("ds46"), Port: 80, Expect: both, Line: getLine()},
				{Name: "IPv4,IPv6: pod to the IPv6 ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("ds46").At(1), Port: 80, Expect: both, Line: getLine()},
				{Name: "IPv4,IPv6: external to the IPv4 NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30061, Expect: both.Masq(), Line: getLine()},
				{Name: "IPv4,IPv6: external to the IPv6 NodePort", From: External(0), To: v6nodeA, Port: 30061, Expect: both.Masq(), Line: getLine()},
				{Name: "IPv6,IPv4: pod to the primary (IPv6) ClusterIP reaches the IPv6 slice's pod", From: PodOn("node-a"), To: ClusterIPOf("ds64"), Port: 80, Expect: FWD("pod-b6"), Line: getLine()},
				{Name: "IPv6,IPv4: pod to the IPv4 ClusterIP reaches the IPv4 slice's pod", From: PodOn("node-a"), To: ClusterIPOf("ds64").At(1), Port: 80, Expect: FWD("pod-a4"), Line: getLine()},
				{Name: "IPv6,IPv4: external to the IPv6 NodePort", From: External(0), To: v6nodeA, Port: 30062, Expect: FWD("pod-b6").Masq(), Line: getLine()},
				{Name: "IPv6,IPv4: external to the IPv4 NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30062, Expect: FWD("pod-a4").Masq(), Line: getLine()},
				{Name: "single-stack IPv4 in a dual-stack cluster", From: PodOn("node-b"), To: ClusterIPOf("single"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "DS-03", Name: "the secondary family passes the granular checks",
			Fixture: docs(nodeADualStack, nodeBDualStack, svcSecondaryFamily(true, "30071", "30072")),
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("sec").At(1), Port: 80, Expect: both, Line: getLine()},
				{Name: "pod to ClusterIP, UDP", From: PodOn("node-a"), To: ClusterIPOf("sec").At(1), Port: 80, Proto: model.UDP, Expect: both, Line: getLine()},
				{Name: "pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("sec").At(1), Port: 80, Expect: both, Line: getLine()},
				{Name: "node to ClusterIP", From: NodeItself("node-a"), To: ClusterIPOf("sec").At(1), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "node to ClusterIP, UDP", From: NodeItself("node-a"), To: ClusterIPOf("sec").At(1), Port: 80, Proto: model.UDP, Expect: both.Masq(), Line: getLine()},
				{Name: "endpoint to its own Service", From: EndpointPod("pod-a1"), To: ClusterIPOf("sec-self").At(1), Port: 80, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				{Name: "pod to its node's NodePort", From: PodOn("node-a"), To: v6nodeA, Port: 30071, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to another node's NodePort", From: PodOn("node-a"), To: NodeIP6Of("node-b"), Port: 30071, Expect: both.Masq(), Line: getLine()},
				{Name: "node to another node's NodePort, UDP", From: NodeItself("node-a"), To: NodeIP6Of("node-b"), Port: 30072, Proto: model.UDP, Expect: both.Masq(), Line: getLine()},
				{Name: "large UDP datagram to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("sec").At(1), Port: 80, Proto: model.UDP, PayloadSize: 2000, Expect: both, Line: getLine()},
			},
			Then: []Step{
				{
					Name:    "pod-b1 removed",
					Fixture: docs(nodeADualStack, nodeBDualStack, svcSecondaryFamily(false, "30071", "30072")),
					Flows: []Flow{
						{Name: "pod to ClusterIP: only pod-a1", From: PodOn("node-a"), To: ClusterIPOf("sec").At(1), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
						{Name: "pod to ClusterIP, UDP: only pod-a1", From: PodOn("node-b"), To: ClusterIPOf("sec").At(1), Port: 80, Proto: model.UDP, Expect: FWD("pod-a1"), Line: getLine()},
					},
					Line: getLine(),
				},
				{
					Name:    "nodePorts moved to 30073/30074",
					Fixture: docs(nodeADualStack, nodeBDualStack, svcSecondaryFamily(true, "30073", "30074")),
					Flows: []Flow{
						{Name: "the old NodePort is free", From: External(0), To: v6nodeA, Port: 30071, Expect: Pass(), Line: getLine()},
						{Name: "the new NodePort", From: External(0), To: v6nodeA, Port: 30073, Expect: both.Masq(), Line: getLine()},
						{Name: "the new NodePort, UDP", From: External(0), To: v6nodeA, Port: 30074, Proto: model.UDP, Expect: both.Masq(), Line: getLine()},
					},
					Line: getLine(),
				},
			},
			Line: getLine(),
		},
		{
			ID: "DS-03", Name: "SCTP on the secondary family",
			Fixture: docs(nodeADualStack, nodeBDualStack, svcSecondarySCTP),
			Flows: []Flow{
				{Name: "pod to the IPv6 ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("sec-sctp").At(1), Port: 5060, Proto: model.SCTP, Expect: both.On("ebpf", Pass(), whyEBPFNoSCTP).On("ebpf-socket", Pass(), whyEBPFNoSCTP), Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
