package flowtest

import "proxyrig/model"

// Category B: no endpoints, REJECT versus DROP (CONFORMANCE.md §B).

const svcNoSlice = `
apiVersion: v1
kind: Service
metadata: {name: noslice, namespace: default}
spec:
  clusterIP: 198.19.0.46
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80}
---
apiVersion: v1
kind: Service
metadata: {name: emptyslice, namespace: default}
spec:
  clusterIP: 198.19.0.47
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: emptyslice-abcde
  namespace: default
  labels: {kubernetes.io/service-name: emptyslice}
addressType: IPv4
ports:
- {name: tcp, port: 80, protocol: TCP}
endpoints: []
`

// svcLBNoEndpoints is kube-proxy's TestNoEndpointsReject Service: every
// entry point, no endpoints.
const svcLBNoEndpoints = `
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalIPs: [198.19.1.11]
  ports:
  - {name: tcp, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80, nodePort: 30002}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`

const sliceLBOneEndpoint = `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-abcde
  namespace: default
  labels: {kubernetes.io/service-name: lb}
addressType: IPv4
ports:
- {name: tcp, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// Endpoints present but unusable (NOEP-03): not serving while terminating,
// or not ready while not terminating; each with eTP Cluster and Local.
const svcUnusableEndpoints = `
apiVersion: v1
kind: Service
metadata: {name: term-cluster, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalTrafficPolicy: Cluster
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: term-cluster-abcde
  namespace: default
  labels: {kubernetes.io/service-name: term-cluster}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
  conditions: {ready: false, serving: false, terminating: true}
---
apiVersion: v1
kind: Service
metadata: {name: term-local, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.42
  externalTrafficPolicy: Local
  healthCheckNodePort: 30100
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30002}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.2
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: term-local-abcde
  namespace: default
  labels: {kubernetes.io/service-name: term-local}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
  conditions: {ready: false, serving: false, terminating: true}
---
apiVersion: v1
kind: Service
metadata: {name: unready-cluster, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.43
  externalTrafficPolicy: Cluster
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
  name: unready-cluster-abcde
  namespace: default
  labels: {kubernetes.io/service-name: unready-cluster}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.2]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a2}
  conditions: {ready: false, serving: true, terminating: false}
- addresses: [198.18.65.2]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b2}
  conditions: {ready: false, serving: true, terminating: false}
---
apiVersion: v1
kind: Service
metadata: {name: unready-local, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.44
  externalTrafficPolicy: Local
  healthCheckNodePort: 30101
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
  name: unready-local-abcde
  namespace: default
  labels: {kubernetes.io/service-name: unready-local}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.2]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a2}
  conditions: {ready: false, serving: true, terminating: false}
- addresses: [198.18.65.2]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b2}
  conditions: {ready: false, serving: true, terminating: false}
`

// svcETPLocalRemoteOnly is kube-proxy's svc2 of TestTracePacket: eTP=Local
// with its only endpoint on another node.
const svcETPLocalRemoteOnly = `
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.42
  externalIPs: [198.19.1.22]
  externalTrafficPolicy: Local
  healthCheckNodePort: 30100
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.2
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc2-abcde
  namespace: default
  labels: {kubernetes.io/service-name: svc2}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
  conditions: {ready: true, serving: true, terminating: false}
`

const svcITPLocal = `
apiVersion: v1
kind: Service
metadata: {name: itp, namespace: default}
spec:
  clusterIP: 198.19.1.1
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`

const sliceITPRemoteOnly = `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: itp-abcde
  namespace: default
  labels: {kubernetes.io/service-name: itp}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
- addresses: [198.18.65.2]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b2}
- addresses: [198.18.65.3]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b3}
`

const svcETPLocalRemoteTerminating = `
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalTrafficPolicy: Local
  healthCheckNodePort: 30100
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
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
- addresses: [198.18.65.5]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b5}
  conditions: {ready: false, serving: true, terminating: true}
