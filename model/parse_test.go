package model

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const testFile = "test.yaml"

func mustParse(t *testing.T, yaml string) *Cluster {
	t.Helper()
	c, err := Parse(testFile, []byte(yaml))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func mustService(t *testing.T, c *Cluster, ns, name string) *Service {
	t.Helper()
	s := c.Service(ns, name)
	if s == nil {
		t.Fatalf("Service %s/%s not in cluster", ns, name)
	}
	return s
}

// endpointSet renders endpoints as "ip:port name r/s/t node", which makes
// table expectations easy to read.
func endpointSet(eps []*Endpoint) []string {
	var out []string
	for _, ep := range eps {
		flags := ""
		for _, b := range []bool{ep.Ready, ep.Serving, ep.Terminating} {
			if b {
				flags += "1"
			} else {
				flags += "0"
			}
		}
		out = append(out, strings.TrimSpace(ep.String()+" "+ep.Name+" "+flags+" "+ep.NodeName))
	}
	return out
}

func TestParseKubectlListOutput(t *testing.T) {
	c, err := ParseFiles("testdata/kubectl-get-svc-eps-nodes.yaml")
	if err != nil {
		t.Fatalf("ParseFiles: %v", err)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("unexpected warnings: %q", c.Warnings)
	}

	var names []string
	for _, s := range c.Services {
		names = append(names, s.Name.String())
	}
	if diff := cmp.Diff([]string{"default/hello", "default/kubernetes", "kube-system/kube-dns"}, names); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}

	hello := mustService(t, c, "default", "hello")
	if hello.Type != NodePort || hello.Ports[0].NodePort != 30080 || hello.Ports[0].TargetPort != "8080" {
		t.Errorf("hello = %+v, port %+v", hello, hello.Ports[0])
	}
	if got, want := hello.ClusterIPs, []netip.Addr{netip.MustParseAddr("198.19.0.80")}; !cmp.Equal(got, want, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("hello ClusterIPs = %v, want %v", got, want)
	}
	wantHello := []string{
		"198.18.64.7:8080 hello-7d4b9c-abcde 110 node-a",
		"198.18.64.8:8080 hello-7d4b9c-fghij 110 node-a",
		"198.18.65.4:8080 hello-7d4b9c-klmno 110 node-b",
	}
	if diff := cmp.Diff(wantHello, endpointSet(hello.Ports[0].Endpoints)); diff != "" {
		t.Errorf("hello endpoints (-want +got):\n%s", diff)
	}
	if z := hello.Ports[0].Endpoints[2].Zone; z != "zone-b" {
		t.Errorf("zone = %q, want zone-b", z)
	}

	// The API server's own slice has no nodeName and no targetRef.
	k := mustService(t, c, "default", "kubernetes")
	if diff := cmp.Diff([]string{"198.18.0.11:6443 198.18.0.11 110"}, endpointSet(k.Ports[0].Endpoints)); diff != "" {
		t.Errorf("kubernetes endpoints (-want +got):\n%s", diff)
	}

	// kube-dns: ports keep spec order; slice ports are matched by name.
	dns := mustService(t, c, "kube-system", "kube-dns")
	var ports []string
	for _, p := range dns.Ports {
		ports = append(ports, p.Name+"/"+string(p.Protocol))
		if len(p.Endpoints) != 2 {
			t.Errorf("kube-dns port %s has %d endpoints, want 2", p.Name, len(p.Endpoints))
		}
	}
	if diff := cmp.Diff([]string{"dns/UDP", "dns-tcp/TCP", "metrics/TCP"}, ports); diff != "" {
		t.Errorf("kube-dns ports (-want +got):\n%s", diff)
	}
	if p := dns.Ports[2].Endpoints[0].Port; p != 9153 {
		t.Errorf("metrics endpoint port = %d, want 9153", p)
	}

	var nodes []string
	for _, n := range c.Nodes {
		var addrs []string
		for _, a := range n.Addresses {
			addrs = append(addrs, a.String())
		}
		nodes = append(nodes, n.Name+" "+n.Zone+" "+strings.Join(addrs, ","))
	}
	want := []string{
		"node-a zone-a 198.18.0.11",
		"node-b zone-b 198.18.0.12,2001:db8:18::12,198.19.200.12",
	}
	if diff := cmp.Diff(want, nodes); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	if c.Node("node-a").Labels["node-role.kubernetes.io/control-plane"] != "" || len(c.Node("node-a").Labels) != 7 {
		t.Errorf("node-a labels not all kept: %v", c.Node("node-a").Labels)
	}
	if c.Node("node-a").Implicit {
		t.Errorf("node-a is described by a Node object, but Implicit is set")
	}
}

