package fake

import (
	"fmt"
	"net/netip"
	"slices"

	"proxyrig/datapaths"
	"proxyrig/datapaths/flowtest"
	"proxyrig/model"
)

// Verdicts, in CONFORMANCE.md's vocabulary (the same type as the tables').
const (
	Forwarded = flowtest.VerdictFWD
	Rejected  = flowtest.VerdictREJECT
	Dropped   = flowtest.VerdictDROP
	Passed    = flowtest.VerdictPASS
)

// Packet is the first packet of a new connection arriving at (or leaving
// from) the node a view describes.
type Packet struct {
	Src, Dst netip.Addr
	Proto    model.Protocol
	Port     int32 // destination port
}

// Result is what kube-proxy's iptables mode would do with a packet.
type Result struct {
	Verdict flowtest.Verdict
	// Endpoints are the possible DNAT targets, for Forwarded: the
	// probabilistic rules make every one of them reachable.
	Endpoints []*model.Endpoint
	// Masquerade is set when the packet would be SNATed to a node address.
	Masquerade bool
	// Why names the rule that decided, for failure messages.
	Why string
}

// Names lists the endpoints' names, sorted, as the flow tables write them.
func (r Result) Names() []string {
	out := make([]string, 0, len(r.Endpoints))
	for _, ep := range r.Endpoints {
		out = append(out, ep.Name)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (r Result) String() string {
	e := flowtest.Expect{Verdict: r.Verdict, Endpoints: r.Names(), Masquerade: r.Masquerade}
	return fmt.Sprintf("%s (%s)", e, r.Why)
}

// Trace computes, from the model's semantics alone, what kube-proxy's
// iptables mode does on view's node with a new connection's first packet.
// It is the reference the flow tables are checked against; it follows the
// rules kube-proxy writes (pkg/proxy/iptables/proxier.go syncProxyRules):
//
//   - A ClusterIP port uses the Cluster endpoints, or the Local ones with
//     internalTrafficPolicy=Local. No usable endpoint anywhere: REJECT (filter
//     KUBE-SERVICES); endpoints elsewhere but none for this traffic: DROP.
//     Sources outside the cluster CIDR are masqueraded (KUBE-SVC "! -s
//     <clusterCIDR> -j KUBE-MARK-MASQ"), every source with masqueradeAll.
//   - External entry points (NodePort, externalIP, LB IP) go through
//     KUBE-EXT: with eTP=Cluster everything is masqueraded to the Cluster
//     endpoints; with eTP=Local, pod traffic is short-circuited to the
//     Cluster endpoints unmasqueraded, node-originated traffic to the Cluster
//     endpoints masqueraded, and the rest goes to the Local endpoints with
//     the client address kept, or is DROPped if there are none here.
//   - LB IPs with loadBalancerSourceRanges DROP sources outside them.
//   - NodePorts match node addresses (all of them by default, or those in
//     --nodeport-addresses); 127.0.0.1 only with localhost NodePorts, IPv4.
//   - A packet from an endpoint DNATed back to itself is masqueraded
//     (hairpin, KUBE-SEP "-s <ep> -j KUBE-MARK-MASQ").
//   - Anything else PASSes untouched.
func Trace(view *datapaths.NodeView, pkt Packet) Result {
	t := tracer{view: view, pkt: pkt}
	return t.run()
}

type tracer struct {
	view *datapaths.NodeView
	pkt  Packet
}

func (t *tracer) run() Result {
	pkt := t.pkt
	for _, svc := range t.view.Cluster.Services {
		if !svc.IsProxied() {
			continue
		}
		for _, sp := range svc.Ports {
			if sp.Protocol != pkt.Proto {
				continue
			}
			if sp.Port == pkt.Port {
				switch {
				case slices.Contains(svc.ClusterIPs, pkt.Dst):
					return t.internal(svc, sp)
				case slices.Contains(svc.ExternalIPs, pkt.Dst):
					return t.external(svc, sp, "externalIP")
				case slices.Contains(svc.LoadBalancerIPs, pkt.Dst):
					if r, blocked := t.firewall(svc, sp); blocked {
						return r
					}
					return t.external(svc, sp, "load-balancer IP")
				}
			}
			if sp.NodePort != 0 && sp.NodePort == pkt.Port && t.isLocal(pkt.Dst) {
				return t.nodePort(svc, sp)
			}
		}
	}
	return Result{Verdict: Passed, Why: "no Service entry point matches"}
}

// categorize sorts the port's endpoints of the destination's family; each
// family is a separate proxier in kube-proxy.
func (t *tracer) categorize(svc *model.Service, sp *model.ServicePort) model.Categorized {
	same := *sp
	same.Endpoints = nil
	for _, ep := range sp.Endpoints {
		if ep.IP.Is4() == t.pkt.Dst.Is4() {
			same.Endpoints = append(same.Endpoints, ep)
		}
	}
	return model.Categorize(svc, &same, t.view.Node)
}

func (t *tracer) hasDetector() bool { return len(t.view.Proxy.ClusterCIDRs) > 0 }

// fromPod is kube-proxy's local-traffic detector.
func (t *tracer) fromPod() bool {
	for _, p := range t.view.Proxy.ClusterCIDRs {
		if p.Contains(t.pkt.Src) {
			return true
		}
	}
	return false
}

// isLocal is iptables' "-m addrtype --dst-type LOCAL" on this node.
func (t *tracer) isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	return t.view.Node != nil && slices.Contains(t.view.Node.Addresses, a)
}

func (t *tracer) forward(eps []*model.Endpoint, masq bool, why string) Result {
	for _, ep := range eps {
		if ep.IP == t.pkt.Src {
			masq = true
			why += "; hairpin masquerade"
		}
	}
	return Result{Verdict: Forwarded, Endpoints: eps, Masquerade: masq, Why: why}
}

func (t *tracer) internal(svc *model.Service, sp *model.ServicePort) Result {
	cat := t.categorize(svc, sp)
	eps, policy := cat.Cluster, "Cluster"
	if svc.InternalPolicyLocal() {
		eps, policy = cat.Local, "Local"
	}
	name := fmt.Sprintf("%s:%s cluster IP", svc.Name, sp.Name)
	if !cat.HasAny {
		return Result{Verdict: Rejected, Why: name + " has no endpoints"}
	}
	if len(eps) == 0 {
		return Result{Verdict: Dropped, Why: name + " has no local endpoints (internalTrafficPolicy=Local)"}
	}
	masq := t.view.Proxy.MasqueradeAll || (t.hasDetector() && !t.fromPod())
	return t.forward(eps, masq, fmt.Sprintf("%s, internal policy %s", name, policy))
}

// firewall applies loadBalancerSourceRanges (KUBE-FW).
func (t *tracer) firewall(svc *model.Service, sp *model.ServicePort) (Result, bool) {
	ranges := svc.LoadBalancerSourceRanges
	if len(ranges) == 0 {
		return Result{}, false
	}
	// With no endpoints at all the filter table rejects before the
	// firewall chain is consulted: kube-proxy writes no KUBE-FW chain.
	if !t.categorize(svc, sp).HasAny {
		return Result{}, false
	}
	for _, p := range ranges {
		if p.Contains(t.pkt.Src) {
			return Result{}, false
		}
	}
	// Node traffic to a local LB IP leaves with that IP as its source, and
	// kube-proxy lets it through ("-s <lbip> -j KUBE-EXT").
	if t.pkt.Src == t.pkt.Dst {
		return Result{}, false
	}
	return Result{Verdict: Dropped, Why: fmt.Sprintf("%s:%s source %s outside loadBalancerSourceRanges", svc.Name, sp.Name, t.pkt.Src)}, true
}

// servesNodePortOn reports whether NodePorts are served on dst (a local
// address), per --nodeport-addresses and localhost NodePorts.
func (t *tracer) servesNodePortOn(dst netip.Addr) bool {
	if dst.IsLoopback() {
		// route_localnet exists only for IPv4; kube-proxy adds
		// "! -d 127.0.0.0/8" unless localhost NodePorts are on.
		if !dst.Is4() || !t.view.Proxy.LocalhostNodePorts {
			return false
		}
	}
	npa := t.view.Proxy.NodePortAddresses
	if len(npa) == 0 {
		return true
	}
	for _, p := range npa {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

func (t *tracer) nodePort(svc *model.Service, sp *model.ServicePort) Result {
	if t.servesNodePortOn(t.pkt.Dst) {
		return t.external(svc, sp, "NodePort")
	}
	// Not DNATed; but the filter table matches NodePorts on every local
	// address (KUBE-EXTERNAL-SERVICES "-m addrtype --dst-type LOCAL"), so
	// a Service without usable endpoints still rejects or drops.
	cat := t.categorize(svc, sp)
	name := fmt.Sprintf("%s:%s NodePort on %s", svc.Name, sp.Name, t.pkt.Dst)
	switch {
	case !cat.HasAny:
		return Result{Verdict: Rejected, Why: name + " (not a NodePort address) has no endpoints"}
	case svc.ExternalPolicyLocal() && len(cat.Local) == 0:
		return Result{Verdict: Dropped, Why: name + " (not a NodePort address) has no local endpoints"}
	}
	return Result{Verdict: Passed, Why: name + " is not a NodePort address"}
}

func (t *tracer) external(svc *model.Service, sp *model.ServicePort, entry string) Result {
	cat := t.categorize(svc, sp)
	name := fmt.Sprintf("%s:%s %s", svc.Name, sp.Name, entry)
	if !cat.HasAny {
		return Result{Verdict: Rejected, Why: name + " has no endpoints"}
	}
	if !svc.ExternalPolicyLocal() {
		return t.forward(cat.Cluster, true, name+", external policy Cluster")
	}
	if len(cat.Cluster) > 0 {
		if t.hasDetector() && t.fromPod() {
			return t.forward(cat.Cluster, false, name+", pod traffic short-circuited to the Cluster endpoints")
		}
		if t.isLocal(t.pkt.Src) {
			return t.forward(cat.Cluster, true, name+", node traffic short-circuited to the Cluster endpoints")
		}
	}
	if len(cat.Local) == 0 {
		return Result{Verdict: Dropped, Why: name + " has no local endpoints (externalTrafficPolicy=Local)"}
	}
	return t.forward(cat.Local, false, name+", external policy Local")
}
