package model

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// svc renders a Service named name in default with the given spec lines
// (indented by two spaces), plus optional top-level extra lines.
func svc(name, spec string, extra ...string) string {
	return "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: " + name + "\nspec:\n" + spec + strings.Join(extra, "")
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		// want holds error lines (prefixes); each must be one of the errors.
		want []string
	}{
		// Syntax and decoding.
		{
			name: "unparseable YAML names the document and the file line",
			yaml: svcWeb + "---\napiVersion: v1\nkind: Service\nmetadata: {name: x\n",
			want: []string{"test.yaml: document #2 (line 9): invalid YAML: line 11:"},
		},
		{
			name: "duplicate key is a YAML error",
			yaml: "apiVersion: v1\nkind: Service\nkind: Service\n",
			want: []string{`test.yaml: document #1 (line 1): invalid YAML: line 3: key "kind" already set in map`},
		},
		{
			name: "unknown field",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  prots: []\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.prots: unknown field"},
		},
		{
			name: "unknown field deep inside a list item",
			yaml: "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: web, namespace: shop}\n  spec:\n    clusterIP: 198.19.0.10\n    ports: [{port: 80, protcol: TCP}]\n",
			want: []string{"test.yaml: Service shop/web: spec.ports[0].protcol: unknown field"},
		},
		{
			name: "unknown field in an EndpointSlice",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.64.1], nodename: node-a}]`),
			want: []string{"test.yaml: EndpointSlice default/web-1: endpoints[0].nodename: unknown field"},
		},
		{
			name: "wrong type",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{port: eighty}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports.port: expected an integer, got string"},
		},
		{
			name: "not an object",
			yaml: "- a\n- b\n",
			want: []string{"test.yaml: document #1 (line 1): not a Kubernetes object"},
		},
		{
			name: "missing kind",
			yaml: "apiVersion: v1\nmetadata: {name: web}\n",
			want: []string{"test.yaml: document #1 (line 1): kind: required"},
		},
		{
			name: "missing apiVersion",
			yaml: "kind: Service\nmetadata: {name: web}\n",
			want: []string{"test.yaml: document #1 (line 1): apiVersion: required"},
		},
		{
			name: "removed API version",
			yaml: svcWeb + "---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: web-1}\n",
			want: []string{`test.yaml: EndpointSlice default/web-1: apiVersion: "discovery.k8s.io/v1beta1" is not supported for EndpointSlice; use discovery.k8s.io/v1`},
		},
		{
			name: "missing name",
			yaml: "apiVersion: v1\nkind: Service\nspec: {clusterIP: 198.19.0.10, ports: [{port: 80}]}\n",
			want: []string{"test.yaml: Service default/: metadata.name: required"},
		},

		// Duplicates.
		{
			name: "Service defined twice",
			yaml: svcWeb + svc("web", "  clusterIP: 198.19.0.11\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: metadata.name: Service default/web is defined twice (first in test.yaml document #1)"},
		},
		{
			name: "Node defined twice",
			yaml: "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n",
			want: []string{"test.yaml: Node node-a: metadata.name: Node node-a is defined twice (first in test.yaml document #1)"},
		},
		{
			name: "EndpointSlice defined twice",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}]`, `[]`) + slice("web-1", "web", `[{name: http, port: 8080}]`, `[]`),
			want: []string{"test.yaml: EndpointSlice default/web-1: metadata.name: EndpointSlice default/web-1 is defined twice"},
		},

		// Addresses.
		{
			name: "unparseable clusterIP",
			yaml: svc("web", "  clusterIP: 198.19.0.300\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.clusterIP: "198.19.0.300" is not a valid IP address`},
		},
		{
			name: "unparseable clusterIPs entry",
			yaml: svc("web", "  clusterIPs: [198.19.0.10, 'fd00::zz']\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.clusterIPs[1]: "fd00::zz" is not a valid IP address`},
		},
		{
			name: "clusterIP and clusterIPs disagree",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  clusterIPs: [198.19.0.11]\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.clusterIPs[0]: "198.19.0.11" must equal spec.clusterIP "198.19.0.10"`},
		},
		{
			name: "two ClusterIPs of one family",
			yaml: svc("web", "  clusterIPs: [198.19.0.10, 198.19.0.11]\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.clusterIPs[1]: 198.19.0.11 is of the same IP family as spec.clusterIPs[0]"},
		},
		{
			name: "ipFamilies disagree with clusterIPs",
			yaml: svc("web", "  clusterIPs: [198.19.0.10]\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ipFamilies[0]: IPv6 does not match the family of spec.clusterIPs[0] 198.19.0.10"},
		},
		{
			name: "unparseable externalIP",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  externalIPs: [198.19.200.10, nope]\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.externalIPs[1]: "nope" is not a valid IP address`},
		},
		{
			name: "loopback externalIP",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  externalIPs: [127.0.0.1]\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.externalIPs[0]: 127.0.0.1 may not be in the loopback range"},
		},
		{
			name: "IPv4-mapped IPv6 address",
			yaml: svc("web", "  clusterIP: '::ffff:198.19.0.10'\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.clusterIP: "::ffff:198.19.0.10": IPv4-mapped IPv6 addresses are not allowed; write 198.19.0.10`},
		},
		{
			name: "unparseable load balancer ingress IP",
			yaml: svc("web", "  type: LoadBalancer\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n", "status:\n  loadBalancer:\n    ingress: [{ip: 198.19.200.300}]\n"),
			want: []string{`test.yaml: Service default/web: status.loadBalancer.ingress[0].ip: "198.19.200.300" is not a valid IP address`},
		},
		{
			name: "unparseable source range",
			yaml: svc("web", "  type: LoadBalancer\n  clusterIP: 198.19.0.10\n  loadBalancerSourceRanges: [198.18.0.0/24, 198.18.0.0/33]\n  ports: [{port: 80, nodePort: 30080}]\n"),
			want: []string{`test.yaml: Service default/web: spec.loadBalancerSourceRanges[1]: "198.18.0.0/33" is not a valid CIDR`},
		},
		{
			name: "unparseable source range annotation",
			yaml: "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {service.beta.kubernetes.io/load-balancer-source-ranges: '198.18.0.0/24,nope'}\nspec:\n  type: LoadBalancer\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n",
			want: []string{`test.yaml: Service default/web: metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]: "nope" is not a valid CIDR`},
		},
		{
			name: "source ranges on a non-LoadBalancer Service",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  loadBalancerSourceRanges: [198.18.0.0/24]\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.loadBalancerSourceRanges: may only be used when spec.type is LoadBalancer"},
		},
		{
			name: "unparseable node address",
			yaml: "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nstatus:\n  addresses: [{type: InternalIP, address: 198.18.0.256}]\n",
			want: []string{`test.yaml: Node node-a: status.addresses[0].address: "198.18.0.256" is not a valid IP address`},
		},
		{
			name: "duplicate ClusterIP across Services",
			yaml: svcWeb + svc("api", "  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.clusterIPs[0]: 198.19.0.10 is already the ClusterIP of Service default/api (document #2)"},
		},

		// Ports.
		{
			name: "port out of range",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{port: 70000}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[0].port: 70000 is out of range (1-65535)"},
		},
		{
			name: "port zero",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{name: a, port: 80}, {name: b, port: 0}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[1].port: 0 is out of range (1-65535)"},
		},
		{
			name: "targetPort number out of range",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{port: 80, targetPort: 65536}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[0].targetPort: 65536 is out of range (1-65535)"},
		},
		{
			name: "targetPort name invalid",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{port: 80, targetPort: Http_Port}]\n"),
			want: []string{`test.yaml: Service default/web: spec.ports[0].targetPort: "Http_Port" is neither a port number nor a valid port name`},
		},
		{
			name: "nodePort out of range",
			yaml: svc("web", "  type: NodePort\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 70000}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[0].nodePort: 70000 is out of range (1-65535)"},
		},
		{
			name: "healthCheckNodePort out of range",
			yaml: svc("web", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 70000\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n"),
			want: []string{"test.yaml: Service default/web: spec.healthCheckNodePort: 70000 is out of range (1-65535)"},
		},
		{
			name: "duplicate port name",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{name: http, port: 80}, {name: http, port: 81}]\n"),
			want: []string{`test.yaml: Service default/web: spec.ports[1].name: duplicate port name "http" (also spec.ports[0])`},
		},
		{
			name: "duplicate port and protocol",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{name: a, port: 80}, {name: b, port: 80, protocol: TCP}, {name: c, port: 80, protocol: UDP}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[1]: duplicate port 80/TCP (also spec.ports[0])"},
		},
		{
			name: "unnamed port among several",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{name: a, port: 80}, {port: 81}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[1].name: required when a Service has more than one port"},
		},
		{
			name: "invalid port name",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{name: HTTP, port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.ports[0].name: "HTTP" is not a valid port name`},
		},
		{
			name: "unsupported protocol",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{port: 80, protocol: ICMP}]\n"),
			want: []string{`test.yaml: Service default/web: spec.ports[0].protocol: unsupported protocol "ICMP": must be TCP, UDP or SCTP`},
		},
		{
			name: "no ports",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n"),
			want: []string{"test.yaml: Service default/web: spec.ports: required"},
		},
		{
			name: "nodePort on a ClusterIP Service",
			yaml: svc("web", "  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[0].nodePort: may only be set when spec.type is NodePort or LoadBalancer"},
		},
		{
			name: "NodePort Service without nodePort",
			yaml: svc("web", "  type: NodePort\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[0].nodePort: required for type NodePort"},
		},
		{
			name: "LoadBalancer Service without nodePort",
			yaml: svc("web", "  type: LoadBalancer\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[0].nodePort: required for type LoadBalancer unless spec.allocateLoadBalancerNodePorts is false"},
		},
		{
			name: "nodePort used twice in one Service",
			yaml: svc("web", "  type: NodePort\n  clusterIP: 198.19.0.10\n  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]\n"),
			want: []string{"test.yaml: Service default/web: spec.ports[1].nodePort: duplicate node port 30080/TCP (also spec.ports[0])"},
		},
		{
			name: "nodePort collision between Services",
			yaml: svc("a", "  type: NodePort\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n") +
				svc("b", "  type: NodePort\n  clusterIP: 198.19.0.11\n  ports: [{port: 80, protocol: UDP, nodePort: 30080}]\n"),
			want: []string{"test.yaml: Service default/b: spec.ports[0].nodePort: node port 30080 is already used by Service default/a (spec.ports[0].nodePort in document #1)"},
		},
		{
			name: "healthCheckNodePort collides with a nodePort",
			yaml: svc("a", "  type: NodePort\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n") +
				svc("b", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 30080\n  clusterIP: 198.19.0.11\n  ports: [{port: 80, nodePort: 30081}]\n"),
			want: []string{"test.yaml: Service default/b: spec.healthCheckNodePort: node port 30080 is already used by Service default/a"},
		},

		// Service fields.
		{
			name: "missing clusterIP",
			yaml: svc("web", "  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.clusterIP: required: proxyrig does not allocate Service IPs"},
		},
		{
			name: "unsupported type",
			yaml: svc("web", "  type: Ingress\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.type: unsupported value "Ingress"`},
		},
		{
			name: "unsupported sessionAffinity",
			yaml: svc("web", "  sessionAffinity: Cookie\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{`test.yaml: Service default/web: spec.sessionAffinity: unsupported value "Cookie": must be ClientIP or None`},
		},
		{
			name: "affinity timeout too long",
			yaml: svc("web", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range (1-86400)"},
		},
		{
			name: "affinity timeout zero",
			yaml: svc("web", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range (1-86400)"},
		},
		{
			name: "unsupported traffic policies and distribution",
			yaml: svc("web", "  type: NodePort\n  externalTrafficPolicy: Global\n  internalTrafficPolicy: Nearby\n  trafficDistribution: Anywhere\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n"),
			want: []string{
				`test.yaml: Service default/web: spec.externalTrafficPolicy: unsupported value "Global": must be Cluster or Local`,
				`test.yaml: Service default/web: spec.internalTrafficPolicy: unsupported value "Nearby": must be Cluster or Local`,
				`test.yaml: Service default/web: spec.trafficDistribution: unsupported value "Anywhere"`,
			},
		},
		{
			name: "healthCheckNodePort without eTP=Local",
			yaml: svc("web", "  type: LoadBalancer\n  healthCheckNodePort: 32000\n  clusterIP: 198.19.0.10\n  ports: [{port: 80, nodePort: 30080}]\n"),
			want: []string{"test.yaml: Service default/web: spec.healthCheckNodePort: may only be set when spec.type is LoadBalancer and spec.externalTrafficPolicy is Local"},
		},
		{
			name: "healthCheckNodePort on a ClusterIP Service",
			yaml: svc("web", "  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000\n  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n"),
			want: []string{"test.yaml: Service default/web: spec.healthCheckNodePort: may only be set when spec.type is LoadBalancer"},
		},

		// EndpointSlices.
		{
			name: "slice without the service-name label",
			yaml: svcWeb + "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1}\naddressType: IPv4\nendpoints: []\n",
			want: []string{"test.yaml: EndpointSlice default/web-1: metadata.labels[kubernetes.io/service-name]: required"},
		},
		{
			name: "slice for a Service that does not exist",
			yaml: svcWeb + slice("api-1", "api", `[{port: 80}]`, `[]`),
			want: []string{"test.yaml: EndpointSlice default/api-1: metadata.labels[kubernetes.io/service-name]: Service default/api does not exist"},
		},
		{
			name: "slice without addressType",
			yaml: svcWeb + "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\nendpoints: []\n",
			want: []string{"test.yaml: EndpointSlice default/web-1: addressType: required"},
		},
		{
			name: "unparseable endpoint address",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.64.1]}, {addresses: [198.18.64]}]`),
			want: []string{`test.yaml: EndpointSlice default/web-1: endpoints[1].addresses[0]: "198.18.64" is not a valid IP address`},
		},
		{
			name: "endpoint address of the wrong family",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: ["2001:db8:64::1"]}]`),
			want: []string{"test.yaml: EndpointSlice default/web-1: endpoints[0].addresses[0]: 2001:db8:64::1 is not an IPv4 address (addressType is IPv4)"},
		},
		{
			name: "loopback endpoint",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [127.0.0.1]}]`),
			want: []string{"test.yaml: EndpointSlice default/web-1: endpoints[0].addresses[0]: 127.0.0.1 may not be in the loopback range"},
		},
		{
			name: "slice port out of range",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 70000}]`, `[]`),
			want: []string{"test.yaml: EndpointSlice default/web-1: ports[0].port: 70000 is out of range (1-65535)"},
		},
		{
			name: "slice port unsupported protocol",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080, protocol: GRE}]`, `[]`),
			want: []string{`test.yaml: EndpointSlice default/web-1: ports[0].protocol: unsupported protocol "GRE"`},
		},
		{
			name: "slice port names repeated",
			yaml: svcWeb + slice("web-1", "web", `[{name: http, port: 8080}, {name: http, port: 8081}]`, `[]`),
			want: []string{`test.yaml: EndpointSlice default/web-1: ports[1].name: duplicate port name "http" (also ports[0])`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(testFile, []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded (%d services), want errors %q", len(c.Services), tc.want)
			}
			if c != nil {
				t.Errorf("Parse returned a cluster along with an error")
			}
			fes := FieldErrors(err)
			if len(fes) == 0 {
				t.Fatalf("error %v holds no *FieldError", err)
			}
			for _, want := range tc.want {
				found := false
				for _, fe := range fes {
					if strings.HasPrefix(fe.Error(), want) {
						found = true
						if fe.Origin.File != testFile {
							t.Errorf("error %q: Origin.File = %q", fe, fe.Origin.File)
						}
					}
				}
				if !found {
					t.Errorf("no error starts with\n  %s\ngot:\n  %s", want, strings.ReplaceAll(err.Error(), "\n", "\n  "))
				}
			}
		})
	}
}

func TestValidInputHasNoErrors(t *testing.T) {
	// Things that look odd but are fine.
	yaml := svcWeb +
		// An endpoint without nodeName is allowed (the API server's own).
		slice("web-1", "web", `[{name: http, port: 8080}]`, `[{addresses: [198.18.64.1]}]`) +
		// Same nodePort number for TCP and UDP in one Service is allowed.
		svc("dns", "  type: NodePort\n  clusterIP: 198.19.0.53\n  ports: [{name: udp, port: 53, protocol: UDP, nodePort: 30053}, {name: tcp, port: 53, protocol: TCP, nodePort: 30053}]\n") +
		// Headless Services need no ClusterIP and may have no ports.
		svc("db", "  clusterIP: None\n") +
		// Dual-stack.
		svc("ds", "  clusterIPs: [198.19.0.60, '2001:db8:19::60']\n  ipFamilies: [IPv4, IPv6]\n  ports: [{port: 80}]\n") +
		// ExternalName needs neither.
		svc("ext", "  type: ExternalName\n  externalName: db.example.org\n")
	if _, err := Parse(testFile, []byte(yaml)); err != nil {
		t.Fatalf("Parse: %v", err)
	}
}

func TestAllErrorsOfAFileAtOnce(t *testing.T) {
	yaml := svc("web", "  clusterIP: 198.19.0.300\n  prots: []\n  ports: [{port: 70000}, {port: 80, protocol: ICMP}]\n") +
		slice("orphan", "nope", `[{port: 80}]`, `[{addresses: ["::1"]}]`)
	_, err := Parse(testFile, []byte(yaml))
	fes := FieldErrors(err)
	want := []string{
		"spec.prots", "spec.clusterIP", "spec.ports[0].port", "spec.ports[0].name",
		"spec.ports[1].name", "spec.ports[1].protocol", "endpoints[0].addresses[0]",
		"metadata.labels[kubernetes.io/service-name]",
	}
	got := map[string]bool{}
	for _, fe := range fes {
		got[fe.Field] = true
	}
	for _, f := range want {
		if !got[f] {
			t.Errorf("no error for field %s; got:\n%v", f, err)
		}
	}
	// The bad clusterIP is reported once, not once per spelling.
	n := 0
	for _, fe := range fes {
		if strings.Contains(fe.Field, "clusterIP") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d clusterIP errors, want 1:\n%v", n, err)
	}
}

func TestErrorsAcrossFilesNameBothFiles(t *testing.T) {
	_, err := ParseSources(
		Source{Name: "a.yaml", Data: []byte(svcWeb)},
		Source{Name: "b.yaml", Data: []byte(svc("api", "  clusterIP: 198.19.0.10\n  ports: [{port: 80}]\n") + "---" + svcWeb)},
	)
	for _, want := range []string{
		"b.yaml: Service default/web: metadata.name: Service default/web is defined twice (first in a.yaml document #1)",
		// Services are checked in name order, so the later name is blamed.
		"a.yaml: Service default/web: spec.clusterIPs[0]: 198.19.0.10 is already the ClusterIP of Service default/api (b.yaml document #1)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
}

// generated builds a valid cluster in code, as a generator would.
func generated() *Cluster {
	ip := netip.MustParseAddr
	return &Cluster{
		Nodes: []*Node{
			{Name: "node-a", Addresses: []netip.Addr{ip("198.18.0.11")}},
			{Name: "node-b"},
		},
		Services: []*Service{{
			Name:                  ServiceName{"default", "svc-0"},
			Type:                  ClusterIP,
			ClusterIPs:            []netip.Addr{ip("198.19.0.1")},
			ExternalTrafficPolicy: PolicyCluster,
			InternalTrafficPolicy: PolicyCluster,
			Ports: []*ServicePort{{
				Name: "p", Protocol: TCP, Port: 80, TargetPort: "8080",
				Endpoints: []*Endpoint{
					{IP: ip("198.18.64.1"), Port: 8080, Name: "ep-0", NodeName: "node-a", Ready: true, Serving: true},
					{IP: ip("198.18.65.1"), Port: 8080, Name: "ep-1", NodeName: "node-b", Ready: true, Serving: true},
				},
			}},
		}, {
			Name:                  ServiceName{"default", "svc-1"},
			Type:                  NodePort,
			ClusterIPs:            []netip.Addr{ip("198.19.0.2")},
			SessionAffinity:       true,
			AffinityTimeout:       DefaultAffinityTimeout,
			ExternalTrafficPolicy: PolicyCluster,
			InternalTrafficPolicy: PolicyCluster,
			Ports:                 []*ServicePort{{Protocol: UDP, Port: 53, NodePort: 30053, TargetPort: "53"}},
		}},
	}
}

func TestValidateGenerated(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		name   string
		mutate func(c *Cluster)
		want   []string
	}{
		{name: "valid", mutate: func(*Cluster) {}},
		{
			name:   "endpoint port out of range",
			mutate: func(c *Cluster) { c.Services[0].Ports[0].Endpoints[1].Port = 0 },
			want:   []string{"<generated>: Service default/svc-0: spec.ports[0].endpoints[1].port: 0 is out of range (1-65535)"},
		},
		{
			name: "duplicate endpoint",
			mutate: func(c *Cluster) {
				p := c.Services[0].Ports[0]
				p.Endpoints = append(p.Endpoints, p.Endpoints[0].Clone())
			},
			want: []string{"<generated>: Service default/svc-0: spec.ports[0].endpoints[2]: duplicate endpoint 198.18.64.1:8080 (also spec.ports[0].endpoints[0])"},
		},
		{
			name:   "endpoint on an unknown node",
			mutate: func(c *Cluster) { c.Services[0].Ports[0].Endpoints[0].NodeName = "node-z" },
			want:   []string{`<generated>: Service default/svc-0: spec.ports[0].endpoints[0].nodeName: node "node-z" is not among the cluster's nodes`},
		},
		{
			name:   "invalid endpoint IP",
			mutate: func(c *Cluster) { c.Services[0].Ports[0].Endpoints[0].IP = netip.Addr{} },
			want:   []string{"<generated>: Service default/svc-0: spec.ports[0].endpoints[0].ip: not a valid IP address"},
		},
		{
			name:   "invalid ClusterIP",
			mutate: func(c *Cluster) { c.Services[0].ClusterIPs = []netip.Addr{{}} },
			want:   []string{"<generated>: Service default/svc-0: spec.clusterIPs[0]: not a valid IP address"},
		},
		{
			name:   "duplicate ClusterIP",
			mutate: func(c *Cluster) { c.Services[1].ClusterIPs[0] = ip("198.19.0.1") },
			want:   []string{"<generated>: Service default/svc-1: spec.clusterIPs[0]: 198.19.0.1 is already the ClusterIP of Service default/svc-0 (<generated>)"},
		},
		{
			name:   "duplicate Service",
			mutate: func(c *Cluster) { c.Services[1].Name = c.Services[0].Name },
			want:   []string{"<generated>: Service default/svc-0: metadata.name: Service default/svc-0 is defined twice"},
		},
		{
			name:   "duplicate node",
			mutate: func(c *Cluster) { c.Nodes[1].Name = "node-a" },
			want:   []string{"<generated>: Node node-a: metadata.name: Node node-a is defined twice"},
		},
		{
			name:   "node without a name",
			mutate: func(c *Cluster) { c.Nodes = append(c.Nodes, &Node{}) },
			want:   []string{"<generated>: Node : metadata.name: required"},
		},
		{
			name:   "affinity timeout unset",
			mutate: func(c *Cluster) { c.Services[1].AffinityTimeout = 0 },
			want:   []string{"<generated>: Service default/svc-1: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range (1-86400)"},
		},
		{
			name:   "policies left empty",
			mutate: func(c *Cluster) { c.Services[0].ExternalTrafficPolicy = "" },
			want:   []string{`<generated>: Service default/svc-0: spec.externalTrafficPolicy: unsupported value ""`},
		},
		{
			name:   "protocol left empty",
			mutate: func(c *Cluster) { c.Services[0].Ports[0].Protocol = "" },
			want:   []string{`<generated>: Service default/svc-0: spec.ports[0].protocol: unsupported protocol ""`},
		},
		{
			name: "origin kept when set",
			mutate: func(c *Cluster) {
				c.Services[0].Origin = Origin{File: "gen.yaml", Doc: 3, Kind: "Service", Name: "default/svc-0"}
				c.Services[0].Ports[0].Port = 0
			},
			want: []string{"gen.yaml: Service default/svc-0: spec.ports[0].port: 0 is out of range"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := generated()
			tc.mutate(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate succeeded, want %q", tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("errors.As(*FieldError) failed on %v", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err =\n%v\nwant it to contain %q", err, want)
				}
			}
		})
	}
}

func TestValidateParsedClusterAgain(t *testing.T) {
	// A parsed cluster is valid by construction; Validate must agree, so
	// the lab can validate whatever it is handed.
	c, err := ParseFiles("testdata/kubectl-get-svc-eps-nodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