// parseService parses one Service (plus whatever else yaml holds) and
// returns the first Service.
func parseOneService(t *testing.T, yaml string) *Service {
	t.Helper()
	c := mustParse(t, yaml)
	if len(c.Services) == 0 {
		t.Fatal("no Service parsed")
	}
	return c.Services[0]
}

func TestServiceDefaults(t *testing.T) {
	cidr := netip.MustParsePrefix
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, s *Service)
	}{{
		name: "minimal ClusterIP Service gets API defaults",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.0.10
  ports:
  - port: 80
`,
		check: func(t *testing.T, s *Service) {
			if s.Name != (ServiceName{"default", "web"}) {
				t.Errorf("name = %v, want default/web (missing namespace means default)", s.Name)
			}
			if s.Type != ClusterIP {
				t.Errorf("type = %q, want ClusterIP", s.Type)
			}
			p := s.Ports[0]
			if p.Protocol != TCP || p.TargetPort != "80" || p.NodePort != 0 || p.Name != "" {
				t.Errorf("port = %+v, want TCP, targetPort 80 (defaulted to port)", p)
			}
			if s.ExternalTrafficPolicy != PolicyCluster || s.InternalTrafficPolicy != PolicyCluster {
				t.Errorf("eTP/iTP = %q/%q, want Cluster/Cluster", s.ExternalTrafficPolicy, s.InternalTrafficPolicy)
			}
			if s.SessionAffinity || s.Headless || !s.IsProxied() || s.TrafficDistribution != "" || s.HealthCheckNodePort != 0 {
				t.Errorf("unexpected non-defaults: %+v", s)
			}
			if len(s.ClusterIPs) != 1 || s.ClusterIPs[0].String() != "198.19.0.10" {
				t.Errorf("ClusterIPs = %v, want [198.19.0.10] from spec.clusterIP", s.ClusterIPs)
			}
		},
	}, {
		name: "clusterIPs wins and keeps family order",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 2001:db8:19::10
  clusterIPs: [2001:db8:19::10, 198.19.0.10]
  ipFamilies: [IPv6, IPv4]
  ports: [{port: 80}]
`,
		check: func(t *testing.T, s *Service) {
			if got := addrStrings(s.ClusterIPs); !cmp.Equal(got, []string{"2001:db8:19::10", "198.19.0.10"}) {
				t.Errorf("ClusterIPs = %v", got)
			}
		},
	}, {
		name: "clusterIP None is headless",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  clusterIPs: [None]
  ports: [{port: 5432}]
`,
		check: func(t *testing.T, s *Service) {
			if !s.Headless || len(s.ClusterIPs) != 0 || s.IsProxied() {
				t.Errorf("headless = %v, ClusterIPs = %v, IsProxied = %v", s.Headless, s.ClusterIPs, s.IsProxied())
			}
		},
	}, {
		name: "ExternalName ignores its clusterIP",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: db.example.org
  clusterIP: 198.19.55.4
`,
		check: func(t *testing.T, s *Service) {
			if s.Type != ExternalName || len(s.ClusterIPs) != 0 || s.IsProxied() {
				t.Errorf("type = %q, ClusterIPs = %v, IsProxied = %v", s.Type, s.ClusterIPs, s.IsProxied())
			}
		},
	}, {
		name: "ClientIP affinity defaults to 10800 s",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.0.10
  sessionAffinity: ClientIP
  ports: [{port: 80}]
`,
		check: func(t *testing.T, s *Service) {
			if !s.SessionAffinity || s.AffinityTimeout != 10800*time.Second {
				t.Errorf("affinity = %v %v, want true 3h", s.SessionAffinity, s.AffinityTimeout)
			}
		},
	}, {
		name: "ClientIP affinity with explicit timeout",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.0.10
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 125}}
  ports: [{port: 80}]
`,
		check: func(t *testing.T, s *Service) {
			if s.AffinityTimeout != 125*time.Second {
				t.Errorf("timeout = %v, want 125s", s.AffinityTimeout)
			}
		},
	}, {
		name: "sessionAffinity None",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.0.10
  sessionAffinity: None
  ports: [{port: 80}]
`,
		check: func(t *testing.T, s *Service) {
			if s.SessionAffinity {
				t.Error("SessionAffinity set for None")
			}
		},
	}, {
		name: "LoadBalancer with everything",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.10
  externalIPs: [198.19.200.10, 198.19.200.11]
  externalTrafficPolicy: Local
  internalTrafficPolicy: Local
  trafficDistribution: PreferClose
  healthCheckNodePort: 32000
  loadBalancerSourceRanges: [" 198.18.0.7/24 ", "2001:db8:18::/64"]
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30053}
status:
  loadBalancer:
    ingress:
    - ip: 198.19.200.1
    - hostname: lb.example.org
    - ip: 198.19.200.2
      ipMode: Proxy
    - ip: 198.19.200.3
      ipMode: VIP
`,
		check: func(t *testing.T, s *Service) {
			if got := addrStrings(s.ExternalIPs); !cmp.Equal(got, []string{"198.19.200.10", "198.19.200.11"}) {
				t.Errorf("ExternalIPs = %v", got)
			}
			// Hostname-only and ipMode Proxy ingresses are not VIPs.
			if got := addrStrings(s.LoadBalancerIPs); !cmp.Equal(got, []string{"198.19.200.1", "198.19.200.3"}) {
				t.Errorf("LoadBalancerIPs = %v", got)
			}
			// Spaces trimmed and host bits masked, as kube-proxy does.
			if want := []netip.Prefix{cidr("198.18.0.0/24"), cidr("2001:db8:18::/64")}; !cmp.Equal(s.LoadBalancerSourceRanges, want, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
				t.Errorf("LoadBalancerSourceRanges = %v, want %v", s.LoadBalancerSourceRanges, want)
			}
			if s.ExternalTrafficPolicy != PolicyLocal || s.InternalTrafficPolicy != PolicyLocal || s.TrafficDistribution != "PreferClose" || s.HealthCheckNodePort != 32000 {
				t.Errorf("policies = %q %q %q %d", s.ExternalTrafficPolicy, s.InternalTrafficPolicy, s.TrafficDistribution, s.HealthCheckNodePort)
			}
			if p := s.Ports[0]; p.TargetPort != "web" || p.NodePort != 30080 {
				t.Errorf("port 0 = %+v, want named targetPort web and nodePort 30080", p)
			}
			if p := s.Ports[1]; p.Protocol != UDP || p.TargetPort != "53" {
				t.Errorf("port 1 = %+v", p)
			}
			if !s.ExternalPolicyLocal() || !s.ExternallyAccessible() {
				t.Error("want ExternalPolicyLocal and ExternallyAccessible")
			}
		},
	}, {
		name: "source ranges from the annotation when the field is empty",
		yaml: `
apiVersion: v1
kind: Service
metadata:
  name: lb
  annotations:
    service.beta.kubernetes.io/load-balancer-source-ranges: "198.18.0.200/31, 198.18.1.0/24"
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.10
  ports: [{port: 80, nodePort: 30080}]
`,
		check: func(t *testing.T, s *Service) {
			if got := prefixStrings(s.LoadBalancerSourceRanges); !cmp.Equal(got, []string{"198.18.0.200/31", "198.18.1.0/24"}) {
				t.Errorf("LoadBalancerSourceRanges = %v", got)
			}
		},
	}, {
		name: "the field beats the annotation",
		yaml: `
apiVersion: v1
kind: Service
metadata:
  name: lb
  annotations:
    service.beta.kubernetes.io/load-balancer-source-ranges: "198.18.1.0/24"
spec:
  type: LoadBalancer
  clusterIP: 198.19.0.10
  loadBalancerSourceRanges: [198.18.2.0/24]
  ports: [{port: 80, nodePort: 30080}]
`,
		check: func(t *testing.T, s *Service) {
			if got := prefixStrings(s.LoadBalancerSourceRanges); !cmp.Equal(got, []string{"198.18.2.0/24"}) {
				t.Errorf("LoadBalancerSourceRanges = %v", got)
			}
		},
	}, {
		name: "LoadBalancer without node ports when allocation is off",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIP: 198.19.0.10
  ports: [{port: 80}]
status:
  loadBalancer: {ingress: [{ip: 198.19.200.1}]}
`,
		check: func(t *testing.T, s *Service) {
			if s.Ports[0].NodePort != 0 || !s.ExternallyAccessible() {
				t.Errorf("port = %+v, accessible = %v", s.Ports[0], s.ExternallyAccessible())
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, parseOneService(t, tc.yaml))
		})
	}
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

const svcWeb = `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.19.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
`

func TestEndpointDefaults(t *testing.T) {
	tests := []struct {
		name     string
		slices   string
		want     []string // endpointSet of port http
		warnings []string // substrings, in order
		check    func(t *testing.T, eps []*Endpoint)
	}{{
		name: "missing conditions mean ready, serving, not terminating",
		slices: `
endpoints:
- addresses: [198.18.64.1]
`,
		want: []string{"198.18.64.1:8080 198.18.64.1 110"},
	}, {
		// kube-proxy: serving := Serving == nil || *Serving, whatever ready says.
		name: "serving defaults to true even when not ready",
		slices: `
endpoints:
- addresses: [198.18.64.1]
  conditions: {ready: false}
- addresses: [198.18.64.2]
  conditions: {ready: false, terminating: true}
`,
		want: []string{"198.18.64.1:8080 198.18.64.1 010", "198.18.64.2:8080 198.18.64.2 011"},
	}, {
		name: "explicit conditions are kept",
		slices: `
endpoints:
- addresses: [198.18.64.1]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [198.18.64.2]
  conditions: {ready: true, serving: true, terminating: false}
`,
		want: []string{"198.18.64.1:8080 198.18.64.1 001", "198.18.64.2:8080 198.18.64.2 110"},
	}, {
		name: "name from targetRef, node, zone and hints",
		slices: `
endpoints:
- addresses: [198.18.64.1]
  nodeName: node-a
  zone: zone-a
  targetRef: {kind: Pod, name: web-0}
  hints:
    forZones: [{name: zone-a}, {name: zone-b}]
    forNodes: [{name: node-a}]
`,
		want: []string{"198.18.64.1:8080 web-0 110 node-a"},
		check: func(t *testing.T, eps []*Endpoint) {
			ep := eps[0]
			if ep.Zone != "zone-a" || !cmp.Equal(ep.ZoneHints, []string{"zone-a", "zone-b"}) || !cmp.Equal(ep.NodeHints, []string{"node-a"}) {
				t.Errorf("zone %q hints %v %v", ep.Zone, ep.ZoneHints, ep.NodeHints)
			}
		},
	}, {
		name: "no hints means nil hints",
		slices: `
endpoints:
- addresses: [198.18.64.1]
`,
		check: func(t *testing.T, eps []*Endpoint) {
			if eps[0].ZoneHints != nil || eps[0].NodeHints != nil {
				t.Errorf("hints = %v %v, want nil", eps[0].ZoneHints, eps[0].NodeHints)
			}
		},
		want: []string{"198.18.64.1:8080 198.18.64.1 110"},
	}, {
		name: "only the first address counts; endpoints without addresses are ignored",
		slices: `
endpoints:
- addresses: [198.18.64.2, 198.18.64.3]
- addresses: []
`,
		want:     []string{"198.18.64.2:8080 198.18.64.2 110"},
		warnings: []string{"EndpointSlice default/web-1: endpoints[1]: no addresses; ignored"},
	}, {
		name: "endpoints sorted by IP then port",
		slices: `
endpoints:
- addresses: [198.18.65.1]
- addresses: [198.18.64.10]
- addresses: [198.18.64.9]
`,
		want: []string{"198.18.64.9:8080 198.18.64.9 110", "198.18.64.10:8080 198.18.64.10 110", "198.18.65.1:8080 198.18.65.1 110"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := svcWeb + `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
` + tc.slices
			c := mustParse(t, yaml)
			eps := mustService(t, c, "default", "web").Ports[0].Endpoints
			if diff := cmp.Diff(tc.want, endpointSet(eps)); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			checkWarnings(t, c.Warnings, tc.warnings)
			if tc.check != nil {
				tc.check(t, eps)
			}
		})
	}
}

func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("warnings = %q, want %d matching %q", got, len(want), want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("warning %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// slice renders an EndpointSlice for the tests below.
func slice(name, svc, ports, endpoints string) string {
	return `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ` + name + `
  labels: {kubernetes.io/service-name: ` + svc + `}
addressType: IPv4
ports: ` + ports + `
endpoints: ` + endpoints + `
`
}

func TestSliceMerging(t *testing.T) {
	twoPorts := `
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  clusterIP: 198.19.0.20
  ports:
  - {name: portname1, port: 80, targetPort: svc1}
  - {name: portname2, port: 81, targetPort: svc2}
`
	type portWant struct{ port1, port2 []string }
	tests := []struct {
		name     string
		yaml     string
		want     portWant
		warnings []string
	}{{
		// CONFORMANCE CIP-07: named targetPorts resolved per pod; each pod
		// exposes only one of them, so each slice port lists one pod.
		name: "CIP-07 multiport with named targetPorts",
		yaml: twoPorts +
			slice("svc-a", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: pod1}}]`) +
			slice("svc-b", "svc", `[{name: portname2, port: 101}]`, `[{addresses: [198.18.64.2], targetRef: {name: pod2}}]`),
		want: portWant{
			port1: []string{"198.18.64.1:100 pod1 110"},
			port2: []string{"198.18.64.2:101 pod2 110"},
		},
	}, {
		name: "CIP-07 after deleting pod1",
		yaml: twoPorts +
			slice("svc-a", "svc", `[{name: portname1, port: 100}]`, `[]`) +
			slice("svc-b", "svc", `[{name: portname2, port: 101}]`, `[{addresses: [198.18.64.2], targetRef: {name: pod2}}]`),
		want: portWant{
			port1: nil,
			port2: []string{"198.18.64.2:101 pod2 110"},
		},
	}, {
		// CONFORMANCE CIP-08 (a): one pod, two custom slices, one port each.
		name: "CIP-08a same pod in two slices on different ports",
		yaml: twoPorts +
			slice("custom-1", "svc", `[{name: portname1, port: 8090}]`, `[{addresses: [198.18.64.5]}]`) +
			slice("custom-2", "svc", `[{name: portname2, port: 9090}]`, `[{addresses: [198.18.64.5]}]`),
		want: portWant{
			port1: []string{"198.18.64.5:8090 198.18.64.5 110"},
			port2: []string{"198.18.64.5:9090 198.18.64.5 110"},
		},
	}, {
		// CONFORMANCE CIP-08 (b): two pods, two custom slices.
		name: "CIP-08b two pods in two slices",
		yaml: twoPorts +
			slice("custom-1", "svc", `[{name: portname1, port: 8090}]`, `[{addresses: [198.18.64.5]}]`) +
			slice("custom-2", "svc", `[{name: portname2, port: 8090}]`, `[{addresses: [198.18.65.5]}]`),
		want: portWant{
			port1: []string{"198.18.64.5:8090 198.18.64.5 110"},
			port2: []string{"198.18.65.5:8090 198.18.65.5 110"},
		},
	}, {
		name: "slices of one port are merged",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1]}]`) +
			slice("svc-2", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.65.1]}]`),
		want: portWant{
			port1: []string{"198.18.64.1:100 198.18.64.1 110", "198.18.65.1:100 198.18.65.1 110"},
		},
	}, {
		name: "port numbers are matched by name, not by number",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname2, port: 80}]`, `[{addresses: [198.18.64.1]}]`),
		want: portWant{port2: []string{"198.18.64.1:80 198.18.64.1 110"}},
	}, {
		name: "protocol must match too",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname1, port: 100, protocol: UDP}]`, `[{addresses: [198.18.64.1]}]`),
		warnings: []string{`test.yaml: EndpointSlice default/svc-1: ports[0] (name "portname1", UDP) matches no port of Service default/svc`},
	}, {
		name: "slice port without a number is ignored",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname1}]`, `[{addresses: [198.18.64.1]}]`),
		warnings: []string{"EndpointSlice default/svc-1: ports[0]: no port number; ignored"},
	}, {
		name: "duplicate endpoint: non-terminating copy wins",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: old}, conditions: {ready: false, serving: true, terminating: true}}]`) +
			slice("svc-2", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: new}, conditions: {ready: true}}]`),
		want: portWant{port1: []string{"198.18.64.1:100 new 110"}},
	}, {
		name: "duplicate endpoint: non-terminating copy wins whatever the slice order",
		yaml: twoPorts +
			slice("svc-2", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: old}, conditions: {ready: false, serving: true, terminating: true}}]`) +
			slice("svc-1", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: new}, conditions: {ready: true}}]`),
		want: portWant{port1: []string{"198.18.64.1:100 new 110"}},
	}, {
		name: "duplicate endpoint: ready copy wins",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: starting}, conditions: {ready: false}}]`) +
			slice("svc-2", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: running}, conditions: {ready: true}}]`),
		want: portWant{port1: []string{"198.18.64.1:100 running 110"}},
	}, {
		name: "duplicate endpoint: equal copies keep the first slice by name",
		yaml: twoPorts +
			slice("svc-b", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: from-b}}]`) +
			slice("svc-a", "svc", `[{name: portname1, port: 100}]`, `[{addresses: [198.18.64.1], targetRef: {name: from-a}}]`),
		want: portWant{port1: []string{"198.18.64.1:100 from-a 110"}},
	}, {
		name: "same IP on two ports of one slice is two endpoints",
		yaml: twoPorts +
			slice("svc-1", "svc", `[{name: portname1, port: 100}, {name: portname2, port: 101}]`, `[{addresses: [198.18.64.1]}]`),
		want: portWant{
			port1: []string{"198.18.64.1:100 198.18.64.1 110"},
			port2: []string{"198.18.64.1:101 198.18.64.1 110"},
		},
	}, {
		name: "FQDN slices are skipped",
		yaml: twoPorts + `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-fqdn
  labels: {kubernetes.io/service-name: svc}
addressType: FQDN
ports: [{name: portname1, port: 100}]
endpoints: [{addresses: [db.example.org]}]
`,
		warnings: []string{"test.yaml: EndpointSlice default/svc-fqdn: skipping: addressType FQDN is not proxied"},
	}, {
		name: "a slice in another namespace does not join",
		yaml: twoPorts + `---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: other}
spec:
  clusterIP: 198.19.0.21
  ports: [{name: portname1, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-1
  namespace: other
  labels: {kubernetes.io/service-name: svc}
addressType: IPv4
ports: [{name: portname1, port: 100}]
endpoints: [{addresses: [198.18.64.1]}]
`,
		want: portWant{},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.yaml)
			s := mustService(t, c, "default", "svc")
			if diff := cmp.Diff(tc.want.port1, endpointSet(s.Ports[0].Endpoints)); diff != "" {
				t.Errorf("portname1 endpoints (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want.port2, endpointSet(s.Ports[1].Endpoints)); diff != "" {
				t.Errorf("portname2 endpoints (-want +got):\n%s", diff)
			}
			checkWarnings(t, c.Warnings, tc.warnings)
		})
	}
}

