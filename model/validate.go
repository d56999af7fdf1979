package model

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// MaxAffinityTimeout is the longest ClientIP affinity timeout the API
// server accepts (v1.MaxClientIPServiceAffinitySeconds).
const MaxAffinityTimeout = 86400 * time.Second

// Validate checks a cluster built in code (a generator's, say) by the rules
// Parse applies to files: what the API server itself would reject, plus what
// would break a proxy. Objects without an Origin are reported as coming from
// "<generated>". The error joins one *FieldError per problem.
func (c *Cluster) Validate() error {
	l := newErrorList(GeneratedOrigin)
	validateCluster(c, l)
	return l.err()
}

func serviceOrigin(s *Service) Origin {
	o := s.Origin
	if o.Kind == "" {
		o.Kind = "Service"
	}
	if o.Name == "" {
		o.Name = s.Name.String()
	}
	return o
}

func nodeOrigin(n *Node) Origin {
	o := n.Origin
	if o.Kind == "" {
		o.Kind = "Node"
	}
	if o.Name == "" {
		o.Name = n.Name
	}
	return o
}

// portOwner remembers who holds a node port, for collision messages.
type portOwner struct {
	svc   *Service
	field string
}

func validateCluster(c *Cluster, l *errorList) {
	nodes := map[string]*Node{}
	for _, n := range c.Nodes {
		at := nodeOrigin(n)
		if n.Name == "" {
			l.add(at, "metadata.name", "required")
		} else if why := badDNSSubdomain(n.Name); why != "" && !n.Implicit {
			// An implicit node's name is reported where it was written,
			// at the endpoint's nodeName.
			l.add(at, "metadata.name", "%q is not a valid node name: %s", n.Name, why)
		} else if prev, dup := nodes[n.Name]; dup {
			l.add(at, "metadata.name", "Node %s is defined twice (also %s)", n.Name, whereIs(nodeOrigin(prev), at))
		} else {
			nodes[n.Name] = n
		}
		for i, ip := range n.Addresses {
			if !ip.IsValid() {
				l.add(at, fmt.Sprintf("status.addresses[%d].address", i), "not a valid IP address")
			}
		}
	}

	services := map[ServiceName]*Service{}
	clusterIPs := map[netip.Addr]*Service{}
	nodePorts := map[int32]portOwner{}
	frontends := map[frontend]portOwner{}
	for _, s := range c.Services {
		at := serviceOrigin(s)
		if prev, dup := services[s.Name]; dup {
			l.add(at, "metadata.name", "Service %s is defined twice (also %s)", s.Name, whereIs(serviceOrigin(prev), at))
			continue
		}
		services[s.Name] = s
		validateService(s, at, nodes, l)

		// Cross-Service checks: the API server allocates ClusterIPs and node
		// ports from cluster-wide pools, so no two Services share one.
		for i, ip := range s.ClusterIPs {
			if !ip.IsValid() {
				continue
			}
			if prev, taken := clusterIPs[ip]; taken {
				l.add(at, fmt.Sprintf("spec.clusterIPs[%d]", i), "%s is already the ClusterIP of Service %s (%s)",
					ip, prev.Name, whereIs(serviceOrigin(prev), at))
				continue
			}
			clusterIPs[ip] = s
		}
		claim := func(port int32, field string) {
			if port == 0 || !validPort(port) {
				return
			}
			if prev, taken := nodePorts[port]; taken && prev.svc != s {
				l.add(at, field, "node port %d is already used by Service %s (%s in %s)",
					port, prev.svc.Name, prev.field, whereIs(serviceOrigin(prev.svc), at))
				return
			}
			if _, taken := nodePorts[port]; !taken {
				nodePorts[port] = portOwner{svc: s, field: field}
			}
		}
		for i, port := range s.Ports {
			claim(port.NodePort, fmt.Sprintf("spec.ports[%d].nodePort", i))
		}
		claim(s.HealthCheckNodePort, "spec.healthCheckNodePort")
		claimFrontends(s, at, frontends, l)
	}
}

// frontend is one address, protocol and port a Service captures.
type frontend struct {
	ip    netip.Addr
	proto Protocol
	port  int32
}

