package flowtest

// Category K: topology hints and trafficDistribution (CONFORMANCE.md §K).
// kube-proxy reads the hints the EndpointSlice controller writes, never
// spec.trafficDistribution itself: zone hints filter the Cluster endpoints
// when every ready endpoint has them and one names the node's zone; node
// hints (PreferSameNode) likewise, ahead of zone hints.

// Three nodes in three zones (TOPO-01).
var (
	nodeCZoneC = zonedNode("node-c", "zone-c", "198.18.0.13")
)

// svcPreferClose is e2e "should route traffic to an endpoint that is close
// to the client": serve-hostname pods in zones a and b, hinted for their
// own zone as the controller does for PreferClose; zone c has none.
func svcPreferClose(name, clusterIP, distribution string) string {
	return docs(`
apiVersion: v1
kind: Service
metadata: {name: `+name+`, namespace: default}
spec:
  clusterIP: `+clusterIP+`
  trafficDistribution: `+distribution+`
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 9376}
`, endpointSlice(name+"-abcde", name, "IPv4", []string{"{name: http, port: 9376, protocol: TCP}"},
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: zoneHints("zone-a")},
		epSpec{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a", Hints: zoneHints("zone-a")},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Hints: zoneHints("zone-b")},
	))
}

// svcHinted is a ClusterIP Service named name on port 80 with the given
// endpoints.
func svcHinted(name, clusterIP string, eps ...epSpec) string {
	return docs(`
apiVersion: v1
kind: Service
metadata: {name: `+name+`, namespace: default}
spec:
  clusterIP: `+clusterIP+`
  trafficDistribution: PreferClose
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice(name+"-abcde", name, "IPv4", httpPort, eps...))
}

// TOPO-02's nodes: two zoned ones, one without the zone label and one with
// the label empty.
var (
	nodeCNoZone    = zonedNode("node-c", "-", "198.18.0.13")
	nodeDEmptyZone = zonedNode("node-d", "", "198.18.0.14")
)

// svcHintsIgnored holds one Service per TOPO-02 variant.
var svcHintsIgnored = docs(
	// One endpoint has no hints: no filtering anywhere.
	svcHinted("unhinted", "198.19.0.41",
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: zoneHints("zone-a")},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b"},
	),
	// Fully hinted: filtered in zone-a and zone-b, not on nodes without a
	// zone.
	svcHinted("hinted", "198.19.0.42",
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: zoneHints("zone-a")},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Hints: zoneHints("zone-b")},
	),
	// Nothing is hinted for zone-b.
	svcHinted("elsewhere", "198.19.0.43",
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: zoneHints("zone-a")},
		epSpec{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a", Hints: zoneHints("zone-a")},
	),
	// zone-a's only endpoint is unready: it neither counts nor receives.
	svcHinted("unready-same-zone", "198.19.0.44",
		epSpec{Name: "pod-a3", IP: "198.18.64.3", Node: "node-a", Hints: zoneHints("zone-a"), Cond: condUnready},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Hints: zoneHints("zone-b")},
	),
	// An endpoint hinted for two zones serves both.
	svcHinted("multi", "198.19.0.45",
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: zoneHints("zone-a")},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Hints: zoneHints("zone-b", "zone-a")},
		epSpec{Name: "pod-b2", IP: "198.18.65.2", Node: "node-b", Hints: zoneHints("zone-b")},
	),
	// Local policies are never zone-filtered.
	`
apiVersion: v1
kind: Service
metadata: {name: local, namespace: default}
spec:
  type: NodePort
  clusterIP: 198.19.0.46
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80, nodePort: 30006}
`, endpointSlice("local-abcde", "local", "IPv4", httpPort,
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: zoneHints("zone-b")},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Hints: zoneHints("zone-a")},
	),
)

// PreferSameNode (TOPO-03): node-a and node-c share zone-a, node-b is in
// zone-b, node-d in zone-a has no endpoint of its own.
var (
	nodeAZoneAOnly = zonedNode("node-a", "zone-a", "198.18.0.11")
	nodeCZoneA     = zonedNode("node-c", "zone-a", "198.18.0.13")
	nodeDZoneA     = zonedNode("node-d", "zone-a", "198.18.0.14")
)

func svcSameNode(name, clusterIP string, b1Hints string) string {
	return docs(`
apiVersion: v1
kind: Service
metadata: {name: `+name+`, namespace: default}
spec:
  clusterIP: `+clusterIP+`
  trafficDistribution: PreferSameNode
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice(name+"-abcde", name, "IPv4", httpPort,
		epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a", Hints: nodeZoneHints("node-a", "zone-a")},
		epSpec{Name: "pod-b1", IP: "198.18.65.1", Node: "node-b", Hints: b1Hints},
		epSpec{Name: "pod-c1", IP: "198.18.66.1", Node: "node-c", Hints: nodeZoneHints("node-c", "zone-a")},
	))
}

