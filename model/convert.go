package model

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The API server's limits for one EndpointSlice (discovery/v1 validation).
const (
	maxSliceEndpoints    = 1000
	maxSlicePorts        = 100
	maxEndpointAddresses = 100
)

// annotationSourceRanges is the older way to say loadBalancerSourceRanges.
// The API server validates it and the Service helpers
// (GetLoadBalancerSourceRanges) read it when the field is empty.
const annotationSourceRanges = corev1.AnnotationLoadBalancerSourceRangesKey

// build turns the decoded objects into a Cluster, then validates it.
func (p *parser) build() *Cluster {
	objs := p.dropDuplicates()

	services := map[ServiceName]*Service{}
	var c Cluster
	for _, o := range objs {
		switch {
		case o.svc != nil:
			s := p.convertService(o)
			services[s.Name] = s
			c.Services = append(c.Services, s)
		case o.node != nil:
			c.Nodes = append(c.Nodes, p.convertNode(o))
		}
	}

	// Slices are merged in a fixed order (namespace, then name), so the
	// choice between two copies of one endpoint never depends on file order.
	var sliceObjs []*parsedObject
	for _, o := range objs {
		if o.slice != nil {
			sliceObjs = append(sliceObjs, o)
		}
	}
	slices.SortStableFunc(sliceObjs, func(a, b *parsedObject) int {
		return cmp.Or(cmp.Compare(a.slice.Namespace, b.slice.Namespace), cmp.Compare(a.slice.Name, b.slice.Name))
	})
	m := newEndpointMerger()
	for _, o := range sliceObjs {
		p.addSlice(o, services, m)
	}
	m.finish()

	// Every node an endpoint names must exist in the lab; nodes the input
	// did not describe get their addresses from the lab.
	known := map[string]bool{}
	for _, n := range c.Nodes {
		known[n.Name] = true
	}
	for _, name := range m.nodeOrder {
		if !known[name] {
			known[name] = true
			at := m.nodeFirstSeen[name]
			c.Nodes = append(c.Nodes, &Node{
				Name:     name,
				Implicit: true,
				Origin:   Origin{File: at.File, Doc: at.Doc, Kind: "Node", Name: name},
			})
		}
	}

	slices.SortStableFunc(c.Services, func(a, b *Service) int {
		return cmp.Or(cmp.Compare(a.Name.Namespace, b.Name.Namespace), cmp.Compare(a.Name.Name, b.Name.Name))
	})
	for _, s := range c.Services {
		p.warnFamilyMismatch(s)
	}
	slices.SortStableFunc(c.Nodes, func(a, b *Node) int { return cmp.Compare(a.Name, b.Name) })
	c.Warnings = p.warnings

	validateCluster(&c, p.errs)
	return &c
}

// dropDuplicates reports objects defined twice (same kind, namespace and
// name) and keeps only the first of each.
func (p *parser) dropDuplicates() []*parsedObject {
	first := map[string]Origin{}
	var out []*parsedObject
	for _, o := range p.objects {
		key := o.origin.Kind + "\x00" + o.origin.Name
		if prev, ok := first[key]; ok {
			p.errs.add(o.origin, "metadata.name", "%s %s is defined twice (first in %s document #%d)",
				o.origin.Kind, o.origin.Name, prev.File, prev.Doc+1)
			continue
		}
		first[key] = o.origin
		out = append(out, o)
	}
	return out
}