// claimFrontends refuses a Service address (ClusterIP, external IP or
// load-balancer IP) that, with one of the Service's ports, is already
// another Service's or another field's. The API server only keeps
// ClusterIPs apart; external and load-balancer IPs it takes as written
// (CVE-2020-8554 is the attack that allows). kube-proxy then has two
// rules for one destination: iptables mode lets the first in its chain
// win, nftables mode cannot hold two verdicts for one key of its
// service-ips map and fails the whole sync. Neither is behaviour a
// reference datapath can be compared on, so proxyrig refuses the input
// and names both claimants.
func claimFrontends(s *Service, at Origin, taken map[frontend]portOwner, l *errorList) {
	if !s.IsProxied() {
		return
	}
	type vip struct {
		ip    netip.Addr
		field string
	}
	var vips []vip
	for i, ip := range s.ClusterIPs {
		vips = append(vips, vip{ip, fmt.Sprintf("spec.clusterIPs[%d]", i)})
	}
	for i, ip := range s.ExternalIPs {
		vips = append(vips, vip{ip, fmt.Sprintf("spec.externalIPs[%d]", i)})
	}
	for i, ip := range s.LoadBalancerIPs {
		vips = append(vips, vip{ip, fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i)})
	}
	for _, v := range vips {
		if !v.ip.IsValid() {
			continue
		}
		for _, p := range s.Ports {
			if !validPort(p.Port) {
				continue
			}
			key := frontend{v.ip, p.Protocol, p.Port}
			prev, dup := taken[key]
			if !dup {
				taken[key] = portOwner{svc: s, field: v.field}
				continue
			}
			if prev.svc == s {
				l.add(at, v.field, "%s is also %s of this Service (port %d/%s): a Service may list an address only once",
					v.ip, prev.field, p.Port, p.Protocol)
			} else {
				l.add(at, v.field, "%s port %d/%s is already served by Service %s (%s in %s): two Services may not capture one address, port and protocol",
					v.ip, p.Port, p.Protocol, prev.svc.Name, prev.field, whereIs(serviceOrigin(prev.svc), at))
			}
			break
		}
	}
}

// whereIs names the file and document of o, relative to the object being
// reported at.
func whereIs(o, at Origin) string {
	if o.File == "" || o.File == GeneratedOrigin {
		return GeneratedOrigin
	}
	if o.File == at.File {
		return fmt.Sprintf("document #%d", o.Doc+1)
	}
	return fmt.Sprintf("%s document #%d", o.File, o.Doc+1)
}

