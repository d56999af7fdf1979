package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"proxyrig/model"
)

// ChangeKind names one kind of single change to a cluster.
type ChangeKind string

const (
	AddService     ChangeKind = "add-service"
	RemoveService  ChangeKind = "remove-service"
	AddEndpoint    ChangeKind = "add-endpoint"
	RemoveEndpoint ChangeKind = "remove-endpoint"
	// EndpointTerminating flips a ready endpoint to ready=false,
	// serving=true, terminating=true: a pod that got SIGTERM.
	EndpointTerminating ChangeKind = "endpoint-terminating"
	// EndpointNotReady flips a ready endpoint to ready=false,
	// serving=false: a failing readiness probe.
	EndpointNotReady ChangeKind = "endpoint-not-ready"
	// EndpointReady flips an endpoint that was made not ready or
	// terminating back to ready, so a long churn keeps its population.
	EndpointReady ChangeKind = "endpoint-ready"
	// ReplaceEndpoints removes every endpoint of a Service and adds as many
	// new ones in one change.
	ReplaceEndpoints ChangeKind = "replace-endpoints"
)

// DefaultChurnWeights keep the cluster's size steady on average: additions
// and removals balance, and flipped endpoints come back.
var DefaultChurnWeights = map[ChangeKind]float64{
	AddService:          1,
	RemoveService:       1,
	AddEndpoint:         2,
	RemoveEndpoint:      2,
	EndpointTerminating: 1,
	EndpointNotReady:    1,
	EndpointReady:       2,
}

// Change is one applied change.
type Change struct {
	Seq     int               `json:"seq"`
	Kind    ChangeKind        `json:"kind"`
	Service model.ServiceName `json:"service"`
	// VIP is the Service's first ClusterIP and first port, and Protocol
	// that port's protocol: where a probe of this change should aim.
	VIP      netip.AddrPort `json:"vip"`
	Protocol model.Protocol `json:"protocol"`
	// Added and Removed are the endpoint addresses (of the first port)
	// that appeared or went away; Flipped those whose conditions changed.
	Added   []netip.AddrPort `json:"added,omitempty"`
	Removed []netip.AddrPort `json:"removed,omitempty"`
	Flipped []netip.AddrPort `json:"flipped,omitempty"`
	// Cluster is the whole cluster after the change. It shares every
	// Service the change did not touch with the cluster before it.
	Cluster *model.Cluster `json:"-"`
}

func (c Change) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s %s", c.Seq, c.Kind, c.Service)
	for _, ap := range c.Added {
		fmt.Fprintf(&b, " +%s", ap)
	}
	for _, ap := range c.Removed {
		fmt.Fprintf(&b, " -%s", ap)
	}
	for _, ap := range c.Flipped {
		fmt.Fprintf(&b, " ~%s", ap)
	}
	return b.String()
}

// Churn produces single changes to a generated cluster, deterministically
// for a seed: the same cluster, spec and seed give the same sequence. Every
// change returns a new Cluster (copy on write), so a cluster handed to a
// datapath is never modified afterwards. A Churn is not safe for concurrent
// use.
type Churn struct {
	spec    Spec
	rng     *rand.Rand
	a       *allocator
	c       *model.Cluster
	seq     int
	weights map[ChangeKind]float64
	// flipped endpoints that may be made ready again, by Service.
	flipped []flippedEndpoint
}

type flippedEndpoint struct {
	svc model.ServiceName
	ap  netip.AddrPort
}

// NewChurn starts a churn from cluster c, which must have been generated
// with spec (Generate). weights nil means DefaultChurnWeights.
func NewChurn(c *model.Cluster, spec Spec, seed uint64, weights map[ChangeKind]float64) (*Churn, error) {
	spec = spec.Defaults()
	if err := spec.Check(); err != nil {
		return nil, fmt.Errorf("churn: %w", err)
	}
	if len(c.Nodes) != spec.Nodes {
		return nil, fmt.Errorf("churn: the cluster has %d nodes, the spec %d", len(c.Nodes), spec.Nodes)
	}
	if weights == nil {
		weights = DefaultChurnWeights
	}
	ch := &Churn{
		spec:    spec,
		rng:     rand.New(rand.NewPCG(seed, 0x636875726e)), // "churn"
		a:       newAllocator(spec.Nodes, spec.PortsPerService),
		c:       c,
		weights: weights,
	}
	if err := ch.a.adopt(c); err != nil {
		return nil, fmt.Errorf("churn: %w", err)
	}
	for _, s := range c.Services {
		for _, ep := range firstPortEndpoints(s) {
			if !ep.Ready {
				ch.flipped = append(ch.flipped, flippedEndpoint{s.Name, netip.AddrPortFrom(ep.IP, uint16(ep.Port))})
			}
		}
	}
	return ch, nil
}

