package flowtest

import (
	"proxyrig/datapaths"
	"proxyrig/model"
)

// Category H: internalTrafficPolicy=Local (CONFORMANCE.md §H).

var httpUDPPorts = []string{"{name: http, port: 80, protocol: TCP}", "{name: udp, port: 80, protocol: UDP}"}

// svcITP is kube-proxy's TestInternalTrafficPolicy: one local and two remote
// endpoints, a variant with two local ones, and the e2e form with a
// hostNetwork endpoint on node-a (port 10180, answering as node-a).
var svcITP = docs(`
apiVersion: v1
kind: Service
metadata: {name: itp, namespace: default}
spec:
  clusterIP: 198.19.1.1
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80}
`, endpointSlice("itp-abcde", "itp", "IPv4", httpUDPPorts,
	epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
	epSpec{Name: "pod-b2", IP: "198.18.65.2", Node: "node-b"},
	epSpec{Name: "pod-b3", IP: "198.18.65.3", Node: "node-b"},
), `
apiVersion: v1
kind: Service
metadata: {name: itp2, namespace: default}
spec:
  clusterIP: 198.19.1.2
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("itp2-abcde", "itp2", "IPv4", httpPort,
	epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
	epSpec{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a"},
	epSpec{Name: "pod-b3", IP: "198.18.65.3", Node: "node-b"},
), `
apiVersion: v1
kind: Service
metadata: {name: itp-host, namespace: default}
spec:
  clusterIP: 198.19.1.3
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 10180}
`, endpointSlice("itp-host-abcde", "itp-host", "IPv4", []string{"{name: http, port: 10180, protocol: TCP}"},
	epSpec{Name: "node-a", IP: "198.18.0.11", Node: "node-a"},
))

// svcITPExternal is svc3 of kube-proxy's TestInternalExternalMasquerade:
// iTP=Local on a LoadBalancer, which changes ClusterIP traffic only.
const svcITPExternal = `
apiVersion: v1
kind: Service
metadata: {name: svc3, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.43
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30003}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.3
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc3-abcde
  namespace: default
  labels: {kubernetes.io/service-name: svc3}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.3]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a3}
- addresses: [198.18.65.3]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b3}
`

// Zone-hinted endpoints for ITP-03 (kube-proxy's "conflicting topology and
// localness require merging allEndpoints"): node-a is in zone-a and
// node-b in zone-b; each node has one endpoint hinted for each zone.
var (
	zoneA         = zoneHints("zone-a")
	zoneB         = zoneHints("zone-b")
	conflictingEP = []epSpec{
		{Name: "pod-a0", IP: "198.18.64.10", Node: "node-a", Hints: zoneA},
		{Name: "pod-a1", IP: "198.18.64.11", Node: "node-a", Hints: zoneB},
		{Name: "pod-b2", IP: "198.18.65.12", Node: "node-b", Hints: zoneA},
		{Name: "pod-b3", IP: "198.18.65.13", Node: "node-b", Hints: zoneB},
	}
	nodeAZoneA = zonedNode("node-a", "zone-a", "198.18.0.11")
	nodeBZoneB = zonedNode("node-b", "zone-b", "198.18.0.12")
)

var svcConflictingPolicies = docs(`
apiVersion: v1
kind: Service
metadata: {name: conflict, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalTrafficPolicy: Local
  healthCheckNodePort: 30101
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`, endpointSlice("conflict-abcde", "conflict", "IPv4", httpPort, conflictingEP...), `
apiVersion: v1
kind: Service
metadata: {name: itp-only, namespace: default}
spec:
  clusterIP: 198.19.0.42
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("itp-only-abcde", "itp-only", "IPv4", httpPort, conflictingEP...), `
apiVersion: v1
kind: Service
metadata: {name: itp-etp-cluster, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.43
  internalTrafficPolicy: Local
  externalTrafficPolicy: Cluster
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30003}
`, endpointSlice("itp-etp-cluster-abcde", "itp-etp-cluster", "IPv4", httpPort, conflictingEP...))