func TestSlicePortNameAndProtocolDefaults(t *testing.T) {
	// A slice port without name or protocol is the API default "" and TCP,
	// which matches the single unnamed TCP port of a Service.
	c := mustParse(t, `
apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  clusterIP: 198.19.0.20
  ports: [{port: 80, targetPort: 8080}]
`+slice("svc-1", "svc", `[{port: 8080}]`, `[{addresses: [198.18.64.1]}]`))
	if diff := cmp.Diff([]string{"198.18.64.1:8080 198.18.64.1 110"}, endpointSet(c.Services[0].Ports[0].Endpoints)); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
}

func TestNodes(t *testing.T) {
	c := mustParse(t, svcWeb+`---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {topology.kubernetes.io/zone: zone-b, role: edge}
status:
  addresses:
  - {type: Hostname, address: node-b}
  - {type: ExternalIP, address: 198.19.200.12}
  - {type: InternalIP, address: 2001:db8:18::12}
  - {type: InternalIP, address: 198.18.0.12}
  - {type: InternalDNS, address: node-b.cluster.internal}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
`+slice("web-1", "web", `[{name: http, port: 8080}]`, `
- {addresses: [198.18.64.1], nodeName: node-a}
- {addresses: [198.18.66.1], nodeName: node-c}
- {addresses: [198.18.67.1], nodeName: node-c}
- {addresses: [198.18.64.2]}
`))
	var got []string
	for _, n := range c.Nodes {
		got = append(got, n.Name+" ["+strings.Join(addrStrings(n.Addresses), " ")+"] zone="+n.Zone+" implicit="+map[bool]string{true: "yes", false: "no"}[n.Implicit])
	}
	want := []string{
		"node-a [] zone= implicit=no",
		// InternalIPs first, in the order listed (IPv6 first here), then ExternalIPs.
		"node-b [2001:db8:18::12 198.18.0.12 198.19.200.12] zone=zone-b implicit=no",
		// Named only by endpoints: the lab gives it addresses.
		"node-c [] zone= implicit=yes",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	if l := c.Node("node-b").Labels; l["role"] != "edge" || len(l) != 2 {
		t.Errorf("labels = %v", l)
	}
	if o := c.Node("node-c").Origin; o.File != testFile || o.Kind != "Node" {
		t.Errorf("implicit node origin = %+v", o)
	}
}

func TestSkippedKindsWarn(t *testing.T) {
	c, err := Parse("examples/x.yaml", []byte(svcWeb+`---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {a: b}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: default}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web-0, namespace: default}
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	checkWarnings(t, c.Warnings, []string{
		"examples/x.yaml: skipping apps/v1 Deployment default/web: proxyrig reads only Service, EndpointSlice and Node",
		"examples/x.yaml: skipping v1 ConfigMap shop/settings: proxyrig reads only Service, EndpointSlice and Node",
		"examples/x.yaml: skipping rbac.authorization.k8s.io/v1 ClusterRole reader: proxyrig reads only Service, EndpointSlice and Node",
		"examples/x.yaml: skipping v1 Endpoints default/web: proxyrig reads only Service, EndpointSlice and Node (endpoints are read from EndpointSlices",
		"examples/x.yaml: skipping v1 Pod default/web-0:",
	})
	if len(c.Services) != 1 {
		t.Errorf("got %d services, want 1", len(c.Services))
	}
}

func TestTypedListsAndEmptyDocuments(t *testing.T) {
	c := mustParse(t, `# just a comment
---
---
apiVersion: v1
kind: ServiceList
items:
- metadata: {name: a}
  spec: {clusterIP: 198.19.0.1, ports: [{port: 80}]}
- metadata: {name: b}
  spec: {clusterIP: 198.19.0.2, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
items:
- metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
  ports: [{port: 80}]
  endpoints: [{addresses: [198.18.64.1]}]
---
apiVersion: v1
kind: NodeList
items:
- metadata: {name: node-a}
---
`)
	if len(c.Services) != 2 || len(c.Nodes) != 1 || len(c.Services[0].Ports[0].Endpoints) != 1 {
		t.Errorf("got %d services, %d nodes, %d endpoints of a", len(c.Services), len(c.Nodes), len(c.Services[0].Ports[0].Endpoints))
	}
}

func TestParseSourcesMergesFiles(t *testing.T) {
	c, err := ParseSources(
		Source{Name: "svc.yaml", Data: []byte(svcWeb)},
		Source{Name: "slices.yaml", Data: []byte(slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.64.1], nodeName: node-a}]`))},
		Source{Name: "nodes.yaml", Data: []byte("apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus: {addresses: [{type: InternalIP, address: 198.18.0.11}]}\n")},
	)
	if err != nil {
		t.Fatalf("ParseSources: %v", err)
	}
	s := mustService(t, c, "default", "web")
	if len(s.Ports[0].Endpoints) != 1 || c.Node("node-a") == nil || c.Node("node-a").Implicit {
		t.Errorf("merge failed: %d endpoints, node %+v", len(s.Ports[0].Endpoints), c.Node("node-a"))
	}
	if s.Origin.File != "svc.yaml" {
		t.Errorf("origin = %+v", s.Origin)
	}
}