// adopt marks everything cluster c holds as in use.
func (a *allocator) adopt(c *model.Cluster) error {
	for _, s := range c.Services {
		for _, ip := range s.ClusterIPs {
			a.usedVIPs[ip] = true
		}
		for _, ip := range s.LoadBalancerIPs {
			a.usedLBs[ip] = true
		}
		for _, sp := range s.Ports {
			if sp.NodePort != 0 {
				a.nodePorts[sp.NodePort] = true
			}
		}
		var idx int
		if _, err := fmt.Sscanf(s.Name.Name, "svc-%d", &idx); err == nil && idx >= a.nextSvc {
			a.nextSvc = idx + 1
		}
		if !generated(s) {
			continue // e.g. the bench's rr Service: churn never touches it
		}
		for _, ep := range firstPortEndpoints(s) {
			node := nodeIndex(ep.NodeName)
			if node < 0 || node >= a.nodes {
				return fmt.Errorf("%s: endpoint %s is on node %q, not a generated node", s.Name, ep, ep.NodeName)
			}
			slot := a.slotOf(ep.Port, 0)
			if slot < 0 || slot >= a.slots || !slices.ContainsFunc(NodePrefixes(node, a.nodes), func(p netip.Prefix) bool { return p.Contains(ep.IP) }) {
				return fmt.Errorf("%s: endpoint %s is outside the generated address plan", s.Name, ep)
			}
			a.perNode[node][a.indexOf(node, ep.IP, slot)] = true
		}
	}
	return nil
}

// generated reports whether a Service is one a generator or churn made
// (svc-NNNNN), which churn may change.
func generated(s *model.Service) bool {
	return s.Name.Namespace == Namespace && strings.HasPrefix(s.Name.Name, "svc-")
}

func firstPortEndpoints(s *model.Service) []*model.Endpoint {
	if len(s.Ports) == 0 {
		return nil
	}
	return s.Ports[0].Endpoints
}

// Cluster is the current cluster.
func (ch *Churn) Cluster() *model.Cluster { return ch.c }

// find returns the index of a Service in the current cluster, or -1.
func (ch *Churn) find(name model.ServiceName) int {
	i, ok := slices.BinarySearchFunc(ch.c.Services, name, func(s *model.Service, n model.ServiceName) int {
		return strings.Compare(s.Name.Namespace+"\x00"+s.Name.Name, n.Namespace+"\x00"+n.Name)
	})
	if !ok {
		return -1
	}
	return i
}

// commit builds the next cluster with svcs and records the change.
func (ch *Churn) commit(svcs []*model.Service, ch0 Change, s *model.Service) Change {
	ch.seq++
	ch.c = &model.Cluster{Services: svcs, Nodes: ch.c.Nodes, Warnings: ch.c.Warnings}
	ch0.Seq = ch.seq
	ch0.Service = s.Name
	if len(s.ClusterIPs) > 0 && len(s.Ports) > 0 {
		ch0.VIP = netip.AddrPortFrom(s.ClusterIPs[0], uint16(s.Ports[0].Port))
		ch0.Protocol = s.Ports[0].Protocol
	}
	ch0.Cluster = ch.c
	return ch0
}

// replaceService returns a copy of the Service list with svc at i.
func (ch *Churn) replaceService(i int, svc *model.Service) []*model.Service {
	svcs := slices.Clone(ch.c.Services)
	svcs[i] = svc
	return svcs
}

// ServiceOptions shape a Service added by AddServiceWith.
type ServiceOptions struct {
	Type model.ServiceType // default ClusterIP
	UDP  bool
	// Endpoints is how many endpoints it gets (0: none, so a ClusterIP
	// Service REJECTs); negative means the spec's EndpointsPerService.
	Endpoints int
	// Nodes restricts the endpoints to these node indices (round-robin);
	// empty spreads them over every node.
	Nodes []int
}