`

func noEndpointsCases() []Case {
	return []Case{
		{
			ID: "NOEP-01", Name: "ClusterIP with zero endpoints is rejected, not timed out",
			Fixture: docs(nodeA, nodeB, svcNoSlice),
			Flows: []Flow{
				{Name: "no EndpointSlice, TCP", From: PodOn("node-a"), To: ClusterIPOf("noslice"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "no EndpointSlice, UDP", From: PodOn("node-a"), To: ClusterIPOf("noslice"), Port: 80, Proto: model.UDP, Expect: Reject(), Line: getLine()},
				{Name: "empty EndpointSlice", From: PodOn("node-a"), To: ClusterIPOf("emptyslice"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "from the node itself", From: NodeItself("node-a"), To: ClusterIPOf("noslice"), Port: 80, Expect: Reject(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NOEP-02", Name: "every entry point of an endpoint-less Service rejects",
			Fixture: docs(nodeA, nodeB, svcLBNoEndpoints),
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("lb"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "pod to externalIP", From: PodOn("node-a"), To: ExternalIPOf("lb"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "pod to NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: Reject(), Line: getLine()},
				{Name: "pod to LB IP", From: PodOn("node-a"), To: LoadBalancerIPOf("lb"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "external to ClusterIP", From: External(0), To: ClusterIPOf("lb"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "external to externalIP", From: External(0), To: ExternalIPOf("lb"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: Reject(), Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("lb"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "external to LB IP, UDP", From: External(0), To: LoadBalancerIPOf("lb"), Port: 80, Proto: model.UDP, Expect: Reject(), Line: getLine()},
				{Name: "external to NodePort, UDP", From: External(0), To: NodeIPOf("node-a"), Port: 30002, Proto: model.UDP, Expect: Reject(), Line: getLine()},
				{Name: "pod to ClusterIP, UDP", From: PodOn("node-a"), To: ClusterIPOf("lb"), Port: 80, Proto: model.UDP, Expect: Reject(), Line: getLine()},
			},
			Then: []Step{{
				Name:    "scaled back to one endpoint",
				Fixture: docs(nodeA, nodeB, svcLBNoEndpoints, sliceLBOneEndpoint),
				Flows: []Flow{
					{Name: "pod to ClusterIP served again", From: PodOn("node-a"), To: ClusterIPOf("lb"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
					{Name: "external to LB IP served again", From: External(0), To: LoadBalancerIPOf("lb"), Port: 80, Expect: FWD("pod-a1").Masq(), Line: getLine()},
					{Name: "external to LB IP, UDP, served again", From: External(0), To: LoadBalancerIPOf("lb"), Port: 80, Proto: model.UDP, Expect: FWD("pod-a1").Masq(), Line: getLine()},
					{Name: "external to NodePort served again", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("pod-a1").Masq(), Line: getLine()},
				},
				Line: getLine(),
			}},
			Line: getLine(),
		},
		{
			ID: "NOEP-03", Name: "endpoints present but none usable are rejected",
			Fixture: docs(nodeA, nodeB, svcUnusableEndpoints),
			Flows: []Flow{
				{Name: "not serving, eTP=Cluster: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("term-cluster"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "not serving, eTP=Cluster: external to LB IP", From: External(0), To: LoadBalancerIPOf("term-cluster"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "not serving, eTP=Local: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("term-local"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "not serving, eTP=Local: external to LB IP", From: External(0), To: LoadBalancerIPOf("term-local"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "unready, eTP=Cluster: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("unready-cluster"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "unready, eTP=Cluster: external to LB IP", From: External(0), To: LoadBalancerIPOf("unready-cluster"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "unready, eTP=Local: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("unready-local"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "unready, eTP=Local: external to LB IP", From: External(0), To: LoadBalancerIPOf("unready-local"), Port: 80, Expect: Reject(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NOEP-05", Name: "eTP=Local external traffic to a node without a local endpoint is dropped",
			Fixture: docs(nodeA, nodeB, svcETPLocalRemoteOnly),
			Flows: []Flow{
				{Name: "external to externalIP", From: External(0), To: ExternalIPOf("svc2"), Port: 80, Expect: Drop(), Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("svc2"), Port: 80, Expect: Drop(), Line: getLine()},
				{Name: "external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: Drop(), Line: getLine()},
				// Locally originated and pod traffic is short-circuited to
				// the cluster-wide endpoints.
				{Name: "node to externalIP is masqueraded to the remote endpoint", From: NodeItself("node-a"), To: ExternalIPOf("svc2"), Port: 80, Expect: FWD("pod-b1").Masq().On("ipvs", Drop(), whyIPVSOwnExternalIP), Line: getLine()},
				{Name: "pod to externalIP is short-circuited", From: PodOn("node-a"), To: ExternalIPOf("svc2"), Port: 80, Expect: FWD("pod-b1"), Line: getLine()},
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("svc2"), Port: 80, Expect: FWD("pod-b1"), Line: getLine()},
				// Contrast: the node with the endpoint serves it and keeps
				// the client's address.
				{Name: "external to the endpoint's node NodePort", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: FWD("pod-b1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "NOEP-06", Name: "iTP=Local without a local endpoint drops; without any endpoint rejects",
			Fixture: docs(nodeA, nodeB, svcITPLocal, sliceITPRemoteOnly),
			Flows: []Flow{
				{Name: "pod on a node without endpoints", From: PodOn("node-a"), To: ClusterIPOf("itp"), Port: 80, Expect: Drop().On("ipvs", Reject(), WhyIPVSLocalNoEndpoint), Line: getLine()},
				{Name: "pod on the node with the endpoints", From: PodOn("node-b"), To: ClusterIPOf("itp"), Port: 80, Expect: FWD("pod-b1", "pod-b2", "pod-b3"), Line: getLine()},
			},
			Then: []Step{{
				Name:    "EndpointSlice deleted",
				Fixture: docs(nodeA, nodeB, svcITPLocal),
				Flows: []Flow{
					{Name: "pod on node-a: no endpoints anywhere", From: PodOn("node-a"), To: ClusterIPOf("itp"), Port: 80, Expect: Reject(), Line: getLine()},
					{Name: "pod on node-b: no endpoints anywhere", From: PodOn("node-b"), To: ClusterIPOf("itp"), Port: 80, Expect: Reject(), Line: getLine()},
				},
				Line: getLine(),
			}},
			Line: getLine(),
		},
		{
			ID: "NOEP-07", Name: "eTP=Local with only a terminating endpoint on a remote node",
			Fixture: docs(nodeA, nodeB, svcETPLocalRemoteTerminating),
			Flows: []Flow{
				{Name: "pod to ClusterIP falls back to the terminating endpoint", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: FWD("pod-b5"), Line: getLine()},
				{Name: "external to LB IP is dropped, not rejected", From: External(0), To: LoadBalancerIPOf("svc1"), Port: 80, Expect: Drop(), Line: getLine()},
				{Name: "external to NodePort is dropped, not rejected", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: Drop(), Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
