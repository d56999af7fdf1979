package flowtest

import "proxyrig/model"

// Category A: ClusterIP basics (CONFORMANCE.md §A).

const svc1Web = `
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 198.19.0.41
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
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
- {name: dns, port: 5353, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
  conditions: {ready: true}
`

// svc2Spread has one local and one remote endpoint.
const svc2Spread = `
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 198.19.0.42
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
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
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

const svc3TargetPort = `
apiVersion: v1
kind: Service
metadata: {name: svc3, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 198.19.0.43
  ports:
  - {name: https, port: 443, protocol: TCP, targetPort: 8443}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc3-abcde
  namespace: default
  labels: {kubernetes.io/service-name: svc3}
addressType: IPv4
ports:
- {name: https, port: 8443, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

// svc1TCPOnly and svc2TwoPorts are kube-proxy's TestClusterIPGeneral pair:
// svc1 has only 80/TCP, svc2 has 80/TCP and 443/TCP.
const svc1TCPOnly = `
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: default}
spec:
  clusterIP: 198.19.0.41
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
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
`

const svc2TwoPorts = `
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: default}
spec:
  clusterIP: 198.19.0.42
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
  - {name: https, port: 443, protocol: TCP, targetPort: 443}
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
- {name: https, port: 443, protocol: TCP}
endpoints:
- addresses: [198.18.64.2]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a2}
`

// Named targetPorts (CIP-07): pod1 exposes only container port 100 named
// "svc1", pod2 only 101 named "svc2"; the EndpointSlice controller then
// writes one slice per distinct port set.
const svcMultiNamed = `
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: default}
spec:
  clusterIP: 198.19.0.47
  selector: {app: multi}
  ports:
  - {name: portname1, port: 80, protocol: TCP, targetPort: svc1}
  - {name: portname2, port: 81, protocol: TCP, targetPort: svc2}
`

const sliceMultiPod1 = `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: multi-pod1
  namespace: default
  labels: {kubernetes.io/service-name: multi}
addressType: IPv4
ports:
- {name: portname1, port: 100, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod1}
`

const sliceMultiPod2 = `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: multi-pod2
  namespace: default
  labels: {kubernetes.io/service-name: multi}
addressType: IPv4
ports:
- {name: portname2, port: 101, protocol: TCP}
endpoints:
- addresses: [198.18.64.2]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod2}
`

// Selector-less Services fed by hand-written slices (CIP-08). svc-same has
// one pod serving both ports from two slices; svc-split has a different pod
// behind each port.
const svcCustomSlices = `
apiVersion: v1
kind: Service
metadata: {name: svc-same, namespace: default}
spec:
  clusterIP: 198.19.0.48
  ports:
  - {name: port80, port: 80, protocol: TCP}
  - {name: port81, port: 81, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-same-1
  namespace: default
  labels: {kubernetes.io/service-name: svc-same}
addressType: IPv4
ports:
- {name: port80, port: 8090, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-same-2
  namespace: default
  labels: {kubernetes.io/service-name: svc-same}
addressType: IPv4
ports:
- {name: port81, port: 9090, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
---
apiVersion: v1
kind: Service
metadata: {name: svc-split, namespace: default}
spec:
  clusterIP: 198.19.0.49
  ports:
  - {name: port80, port: 80, protocol: TCP}
  - {name: port81, port: 81, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-split-1
  namespace: default
  labels: {kubernetes.io/service-name: svc-split}
addressType: IPv4
ports:
- {name: port80, port: 8090, protocol: TCP}
endpoints:
- addresses: [198.18.64.2]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-split-2
  namespace: default
  labels: {kubernetes.io/service-name: svc-split}
addressType: IPv4
ports:
- {name: port81, port: 8090, protocol: TCP}
endpoints:
- addresses: [198.18.65.1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

// CIP-10: a pod endpoint and a hostNetwork endpoint (node-b's own address).
const svcLargePayload = `
apiVersion: v1
kind: Service
metadata: {name: big, namespace: default}
spec:
  clusterIP: 198.19.0.44
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-abcde
  namespace: default
  labels: {kubernetes.io/service-name: big}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
- {name: udp, port: 80, protocol: UDP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
---
apiVersion: v1
kind: Service
metadata: {name: big-hostnet, namespace: default}
spec:
  clusterIP: 198.19.0.45
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
  - {name: udp, port: 80, protocol: UDP, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-hostnet-abcde
  namespace: default
  labels: {kubernetes.io/service-name: big-hostnet}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
- {name: udp, port: 8080, protocol: UDP}
endpoints:
- addresses: [198.18.0.12]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: hostnet-b}
`

const svcSCTP = `
apiVersion: v1
kind: Service
metadata: {name: sctp, namespace: default}
spec:
  clusterIP: 198.19.0.46
  ports:
  - {name: sip, port: 5060, protocol: SCTP, targetPort: 5060}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sctp-abcde
  namespace: default
  labels: {kubernetes.io/service-name: sctp}
addressType: IPv4
ports:
- {name: sip, port: 5060, protocol: SCTP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// Documented divergences (CONFORMANCE.md Appendix 1).
const (
	whyNFTInvalidPort = "kube-proxy nftables: \"Reject traffic to invalid ports of ClusterIPs\""
	whyIPVSFilter     = "kube-proxy ipvs: KUBE-IPVS-FILTER rejects VIP traffic to unknown ports (the VIP is local on kube-ipvs0)"
	whyNFTUnallocated = "kube-proxy nftables: \"Drop traffic to unallocated ClusterIPs\""
)

// wrongPortOnVIP is CIP-05's expectation: never DNATed; iptables leaves it
// alone, nftables and IPVS reject it.
func wrongPortOnVIP() Expect {
	return Pass().
		On("nftables", Reject(), whyNFTInvalidPort).
		On("ipvs", Reject(), whyIPVSFilter)
}

func clusterIPCases() []Case {
	return []Case{
		{
			ID: "CIP-01", Name: "pod to ClusterIP is DNATed to an endpoint without SNAT",
			Fixture: docs(nodeA, nodeB, svc1Web),
			Flows: []Flow{
				{Name: "pod to ClusterIP TCP", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "pod to ClusterIP UDP, targetPort remapped", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 53, Proto: model.UDP, Expect: FWD("pod-a1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-02", Name: "multiple endpoints are all used, uniformly",
			Fixture: docs(nodeA, nodeB, svc2Spread),
			Flows: []Flow{
				{Name: "pod to ClusterIP spreads over local and remote endpoints", From: PodOn("node-a"), To: ClusterIPOf("svc2"), Port: 80, Expect: FWD("pod-a1", "pod-b1").Evenly(), Line: getLine()},
				// e2e verifyServeHostnameServiceUp also checks from a
				// hostNetwork client; a non-pod source is masqueraded.
				{Name: "node to ClusterIP reaches every endpoint", From: NodeItself("node-a"), To: ClusterIPOf("svc2"), Port: 80, Expect: FWD("pod-a1", "pod-b1").Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-03", Name: "targetPort remapping",
			Fixture: docs(nodeA, nodeB, svc3TargetPort),
			Flows: []Flow{
				{Name: "service port 443 reaches endpoints on 8443", From: PodOn("node-a"), To: ClusterIPOf("svc3"), Port: 443, Expect: FWD("pod-a1", "pod-b1"), Line: getLine()},
				{Name: "the targetPort is not a service port", From: PodOn("node-a"), To: ClusterIPOf("svc3"), Port: 8443, Expect: wrongPortOnVIP(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-05", Name: "wrong port or protocol on a live ClusterIP is not forwarded",
			Fixture: docs(nodeA, nodeB, svc1TCPOnly, svc2TwoPorts),
			Flows: []Flow{
				{Name: "TCP-only port does not match UDP", From: PodOn("node-a"), To: ClusterIPOf("svc2"), Port: 80, Proto: model.UDP, Expect: wrongPortOnVIP(), Line: getLine()},
				{Name: "svc1 does not accept svc2's port", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 443, Expect: wrongPortOnVIP(), Line: getLine()},
				{Name: "svc1's own port works", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "svc2's 443 works", From: PodOn("node-a"), To: ClusterIPOf("svc2"), Port: 443, Expect: FWD("pod-a2"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-06", Name: "unallocated IP inside the Service CIDR",
			Fixture: docs(nodeA, nodeB, svc1TCPOnly),
			Flows: []Flow{
				{Name: "packet to an unallocated ClusterIP", From: PodOn("node-a"), To: Addr("198.19.0.50"), Port: 80, Expect: Pass().On("nftables", Drop(), whyNFTUnallocated), Line: getLine()},
				{Name: "the allocated one works", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-07", Name: "multi-port Service with named targetPorts resolved per endpoint",
			Fixture: docs(nodeA, nodeB, svcMultiNamed),
			Flows: []Flow{
				{Name: "no pods yet: portname1 rejected", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 80, Expect: Reject(), Line: getLine()},
				{Name: "no pods yet: portname2 rejected", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 81, Expect: Reject(), Line: getLine()},
			},
			Then: []Step{
				{
					Name:    "pod1 (port svc1=100) added",
					Fixture: docs(nodeA, nodeB, svcMultiNamed, sliceMultiPod1),
					Flows: []Flow{
						{Name: "portname1 reaches pod1:100", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 80, Expect: FWD("pod1"), Line: getLine()},
						{Name: "portname2 still has no endpoints", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 81, Expect: Reject(), Line: getLine()},
					},
					Line: getLine(),
				},
				{
					Name:    "pod2 (port svc2=101) added",
					Fixture: docs(nodeA, nodeB, svcMultiNamed, sliceMultiPod1, sliceMultiPod2),
					Flows: []Flow{
						{Name: "portname1 reaches only pod1", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 80, Expect: FWD("pod1"), Line: getLine()},
						{Name: "portname2 reaches only pod2", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 81, Expect: FWD("pod2"), Line: getLine()},
					},
					Line: getLine(),
				},
				{
					Name:    "pod1 deleted",
					Fixture: docs(nodeA, nodeB, svcMultiNamed, sliceMultiPod2),
					Flows: []Flow{
						{Name: "portname1 has no endpoints left", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 80, Expect: Reject(), Line: getLine()},
						{Name: "portname2 keeps working", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 81, Expect: FWD("pod2"), Line: getLine()},
					},
					Line: getLine(),
				},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-08", Name: "selector-less Service fed by several EndpointSlices",
			Fixture: docs(nodeA, nodeB, svcCustomSlices),
			Flows: []Flow{
				{Name: "one pod, port80 from slice 1", From: PodOn("node-a"), To: ClusterIPOf("svc-same"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "one pod, port81 from slice 2", From: PodOn("node-a"), To: ClusterIPOf("svc-same"), Port: 81, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "two pods, port80 from slice 1", From: PodOn("node-a"), To: ClusterIPOf("svc-split"), Port: 80, Expect: FWD("pod-a2"), Line: getLine()},
				{Name: "two pods, port81 from slice 2", From: PodOn("node-a"), To: ClusterIPOf("svc-split"), Port: 81, Expect: FWD("pod-b1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-10", Name: "large payloads survive the datapath",
			Fixture: docs(nodeA, nodeB, svcLargePayload),
			Flows: []Flow{
				// 2000 bytes: more than the 1500-byte MTU, so the datagram
				// is fragmented and must be reassembled around the DNAT.
				{Name: "2000-byte UDP datagram to a pod endpoint", From: PodOn("node-a"), To: ClusterIPOf("big"), Port: 80, Proto: model.UDP, PayloadSize: 2000, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "2000-byte UDP datagram to a hostNetwork endpoint", From: PodOn("node-a"), To: ClusterIPOf("big-hostnet"), Port: 80, Proto: model.UDP, PayloadSize: 2000, Expect: FWD("hostnet-b"), Line: getLine()},
				{Name: "TCP to a hostNetwork endpoint", From: PodOn("node-a"), To: ClusterIPOf("big-hostnet"), Port: 80, Expect: FWD("hostnet-b"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "CIP-11", Name: "SCTP Services",
			Fixture: docs(nodeA, nodeB, svcSCTP),
			Flows: []Flow{
				{Name: "pod to SCTP ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("sctp"), Port: 5060, Proto: model.SCTP, Expect: FWD("pod-a1").On("ebpf", Pass(), whyEBPFNoSCTP).On("ebpf-socket", Pass(), whyEBPFNoSCTP), Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