// AddServiceWith adds one Service shaped by o.
func (ch *Churn) AddServiceWith(o ServiceOptions) (Change, error) {
	if o.Type == "" {
		o.Type = model.ClusterIP
	}
	if o.Endpoints < 0 {
		o.Endpoints = ch.spec.EndpointsPerService
	}
	if o.Type == model.NodePort && ch.a.nodePortsFree() < ch.spec.PortsPerService {
		o.Type = model.ClusterIP
	}
	s, err := ch.a.newService(serviceShape{typ: o.Type, udp: o.UDP, endpoints: o.Endpoints,
		firstNode: ch.rng.IntN(ch.spec.Nodes), onlyOnNodes: o.Nodes})
	if err != nil {
		return Change{}, fmt.Errorf("add service: %w", err)
	}
	svcs := slices.Clone(ch.c.Services)
	i, _ := slices.BinarySearchFunc(svcs, s.Name, func(x *model.Service, n model.ServiceName) int {
		return strings.Compare(x.Name.Namespace+"\x00"+x.Name.Name, n.Namespace+"\x00"+n.Name)
	})
	svcs = slices.Insert(svcs, i, s)
	return ch.commit(svcs, Change{Kind: AddService, Added: addrsOf(firstPortEndpoints(s))}, s), nil
}

// addRandomService adds a Service shaped like the spec's mix.
func (ch *Churn) addRandomService() (Change, error) {
	sp := ch.spec
	total := sp.Mix.ClusterIP + sp.Mix.NodePort + sp.Mix.LoadBalancer
	u := ch.rng.Float64() * total
	typ := model.ClusterIP
	switch {
	case u < sp.Mix.NodePort:
		typ = model.NodePort
	case u < sp.Mix.NodePort+sp.Mix.LoadBalancer:
		typ = model.LoadBalancer
	}
	if typ == model.NodePort && ch.a.nodePortsFree() < sp.PortsPerService {
		typ = model.ClusterIP
	}
	s, err := ch.a.newService(serviceShape{
		typ:       typ,
		udp:       ch.rng.Float64() < sp.UDPFraction,
		affinity:  ch.rng.Float64() < sp.AffinityFraction,
		etpLocal:  ch.rng.Float64() < sp.ETPLocalFraction,
		itpLocal:  ch.rng.Float64() < sp.ITPLocalFraction,
		endpoints: sp.EndpointsPerService,
		firstNode: ch.rng.IntN(sp.Nodes),
	})
	if err != nil {
		return Change{}, fmt.Errorf("add service: %w", err)
	}
	svcs := slices.Clone(ch.c.Services)
	i, _ := slices.BinarySearchFunc(svcs, s.Name, func(x *model.Service, n model.ServiceName) int {
		return strings.Compare(x.Name.Namespace+"\x00"+x.Name.Name, n.Namespace+"\x00"+n.Name)
	})
	svcs = slices.Insert(svcs, i, s)
	return ch.commit(svcs, Change{Kind: AddService, Added: addrsOf(firstPortEndpoints(s))}, s), nil
}

// RemoveServiceNamed removes a Service.
func (ch *Churn) RemoveServiceNamed(name model.ServiceName) (Change, error) {
	i := ch.find(name)
	if i < 0 {
		return Change{}, fmt.Errorf("remove service %s: no such Service", name)
	}
	s := ch.c.Services[i]
	ch.a.releaseService(s)
	ch.forgetFlipped(s.Name, nil)
	svcs := slices.Delete(slices.Clone(ch.c.Services), i, i+1)
	return ch.commit(svcs, Change{Kind: RemoveService, Removed: addrsOf(firstPortEndpoints(s))}, s), nil
}

// AddEndpointTo gives a Service one more ready endpoint on node (-1: a
// random node).
func (ch *Churn) AddEndpointTo(name model.ServiceName, node int) (Change, error) {
	i := ch.find(name)
	if i < 0 {
		return Change{}, fmt.Errorf("add endpoint to %s: no such Service", name)
	}
	if node < 0 {
		node = ch.rng.IntN(ch.spec.Nodes)
	}
	s := ch.c.Services[i].Clone()
	before := addrsOf(firstPortEndpoints(s))
	if err := ch.a.addEndpoint(s, node); err != nil {
		return Change{}, fmt.Errorf("add endpoint to %s: %w", name, err)
	}
	var added []netip.AddrPort
	for _, ap := range addrsOf(firstPortEndpoints(s)) {
		if !slices.Contains(before, ap) {
			added = append(added, ap)
		}
	}
	return ch.commit(ch.replaceService(i, s), Change{Kind: AddEndpoint, Added: added}, s), nil
}