func validateService(s *Service, at Origin, nodes map[string]*Node, l *errorList) {
	errf := func(field, format string, args ...any) { l.add(at, field, format, args...) }

	switch {
	case s.Name.Name == "":
		errf("metadata.name", "required")
	case !isDNS1035Label(s.Name.Name):
		errf("metadata.name", "%q is not a valid Service name (at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)", s.Name.Name)
	}
	switch {
	case s.Name.Namespace == "":
		errf("metadata.namespace", "required")
	case !isDNSLabel(s.Name.Namespace):
		errf("metadata.namespace", "%q is not a valid namespace (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)", s.Name.Namespace)
	}
	switch s.Type {
	case ClusterIP, NodePort, LoadBalancer, ExternalName:
	default:
		errf("spec.type", "unsupported value %q: must be ClusterIP, NodePort, LoadBalancer or ExternalName", s.Type)
	}

	proxied := !s.Headless && s.Type != ExternalName
	if proxied {
		switch {
		case len(s.ClusterIPs) == 0:
			errf("spec.clusterIP", "required: proxyrig does not allocate Service IPs; set one (the lab plan uses 198.19.0.0/16)")
		case len(s.ClusterIPs) > 2:
			errf("spec.clusterIPs", "at most two addresses (one per IP family), got %d", len(s.ClusterIPs))
		}
		for i, ip := range s.ClusterIPs {
			field := fmt.Sprintf("spec.clusterIPs[%d]", i)
			if why := badVIP(ip); why != "" {
				errf(field, "%s", why)
				continue
			}
			if i == 1 && s.ClusterIPs[0].IsValid() && familyOf(ip) == familyOf(s.ClusterIPs[0]) {
				errf(field, "%s is of the same IP family as spec.clusterIPs[0] %s; a dual-stack Service needs one IPv4 and one IPv6 address", ip, s.ClusterIPs[0])
			}
		}
		if len(s.Ports) == 0 {
			errf("spec.ports", "required: a Service needs at least one port")
		}
	}

	for i, ip := range s.ExternalIPs {
		if why := badVIP(ip); why != "" {
			errf(fmt.Sprintf("spec.externalIPs[%d]", i), "%s", why)
		}
	}
	for i, ip := range s.LoadBalancerIPs {
		if why := badVIP(ip); why != "" {
			errf(fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), "%s", why)
		}
	}
	for i, pfx := range s.LoadBalancerSourceRanges {
		if !pfx.IsValid() {
			errf(fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), "not a valid CIDR")
		}
	}

	if s.SessionAffinity && (s.AffinityTimeout < time.Second || s.AffinityTimeout > MaxAffinityTimeout) {
		errf("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is out of range (1-86400)", int64(s.AffinityTimeout/time.Second))
	}
	if s.ExternalTrafficPolicy != PolicyCluster && s.ExternalTrafficPolicy != PolicyLocal {
		errf("spec.externalTrafficPolicy", "unsupported value %q: must be Cluster or Local", s.ExternalTrafficPolicy)
	}
	if s.InternalTrafficPolicy != PolicyCluster && s.InternalTrafficPolicy != PolicyLocal {
		errf("spec.internalTrafficPolicy", "unsupported value %q: must be Cluster or Local", s.InternalTrafficPolicy)
	}
	switch s.TrafficDistribution {
	case "", "PreferClose", topologyPreferSameZone, topologyPreferSameNode:
	default:
		errf("spec.trafficDistribution", "unsupported value %q: must be PreferClose, PreferSameZone or PreferSameNode", s.TrafficDistribution)
	}
	if hc := s.HealthCheckNodePort; hc != 0 {
		switch {
		case !validPort(hc):
			errf("spec.healthCheckNodePort", "%d is out of range (1-65535)", hc)
		case s.Type != LoadBalancer || s.ExternalTrafficPolicy != PolicyLocal:
			errf("spec.healthCheckNodePort", "may only be set when spec.type is LoadBalancer and spec.externalTrafficPolicy is Local")
		}
	}

	names := map[string]int{}
	portProto := map[string]int{}
	nodePortProto := map[string]int{}
	for i, p := range s.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		switch {
		case p.Name == "" && len(s.Ports) > 1:
			errf(field+".name", "required when a Service has more than one port")
		case p.Name != "" && !isDNSLabel(p.Name):
			errf(field+".name", "%q is not a valid port name (lowercase letters, digits and '-', at most 63 characters)", p.Name)
		}
		if prev, dup := names[p.Name]; dup && p.Name != "" {
			errf(field+".name", "duplicate port name %q (also spec.ports[%d])", p.Name, prev)
		} else {
			names[p.Name] = i
		}
		if !validProtocol(p.Protocol) {
			errf(field+".protocol", "unsupported protocol %q: must be TCP, UDP or SCTP", p.Protocol)
		}
		if !validPort(p.Port) {
			errf(field+".port", "%d is out of range (1-65535)", p.Port)
		} else {
			key := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			if prev, dup := portProto[key]; dup {
				errf(field, "duplicate port %s (also spec.ports[%d])", key, prev)
			} else {
				portProto[key] = i
			}
		}
		if why := badTargetPort(p.TargetPort); why != "" {
			errf(field+".targetPort", "%s", why)
		}
		switch {
		case p.NodePort == 0:
			if s.Type == NodePort {
				errf(field+".nodePort", "required for type NodePort (proxyrig does not allocate node ports; pick one in 30000-32767)")
			}
		case !validPort(p.NodePort):
			errf(field+".nodePort", "%d is out of range (1-65535)", p.NodePort)
		case s.Type != NodePort && s.Type != LoadBalancer:
			errf(field+".nodePort", "may only be set when spec.type is NodePort or LoadBalancer")
		default:
			key := fmt.Sprintf("%d/%s", p.NodePort, p.Protocol)
			if prev, dup := nodePortProto[key]; dup {
				errf(field+".nodePort", "duplicate node port %s (also spec.ports[%d])", key, prev)
			} else {
				nodePortProto[key] = i
			}
		}
		validateEndpoints(p, field, at, nodes, l)
	}
}

