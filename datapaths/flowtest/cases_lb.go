package flowtest

import "proxyrig/model"

// Category F: externalIPs and load-balancer IPs (CONFORMANCE.md §F).
// External entry points with eTP=Cluster always masquerade, whoever sends
// (kube-proxy's KUBE-EXT chain marks everything for SNAT).

// svcExternalIPUnassigned is e2e "…via ExternalIP when the external IP is
// not assigned to a node": no node owns 198.19.1.250, yet the datapath
// captures it.
const svcExternalIPUnassigned = `
apiVersion: v1
kind: Service
metadata: {name: extip, namespace: default}
spec:
  clusterIP: 198.19.0.41
  externalIPs: [198.19.1.250]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
  - {name: udp, port: 80, protocol: UDP, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: extip-abcde
  namespace: default
  labels: {kubernetes.io/service-name: extip}
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

// svcExternalIPUnassigned6 is the same on IPv6 (e2e uses 2001:db8::cb00:71fa).
const svcExternalIPUnassigned6 = `
apiVersion: v1
kind: Service
metadata: {name: extip6, namespace: default}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  clusterIP: 2001:db8:19::41
  clusterIPs: [2001:db8:19::41]
  externalIPs: [2001:db8:19:1::fa]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: extip6-abcde
  namespace: default
  labels: {kubernetes.io/service-name: extip6}
addressType: IPv6
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [2001:db8:64::1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
- addresses: [2001:db8:64:1::1]
  nodeName: node-b
  targetRef: {kind: Pod, namespace: default, name: pod-b1}
`

// svcLBCluster is kube-proxy's TestExternalTrafficPolicyCluster Service.
const svcLBCluster = `
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  externalIPs: [198.19.1.11]
  externalTrafficPolicy: Cluster
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
  name: lb-abcde
  namespace: default
  labels: {kubernetes.io/service-name: lb}
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

// svcTwoIngressIPs has two ingress IPs, and a third in ipMode Proxy, which
// the load balancer proxies itself: kube-proxy must not capture it
// (LoadBalancerIPMode, GA in 1.32).
const svcTwoIngressIPs = `
apiVersion: v1
kind: Service
metadata: {name: lb2, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.42
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30002}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
    - ip: 198.19.2.2
    - ip: 198.19.2.3
      ipMode: Proxy
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb2-abcde
  namespace: default
  labels: {kubernetes.io/service-name: lb2}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`

// svcRanged is kube-proxy's TestLoadBalancer source ranges, remapped: the
// node segment's first 16 addresses (both nodes) and external clients 0 and
// 1 are allowed, external client 2 and every pod are not. The leading space
// is deliberate: kube-proxy tolerates it.
const svcRanged = `
apiVersion: v1
kind: Service
metadata: {name: ranged, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
  loadBalancerSourceRanges: ["198.18.0.0/28", " 198.18.0.200/31"]
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

// svcRangeUpdates is e2e "should only allow access from service
// loadbalancer source ranges": the range admits one pod, then the other,
// then the field goes.
func svcRangeUpdates(ranges string) string {
	return `
apiVersion: v1
kind: Service
metadata: {name: swap, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.42
` + ranges + `
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
  name: swap-abcde
  namespace: default
  labels: {kubernetes.io/service-name: swap}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`
}

// svcLBNodePorts is e2e "should be able to create LoadBalancer Service
// without NodePort and change it": allocateLoadBalancerNodePorts false,
// then true with a nodePort.
func svcLBNodePorts(allocate bool) string {
	spec := `  allocateLoadBalancerNodePorts: false
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}`
	if allocate {
		spec = `  allocateLoadBalancerNodePorts: true
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30009}`
	}
	return `