func (p *parser) convertService(o *parsedObject) *Service {
	k, at := o.svc, o.origin
	errf := func(field, format string, args ...any) { p.errs.add(at, field, format, args...) }
	if k.Name == "" {
		errf("metadata.name", "required")
	}
	s := &Service{
		Name:   ServiceName{Namespace: k.Namespace, Name: k.Name},
		Type:   ServiceType(k.Spec.Type),
		Origin: at,
	}
	if s.Type == "" {
		s.Type = ClusterIP // API default
	}

	ips, ipsField := k.Spec.ClusterIPs, "spec.clusterIPs"
	if len(ips) == 0 && k.Spec.ClusterIP != "" {
		ips, ipsField = []string{k.Spec.ClusterIP}, "spec.clusterIP"
	} else if len(ips) > 0 && k.Spec.ClusterIP != "" && k.Spec.ClusterIP != ips[0] {
		errf("spec.clusterIPs[0]", "%q must equal spec.clusterIP %q", ips[0], k.Spec.ClusterIP)
	}
	switch {
	case s.Type == ExternalName:
		// kube-proxy skips ExternalName Services whole, IPs included
		// (ShouldSkipService), so their clusterIPs do not matter.
	case len(ips) > 0 && ips[0] == corev1.ClusterIPNone:
		s.Headless = true
	default:
		for i, ip := range ips {
			field := ipsField
			if ipsField == "spec.clusterIPs" {
				field = fmt.Sprintf("%s[%d]", ipsField, i)
			}
			s.ClusterIPs = append(s.ClusterIPs, p.parseIP(at, field, ip))
		}
		for i, fam := range k.Spec.IPFamilies {
			field := fmt.Sprintf("spec.ipFamilies[%d]", i)
			if fam != corev1.IPv4Protocol && fam != corev1.IPv6Protocol {
				errf(field, "unsupported value %q: must be IPv4 or IPv6", fam)
				continue
			}
			if i < len(s.ClusterIPs) && s.ClusterIPs[i].IsValid() && familyOf(s.ClusterIPs[i]) != string(fam) {
				errf(field, "%s does not match the family of spec.clusterIPs[%d] %s", fam, i, s.ClusterIPs[i])
			}
		}
	}

	for i, ip := range k.Spec.ExternalIPs {
		s.ExternalIPs = append(s.ExternalIPs, p.parseIP(at, fmt.Sprintf("spec.externalIPs[%d]", i), ip))
	}
	for i, ing := range k.Status.LoadBalancer.Ingress {
		// Hostname-only ingresses and ipMode Proxy ones are not VIPs a node
		// must capture: kube-proxy (IsVIPMode) leaves them to the load
		// balancer.
		if ing.IP == "" || (ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy) {
			continue
		}
		if ip := p.parseIP(at, fmt.Sprintf("status.loadBalancer.ingress[%d].ip", i), ing.IP); ip.IsValid() {
			s.LoadBalancerIPs = append(s.LoadBalancerIPs, ip)
		}
	}

	switch {
	case len(k.Spec.LoadBalancerSourceRanges) > 0:
		if s.Type != LoadBalancer {
			errf("spec.loadBalancerSourceRanges", "may only be used when spec.type is LoadBalancer")
		}
		for i, r := range k.Spec.LoadBalancerSourceRanges {
			s.LoadBalancerSourceRanges = append(s.LoadBalancerSourceRanges,
				p.parsePrefix(at, fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i), r))
		}
	case s.Type == LoadBalancer && strings.TrimSpace(k.Annotations[annotationSourceRanges]) != "":
		field := "metadata.annotations[" + annotationSourceRanges + "]"
		for _, r := range strings.Split(k.Annotations[annotationSourceRanges], ",") {
			if pfx := p.parsePrefix(at, field, r); pfx.IsValid() {
				s.LoadBalancerSourceRanges = append(s.LoadBalancerSourceRanges, pfx)
			}
		}
	}

	switch k.Spec.SessionAffinity {
	case "", corev1.ServiceAffinityNone:
	case corev1.ServiceAffinityClientIP:
		s.SessionAffinity = true
		s.AffinityTimeout = DefaultAffinityTimeout
		if cfg := k.Spec.SessionAffinityConfig; cfg != nil && cfg.ClientIP != nil && cfg.ClientIP.TimeoutSeconds != nil {
			s.AffinityTimeout = time.Duration(*cfg.ClientIP.TimeoutSeconds) * time.Second
		}
	default:
		errf("spec.sessionAffinity", "unsupported value %q: must be ClientIP or None", k.Spec.SessionAffinity)
	}

	s.ExternalTrafficPolicy = TrafficPolicy(k.Spec.ExternalTrafficPolicy)
	if s.ExternalTrafficPolicy == "" {
		s.ExternalTrafficPolicy = PolicyCluster
	}
	s.InternalTrafficPolicy = PolicyCluster
	if k.Spec.InternalTrafficPolicy != nil && *k.Spec.InternalTrafficPolicy != "" {
		s.InternalTrafficPolicy = TrafficPolicy(*k.Spec.InternalTrafficPolicy)
	}
	if k.Spec.TrafficDistribution != nil {
		s.TrafficDistribution = *k.Spec.TrafficDistribution
	}
	s.HealthCheckNodePort = k.Spec.HealthCheckNodePort

	// The API server allocates node ports for LoadBalancer Services unless
	// told not to; proxyrig has no allocator, so the input must carry them.
	needNodePorts := s.Type == LoadBalancer &&
		(k.Spec.AllocateLoadBalancerNodePorts == nil || *k.Spec.AllocateLoadBalancerNodePorts)
	for i, sp := range k.Spec.Ports {
		port := &ServicePort{
			Name:       sp.Name,
			Protocol:   Protocol(sp.Protocol),
			Port:       sp.Port,
			NodePort:   sp.NodePort,
			TargetPort: targetPortString(sp.TargetPort, sp.Port),
		}
		if port.Protocol == "" {
			port.Protocol = TCP // API default
		}
		if needNodePorts && sp.NodePort == 0 {
			errf(fmt.Sprintf("spec.ports[%d].nodePort", i),
				"required for type LoadBalancer unless spec.allocateLoadBalancerNodePorts is false (proxyrig does not allocate node ports; pick one in 30000-32767)")
		}
		s.Ports = append(s.Ports, port)
	}
	return s
}

