package model

import (
	"fmt"
	"strings"
	"testing"
)

// Extreme but legal input is accepted (and what is beyond the API server's
// limits refused, naming the file, object and field). None of these tests
// asserts a duration, but a parser that is quadratic in any of them runs
// for minutes instead of seconds.

// bigSlices writes n endpoints of Service "big" as EndpointSlices of at
// most per endpoints each (the API server's limit is 1000).
func bigSlices(n, per int) string {
	var b strings.Builder
	b.WriteString(svc("big", "  clusterIP: 198.19.0.10\n  ports: [{name: http, port: 80, targetPort: 8080}]\n"))
	for s := 0; s*per < n; s++ {
		fmt.Fprintf(&b, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-%d\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints:\n", s)
		for i := s * per; i < min(n, (s+1)*per); i++ {
			// 100k distinct addresses: 198.18.64.0/18 holds 16k, so the
			// rest of 198.18.0.0/15's upper half is used as well.
			fmt.Fprintf(&b, "- addresses: [198.%d.%d.%d]\n  nodeName: node-%d\n", 18+i>>16, (i>>8)&0xff, i&0xff, i%3)
		}
	}
	return b.String()
}

func TestOneServiceWith100kEndpoints(t *testing.T) {
	const n = 100_000
	c := mustParse(t, bigSlices(n, 1000))
	s := mustService(t, c, "default", "big")
	if got := len(s.Ports[0].Endpoints); got != n {
		t.Fatalf("%d endpoints, want %d", got, n)
	}
	if len(c.Nodes) != 3 {
		t.Errorf("%d nodes, want the 3 the endpoints name", len(c.Nodes))
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestEndpointSliceLimits(t *testing.T) {
	// One slice may hold 1000 endpoints and 100 ports, not more.
	_, err := Parse(testFile, []byte(bigSlices(1001, 1001)))
	want := "test.yaml: EndpointSlice default/big-0: endpoints: 1001 endpoints, at most 1000 allowed in one EndpointSlice"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v\nwant %q", err, want)
	}

	var ports, slicePorts []string
	for i := range 101 {
		ports = append(ports, fmt.Sprintf("{name: p%d, port: %d, targetPort: %d}", i, 1000+i, 2000+i))
		slicePorts = append(slicePorts, fmt.Sprintf("{name: p%d, port: %d}", i, 2000+i))
	}
	svc100 := svc("wide", "  clusterIP: 198.19.0.20\n  ports: ["+strings.Join(ports[:100], ", ")+"]\n")
	ok := svc100 + slice("wide-1", "wide", "["+strings.Join(slicePorts[:100], ", ")+"]", `[{addresses: [198.18.64.1]}]`)
	c := mustParse(t, ok)
	for i, p := range mustService(t, c, "default", "wide").Ports {
		if len(p.Endpoints) != 1 {
			t.Fatalf("port %d: %d endpoints, want 1", i, len(p.Endpoints))
		}
	}
	tooMany := svc100 + slice("wide-1", "wide", "["+strings.Join(slicePorts, ", ")+"]", `[{addresses: [198.18.64.1]}]`)
	_, err = Parse(testFile, []byte(tooMany))
	want = "test.yaml: EndpointSlice default/wide-1: ports: 101 ports, at most 100 allowed in one EndpointSlice"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v\nwant %q", err, want)
	}
}

func Test30kServicesSharingOnePort(t *testing.T) {
	const n = 30_000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%05d}\nspec: {clusterIP: 198.19.%d.%d, ports: [{port: 80}]}\n", i, i>>8, i&0xff)
	}
	c := mustParse(t, b.String())
	if len(c.Services) != n {
		t.Fatalf("%d Services, want %d", len(c.Services), n)
	}
}

