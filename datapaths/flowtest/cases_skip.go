package flowtest

// Category M: Services the datapath must not proxy, and Services that come
// and go (CONFORMANCE.md §M).

// svcNotProxied holds what kube-proxy skips whole (ShouldSkipService):
// headless Services, with and without ports, and an ExternalName Service
// with a stray clusterIP. Each has an EndpointSlice naming a live pod, so a
// datapath that wrongly proxied them would be caught answering. A plain
// Service beside them shows the datapath is working.
var svcNotProxied = docs(`
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: default}
spec:
  clusterIP: None
  externalIPs: [198.19.1.55]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("headless-abcde", "headless", "IPv4", httpPort,
	epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
), `
apiVersion: v1
kind: Service
metadata: {name: headless-noports, namespace: default}
spec:
  clusterIP: None
`, endpointSlice("headless-noports-abcde", "headless-noports", "IPv4", nil,
	epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
), `
apiVersion: v1
kind: Service
metadata: {name: extname, namespace: default}
spec:
  type: ExternalName
  externalName: svc.example.invalid
  clusterIP: 198.19.55.4
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("extname-abcde", "extname", "IPv4", httpPort,
	epSpec{Name: "pod-a2", IP: "198.18.64.2", Node: "node-a"},
), `
apiVersion: v1
kind: Service
metadata: {name: control, namespace: default}
spec:
  clusterIP: 198.19.0.41
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice("control-abcde", "control", "IPv4", httpPort,
	epSpec{Name: "pod-a1", IP: "198.18.64.1", Node: "node-a"},
))

// Services for SKIP-03, after e2e "should be able to up and down
// services", "should work after the service has been recreated" and
// "should function for multiple endpoint-Services with same selector".
func svcUpDown(name, clusterIP string, eps ...epSpec) string {
	return docs(`
apiVersion: v1
kind: Service
metadata: {name: `+name+`, namespace: default}
spec:
  clusterIP: `+clusterIP+`
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 80}
`, endpointSlice(name+"-abcde", name, "IPv4", httpPort, eps...))
}

var (
	upDown1 = []epSpec{{Name: "up1-a", IP: "198.18.64.11", Node: "node-a"}, {Name: "up1-b", IP: "198.18.65.11", Node: "node-b"}}
	upDown2 = []epSpec{{Name: "up2-a", IP: "198.18.64.12", Node: "node-a"}, {Name: "up2-b", IP: "198.18.65.12", Node: "node-b"}}
	upDown3 = []epSpec{{Name: "up3-a", IP: "198.18.64.13", Node: "node-a"}, {Name: "up3-b", IP: "198.18.65.13", Node: "node-b"}}
	// Two Services with one selector share their endpoints.
	sameSelector = []epSpec{{Name: "sel-a", IP: "198.18.64.14", Node: "node-a"}, {Name: "sel-b", IP: "198.18.65.14", Node: "node-b"}}
)

func skipCases() []Case {
	up1 := FWD("up1-a", "up1-b")
	up2 := FWD("up2-a", "up2-b")
	up3 := FWD("up3-a", "up3-b")
	sel := FWD("sel-a", "sel-b")
	// Every address these flows send to lies in the Service CIDR but is
	// no ClusterIP (any more).
	unallocated := Pass().On("nftables", Drop(), whyNFTUnallocated)
	return []Case{
		{
			ID: "SKIP-01", Name: "headless and ExternalName Services are not proxied",
			Fixture: docs(nodeA, nodeB, svcNotProxied),
			Flows: []Flow{
				{Name: "pod to ExternalName's stray clusterIP", From: PodOn("node-a"), To: Addr("198.19.55.4"), Port: 80, Expect: unallocated, Line: getLine()},
				{Name: "node to ExternalName's stray clusterIP", From: NodeItself("node-a"), To: Addr("198.19.55.4"), Port: 80, Expect: unallocated, Line: getLine()},
				{Name: "external to ExternalName's stray clusterIP", From: External(0), To: Addr("198.19.55.4"), Port: 80, Expect: unallocated, Line: getLine()},
				{Name: "pod to a headless Service's externalIP", From: PodOn("node-a"), To: Addr("198.19.1.55"), Port: 80, Expect: unallocated, Line: getLine()},
				{Name: "control: pod to a plain Service", From: PodOn("node-a"), To: ClusterIPOf("control"), Port: 80, Expect: FWD("pod-a1"), Line: getLine()},
			},
			Line: getLine(),
		},
		{
			ID: "SKIP-03", Name: "Services deleted, created and recreated",
			Fixture: docs(nodeA, nodeB,
				svcUpDown("svc1", "198.19.0.71", upDown1...),
				svcUpDown("svc2", "198.19.0.72", upDown2...),
				svcUpDown("sel-x", "198.19.0.74", sameSelector...),
				svcUpDown("sel-y", "198.19.0.75", sameSelector...)),
			Flows: []Flow{
				{Name: "svc1 served", From: PodOn("node-a"), To: ClusterIPOf("svc1"), Port: 80, Expect: up1, Line: getLine()},
				{Name: "svc2 served", From: PodOn("node-a"), To: ClusterIPOf("svc2"), Port: 80, Expect: up2, Line: getLine()},
				{Name: "sel-x served", From: PodOn("node-a"), To: ClusterIPOf("sel-x"), Port: 80, Expect: sel, Line: getLine()},
				{Name: "sel-y served", From: PodOn("node-a"), To: ClusterIPOf("sel-y"), Port: 80, Expect: sel, Line: getLine()},
			},
			Then: []Step{
				{
					Name: "svc1 deleted, svc3 created",
					Fixture: docs(nodeA, nodeB,
						svcUpDown("svc2", "198.19.0.72", upDown2...),
						svcUpDown("svc3", "198.19.0.73", upDown3...),
						svcUpDown("sel-x", "198.19.0.74", sameSelector...),
						svcUpDown("sel-y", "198.19.0.75", sameSelector...)),
					Flows: []Flow{
						{Name: "svc1's address is not served, from the host", From: NodeItself("node-a"), To: Addr("198.19.0.71"), Port: 80, Expect: unallocated, Line: getLine()},
						{Name: "svc1's address is not served, from a pod", From: PodOn("node-a"), To: Addr("198.19.0.71"), Port: 80, Expect: unallocated, Line: getLine()},
						{Name: "svc2 unaffected", From: NodeItself("node-a"), To: ClusterIPOf("svc2"), Port: 80, Expect: up2.Masq(), Line: getLine()},
						{Name: "svc3 served", From: PodOn("node-a"), To: ClusterIPOf("svc3"), Port: 80, Expect: up3, Line: getLine()},
					},
					Line: getLine(),
				},
				{
					Name: "svc2 recreated with a new ClusterIP, same pods",
					Fixture: docs(nodeA, nodeB,
						svcUpDown("svc2", "198.19.0.76", upDown2...),
						svcUpDown("svc3", "198.19.0.73", upDown3...),
						svcUpDown("sel-x", "198.19.0.74", sameSelector...),
						svcUpDown("sel-y", "198.19.0.75", sameSelector...)),
					Flows: []Flow{
						{Name: "svc2's old address is not served", From: NodeItself("node-a"), To: Addr("198.19.0.72"), Port: 80, Expect: unallocated, Line: getLine()},
						{Name: "svc2 served on its new address", From: PodOn("node-a"), To: ClusterIPOf("svc2"), Port: 80, Expect: up2, Line: getLine()},
						{Name: "svc2 served on its new address, from node-b", From: PodOn("node-b"), To: ClusterIPOf("svc2"), Port: 80, Expect: up2, Line: getLine()},
						{Name: "svc3 unaffected", From: PodOn("node-a"), To: ClusterIPOf("svc3"), Port: 80, Expect: up3, Line: getLine()},
					},
					Line: getLine(),
				},
				{
					Name: "sel-x deleted, sel-y kept",
					Fixture: docs(nodeA, nodeB,
						svcUpDown("svc2", "198.19.0.76", upDown2...),
						svcUpDown("svc3", "198.19.0.73", upDown3...),
						svcUpDown("sel-y", "198.19.0.75", sameSelector...)),
					Flows: []Flow{
						{Name: "sel-x's address is not served", From: PodOn("node-a"), To: Addr("198.19.0.74"), Port: 80, Expect: unallocated, Line: getLine()},
						{Name: "sel-y still served by the shared pods", From: PodOn("node-a"), To: ClusterIPOf("sel-y"), Port: 80, Expect: sel, Line: getLine()},
						{Name: "sel-y from node-b", From: PodOn("node-b"), To: ClusterIPOf("sel-y"), Port: 80, Expect: sel, Line: getLine()},
					},
					Line: getLine(),
				},
			},
			Line: getLine(),
		},
	}
}