// targetPortString is targetPort as written, defaulted to the port number
// the way the API server defaults it.
func targetPortString(tp intstr.IntOrString, port int32) string {
	if tp.Type == intstr.String {
		return tp.StrVal
	}
	if tp.IntVal == 0 {
		return strconv.Itoa(int(port))
	}
	return strconv.Itoa(int(tp.IntVal))
}

func (p *parser) convertNode(o *parsedObject) *Node {
	k, at := o.node, o.origin
	if k.Name == "" {
		p.errs.add(at, "metadata.name", "required")
	}
	n := &Node{
		Name:   k.Name,
		Zone:   k.Labels[labelZone],
		Labels: maps.Clone(k.Labels),
		Origin: at,
	}
	// InternalIPs first, then ExternalIPs, each in the order the node lists
	// them: the first address of each family is the node's primary one.
	for _, typ := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for i, a := range k.Status.Addresses {
			if a.Type != typ {
				continue
			}
			ip := p.parseIP(at, fmt.Sprintf("status.addresses[%d].address", i), a.Address)
			if ip.IsValid() && !slices.Contains(n.Addresses, ip) {
				n.Addresses = append(n.Addresses, ip)
			}
		}
	}
	return n
}

func (p *parser) addSlice(o *parsedObject, services map[ServiceName]*Service, m *endpointMerger) {
	k, at := o.slice, o.origin
	errf := func(field, format string, args ...any) { p.errs.add(at, field, format, args...) }
	warnf := func(format string, args ...any) {
		p.warnings = append(p.warnings, fmt.Sprintf("%s: ", at)+fmt.Sprintf(format, args...))
	}
	if k.Name == "" {
		errf("metadata.name", "required")
	} else if why := badDNSSubdomain(k.Name); why != "" {
		errf("metadata.name", "%q is not a valid EndpointSlice name: %s", k.Name, why)
	}
	// The API server's limits for one slice (discovery validation); the
	// EndpointSlice controller splits larger sets across slices.
	if len(k.Endpoints) > maxSliceEndpoints {
		errf("endpoints", "%d endpoints, at most %d allowed in one EndpointSlice (split them across several slices, as the EndpointSlice controller does)", len(k.Endpoints), maxSliceEndpoints)
		return
	}
	if len(k.Ports) > maxSlicePorts {
		errf("ports", "%d ports, at most %d allowed in one EndpointSlice", len(k.Ports), maxSlicePorts)
		return
	}
	labelField := "metadata.labels[" + labelServiceName + "]"
	svcName, hasLabel := k.Labels[labelServiceName]
	if !hasLabel || svcName == "" {
		errf(labelField, "required: EndpointSlices are joined to their Service by this label, as kube-proxy does")
	}

	var wantFamily string
	switch k.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		wantFamily = string(k.AddressType)
	case discoveryv1.AddressTypeFQDN:
		warnf("skipping: addressType FQDN is not proxied (kube-proxy ignores it too)")
		return
	case "":
		errf("addressType", "required: must be IPv4 or IPv6")
		return
	default:
		errf("addressType", "unsupported value %q: must be IPv4, IPv6 or FQDN", k.AddressType)
		return
	}

	type slicePort struct {
		name  string
		proto Protocol
		port  int32
		index int
	}
	var ports []slicePort
	names := map[string]int{}
	for i, sp := range k.Ports {
		field := fmt.Sprintf("ports[%d]", i)
		// The API server defaults a missing port name to "" and a missing
		// protocol to TCP (discovery/v1 SetDefaults_EndpointPort); kube-proxy
		// only ever sees defaulted slices, so do the same.
		name, proto := "", TCP
		if sp.Name != nil {
			name = *sp.Name
		}
		if sp.Protocol != nil {
			proto = Protocol(*sp.Protocol)
		}
		if prev, dup := names[name]; dup {
			errf(field+".name", "duplicate port name %q (also ports[%d])", name, prev)
			continue
		}
		names[name] = i
		if !validProtocol(proto) {
			errf(field+".protocol", "unsupported protocol %q: must be TCP, UDP or SCTP", proto)
			continue
		}
		if sp.Port == nil || *sp.Port == 0 {
			warnf("%s: no port number; ignored (kube-proxy ignores it too)", field)
			continue
		}
		if !validPort(*sp.Port) {
			errf(field+".port", "%d is out of range (1-65535)", *sp.Port)
			continue
		}
		ports = append(ports, slicePort{name: name, proto: proto, port: *sp.Port, index: i})
	}

	// Usable endpoints of the slice, Port not yet set.
	var eps []Endpoint
	for i, e := range k.Endpoints {
		field := fmt.Sprintf("endpoints[%d]", i)
		if len(e.Addresses) == 0 {
			warnf("%s: no addresses; ignored (kube-proxy ignores it too)", field)
			continue
		}
		if len(e.Addresses) > maxEndpointAddresses {
			errf(field+".addresses", "%d addresses, at most %d allowed", len(e.Addresses), maxEndpointAddresses)
			continue
		}
		if e.NodeName != nil && *e.NodeName != "" {
			if why := badDNSSubdomain(*e.NodeName); why != "" {
				errf(field+".nodeName", "%q is not a valid node name: %s", *e.NodeName, why)
				continue
			}
		}
		var first netip.Addr
		ok := true
		for j, a := range e.Addresses {
			afield := fmt.Sprintf("%s.addresses[%d]", field, j)
			ip := p.parseIP(at, afield, a)
			if !ip.IsValid() {
				ok = false
				continue
			}
			if familyOf(ip) != wantFamily {
				errf(afield, "%s is not an %s address (addressType is %s)", ip, wantFamily, wantFamily)
				ok = false
				continue
			}
			if why := specialIP(ip); why != "" {
				errf(afield, "%s %s", ip, why)
				ok = false
				continue
			}
			if j == 0 {
				first = ip
			}
		}
		if !ok {
			continue
		}
		ep := Endpoint{
			IP: first,
			// kube-proxy reads the conditions this way, nil meaning the API
			// default (pkg/proxy/endpointslicecache.go addEndpoints):
			//   ready       := Ready == nil || *Ready
			//   serving     := Serving == nil || *Serving
			//   terminating := Terminating != nil && *Terminating
			// The discovery/v1 API docs say the same ("A nil value should be
			// interpreted as true" for ready and serving).
			Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
			Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
			Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
		}
		ep.Name = first.String()
		if e.TargetRef != nil && e.TargetRef.Name != "" {
			ep.Name = e.TargetRef.Name
		}
		if e.NodeName != nil {
			ep.NodeName = *e.NodeName
		}
		if e.Zone != nil {
			ep.Zone = *e.Zone
		}
		if e.Hints != nil {
			for _, z := range e.Hints.ForZones {
				ep.ZoneHints = append(ep.ZoneHints, z.Name)
			}
			for _, n := range e.Hints.ForNodes {
				ep.NodeHints = append(ep.NodeHints, n.Name)
			}
		}
		eps = append(eps, ep)
	}

	if !hasLabel || svcName == "" {
		return
	}
	svc := services[ServiceName{Namespace: k.Namespace, Name: svcName}]
	if svc == nil {
		// When some document could not be decoded, the Service may well be
		// in it; that error was reported already.
		if !p.lostObjects {
			errf(labelField, "Service %s/%s does not exist", k.Namespace, svcName)
		}
		return
	}

	// Ports are matched by name and protocol; the port number comes from the
	// slice (it is the resolved targetPort).
	for _, sp := range ports {
		var target *ServicePort
		for _, port := range svc.Ports {
			if port.Name == sp.name && port.Protocol == sp.proto {
				target = port
				break
			}
		}
		if target == nil {
			warnf("ports[%d] (name %q, %s) matches no port of Service %s; its endpoints are not used",
				sp.index, sp.name, sp.proto, svc.Name)
			continue
		}
		for _, ep := range eps {
			ep.Port = sp.port
			ep.ZoneHints = slices.Clone(ep.ZoneHints)
			ep.NodeHints = slices.Clone(ep.NodeHints)
			m.add(target, &ep)
		}
	}
	// Nodes are needed even when no port matched: the lab still builds the
	// pods the slice lists.
	for _, ep := range eps {
		m.noteNode(ep.NodeName, at)
	}
}