// RemoveEndpointFrom removes the endpoint whose first-port address is ap
// (on every port of the Service).
func (ch *Churn) RemoveEndpointFrom(name model.ServiceName, ap netip.AddrPort) (Change, error) {
	i := ch.find(name)
	if i < 0 {
		return Change{}, fmt.Errorf("remove endpoint from %s: no such Service", name)
	}
	s := ch.c.Services[i].Clone()
	j := slices.IndexFunc(firstPortEndpoints(s), func(ep *model.Endpoint) bool { return ep.IP == ap.Addr() && ep.Port == int32(ap.Port()) })
	if j < 0 {
		return Change{}, fmt.Errorf("remove endpoint from %s: it has no endpoint %s", name, ap)
	}
	ch.a.releaseEndpoint(s.Ports[0].Endpoints[j])
	removeEndpointIP(s, ap, ch.a)
	ch.forgetFlipped(s.Name, &ap)
	return ch.commit(ch.replaceService(i, s), Change{Kind: RemoveEndpoint, Removed: []netip.AddrPort{ap}}, s), nil
}

// removeEndpointIP deletes, from every port, the endpoint of the same pod
// (same IP and port slot) as first-port address ap.
func removeEndpointIP(s *model.Service, ap netip.AddrPort, a *allocator) {
	slot := a.slotOf(int32(ap.Port()), 0)
	for k, sp := range s.Ports {
		port := a.targetPort(slot, k)
		sp.Endpoints = slices.DeleteFunc(sp.Endpoints, func(ep *model.Endpoint) bool { return ep.IP == ap.Addr() && ep.Port == port })
	}
}

// ReplaceEndpointsOf removes every endpoint of a Service and adds n new
// ones (on nodes, round-robin; nil: spread), in one change.
func (ch *Churn) ReplaceEndpointsOf(name model.ServiceName, n int, nodes []int) (Change, error) {
	i := ch.find(name)
	if i < 0 {
		return Change{}, fmt.Errorf("replace endpoints of %s: no such Service", name)
	}
	s := ch.c.Services[i].Clone()
	removed := addrsOf(firstPortEndpoints(s))
	for _, ep := range firstPortEndpoints(s) {
		ch.a.releaseEndpoint(ep)
	}
	// Allocate before releasing would hand back the same addresses; the
	// cursor moves on, so the new endpoints get fresh ones.
	for _, sp := range s.Ports {
		sp.Endpoints = nil
	}
	ch.forgetFlipped(s.Name, nil)
	first := ch.rng.IntN(ch.spec.Nodes)
	for j := range n {
		node := (first + j) % ch.spec.Nodes
		if len(nodes) > 0 {
			node = nodes[j%len(nodes)]
		}
		if err := ch.a.addEndpoint(s, node); err != nil {
			return Change{}, fmt.Errorf("replace endpoints of %s: %w", name, err)
		}
	}
	return ch.commit(ch.replaceService(i, s), Change{Kind: ReplaceEndpoints, Removed: removed, Added: addrsOf(firstPortEndpoints(s))}, s), nil
}

// SetEndpointConditions sets the conditions of one endpoint (on every
// port of its Service).
func (ch *Churn) SetEndpointConditions(name model.ServiceName, ap netip.AddrPort, ready, serving, terminating bool) (Change, error) {
	i := ch.find(name)
	if i < 0 {
		return Change{}, fmt.Errorf("set conditions in %s: no such Service", name)
	}
	s := ch.c.Services[i].Clone()
	slot := ch.a.slotOf(int32(ap.Port()), 0)
	found := false
	for k, sp := range s.Ports {
		port := ch.a.targetPort(slot, k)
		for _, ep := range sp.Endpoints {
			if ep.IP == ap.Addr() && ep.Port == port {
				ep.Ready, ep.Serving, ep.Terminating = ready, serving, terminating
				found = true
			}
		}
	}
	if !found {
		return Change{}, fmt.Errorf("set conditions in %s: it has no endpoint %s", name, ap)
	}
	kind := EndpointReady
	switch {
	case !ready && terminating:
		kind = EndpointTerminating
	case !ready:
		kind = EndpointNotReady
	}
	ch.forgetFlipped(s.Name, &ap)
	if !ready {
		ch.flipped = append(ch.flipped, flippedEndpoint{s.Name, ap})
	}
	return ch.commit(ch.replaceService(i, s), Change{Kind: kind, Flipped: []netip.AddrPort{ap}}, s), nil
}