func TestNamesAtTheirLimits(t *testing.T) {
	l63 := func(p string) string { return p + strings.Repeat("x", 62-len(p)) + "z" }
	node := l63("n") + "." + l63("b") + "." + l63("c") + "." + strings.Repeat("d", 61) // 253
	if len(node) != 253 {
		t.Fatalf("node name is %d characters", len(node))
	}
	ns, name, port := l63("ns"), l63("s"), l63("p")
	ok := fmt.Sprintf(`apiVersion: v1
kind: Node
metadata: {name: %[4]s}
---
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec: {clusterIP: 198.19.0.10, ports: [{name: %[3]s, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[5]s, namespace: %[1]s, labels: {kubernetes.io/service-name: %[2]s}}
addressType: IPv4
ports: [{name: %[3]s, port: 8080}]
endpoints: [{addresses: [198.18.64.1], nodeName: %[4]s}]
`, ns, name, port, node, node)
	c := mustParse(t, ok)
	if s := mustService(t, c, ns, name); len(s.Ports[0].Endpoints) != 1 || s.Ports[0].Endpoints[0].NodeName != node {
		t.Errorf("endpoint lost: %+v", s.Ports[0].Endpoints)
	}

	tests := []struct{ name, yaml, want string }{
		{
			name: "Service name of 64 characters",
			yaml: svc(name+"a", "  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: `test.yaml: Service default/` + name + `a: metadata.name: "` + name + `a" is not a valid Service name (at most 63`,
		},
		{
			name: "Service name starting with a digit",
			yaml: svc("1web", "  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: `test.yaml: Service default/1web: metadata.name: "1web" is not a valid Service name`,
		},
		{
			name: "namespace of 64 characters",
			yaml: "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: " + ns + "a}\nspec: {clusterIP: 198.19.0.10, ports: [{port: 80}]}\n",
			want: `test.yaml: Service ` + ns + `a/web: metadata.namespace: "` + ns + `a" is not a valid namespace`,
		},
		{
			name: "port name of 64 characters",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{name: "+port+"a, port: 80}]\n"),
			want: `test.yaml: Service default/web: spec.ports[0].name: "` + port + `a" is not a valid port name`,
		},
		{
			name: "node name of 254 characters",
			yaml: "apiVersion: v1\nkind: Node\nmetadata: {name: " + node + "d}\n",
			want: `test.yaml: Node ` + node + `d: metadata.name: "` + node + `d" is not a valid node name: 254 characters, at most 253 allowed`,
		},
		{
			name: "endpoint on a node named against the rules",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.64.1], nodeName: Node_A}]`),
			want: `test.yaml: EndpointSlice default/web-1: endpoints[0].nodeName: "Node_A" is not a valid node name`,
		},
		{
			name: "EndpointSlice name of 254 characters",
			yaml: svcWeb + slice(node+"d", "web", `[{name: http, port: 8080}]`, `[]`),
			want: `test.yaml: EndpointSlice default/` + node + `d: metadata.name: "` + node + `d" is not a valid EndpointSlice name: 254 characters`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(testFile, []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestIPv6OnlyCluster(t *testing.T) {
	c := mustParse(t, `apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: "2001:db8:18::11"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  clusterIPs: ["2001:db8:19::10"]
  ipFamilies: [IPv6]
  externalIPs: ["2001:db8:19::2:10"]
  ports: [{name: http, port: 80, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: "2001:db8:18:128::10"}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["2001:db8:64::10"], nodeName: node-a}]
`)
	s := mustService(t, c, "default", "web")
	if len(s.ClusterIPs) != 1 || !s.ClusterIPs[0].Is6() || len(s.Ports[0].Endpoints) != 1 || len(c.Warnings) > 0 {
		t.Errorf("IPv6-only Service parsed as %+v, warnings %q", s, c.Warnings)
	}
}

func TestOverlappingVIPsAreRefused(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{
			name: "two Services with one ClusterIP",
			yaml: svcWeb + svc("api", "  clusterIP: 198.19.0.10\n  ports: [{port: 8080}]\n"),
			want: "test.yaml: Service default/web: spec.clusterIPs[0]: 198.19.0.10 is already the ClusterIP of Service default/api (document #2)",
		},
		{
			name: "an externalIP that is another Service's ClusterIP and port",
			yaml: svcWeb + svc("api", "  clusterIP: 198.19.0.11\n  externalIPs: [198.19.0.10]\n  ports: [{port: 80}]\n"),
			want: "test.yaml: Service default/web: spec.clusterIPs[0]: 198.19.0.10 port 80/TCP is already served by Service default/api (spec.externalIPs[0] in document #2): two Services may not capture one address, port and protocol",
		},
		{
			name: "a load-balancer IP two Services share on one port",
			yaml: svc("a", "  type: LoadBalancer\n  clusterIP: 198.19.0.11\n  ports: [{port: 80, nodePort: 30011}]\n", "status: {loadBalancer: {ingress: [{ip: 198.18.128.1}]}}\n") +
				svc("b", "  type: LoadBalancer\n  clusterIP: 198.19.0.12\n  ports: [{port: 80, nodePort: 30012}]\n", "status: {loadBalancer: {ingress: [{ip: 198.18.128.1}]}}\n"),
			want: "test.yaml: Service default/b: status.loadBalancer.ingress[0].ip: 198.18.128.1 port 80/TCP is already served by Service default/a (status.loadBalancer.ingress[0].ip in document #1)",
		},
		{
			name: "an externalIP equal to the Service's own ClusterIP",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  externalIPs: [198.19.0.10]\n  ports: [{port: 80}]\n"),
			want: "test.yaml: Service default/web: spec.externalIPs[0]: 198.19.0.10 is also spec.clusterIPs[0] of this Service (port 80/TCP): a Service may list an address only once",
		},
		{
			name: "one externalIP listed twice",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  externalIPs: [198.19.200.1, 198.19.200.1]\n  ports: [{port: 80}]\n"),
			want: "test.yaml: Service default/web: spec.externalIPs[1]: 198.19.200.1 is also spec.externalIPs[0] of this Service",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(testFile, []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}

	// Sharing an address on different ports, or the same port number with
	// another protocol, is fine (MetalLB's shared IPs work this way).
	fine := svc("dns-udp", "  type: LoadBalancer\n  clusterIP: 198.19.0.53\n  ports: [{port: 53, protocol: UDP, nodePort: 30053}]\n", "status: {loadBalancer: {ingress: [{ip: 198.18.128.53}]}}\n") +
		svc("dns-tcp", "  type: LoadBalancer\n  clusterIP: 198.19.0.54\n  ports: [{port: 53, protocol: TCP, nodePort: 30054}]\n", "status: {loadBalancer: {ingress: [{ip: 198.18.128.53}]}}\n") +
		svc("other", "  clusterIP: 198.19.0.55\n  externalIPs: [198.19.0.53]\n  ports: [{port: 8053}]\n")
	mustParse(t, fine)
}
