package flowtest

import (
	"proxyrig/datapaths"
	"proxyrig/model"
)

// Category G: externalTrafficPolicy=Local (CONFORMANCE.md §G), the parts
// that are plain packet flows. The health-check node port (ETP-04) and
// switching the policy at runtime (ETP-05) are checked with the
// health-check specs.

// svcETPLocal is kube-proxy's TestExternalTrafficPolicyLocal Service: every
// external entry point, one endpoint on node-a and one on node-b.
const svcETPLocal = `
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalIPs: [198.19.1.11]
  externalTrafficPolicy: Local
  healthCheckNodePort: 30100
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30002}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-abcde
  namespace: default
  labels: {kubernetes.io/service-name: local}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

// svcETPLocalInternal sets eTP=Local on a Service with no external entry
// point, where it means nothing (kube-proxy "eTP ignored if not externally
// accessible").
const svcETPLocalInternal = `
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: default}
spec:
  clusterIP: 198.19.0.42
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: internal-abcde
  namespace: default
  labels: {kubernetes.io/service-name: internal}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

// svcETPLocalOneNode is e2e's eTP=Local NodePort with its only endpoint on
// node-a, reached from pods on both nodes.
const svcETPLocalOneNode = `
apiVersion: v1
kind: Service
metadata: {name: np-local, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.41
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np-local-abcde
  namespace: default
  labels: {kubernetes.io/service-name: np-local}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// whyPodToOwnNodePort is why ETP-06's central flow is recorded, not judged.
const whyPodToOwnNodePort = "Kubernetes leaves a pod's traffic to its own node's eTP=Local NodePort to the implementation: " +
	"kube-proxy counts it as internal when it can tell pod traffic (short-circuit to every endpoint), " +
	"and e2e deliberately does not assert it (kubernetes/kubernetes#123622)"

func externalTrafficPolicyCases() []Case {
	a1 := FWD("pod-a1")
	both := FWD("pod-a1", "pod-b1")
	return []Case{
		{
			ID: "ETP-01", Name: "external traffic to eTP=Local goes to local endpoints only and keeps the client IP",
			Fixture: docs(nodeA, nodeB, svcETPLocal),
			Flows: []Flow{
				{Name: "external to externalIP", From: External(0), To: ExternalIPOf("local"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("local"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "external to LB IP, UDP", From: External(0), To: LoadBalancerIPOf("local"), Port: 80, Proto: model.UDP, Expect: a1, Line: getLine()},
				{Name: "external to node-a NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
				{Name: "external to node-b NodePort", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: FWD("pod-b1"), Line: getLine()},
				{Name: "external to node-b NodePort, UDP", From: External(0), To: NodeIPOf("node-b"), Port: 30002, Proto: model.UDP, Expect: FWD("pod-b1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "ETP-02", Name: "in-cluster clients of an eTP=Local Service are short-circuited to every endpoint",
			Fixture: docs(nodeA, nodeB, svcETPLocal),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: true},
			Flows: []Flow{
				{Name: "pod to externalIP, unmasqueraded", From: PodOn("node-a"), To: ExternalIPOf("local"), Port: 80, Expect: both.On("ipvs", a1, whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "pod to LB IP, unmasqueraded", From: PodOn("node-a"), To: LoadBalancerIPOf("local"), Port: 80, Expect: both.On("ipvs", a1, whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "pod on node-b to LB IP, unmasqueraded", From: PodOn("node-b"), To: LoadBalancerIPOf("local"), Port: 80, Expect: both.On("ipvs", FWD("pod-b1"), whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "pod to its node's NodePort, unmasqueraded", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: both.On("ipvs", a1, whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "pod to LB IP, UDP", From: PodOn("node-a"), To: LoadBalancerIPOf("local"), Port: 80, Proto: model.UDP, Expect: both.On("ipvs", a1, whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "node to LB IP, masqueraded", From: NodeItself("node-a"), To: LoadBalancerIPOf("local"), Port: 80, Expect: both.Masq().On("ipvs", a1.Masq(), whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "node to externalIP, masqueraded", From: NodeItself("node-a"), To: ExternalIPOf("local"), Port: 80, Expect: both.Masq().On("ipvs", a1.Masq(), whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "node to its own NodePort, masqueraded", From: NodeItself("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: both.Masq().On("ipvs", a1.Masq(), whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "localhost to NodePort, masqueraded", From: NodeLocalhost("node-a"), To: Localhost(), Port: 30001,
					Expect: both.Masq().On("nftables", Pass(), whyNFTNoLocalhost).On("ipvs", Pass(), whyIPVSNoLocalhost), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// Without a detector kube-proxy cannot tell pod traffic, so
			// only node-originated traffic (addrtype LOCAL) is
			// short-circuited; pods are treated as external.
			ID: "ETP-02", Name: "without a local-traffic detector pods get only local endpoints",
			Fixture: docs(nodeA, nodeB, svcETPLocal),
			Proxy:   datapaths.ProxyConfig{NoLocalTrafficDetector: true},
			Flows: []Flow{
				{Name: "pod to its node's NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
				{Name: "pod to LB IP", From: PodOn("node-a"), To: LoadBalancerIPOf("local"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "pod to externalIP", From: PodOn("node-a"), To: ExternalIPOf("local"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "pod on node-b to LB IP", From: PodOn("node-b"), To: LoadBalancerIPOf("local"), Port: 80, Expect: FWD("pod-b1"), Line: getLine()},
				{Name: "node to LB IP is still short-circuited", From: NodeItself("node-a"), To: LoadBalancerIPOf("local"), Port: 80, Expect: both.Masq().On("ipvs", a1.Masq(), whyIPVSNoShortCircuit), Line: getLine()},
				{Name: "pod to ClusterIP is unaffected", From: PodOn("node-a"), To: ClusterIPOf("local"), Port: 80, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "ETP-03", Name: "eTP applies only to external entry points",
			Fixture: docs(nodeA, nodeB, svcETPLocal, svcETPLocalInternal),
			Flows: []Flow{
				{Name: "pod to the ClusterIP of an eTP=Local Service", From: PodOn("node-a"), To: ClusterIPOf("local"), Port: 80, Expect: both, Line: getLine()},
				{Name: "node to the ClusterIP of an eTP=Local Service", From: NodeItself("node-a"), To: ClusterIPOf("local"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to the ClusterIP of an eTP=Local Service", From: External(0), To: ClusterIPOf("local"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "eTP=Local without external entry points: pod", From: PodOn("node-a"), To: ClusterIPOf("internal"), Port: 80, Expect: both, Line: getLine()},
				{Name: "eTP=Local without external entry points: pod on node-b", From: PodOn("node-b"), To: ClusterIPOf("internal"), Port: 80, Expect: both, Line: getLine()},
				{Name: "eTP=Local without external entry points: external", From: External(0), To: ClusterIPOf("internal"), Port: 80, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// A pod on node-a reaching node-b's NodePort is the e2e's
			// "must fail" flow; with kube-proxy's cluster-wide detector it
			// is short-circuited instead (the source is a pod address), so
			// it is checked in the case without a detector below.
			ID: "ETP-06", Name: "pods reaching an eTP=Local NodePort on either node",
			Fixture: docs(nodeA, nodeB, svcETPLocalOneNode),
			Flows: []Flow{
				{Name: "pod to its own node, which has the endpoint", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
				{Name: "pod on node-b to the endpoint's node", From: PodOn("node-b"), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
				{Name: "pod on node-b to its own node, which has no endpoint", From: PodOn("node-b"), To: NodeIPOf("node-b"), Port: 30001, Expect: a1,
					ImplementationDefined: whyPodToOwnNodePort, Line: getLine()},
				{Name: "external to node-b, which has no endpoint", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: Drop(), Line: getLine()},
				{Name: "external to node-a", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "ETP-06", Name: "pods reaching an eTP=Local NodePort, without a local-traffic detector",
			Fixture: docs(nodeA, nodeB, svcETPLocalOneNode),
			Proxy:   datapaths.ProxyConfig{NoLocalTrafficDetector: true},
			Flows: []Flow{
				{Name: "pod on node-a to node-b, which has no endpoint, fails", From: PodOn("node-a"), To: NodeIPOf("node-b"), Port: 30001, Expect: Drop(), Line: getLine()},
				{Name: "pod to its own node, which has the endpoint", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
				{Name: "pod on node-b to the endpoint's node", From: PodOn("node-b"), To: NodeIPOf("node-a"), Port: 30001, Expect: a1, Line: getLine()},
				{Name: "pod on node-b to its own node, which has no endpoint", From: PodOn("node-b"), To: NodeIPOf("node-b"), Port: 30001, Expect: Drop(),
					ImplementationDefined: whyPodToOwnNodePort, Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