// endpointMerger joins endpoints of one service port coming from several
// slices, keyed by IP and port as kube-proxy keys them.
type endpointMerger struct {
	byPort        map[*ServicePort]map[netip.AddrPort]*Endpoint
	ports         []*ServicePort
	nodeOrder     []string
	nodeFirstSeen map[string]Origin
}

func newEndpointMerger() *endpointMerger {
	return &endpointMerger{
		byPort:        map[*ServicePort]map[netip.AddrPort]*Endpoint{},
		nodeFirstSeen: map[string]Origin{},
	}
}

// add keeps one endpoint per IP:port. When an endpoint appears twice (a pod
// moving between slices, or a new pod reusing a terminating pod's IP),
// kube-proxy keeps a non-terminating copy over a terminating one; we do the
// same and then prefer a ready copy, and otherwise keep the first seen.
func (m *endpointMerger) add(port *ServicePort, ep *Endpoint) {
	set := m.byPort[port]
	if set == nil {
		set = map[netip.AddrPort]*Endpoint{}
		m.byPort[port] = set
		m.ports = append(m.ports, port)
	}
	key := netip.AddrPortFrom(ep.IP, uint16(ep.Port))
	if old, ok := set[key]; !ok || endpointRank(ep) > endpointRank(old) {
		set[key] = ep
	}
}