func (ch *Churn) forgetFlipped(svc model.ServiceName, ap *netip.AddrPort) {
	ch.flipped = slices.DeleteFunc(ch.flipped, func(f flippedEndpoint) bool {
		return f.svc == svc && (ap == nil || f.ap == *ap)
	})
}

func addrsOf(eps []*model.Endpoint) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(eps))
	for _, ep := range eps {
		out = append(out, netip.AddrPortFrom(ep.IP, uint16(ep.Port)))
	}
	return out
}

// kinds in a fixed order, so weighted choice is deterministic.
var churnKinds = []ChangeKind{AddService, RemoveService, AddEndpoint, RemoveEndpoint, EndpointTerminating, EndpointNotReady, EndpointReady, ReplaceEndpoints}

// Next applies one random change, chosen by weight. A kind that cannot
// apply (no Service to remove, no flipped endpoint to make ready) is
// replaced by adding a Service or an endpoint.
func (ch *Churn) Next() (Change, error) {
	var total float64
	for _, k := range churnKinds {
		total += max(0, ch.weights[k])
	}
	if total <= 0 {
		return Change{}, errors.New("churn: every weight is zero")
	}
	u := ch.rng.Float64() * total
	kind := churnKinds[len(churnKinds)-1]
	for _, k := range churnKinds {
		w := max(0, ch.weights[k])
		if u < w {
			kind = k
			break
		}
		u -= w
	}
	var candidates int
	for _, s := range ch.c.Services {
		if generated(s) {
			candidates++
			if candidates > 1 {
				break
			}
		}
	}
	if candidates == 0 {
		return ch.addRandomService()
	}
	s := ch.c.Services[ch.rng.IntN(len(ch.c.Services))]
	for !generated(s) {
		s = ch.c.Services[ch.rng.IntN(len(ch.c.Services))]
	}
	eps := firstPortEndpoints(s)
	switch kind {
	case AddService:
		return ch.addRandomService()
	case RemoveService:
		return ch.RemoveServiceNamed(s.Name)
	case AddEndpoint:
		return ch.AddEndpointTo(s.Name, -1)
	case RemoveEndpoint:
		if len(eps) < 2 { // keep the Service reachable
			return ch.AddEndpointTo(s.Name, -1)
		}
		ep := eps[ch.rng.IntN(len(eps))]
		return ch.RemoveEndpointFrom(s.Name, netip.AddrPortFrom(ep.IP, uint16(ep.Port)))
	case EndpointTerminating, EndpointNotReady:
		var ready []*model.Endpoint
		for _, ep := range eps {
			if ep.Ready {
				ready = append(ready, ep)
			}
		}
		if len(ready) < 2 {
			return ch.AddEndpointTo(s.Name, -1)
		}
		ep := ready[ch.rng.IntN(len(ready))]
		ap := netip.AddrPortFrom(ep.IP, uint16(ep.Port))
		if kind == EndpointTerminating {
			return ch.SetEndpointConditions(s.Name, ap, false, true, true)
		}
		return ch.SetEndpointConditions(s.Name, ap, false, false, false)
	case EndpointReady:
		if len(ch.flipped) == 0 {
			return ch.AddEndpointTo(s.Name, -1)
		}
		f := ch.flipped[ch.rng.IntN(len(ch.flipped))]
		return ch.SetEndpointConditions(f.svc, f.ap, true, true, false)
	case ReplaceEndpoints:
		return ch.ReplaceEndpointsOf(s.Name, max(1, len(eps)), nil)
	}
	return Change{}, fmt.Errorf("churn: unknown kind %q", kind)
}

// Pace calls Next at rate changes per second until ctx is done or n
// changes have been made (n <= 0: no limit), handing each change to fn. It
// keeps an absolute schedule: when fn is slower than the rate, the next
// change follows at once rather than drifting, and lag reports how far
// behind schedule the last change was. An error from fn or Next stops it.
func (ch *Churn) Pace(ctx context.Context, rate float64, n int, fn func(Change) error) (made int, lag time.Duration, err error) {
	if rate <= 0 {
		return 0, 0, fmt.Errorf("churn: rate %g is not positive", rate)
	}
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; n <= 0 || i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return made, lag, nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return made, lag, nil
		}
		lag = max(0, time.Since(due))
		c, err := ch.Next()
		if err != nil {
			return made, lag, err
		}
		if err := fn(c); err != nil {
			return made, lag, err
		}
		made++
	}
	return made, lag, nil
}
