package flowtest

import (
	"proxyrig/datapaths"
	"proxyrig/model"
)

// Category I: masquerade, source IP, hairpin (CONFORMANCE.md §I).

const svcSourceIP = `
apiVersion: v1
kind: Service
metadata: {name: srcip, namespace: default}
spec:
  clusterIP: 198.19.0.51
  ports:
  - {name: http, port: 8080, protocol: TCP, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: srcip-abcde
  namespace: default
  labels: {kubernetes.io/service-name: srcip}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// svcSourceIPLocal is a Service whose only endpoint is on node-a.
const svcSourceIPLocal = `
apiVersion: v1
kind: Service
metadata: {name: local-ep, namespace: default}
spec:
  clusterIP: 198.19.0.52
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-ep-abcde
  namespace: default
  labels: {kubernetes.io/service-name: local-ep}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

const svcHairpin = `
apiVersion: v1
kind: Service
metadata: {name: hairpin, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.41
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30003}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30003}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: hairpin-abcde
  namespace: default
  labels: {kubernetes.io/service-name: hairpin}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// svcETPCluster is kube-proxy's svc1 of TestInternalExternalMasquerade.
const svcETPCluster = `
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalTrafficPolicy: Cluster
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30004}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.4
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc1-abcde
  namespace: default
  labels: {kubernetes.io/service-name: svc1}
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

const svcSNATPorts = `
apiVersion: v1
kind: Service
metadata: {name: snat, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.45
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80, nodePort: 30005}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30005}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: snat-abcde
  namespace: default
  labels: {kubernetes.io/service-name: snat}
addressType: IPv4
ports:
- {name: tcp, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// snatCollisionPort is the source port every MASQ-05 client uses, so that
// before SNAT their 5-tuples differ only in the source address.
const snatCollisionPort = 40000

func masqueradeCases() []Case {
	both := FWD("pod-a1", "pod-b1")
	var snatFlows []Flow
	for i := range 4 {
		for _, proto := range []model.Protocol{model.TCP, model.UDP} {
			snatFlows = append(snatFlows, Flow{
				Name: "external client to NodePort from source port 40000", From: External(i), To: NodeIPOf("node-a"),
				Port: 30005, Proto: proto, SrcPort: snatCollisionPort, Expect: FWD("pod-a1").Masq(), Line: getLine(),
			})
		}
	}
	return []Case{
		{
			ID: "MASQ-01", Name: "pod source IP is preserved through ClusterIP, across nodes",
			Fixture: docs(nodeA, nodeB, svcSourceIP),
			Flows: []Flow{
				{Name: "pod on the endpoint's node", From: PodOn("node-a"), To: ClusterIPOf("srcip"), Port: 8080, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "pod on another node", From: PodOn("node-b"), To: ClusterIPOf("srcip"), Port: 8080, Expect: FWD("pod-a1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "MASQ-02", Name: "non-pod sources to ClusterIP are masqueraded",
			Fixture: docs(nodeA, nodeB, svcETPCluster),
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both, Line: getLine()},
				{Name: "node to ClusterIP", From: NodeItself("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to ClusterIP", From: External(0), To: ClusterIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "MASQ-02", Name: "masqueradeAll masquerades every ClusterIP flow",
			Fixture: docs(nodeA, nodeB, svcETPCluster),
			Proxy:   datapaths.ProxyConfig{MasqueradeAll: true},
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "node to ClusterIP", From: NodeItself("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to ClusterIP", From: External(0), To: ClusterIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// With no detector kube-proxy writes no "! -s <clusterCIDR>"
			// masquerade rule, so nothing reaching a ClusterIP is SNATed
			// (IPVS mode masquerades the node's own VIP traffic instead:
			// whyIPVSNoDetector).
			// External traffic is sent to a Service whose endpoint is on
			// the ingress node: to a remote one the unmasqueraded reply
			// would bypass the node that DNATed it.
			ID: "MASQ-02", Name: "without a local-traffic detector ClusterIP traffic is not masqueraded",
			Fixture: docs(nodeA, nodeB, svcETPCluster, svcSourceIPLocal),
			Proxy:   datapaths.ProxyConfig{NoLocalTrafficDetector: true},
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both, Line: getLine()},
				{Name: "node to ClusterIP", From: NodeItself("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both.On("ipvs", both.Masq(), whyIPVSNoDetector), Line: getLine()},
				{Name: "external to ClusterIP keeps its address", From: External(0), To: ClusterIPOf("local-ep"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "external to NodePort is still masqueraded", From: External(0), To: NodeIPOf("node-a"), Port: 30004, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "MASQ-03", Name: "hairpin: an endpoint reaching itself through its Service",
			Fixture: docs(nodeA, nodeB, svcHairpin),
			Flows: []Flow{
				{Name: "endpoint to its own ClusterIP", From: EndpointPod("pod-a1"), To: ClusterIPOf("hairpin"), Port: 80, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				{Name: "endpoint to its own ClusterIP, UDP", From: EndpointPod("pod-a1"), To: ClusterIPOf("hairpin"), Port: 80, Proto: model.UDP, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				{Name: "endpoint to its node's NodePort", From: EndpointPod("pod-a1"), To: NodeIPOf("node-a"), Port: 30003, Expect: FWD("pod-a1").Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "MASQ-04", Name: "eTP=Cluster external entry points always masquerade",
			Fixture: docs(nodeA, nodeB, svcETPCluster),
			Proxy:   datapaths.ProxyConfig{LocalhostNodePorts: true},
			Flows: []Flow{
				{Name: "pod to ClusterIP is not masqueraded", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: both, Line: getLine()},
				{Name: "pod to NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30004, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to LB IP", From: PodOn("node-a"), To: LoadBalancerIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "node to NodePort", From: NodeItself("node-a"), To: NodeIPOf("node-a"), Port: 30004, Expect: both.Masq(), Line: getLine()},
				{Name: "node to LB IP", From: NodeItself("node-a"), To: LoadBalancerIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "localhost to NodePort", From: NodeLocalhost("node-a"), To: Localhost(), Port: 30004,
					Expect: both.Masq().On("nftables", Pass(), whyNFTNoLocalhost).On("ipvs", Pass(), whyIPVSNoLocalhost), Line: getLine()},
				{Name: "external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30004, Expect: both.Masq(), Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("svc1"), Port: 80, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "MASQ-05", Name: "SNAT never collides when clients share a source port",
			Fixture:    docs(nodeA, nodeB, svcSNATPorts),
			Flows:      snatFlows,
			Concurrent: true,
			Line:       getLine(),
		},
	}
}