// validateEndpoints checks the merged endpoints of one port. Parse never
// lets a bad endpoint through (it reports it against its EndpointSlice), so
// these errors only name generated clusters' mistakes.
func validateEndpoints(p *ServicePort, portField string, at Origin, nodes map[string]*Node, l *errorList) {
	seen := map[netip.AddrPort]int{}
	for j, ep := range p.Endpoints {
		field := fmt.Sprintf("%s.endpoints[%d]", portField, j)
		if !ep.IP.IsValid() {
			l.add(at, field+".ip", "not a valid IP address")
			continue
		}
		if why := specialIP(ep.IP); why != "" {
			l.add(at, field+".ip", "%s %s", ep.IP, why)
		}
		if !validPort(ep.Port) {
			l.add(at, field+".port", "%d is out of range (1-65535)", ep.Port)
		}
		key := netip.AddrPortFrom(ep.IP, uint16(ep.Port))
		if prev, dup := seen[key]; dup {
			l.add(at, field, "duplicate endpoint %s (also %s.endpoints[%d])", ep, portField, prev)
		} else {
			seen[key] = j
		}
		if ep.NodeName != "" && nodes[ep.NodeName] == nil {
			l.add(at, field+".nodeName", "node %q is not among the cluster's nodes", ep.NodeName)
		}
	}
}

func validPort(p int32) bool { return p >= 1 && p <= 65535 }

func validProtocol(p Protocol) bool { return p == TCP || p == UDP || p == SCTP }

// badVIP says what is wrong with a Service address, or "".
func badVIP(ip netip.Addr) string {
	if !ip.IsValid() {
		return "not a valid IP address"
	}
	if why := specialIP(ip); why != "" {
		return ip.String() + " " + why
	}
	return ""
}

// specialIP says why an address cannot be a Service or endpoint address,
// or "". These are the API server's rules for endpoint addresses and
// external IPs; a packet to or from such an address never leaves its host.
func specialIP(ip netip.Addr) string {
	switch {
	case ip.IsUnspecified():
		return "may not be unspecified (0.0.0.0 or ::)"
	case ip.IsLoopback():
		return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
	case ip.IsLinkLocalUnicast():
		return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
	case ip.IsLinkLocalMulticast(), ip.IsMulticast():
		return "may not be a multicast address"
	}
	return ""
}

// badTargetPort says what is wrong with a targetPort, or "": a number in
// 1-65535 or an IANA service name (a container port name).
func badTargetPort(tp string) string {
	if tp == "" {
		return "required"
	}
	if n, err := strconv.Atoi(tp); err == nil {
		if n < 1 || n > 65535 {
			return fmt.Sprintf("%d is out of range (1-65535)", n)
		}
		return ""
	}
	if !isIANAServiceName(tp) {
		return fmt.Sprintf("%q is neither a port number nor a valid port name (at most 15 lowercase letters, digits and '-', with at least one letter)", tp)
	}
	return ""
}

// isIANAServiceName is the rule for container port names (RFC 6335 §5.1).
func isIANAServiceName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-':
			if i > 0 && s[i-1] == '-' {
				return false
			}
		default:
			return false
		}
	}
	return letter
}

// isDNS1035Label is the rule for Service names: an RFC 1123 label that
// starts with a letter, so it can be a DNS name on its own.
func isDNS1035Label(s string) bool {
	return isDNSLabel(s) && s[0] >= 'a' && s[0] <= 'z'
}

// maxDNSSubdomain is the longest RFC 1123 subdomain (a node or
// EndpointSlice name).
const maxDNSSubdomain = 253

// badDNSSubdomain says why s is not an RFC 1123 subdomain (dot-separated
// labels, at most 253 characters), or "".
func badDNSSubdomain(s string) string {
	if len(s) > maxDNSSubdomain {
		return fmt.Sprintf("%d characters, at most %d allowed", len(s), maxDNSSubdomain)
	}
	for _, label := range strings.Split(s, ".") {
		if !isDNSLabel(label) {
			return "lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"
		}
	}
	return ""
}

// isDNSLabel is RFC 1123's label rule, used for Service port names.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
