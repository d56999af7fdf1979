package flowtest

// Category C: endpoint conditions and the terminating fallback
// (CONFORMANCE.md §C). kube-proxy's rules (pkg/proxy/topology.go
// CategorizeEndpoints): ready endpoints are used when there are any; when
// none is ready, serving-and-terminating ones stand in, cluster-wide for the
// Cluster policy and per node for the Local one; an endpoint that is not
// serving is never used, and neither is one that is merely unready.

var httpPort = []string{"{name: http, port: 80, protocol: TCP}"}

// svcConditionsMix is kube-proxy's TestTerminatingEndpointsTrafficPolicy*
// "ready endpoints exist": two ready local endpoints, a serving-terminating
// and a not-serving one on node-b, and a ready one on node-b; once behind
// eTP=Cluster and once behind eTP=Local.
var svcConditionsMix = docs(`
apiVersion: v1
kind: Service
metadata: {name: mix, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.1
  externalTrafficPolicy: Cluster
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`, endpointSlice("mix-abcde", "mix", "IPv4", httpPort, conditionsMix...), `
apiVersion: v1
kind: Service
metadata: {name: mix-local, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.2
  externalTrafficPolicy: Local
  healthCheckNodePort: 30102
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30002}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.2
`, endpointSlice("mix-local-abcde", "mix-local", "IPv4", httpPort, conditionsMix...))