func topologyCases() []Case {
	zoneA := FWD("pod-a1", "pod-a2")
	anyZone := FWD("pod-a1", "pod-a2", "pod-b1")
	return []Case{
		{
			ID: "TOPO-01", Name: "PreferClose keeps traffic in the client's zone, cluster-wide where the zone has none",
			Fixture: docs(nodeAZoneA, nodeBZoneB, nodeCZoneC,
				svcPreferClose("close", "198.19.0.41", "PreferClose"),
				svcPreferClose("same-zone", "198.19.0.42", "PreferSameZone")),
			Flows: []Flow{
				{Name: "client in zone-a", From: PodOn("node-a"), To: ClusterIPOf("close"), Port: 80, Expect: zoneA, Line: getLine()},
				{Name: "client in zone-b", From: PodOn("node-b"), To: ClusterIPOf("close"), Port: 80, Expect: FWD("pod-b1"), Line: getLine()},
				{Name: "client in zone-c reaches any endpoint", From: PodOn("node-c"), To: ClusterIPOf("close"), Port: 80, Expect: anyZone, Line: getLine()},
				{Name: "hostNetwork client in zone-b", From: NodeItself("node-b"), To: ClusterIPOf("close"), Port: 80, Expect: FWD("pod-b1").Masq(), Line: getLine()},
				{Name: "PreferSameZone: client in zone-a", From: PodOn("node-a"), To: ClusterIPOf("same-zone"), Port: 80, Expect: zoneA, Line: getLine()},
				{Name: "PreferSameZone: client in zone-c", From: PodOn("node-c"), To: ClusterIPOf("same-zone"), Port: 80, Expect: anyZone, Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "TOPO-02", Name: "zone hints are ignored where they cannot apply",
			Fixture: docs(nodeAZoneA, nodeBZoneB, nodeCNoZone, nodeDEmptyZone, svcHintsIgnored),
			Flows: []Flow{
				{Name: "one endpoint without hints: no filtering", From: PodOn("node-a"), To: ClusterIPOf("unhinted"), Port: 80, Expect: FWD("pod-a1", "pod-b1"), Line: getLine()},
				{Name: "fully hinted: filtered in zone-a", From: PodOn("node-a"), To: ClusterIPOf("hinted"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "node without a zone label: no filtering", From: PodOn("node-c"), To: ClusterIPOf("hinted"), Port: 80, Expect: FWD("pod-a1", "pod-b1"), Line: getLine()},
				{Name: "node with an empty zone label: no filtering", From: PodOn("node-d"), To: ClusterIPOf("hinted"), Port: 80, Expect: FWD("pod-a1", "pod-b1"), Line: getLine()},
				{Name: "no endpoint hinted for the node's zone: no filtering", From: PodOn("node-b"), To: ClusterIPOf("elsewhere"), Port: 80, Expect: FWD("pod-a1", "pod-a2"), Line: getLine()},
				{Name: "the zone's only endpoint is unready: the ready ones elsewhere", From: PodOn("node-a"), To: ClusterIPOf("unready-same-zone"), Port: 80, Expect: FWD("pod-b1"), Line: getLine()},
				{Name: "an endpoint hinted for two zones serves zone-a", From: PodOn("node-a"), To: ClusterIPOf("multi"), Port: 80, Expect: FWD("pod-a1", "pod-b1"), Line: getLine()},
				{Name: "an endpoint hinted for two zones serves zone-b", From: PodOn("node-b"), To: ClusterIPOf("multi"), Port: 80, Expect: FWD("pod-b1", "pod-b2"), Line: getLine()},
				{Name: "iTP=Local ignores hints", From: PodOn("node-a"), To: ClusterIPOf("local"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "eTP=Local ignores hints", From: External(0), To: NodeIPOf("node-a"), Port: 30006, Expect: FWD("pod-a1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "TOPO-03", Name: "PreferSameNode keeps traffic on the client's node, then in its zone",
			Fixture: docs(nodeAZoneAOnly, nodeBZoneB, nodeCZoneA, nodeDZoneA,
				svcSameNode("same-node", "198.19.0.41", nodeZoneHints("node-b", "zone-b")),
				svcSameNode("zone-only", "198.19.0.42", zoneHints("zone-b")),
				svcSameNode("unhinted", "198.19.0.43", "")),
			Flows: []Flow{
				{Name: "client on node-a", From: PodOn("node-a"), To: ClusterIPOf("same-node"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
				{Name: "client on node-b", From: PodOn("node-b"), To: ClusterIPOf("same-node"), Port: 80, Expect: FWD("pod-b1"), Line: getLine()},
				{Name: "client on node-c", From: PodOn("node-c"), To: ClusterIPOf("same-node"), Port: 80, Expect: FWD("pod-c1"), Line: getLine()},
				{Name: "client on node-d, no endpoint for it: its zone's", From: PodOn("node-d"), To: ClusterIPOf("same-node"), Port: 80, Expect: FWD("pod-a1", "pod-c1"), Line: getLine()},
				{Name: "one endpoint without node hints: zone hints", From: PodOn("node-a"), To: ClusterIPOf("zone-only"), Port: 80, Expect: FWD("pod-a1", "pod-c1"), Line: getLine()},
				{Name: "one endpoint without any hints: every endpoint", From: PodOn("node-a"), To: ClusterIPOf("unhinted"), Port: 80, Expect: FWD("pod-a1", "pod-b1", "pod-c1"), Line: getLine()},
			},
			Line: getLine(),
		},
	}
}
