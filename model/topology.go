package model

import "slices"

// Topology modes chosen from hints, named as spec.trafficDistribution values.
const (
	topologyNone           = ""
	topologyPreferSameNode = "PreferSameNode"
	topologyPreferSameZone = "PreferSameZone"
)

// Categorized is the result of sorting one Service port's endpoints for one
// node, the way kube-proxy's CategorizeEndpoints does.
type Categorized struct {
	// Cluster is used for traffic that follows the Cluster policy; nil when
	// the Service uses only local endpoints (iTP=Local internal-only).
	Cluster []*Endpoint
	// Local is used for traffic that follows the Local policy.
	Local []*Endpoint
	// AllReachable is the union this node can ever send to; it decides, for
	// example, which UDP conntrack entries are stale.
	AllReachable []*Endpoint
	// HasAny is true when some node in the cluster has a usable endpoint. It
	// decides REJECT (nothing anywhere) versus DROP (nothing here).
	HasAny bool
}

// UsesClusterEndpoints reports whether any traffic to the Service follows
// the Cluster policy. An externally accessible Service always does, even
// with eTP=Local: pods that send to its external addresses are
// short-circuited to the Cluster endpoints (kube-proxy's
// BaseServicePortInfo.UsesClusterEndpoints).
func (s *Service) UsesClusterEndpoints() bool {
	return !s.InternalPolicyLocal() || s.ExternallyAccessible()
}

// UsesLocalEndpoints reports whether any traffic to the Service follows the
// Local policy.
func (s *Service) UsesLocalEndpoints() bool {
	return s.InternalPolicyLocal() || (s.ExternallyAccessible() && s.ExternalPolicyLocal())
}

// Categorize sorts port's endpoints for the given node (nil node means a
// node with no name and no zone). The rules:
//   - Cluster endpoints are the ready ones, filtered by topology hints when
//     every ready endpoint carries them; if none is ready, serving and
//     terminating endpoints are used instead, ignoring topology.
//   - Local endpoints are the ready ones on this node; if none, the serving
//     and terminating ones on this node. Topology never filters them.
//   - Endpoints that are neither ready nor serving-terminating are never used.
func Categorize(svc *Service, port *ServicePort, node *Node) Categorized {
	var nodeName, zone string
	if node != nil {
		nodeName, zone = node.Name, node.Zone
	}
	isLocal := func(ep *Endpoint) bool { return ep.NodeName != "" && ep.NodeName == nodeName }
	eps := port.Endpoints
	var c Categorized

	if svc.UsesClusterEndpoints() {
		mode := topologyModeFromHints(eps, nodeName, zone)
		c.Cluster = filter(eps, func(ep *Endpoint) bool {
			return ep.Ready && availableForTopology(ep, mode, nodeName, zone)
		})
		// Falling back to terminating endpoints ignores topology: it is a
		// best effort to avoid dropping connections.
		if len(c.Cluster) == 0 {
			c.Cluster = filter(eps, func(ep *Endpoint) bool { return ep.Serving && ep.Terminating })
		}
		if len(c.Cluster) > 0 {
			c.HasAny = true
		}
	}
	if !svc.UsesLocalEndpoints() {
		c.AllReachable = c.Cluster
		return c
	}

	var localReady, localServingTerminating bool
	for _, ep := range eps {
		switch {
		case ep.Ready:
			c.HasAny = true
			localReady = localReady || isLocal(ep)
		case ep.Serving && ep.Terminating:
			c.HasAny = true
			localServingTerminating = localServingTerminating || isLocal(ep)
		}
	}
	switch {
	case localReady:
		c.Local = filter(eps, func(ep *Endpoint) bool { return isLocal(ep) && ep.Ready })
	case localServingTerminating:
		c.Local = filter(eps, func(ep *Endpoint) bool { return isLocal(ep) && ep.Serving && ep.Terminating })
	}

	if !svc.UsesClusterEndpoints() || len(c.Local) == 0 {
		if !svc.UsesClusterEndpoints() {
			c.AllReachable = c.Local
		} else {
			c.AllReachable = c.Cluster
		}
		return c
	}
	// Cluster may hold remote endpoints that Local lacks, and Local may hold
	// terminating or topology-filtered local endpoints that Cluster lacks.
	seen := map[string]bool{}
	for _, list := range [][]*Endpoint{c.Cluster, c.Local} {
		for _, ep := range list {
			if !seen[ep.String()] {
				seen[ep.String()] = true
				c.AllReachable = append(c.AllReachable, ep)
			}
		}
	}
	sortEndpoints(c.AllReachable)
	return c
}

// topologyModeFromHints picks PreferSameNode when every ready endpoint has
// node hints and one names this node, else PreferSameZone when every ready
// endpoint has zone hints and one names this zone, else no filtering.
func topologyModeFromHints(eps []*Endpoint, nodeName, zone string) string {
	var forNode, forZone bool
	allNodeHints, allZoneHints := true, true
	for _, ep := range eps {
		if !ep.Ready {
			continue
		}
		if len(ep.ZoneHints) == 0 {
			allZoneHints = false
		} else if slices.Contains(ep.ZoneHints, zone) {
			forZone = true
		}
		if len(ep.NodeHints) == 0 {
			allNodeHints = false
		} else if slices.Contains(ep.NodeHints, nodeName) {
			forNode = true
		}
	}
	if allNodeHints && forNode {
		return topologyPreferSameNode
	}
	if allZoneHints && forZone {
		return topologyPreferSameZone
	}
	return topologyNone
}

func availableForTopology(ep *Endpoint, mode, nodeName, zone string) bool {
	switch mode {
	case topologyNone:
		return true
	case topologyPreferSameNode:
		return slices.Contains(ep.NodeHints, nodeName)
	case topologyPreferSameZone:
		return slices.Contains(ep.ZoneHints, zone)
	}
	return false
}

func filter(eps []*Endpoint, keep func(*Endpoint) bool) []*Endpoint {
	var out []*Endpoint
	for _, ep := range eps {
		if keep(ep) {
			out = append(out, ep)
		}
	}
	return out
}

// sortEndpoints orders endpoints by IP then port, the model's canonical order.
func sortEndpoints(eps []*Endpoint) {
	slices.SortFunc(eps, func(a, b *Endpoint) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
}