func internalTrafficPolicyCases() []Case {
	both := FWD("pod-a3", "pod-b3")
	return []Case{
		{
			ID: "ITP-01", Name: "iTP=Local ClusterIP uses only the client node's endpoints",
			Fixture: docs(nodeA, nodeB, svcITP),
			Flows: []Flow{
				{Name: "pod on node-a", From: PodOn("node-a"), To: ClusterIPOf("itp"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "pod on node-a, UDP", From: PodOn("node-a"), To: ClusterIPOf("itp"), Port: 80, Proto: model.UDP, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "pod on node-b", From: PodOn("node-b"), To: ClusterIPOf("itp"), Port: 80, Expect: FWD("pod-b2", "pod-b3"), Line: getLine()},
				{Name: "hostNetwork client on node-a", From: NodeItself("node-a"), To: ClusterIPOf("itp"), Port: 80, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				{Name: "two local endpoints", From: PodOn("node-a"), To: ClusterIPOf("itp2"), Port: 80, Expect: FWD("pod-a1", "pod-a2"), Line: getLine()},
				// e2e "…Pod and Node, to Pod (hostNetwork: true)".
				{Name: "hostNetwork endpoint: pod on its node", From: PodOn("node-a"), To: ClusterIPOf("itp-host"), Port: 80, Expect: FWD("node-a"), Line: getLine()},
				{Name: "hostNetwork endpoint: hostNetwork client on its node", From: NodeItself("node-a"), To: ClusterIPOf("itp-host"), Port: 80, Expect: FWD("node-a").Masq(), Line: getLine()},
				{Name: "hostNetwork endpoint: pod on node-b fails", From: PodOn("node-b"), To: ClusterIPOf("itp-host"), Port: 80, Expect: Drop().On("ipvs", Reject(), WhyIPVSLocalNoEndpoint), Line: getLine()},
				{Name: "hostNetwork endpoint: hostNetwork client on node-b fails", From: NodeItself("node-b"), To: ClusterIPOf("itp-host"), Port: 80, Expect: Drop().On("ipvs", Reject(), WhyIPVSLocalNoEndpoint), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "ITP-02", Name: "iTP=Local changes ClusterIP traffic only, and never masquerading",
			Fixture: docs(nodeA, nodeB, svcITPExternal),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: true},
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("svc3"), Port: 80, Expect: FWD("pod-a3"), Line: getLine()},
				{Name: "pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("svc3"), Port: 80, Expect: FWD("pod-b3"), Line: getLine()},
				{Name: "node to ClusterIP", From: NodeItself("node-a"), To: ClusterIPOf("svc3"), Port: 80, Expect: FWD("pod-a3").Masq(), Line: getLine()},
				{Name: "external to ClusterIP", From: External(0), To: ClusterIPOf("svc3"), Port: 80, Expect: FWD("pod-a3").Masq(), Line: getLine()},
				{Name: "pod to NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30003, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to LB IP", From: PodOn("node-a"), To: LoadBalancerIPOf("svc3"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "node to NodePort", From: NodeItself("node-a"), To: NodeIPOf("node-a"), Port: 30003, Expect: both.Masq(), Line: getLine()},
				{Name: "node to LB IP", From: NodeItself("node-a"), To: LoadBalancerIPOf("svc3"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30003, Expect: both.Masq(), Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("svc3"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "localhost to NodePort", From: NodeLocalhost("node-a"), To: Localhost(), Port: 30003,
					Expect: both.Masq().On("nftables", Pass(), whyNFTNoLocalhost).On("ipvs", Pass(), whyIPVSNoLocalhost), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// The Cluster set is zone-filtered, the Local set is not; a
			// Service that uses both keeps them apart.
			ID: "ITP-03", Name: "Cluster endpoints follow zone hints, Local endpoints ignore them",
			Fixture: docs(nodeAZoneA, nodeBZoneB, svcConflictingPolicies),
			Flows: []Flow{
				{Name: "eTP=Local: pod to ClusterIP gets the zone's endpoints", From: PodOn("node-a"), To: ClusterIPOf("conflict"), Port: 80, Expect: FWD("pod-a0", "pod-b2"), Line: getLine()},
				{Name: "eTP=Local: pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("conflict"), Port: 80, Expect: FWD("pod-a1", "pod-b3"), Line: getLine()},
				{Name: "eTP=Local: pod to LB IP is short-circuited to the zone's endpoints", From: PodOn("node-a"), To: LoadBalancerIPOf("conflict"), Port: 80, Expect: FWD("pod-a0", "pod-b2").On("ipvs", FWD("pod-a0", "pod-a1"), whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "eTP=Local: external to LB IP gets node-a's endpoints, whatever their hints", From: External(0), To: LoadBalancerIPOf("conflict"), Port: 80, Expect: FWD("pod-a0", "pod-a1"), Line: getLine()},
				{Name: "eTP=Local: external to node-a NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("pod-a0", "pod-a1"), Line: getLine()},
				{Name: "eTP=Local: external to node-b NodePort", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: FWD("pod-b2", "pod-b3"), Line: getLine()},
				{Name: "iTP=Local internal-only: pod gets node-a's endpoints, whatever their hints", From: PodOn("node-a"), To: ClusterIPOf("itp-only"), Port: 80, Expect: FWD("pod-a0", "pod-a1"), Line: getLine()},
				{Name: "iTP=Local internal-only: pod on node-b", From: PodOn("node-b"), To: ClusterIPOf("itp-only"), Port: 80, Expect: FWD("pod-b2", "pod-b3"), Line: getLine()},
				{Name: "iTP=Local, eTP=Cluster: pod to ClusterIP gets node-a's endpoints", From: PodOn("node-a"), To: ClusterIPOf("itp-etp-cluster"), Port: 80, Expect: FWD("pod-a0", "pod-a1"), Line: getLine()},
				{Name: "iTP=Local, eTP=Cluster: external to NodePort gets the zone's endpoints", From: External(0), To: NodeIPOf("node-a"), Port: 30003, Expect: FWD("pod-a0", "pod-b2").Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