apiVersion: v1
kind: Service
metadata: {name: nonp, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.41
` + spec + `
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: nonp-abcde
  namespace: default
  labels: {kubernetes.io/service-name: nonp}
addressType: IPv4
ports:
- {name: http, port: 80, protocol: TCP}
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  targetRef: {kind: Pod, namespace: default, name: pod-a1}
`
}

func loadBalancerCases() []Case {
	both := FWD("pod-a1", "pod-b1")
	a1 := FWD("pod-a1").Masq()
	return []Case{
		{
			ID: "LB-01", Name: "an externalIP no node owns is still captured",
			Fixture: docs(nodeA, nodeB, svcExternalIPUnassigned),
			Flows: []Flow{
				{Name: "pod to externalIP", From: PodOn("node-a"), To: ExternalIPOf("extip"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "pod on node-b to externalIP", From: PodOn("node-b"), To: ExternalIPOf("extip"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to externalIP, UDP", From: PodOn("node-a"), To: ExternalIPOf("extip"), Port: 80, Proto: model.UDP, Expect: both.Masq(), Line: getLine()},
				{Name: "node to externalIP", From: NodeItself("node-a"), To: ExternalIPOf("extip"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to externalIP", From: External(0), To: ExternalIPOf("extip"), Port: 80, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "LB-01", Name: "an IPv6 externalIP no node owns is still captured",
			Fixture: docs(nodeADualStack, nodeBDualStack, svcExternalIPUnassigned6),
			Flows: []Flow{
				{Name: "pod to externalIP", From: PodOn("node-a"), To: ExternalIPOf("extip6"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to externalIP", From: External(0), To: ExternalIPOf("extip6"), Port: 80, Expect: both.Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "LB-02", Name: "externalIP and LB IP with eTP=Cluster reach every endpoint, always masqueraded",
			Fixture: docs(nodeA, nodeB, svcLBCluster),
			Flows: []Flow{
				{Name: "pod to externalIP", From: PodOn("node-a"), To: ExternalIPOf("lb"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to externalIP", From: External(0), To: ExternalIPOf("lb"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to LB IP", From: PodOn("node-a"), To: LoadBalancerIPOf("lb"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("lb"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "external to LB IP, UDP", From: External(0), To: LoadBalancerIPOf("lb"), Port: 80, Proto: model.UDP, Expect: both.Masq(), Line: getLine()},
				{Name: "node to LB IP", From: NodeItself("node-a"), To: LoadBalancerIPOf("lb"), Port: 80, Expect: both.Masq(), Line: getLine()},
				{Name: "pod to ClusterIP is not masqueraded", From: PodOn("node-a"), To: ClusterIPOf("lb"), Port: 80, Expect: both, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "LB-03", Name: "every LB ingress IP is served",
			Fixture: docs(nodeA, nodeB, svcTwoIngressIPs),
			Flows: []Flow{
				{Name: "external to the first LB IP", From: External(0), To: LoadBalancerIPOf("lb2"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "external to the second LB IP", From: External(0), To: LoadBalancerIPOf("lb2").At(1), Port: 80, Expect: a1, Line: getLine()},
				{Name: "pod to the second LB IP", From: PodOn("node-b"), To: LoadBalancerIPOf("lb2").At(1), Port: 80, Expect: a1, Line: getLine()},
				{Name: "external to the ipMode Proxy ingress IP is left alone", From: External(0), To: Addr("198.19.2.3"), Port: 80, Expect: Pass().On("nftables", Drop(), whyNFTUnallocated), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "LB-04", Name: "loadBalancerSourceRanges admit only listed sources to the LB IP",
			Fixture: docs(nodeA, nodeB, svcRanged),
			Flows: []Flow{
				{Name: "allowed external client", From: External(0), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "allowed external client, second range", From: External(1), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "blocked external client", From: External(2), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: Drop(), Line: getLine()},
				{Name: "pod outside the ranges", From: PodOn("node-a"), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: Drop(), Line: getLine()},
				{Name: "node inside the ranges", From: NodeItself("node-a"), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "other node inside the ranges", From: NodeItself("node-b"), To: LoadBalancerIPOf("ranged"), Port: 80, Expect: a1, Line: getLine()},
				// Ranges guard the LB IP only.
				{Name: "blocked external client to ClusterIP", From: External(2), To: ClusterIPOf("ranged"), Port: 80, Expect: a1, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "LB-04", Name: "changing loadBalancerSourceRanges flips who gets in",
			Fixture: docs(nodeA, nodeB, svcRangeUpdates(`  loadBalancerSourceRanges: ["198.18.127.1/32"]`)),
			Flows: []Flow{
				{Name: "admitted pod", From: PodOn("node-a"), To: LoadBalancerIPOf("swap"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "other pod", From: PodOn("node-b"), To: LoadBalancerIPOf("swap"), Port: 80, Expect: Drop(), Line: getLine()},
			},
			Then: []Step{
				{
					Name:    "the range names the other pod",
					Fixture: docs(nodeA, nodeB, svcRangeUpdates(`  loadBalancerSourceRanges: ["198.18.127.2/32"]`)),
					Flows: []Flow{
						{Name: "formerly admitted pod", From: PodOn("node-a"), To: LoadBalancerIPOf("swap"), Port: 80, Expect: Drop(), Line: getLine()},
						{Name: "newly admitted pod", From: PodOn("node-b"), To: LoadBalancerIPOf("swap"), Port: 80, Expect: a1, Line: getLine()},
					},
					Line: getLine(),
				},
				{
					Name:    "the field is removed",
					Fixture: docs(nodeA, nodeB, svcRangeUpdates("")),
					Flows: []Flow{
						{Name: "pod on node-a", From: PodOn("node-a"), To: LoadBalancerIPOf("swap"), Port: 80, Expect: a1, Line: getLine()},
						{Name: "pod on node-b", From: PodOn("node-b"), To: LoadBalancerIPOf("swap"), Port: 80, Expect: a1, Line: getLine()},
					},
					Line: getLine(),
				},
			},
			Line: getLine(),
		},
		{
			ID: "LB-06", Name: "a LoadBalancer without NodePorts, then with",
			Fixture: docs(nodeA, nodeB, svcLBNodePorts(false)),
			Flows: []Flow{
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("nonp"), Port: 80, Expect: a1, Line: getLine()},
				{Name: "no NodePort yet", From: External(0), To: NodeIPOf("node-a"), Port: 30009, Expect: Pass(), Line: getLine()},
			},
			Then: []Step{{
				Name:    "allocateLoadBalancerNodePorts set, nodePort 30009",
				Fixture: docs(nodeA, nodeB, svcLBNodePorts(true)),
				Flows: []Flow{
					{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("nonp"), Port: 80, Expect: a1, Line: getLine()},
					{Name: "external to the new NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30009, Expect: a1, Line: getLine()},
					{Name: "pod to the new NodePort on node-b", From: PodOn("node-a"), To: NodeIPOf("node-b"), Port: 30009, Expect: a1, Line: getLine()},
				},
				Line: getLine(),
			}},
			Line: getLine(),
		},
	}
}