var conditionsMix = []epSpec{
	{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
	{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a"},
	{Name: "pod-b3", IP: "198.18.65.3", Node: "node-b", Cond: condTerminating},
	{Name: "pod-b4", IP: "198.18.65.4", Node: "node-b", Cond: condNotServing},
	{Name: "pod-b5", IP: "198.18.65.5", Node: "node-b"},
}

// svcOnlyTerminating is "only terminating endpoints exist" (Cluster), plus
// the e2e form: one terminating webserver on node-a behind a NodePort.
var svcOnlyTerminating = docs(`
apiVersion: v1
kind: Service
metadata: {name: term, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.1
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`, endpointSlice("term-abcde", "term", "IPv4", httpPort,
	epSpec{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a", Cond: condTerminating},
	epSpec{Name: "pod-a3", IP: "198.18.64.3", Node: "node-a", Cond: condTerminating},
	epSpec{Name: "pod-b4", IP: "198.18.65.4", Node: "node-b", Cond: condNotServing},
	epSpec{Name: "pod-b5", IP: "198.18.65.5", Node: "node-b", Cond: condTerminating},
), `
apiVersion: v1
kind: Service
metadata: {name: webserver, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.1.3
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30003}
`, endpointSlice("webserver-abcde", "webserver", "IPv4", httpPort,
	epSpec{Name: "webserver-0", IP: "198.18.64.9", Node: "node-a", Cond: condTerminating},
))

// svcLocalTerminating is TestTerminatingEndpointsTrafficPolicyLocal "only
// terminating endpoints exist": node-a has only terminating endpoints (and
// a not-serving one), node-b a ready one. Plus the e2e forms: one
// terminating webserver on node-a behind iTP=Local and behind eTP=Local.
var svcLocalTerminating = docs(`
apiVersion: v1
kind: Service
metadata: {name: term-local, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.1
  externalTrafficPolicy: Local
  healthCheckNodePort: 30101
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`, endpointSlice("term-local-abcde", "term-local", "IPv4", httpPort,
	epSpec{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a", Cond: condTerminating},
	epSpec{Name: "pod-a3", IP: "198.18.64.3", Node: "node-a", Cond: condTerminating},
	epSpec{Name: "pod-a4", IP: "198.18.64.4", Node: "node-a", Cond: condNotServing},
	epSpec{Name: "pod-b5", IP: "198.18.65.5", Node: "node-b"},
), `
apiVersion: v1
kind: Service
metadata: {name: itp-term, namespace: default}
spec:
  clusterIP: 198.19.1.4
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("itp-term-abcde", "itp-term", "IPv4", httpPort,
	epSpec{Name: "webserver-0", IP: "198.18.64.9", Node: "node-a", Cond: condTerminating},
), `
apiVersion: v1
kind: Service
metadata: {name: etp-term, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.1.5
  externalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30005}
`, endpointSlice("etp-term-abcde", "etp-term", "IPv4", httpPort,
	epSpec{Name: "webserver-0", IP: "198.18.64.9", Node: "node-a", Cond: condTerminating},
))

// svcNeverUsed pairs endpoints that must never be used (not serving, or
// unready without terminating) with one that may stand in.
var svcNeverUsed = docs(`
apiVersion: v1
kind: Service
metadata: {name: ns-cluster, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.1
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`, endpointSlice("ns-cluster-abcde", "ns-cluster", "IPv4", httpPort,
	epSpec{Name: "pod-a4", IP: "198.18.64.4", Node: "node-a", Cond: condNotServing},
	epSpec{Name: "pod-b5", IP: "198.18.65.5", Node: "node-b", Cond: condTerminating},
), `
apiVersion: v1
kind: Service
metadata: {name: ns-local, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.2
  externalTrafficPolicy: Local
  healthCheckNodePort: 30102
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30002}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.2
`, endpointSlice("ns-local-abcde", "ns-local", "IPv4", httpPort,
	epSpec{Name: "pod-a4", IP: "198.18.64.4", Node: "node-a", Cond: condNotServing},
	epSpec{Name: "pod-a6", IP: "198.18.64.6", Node: "node-a", Cond: condTerminating},
), `
apiVersion: v1
kind: Service
metadata: {name: unready, namespace: default}
spec:
  clusterIP: 198.19.1.3
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("unready-abcde", "unready", "IPv4", httpPort,
	epSpec{Name: "pod-a7", IP: "198.18.64.7", Node: "node-a", Cond: condUnready},
	epSpec{Name: "pod-b8", IP: "198.18.65.8", Node: "node-b", Cond: condTerminating},
))

// svcHealthCheckTerminating is the traffic half of e2e "should fail health
// check node port if there are only terminating endpoints": one local
// webserver behind eTP=Local, first ready, then terminating.
func svcHealthCheckTerminating(cond string) string {
	return docs(`
apiVersion: v1
kind: Service
metadata: {name: hc, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 198.19.1.1
  externalTrafficPolicy: Local
  healthCheckNodePort: 30100
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30001}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.2.1
`, endpointSlice("hc-abcde", "hc", "IPv4", httpPort,
		epSpec{Name: "webserver-0", IP: "198.18.64.9", Node: "node-a", Cond: cond},
	))
}

func endpointConditionCases() []Case {
	ready := FWD("pod-a1", "pod-a2", "pod-b5")
	fallback := FWD("pod-a2", "pod-a3", "pod-b5")
	return []Case{
		{
			ID: "EPC-01", Name: "ready endpoints are preferred over terminating ones",
			Fixture: docs(nodeA, nodeB, svcConditionsMix),
			Flows: []Flow{
				{Name: "eTP=Cluster: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("mix"), Port: 80, Expect: ready, Line: getLine()},
				{Name: "eTP=Cluster: pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("mix"), Port: 80, Expect: ready, Line: getLine()},
				{Name: "eTP=Cluster: external to LB IP", From: External(0), To: LoadBalancerIPOf("mix"), Port: 80, Expect: ready.Masq(), Line: getLine()},
				{Name: "eTP=Cluster: external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: ready.Masq(), Line: getLine()},
				// Local: each node's own ready endpoints; node-b's
				// terminating pod-b3 stays unused since pod-b5 is ready.
				{Name: "eTP=Local: external to LB IP", From: External(0), To: LoadBalancerIPOf("mix-local"), Port: 80, Expect: FWD("pod-a1", "pod-a2"), Line: getLine()},
				{Name: "eTP=Local: external to node-b NodePort", From: External(0), To: NodeIPOf("node-b"), Port: 30002, Expect: FWD("pod-b5"), Line: getLine()},
				{Name: "eTP=Local: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("mix-local"), Port: 80, Expect: ready, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "EPC-02", Name: "with no ready endpoint, serving-terminating ones are used (Cluster policy)",
			Fixture: docs(nodeA, nodeB, svcOnlyTerminating),
			Flows: []Flow{
				{Name: "pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("term"), Port: 80, Expect: fallback, Line: getLine()},
				{Name: "pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("term"), Port: 80, Expect: fallback, Line: getLine()},
				{Name: "external to LB IP", From: External(0), To: LoadBalancerIPOf("term"), Port: 80, Expect: fallback.Masq(), Line: getLine()},
				{Name: "external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: fallback.Masq(), Line: getLine()},
				// e2e: the only webserver is terminating; clients on both
				// nodes keep reaching it, by ClusterIP and by NodePort.
				{Name: "one terminating webserver: pod on its node to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("webserver"), Port: 80, Expect: FWD("webserver-0"), Line: getLine()},
				{Name: "one terminating webserver: pod on node-b to ClusterIP", From: PodOn("node-b"), To: ClusterIPOf("webserver"), Port: 80, Expect: FWD("webserver-0"), Line: getLine()},
				{Name: "one terminating webserver: pod on its node to NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30003, Expect: FWD("webserver-0").Masq(), Line: getLine()},
				{Name: "one terminating webserver: pod on node-b to its NodePort", From: PodOn("node-b"), To: NodeIPOf("node-a"), Port: 30003, Expect: FWD("webserver-0").Masq(), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// The e2e eTP=Local form also has "pod on node-a to node-b's
			// NodePort fails"; that flow is ETP-06's (its outcome depends
			// on the local-traffic detector).
			ID: "EPC-03", Name: "Local-policy fallback uses only this node's serving-terminating endpoints",
			Fixture: docs(nodeA, nodeB, svcLocalTerminating),
			Flows: []Flow{
				{Name: "external to LB IP: node-a's terminating endpoints", From: External(0), To: LoadBalancerIPOf("term-local"), Port: 80, Expect: FWD("pod-a2", "pod-a3"), Line: getLine()},
				{Name: "external to node-a NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("pod-a2", "pod-a3"), Line: getLine()},
				{Name: "external to node-b NodePort: node-b's ready endpoint", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: FWD("pod-b5"), Line: getLine()},
				{Name: "pod to ClusterIP: the Cluster set prefers the ready remote endpoint", From: PodOn("node-a"), To: ClusterIPOf("term-local"), Port: 80, Expect: FWD("pod-b5"), Line: getLine()},
				{Name: "iTP=Local, terminating webserver: pod on its node", From: PodOn("node-a"), To: ClusterIPOf("itp-term"), Port: 80, Expect: FWD("webserver-0"), Line: getLine()},
				{Name: "iTP=Local, terminating webserver: pod on node-b fails", From: PodOn("node-b"), To: ClusterIPOf("itp-term"), Port: 80, Expect: Drop().On("ipvs", Reject(), WhyIPVSLocalNoEndpoint), Line: getLine()},
				{Name: "eTP=Local, terminating webserver: pod to its node's NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30005, Expect: FWD("webserver-0"), Line: getLine()},
				{Name: "eTP=Local, terminating webserver: pod on node-b to node-a's NodePort", From: PodOn("node-b"), To: NodeIPOf("node-a"), Port: 30005, Expect: FWD("webserver-0"), Line: getLine()},
				{Name: "eTP=Local, terminating webserver: external to node-a's NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30005, Expect: FWD("webserver-0"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "EPC-04", Name: "endpoints that are not serving, or unready and not terminating, are never used",
			Fixture: docs(nodeA, nodeB, svcNeverUsed),
			Flows: []Flow{
				{Name: "Cluster fallback skips the not-serving endpoint: pod", From: PodOn("node-a"), To: ClusterIPOf("ns-cluster"), Port: 80, Expect: FWD("pod-b5"), Line: getLine()},
				{Name: "Cluster fallback skips the not-serving endpoint: external to LB IP", From: External(0), To: LoadBalancerIPOf("ns-cluster"), Port: 80, Expect: FWD("pod-b5").Masq(), Line: getLine()},
				{Name: "Local fallback skips the not-serving endpoint: external to LB IP", From: External(0), To: LoadBalancerIPOf("ns-local"), Port: 80, Expect: FWD("pod-a6"), Line: getLine()},
				{Name: "Local fallback skips the not-serving endpoint: pod to ClusterIP", From: PodOn("node-a"), To: ClusterIPOf("ns-local"), Port: 80, Expect: FWD("pod-a6"), Line: getLine()},
				{Name: "an unready, not terminating endpoint is no fallback", From: PodOn("node-a"), To: ClusterIPOf("unready"), Port: 80, Expect: FWD("pod-b8"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			// The health-check half (200, then 503) is checked with the
			// health-check specs; this is the traffic half.
			ID: "EPC-06", Name: "eTP=Local NodePort keeps answering from its local endpoint once it terminates",
			Fixture: docs(nodeA, nodeB, svcHealthCheckTerminating(condReady)),
			Flows: []Flow{
				{Name: "ready: pod to its node's NodePort", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("webserver-0"), Line: getLine()},
				{Name: "ready: external to NodePort", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("webserver-0"), Line: getLine()},
			},
			Then: []Step{{
				Name:    "the webserver is terminating",
				Fixture: docs(nodeA, nodeB, svcHealthCheckTerminating(condTerminating)),
				Flows: []Flow{
					{Name: "pod to its node's NodePort still answered", From: PodOn("node-a"), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("webserver-0"), Line: getLine()},
					{Name: "external to NodePort still answered, client IP kept", From: External(0), To: NodeIPOf("node-a"), Port: 30001, Expect: FWD("webserver-0"), Line: getLine()},
					{Name: "external to LB IP still answered", From: External(0), To: LoadBalancerIPOf("hc"), Port: 80, Expect: FWD("webserver-0"), Line: getLine()},
					{Name: "external to node-b NodePort: nothing local there", From: External(0), To: NodeIPOf("node-b"), Port: 30001, Expect: Drop(), Line: getLine()},
				},
				Line: getLine(),
			}},
			Line: getLine(),
		},
	}
}