func endpointRank(ep *Endpoint) int {
	r := 0
	if !ep.Terminating {
		r += 2
	}
	if ep.Ready {
		r++
	}
	return r
}

func (m *endpointMerger) noteNode(name string, at Origin) {
	if name == "" {
		return
	}
	if _, ok := m.nodeFirstSeen[name]; !ok {
		m.nodeFirstSeen[name] = at
		m.nodeOrder = append(m.nodeOrder, name)
	}
}

func (m *endpointMerger) finish() {
	for _, port := range m.ports {
		port.Endpoints = slices.Collect(maps.Values(m.byPort[port]))
		sortEndpoints(port.Endpoints)
	}
}

// warnFamilyMismatch notes endpoints no datapath will use: kube-proxy runs
// one proxier per family and each only reads the Service's ClusterIP of its
// own family.
func (p *parser) warnFamilyMismatch(s *Service) {
	if !s.IsProxied() {
		return
	}
	has := map[string]bool{}
	for _, ip := range s.ClusterIPs {
		if ip.IsValid() {
			has[familyOf(ip)] = true
		}
	}
	missing := map[string]bool{}
	for _, port := range s.Ports {
		for _, ep := range port.Endpoints {
			if f := familyOf(ep.IP); !has[f] {
				missing[f] = true
			}
		}
	}
	for _, f := range slices.Sorted(maps.Keys(missing)) {
		p.warnings = append(p.warnings, fmt.Sprintf("%s: has %s endpoints but no %s ClusterIP; they are not used", s.Origin, f, f))
	}
}

// parseIP parses one IP address written in the input, reporting a bad one
// at field. It returns the zero Addr on failure.
func (p *parser) parseIP(at Origin, field, s string) netip.Addr {
	ip, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		p.errs.add(at, field, "%q is not a valid IP address", s)
		return netip.Addr{}
	case ip.Zone() != "":
		p.errs.add(at, field, "%q: IP addresses may not carry a zone", s)
		return netip.Addr{}
	case ip.Is4In6():
		p.errs.add(at, field, "%q: IPv4-mapped IPv6 addresses are not allowed; write %s", s, ip.Unmap())
		return netip.Addr{}
	}
	return ip
}

// parsePrefix parses a CIDR, tolerating surrounding spaces and host bits as
// kube-proxy does (it trims and parses with ParseCIDRSloppy, which masks).
func (p *parser) parsePrefix(at Origin, field, s string) netip.Prefix {
	pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || pfx.Addr().Zone() != "" {
		p.errs.add(at, field, "%q is not a valid CIDR (such as 198.18.0.0/24)", s)
		return netip.Prefix{}
	}
	return pfx.Masked()
}

func familyOf(ip netip.Addr) string {
	if ip.Is4() {
		return string(corev1.IPv4Protocol)
	}
	return string(corev1.IPv6Protocol)
}