func TestParseFiles(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	if err := os.WriteFile(a, []byte(svcWeb), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte(slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.64.1]}]`)), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ParseFiles(a, b)
	if err != nil {
		t.Fatalf("ParseFiles: %v", err)
	}
	if len(c.Services[0].Ports[0].Endpoints) != 1 {
		t.Errorf("slice from the second file not joined")
	}

	_, err = ParseFiles(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: err = %v, want it to name the file", err)
	}
}

func TestParseFilesStdin(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stdin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(svcWeb + "  prots: []\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = f
	t.Cleanup(func() { os.Stdin = old; f.Close() })

	_, err = ParseFiles("-")
	if err == nil || !strings.Contains(err.Error(), "<stdin>: Service default/web: spec.prots: unknown field") {
		t.Errorf("err = %v, want an unknown-field error naming <stdin>", err)
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "# header\n---\na: 1\n--- # second\nb: 2\n---\n\n# only a comment\n---\nc: 3\n----\nd: 4\n"
	docs := splitDocuments([]byte(in))
	var got []string
	for _, d := range docs {
		got = append(got, fmt.Sprintf("%s@%d", strings.TrimSpace(string(d.body)), d.line))
	}
	want := []string{"a: 1@3", "b: 2@5", "c: 3\n----\nd: 4@10"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
}

func TestNodeStatusFromNewerKubelet(t *testing.T) {
	// Fields a newer kubelet writes under status are not typos: warn.
	c := mustParse(t, `
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 198.18.0.11}]
  someFutureField: {enabled: true}
`)
	checkWarnings(t, c.Warnings, []string{"test.yaml: Node node-a: ignoring status.someFutureField: unknown field"})

	// Anywhere else, and in addresses, an unknown field is an error.
	for _, yaml := range []string{
		"apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIRD: 198.18.64.0/24}\n",
		"apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus: {addresses: [{type: InternalIP, adress: 198.18.0.11}]}\n",
	} {
		if _, err := Parse(testFile, []byte(yaml)); err == nil || !strings.Contains(err.Error(), "test.yaml: Node node-a: ") || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("err = %v, want an unknown-field error", err)
		}
	}
}

func TestEndpointsOfAFamilyWithoutClusterIPWarn(t *testing.T) {
	c := mustParse(t, svcWeb+`---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-v6
  labels: {kubernetes.io/service-name: web}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["2001:db8:64::1"]}]
`)
	checkWarnings(t, c.Warnings, []string{"test.yaml: Service default/web: has IPv6 endpoints but no IPv6 ClusterIP; they are not used"})
	if n := len(c.Services[0].Ports[0].Endpoints); n != 1 {
		t.Errorf("%d endpoints, want the IPv6 one kept", n)
	}
}
