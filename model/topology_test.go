package model

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The cases below are kube-proxy's TestCategorizeEndpoints
// (pkg/proxy/topology_test.go), addresses moved into the lab plan:
// 10.1.2.x:80 -> 198.18.64.x:80 and 10.0.0.x:80 -> 198.18.65.(10+x):80.
// "Local" endpoints are on node-a, the node under test; the others on
// node-b. A service port with a nodePort is externally accessible.

type topoEP struct {
	addr                        string
	zones, nodes                []string
	ready, serving, terminating bool
	local                       bool
}

func (e topoEP) endpoint() *Endpoint {
	ap := netip.MustParseAddrPort(e.addr)
	ep := &Endpoint{
		IP: ap.Addr(), Port: int32(ap.Port()), Name: e.addr,
		ZoneHints: e.zones, NodeHints: e.nodes,
		Ready: e.ready, Serving: e.serving, Terminating: e.terminating,
		NodeName: "node-b",
	}
	if e.local {
		ep.NodeName = "node-a"
	}
	return ep
}

func topoService(iTPLocal, eTPLocal bool, nodePort int32) *Service {
	s := &Service{
		Name:                  ServiceName{"default", "svc"},
		Type:                  ClusterIP,
		ClusterIPs:            []netip.Addr{netip.MustParseAddr("198.19.0.1")},
		ExternalTrafficPolicy: PolicyCluster,
		InternalTrafficPolicy: PolicyCluster,
		Ports:                 []*ServicePort{{Protocol: TCP, Port: 80, TargetPort: "80", NodePort: nodePort}},
	}
	if nodePort != 0 {
		s.Type = NodePort
	}
	if iTPLocal {
		s.InternalTrafficPolicy = PolicyLocal
	}
	if eTPLocal {
		s.ExternalTrafficPolicy = PolicyLocal
	}
	return s
}

func zones(z ...string) []string { return z }

func TestCategorize(t *testing.T) {
	type set = []string
	tests := []struct {
		name      string
		nodeName  string // default node-a
		nodeZone  string
		svc       *Service
		endpoints []topoEP
		// nil cluster/local means "the Service never uses that kind of
		// endpoints"; an empty non-nil set means it does but has none.
		cluster, local, all set
		onlyRemoteEndpoints bool
	}{{
		name:     "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
		nodeZone: "zone-a",
		svc:      topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true},
			{addr: "198.18.64.4:80", zones: zones("zone-b"), ready: true},
			{addr: "198.18.64.5:80", zones: zones("zone-c"), ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: true},
		},
		cluster: set{"198.18.64.3:80", "198.18.64.6:80"},
	}, {
		name:     "externalTrafficPolicy: Local, topology ignored for Local endpoints",
		nodeZone: "zone-a",
		svc:      topoService(false, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true, local: true},
			{addr: "198.18.64.4:80", zones: zones("zone-b"), ready: true, local: true},
			{addr: "198.18.64.5:80", zones: zones("zone-c"), ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: true},
		},
		cluster: set{"198.18.64.3:80", "198.18.64.6:80"},
		local:   set{"198.18.64.3:80", "198.18.64.4:80"},
		all:     set{"198.18.64.3:80", "198.18.64.4:80", "198.18.64.6:80"},
	}, {
		name:     "internalTrafficPolicy: Local, topology ignored for Local endpoints",
		nodeZone: "zone-a",
		svc:      topoService(true, false, 30080),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true, local: true},
			{addr: "198.18.64.4:80", zones: zones("zone-b"), ready: true, local: true},
			{addr: "198.18.64.5:80", zones: zones("zone-c"), ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: true},
		},
		cluster: set{"198.18.64.3:80", "198.18.64.6:80"},
		local:   set{"198.18.64.3:80", "198.18.64.4:80"},
		all:     set{"198.18.64.3:80", "198.18.64.4:80", "198.18.64.6:80"},
	}, {
		name:      "empty node labels",
		svc:       topoService(false, false, 0),
		endpoints: []topoEP{{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true}},
		cluster:   set{"198.18.64.3:80"},
	}, {
		name:      "node in different zone, no endpoint filtering",
		nodeZone:  "zone-b",
		svc:       topoService(false, false, 0),
		endpoints: []topoEP{{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true}},
		cluster:   set{"198.18.64.3:80"},
	}, {
		name:     "unready endpoint",
		nodeZone: "zone-a",
		svc:      topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true},
			{addr: "198.18.64.4:80", zones: zones("zone-b"), ready: true},
			{addr: "198.18.64.5:80", zones: zones("zone-c"), ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: false},
		},
		cluster: set{"198.18.64.3:80"},
	}, {
		name:     "only unready endpoints in same zone (should not filter)",
		nodeZone: "zone-a",
		svc:      topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: false},
			{addr: "198.18.64.4:80", zones: zones("zone-b"), ready: true},
			{addr: "198.18.64.5:80", zones: zones("zone-c"), ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: false},
		},
		cluster: set{"198.18.64.4:80", "198.18.64.5:80"},
	}, {
		name:     "missing hints, no filtering applied",
		nodeZone: "zone-a",
		svc:      topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true},
			{addr: "198.18.64.4:80", zones: zones("zone-b"), ready: true},
			{addr: "198.18.64.5:80", ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: true},
		},
		cluster: set{"198.18.64.3:80", "198.18.64.4:80", "198.18.64.5:80", "198.18.64.6:80"},
	}, {
		name:     "multiple hints per endpoint, filtering includes any endpoint with zone included",
		nodeZone: "zone-c",
		svc:      topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.64.3:80", zones: zones("zone-a", "zone-b", "zone-c"), ready: true},
			{addr: "198.18.64.4:80", zones: zones("zone-b", "zone-c"), ready: true},
			{addr: "198.18.64.5:80", zones: zones("zone-b", "zone-d"), ready: true},
			{addr: "198.18.64.6:80", zones: zones("zone-c"), ready: true},
		},
		cluster: set{"198.18.64.3:80", "198.18.64.4:80", "198.18.64.6:80"},
	}, {
		name:     "conflicting topology and localness require merging allEndpoints",
		nodeZone: "zone-a",
		svc:      topoService(false, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", zones: zones("zone-a"), ready: true, local: true},
			{addr: "198.18.65.11:80", zones: zones("zone-b"), ready: true, local: true},
			{addr: "198.18.65.12:80", zones: zones("zone-a"), ready: true},
			{addr: "198.18.65.13:80", zones: zones("zone-b"), ready: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.12:80"},
		local:   set{"198.18.65.10:80", "198.18.65.11:80"},
		all:     set{"198.18.65.10:80", "198.18.65.11:80", "198.18.65.12:80"},
	}, {
		name:  "internalTrafficPolicy: Local, with empty endpoints",
		svc:   topoService(true, false, 0),
		local: set{},
	}, {
		name: "internalTrafficPolicy: Local, but all endpoints are remote",
		svc:  topoService(true, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true},
			{addr: "198.18.65.11:80", ready: true},
		},
		local:               set{},
		onlyRemoteEndpoints: true,
	}, {
		name: "internalTrafficPolicy: Local, all endpoints are local",
		svc:  topoService(true, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true, local: true},
			{addr: "198.18.65.11:80", ready: true, local: true},
		},
		local: set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		name: "internalTrafficPolicy: Local, some endpoints are local",
		svc:  topoService(true, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true, local: true},
			{addr: "198.18.65.11:80", ready: true},
		},
		local: set{"198.18.65.10:80"},
	}, {
		name: "Cluster traffic policy, endpoints not Ready",
		svc:  topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80"},
			{addr: "198.18.65.11:80"},
		},
		cluster: set{},
	}, {
		name: "Cluster traffic policy, some endpoints are Ready",
		svc:  topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80"},
			{addr: "198.18.65.11:80", ready: true},
		},
		cluster: set{"198.18.65.11:80"},
	}, {
		name: "Cluster traffic policy, all endpoints are terminating",
		svc:  topoService(false, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", serving: true, terminating: true, local: true},
			{addr: "198.18.65.11:80", serving: true, terminating: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		name: "iTP: Local, eTP: Cluster, some endpoints local",
		svc:  topoService(true, false, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true, local: true},
			{addr: "198.18.65.11:80", ready: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.11:80"},
		local:   set{"198.18.65.10:80"},
		all:     set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		name: "iTP: Cluster, eTP: Local, some endpoints local",
		svc:  topoService(false, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true, local: true},
			{addr: "198.18.65.11:80", ready: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.11:80"},
		local:   set{"198.18.65.10:80"},
		all:     set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		// This case caught a bug in UsesClusterEndpoints: an externally
		// accessible Service needs Cluster endpoints even with eTP=Local,
		// for pods short-circuited to its external addresses.
		name: "iTP: Local, eTP: Local, some endpoints local",
		svc:  topoService(true, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true, local: true},
			{addr: "198.18.65.11:80", ready: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.11:80"},
		local:   set{"198.18.65.10:80"},
		all:     set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		name: "iTP: Local, eTP: Local, all endpoints remote",
		svc:  topoService(true, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true},
			{addr: "198.18.65.11:80", ready: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.11:80"},
		local:   set{},
		all:     set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		name: "iTP: Local, eTP: Local, all endpoints remote and terminating",
		svc:  topoService(true, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", serving: true, terminating: true},
			{addr: "198.18.65.11:80", serving: true, terminating: true},
		},
		cluster:             set{"198.18.65.10:80", "198.18.65.11:80"},
		local:               set{},
		all:                 set{"198.18.65.10:80", "198.18.65.11:80"},
		onlyRemoteEndpoints: true,
	}, {
		name: "iTP: Cluster, eTP: Local, with terminating endpoints",
		svc:  topoService(false, true, 30080),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true},
			{addr: "198.18.65.11:80", local: true},
			{addr: "198.18.65.12:80", serving: true, terminating: true, local: true},
			{addr: "198.18.65.13:80", serving: true, terminating: true},
		},
		cluster: set{"198.18.65.10:80"},
		local:   set{"198.18.65.12:80"},
		all:     set{"198.18.65.10:80", "198.18.65.12:80"},
	}, {
		name: "externalTrafficPolicy ignored if not externally accessible",
		svc:  topoService(false, true, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true},
			{addr: "198.18.65.11:80", ready: true, local: true},
		},
		cluster: set{"198.18.65.10:80", "198.18.65.11:80"},
		all:     set{"198.18.65.10:80", "198.18.65.11:80"},
	}, {
		name: "no cluster endpoints for iTP:Local internal-only service",
		svc:  topoService(true, false, 0),
		endpoints: []topoEP{
			{addr: "198.18.65.10:80", ready: true},
			{addr: "198.18.65.11:80", ready: true, local: true},
		},
		local: set{"198.18.65.11:80"},
		all:   set{"198.18.65.11:80"},
	},

		// PreferSameNode (hints.forNodes), CONFORMANCE TOPO-03.
		{
			name:      "PreferSameNode available",
			nodeName:  "node-1",
			nodeZone:  "zone-a",
			svc:       topoService(false, false, 0),
			endpoints: sameNodeEndpoints(true),
			cluster:   set{"198.18.64.3:80"},
		}, {
			name:      "PreferSameNode falls back to PreferSameZone if no endpoint for node",
			nodeName:  "node-0",
			nodeZone:  "zone-a",
			svc:       topoService(false, false, 0),
			endpoints: sameNodeEndpoints(true),
			cluster:   set{"198.18.64.3:80", "198.18.64.6:80"},
		}, {
			name:     "PreferSameNode ignored if some endpoints lack node hints",
			nodeName: "node-1",
			nodeZone: "zone-a",
			svc:      topoService(false, false, 0),
			endpoints: append(sameNodeEndpoints(true)[:3],
				topoEP{addr: "198.18.64.6:80", zones: zones("zone-a"), ready: true}),
			cluster: set{"198.18.64.3:80", "198.18.64.6:80"},
		}, {
			name:     "PreferSameNode and zone ignored if some endpoints are unhinted",
			nodeName: "node-1",
			nodeZone: "zone-a",
			svc:      topoService(false, false, 0),
			endpoints: append(sameNodeEndpoints(true)[:3],
				topoEP{addr: "198.18.64.6:80", ready: true}),
			cluster: set{"198.18.64.3:80", "198.18.64.4:80", "198.18.64.5:80", "198.18.64.6:80"},
		}, {
			name:      "unready endpoints' node hints do not count",
			nodeName:  "node-2",
			nodeZone:  "zone-b",
			svc:       topoService(false, false, 0),
			endpoints: sameNodeEndpoints(false),
			// node-2's endpoint is not ready: zone-b has none ready either.
			cluster: set{"198.18.64.3:80", "198.18.64.5:80", "198.18.64.6:80"},
		}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var eps []*Endpoint
			for _, e := range tc.endpoints {
				eps = append(eps, e.endpoint())
			}
			sortEndpoints(eps)
			tc.svc.Ports[0].Endpoints = eps
			nodeName := tc.nodeName
			if nodeName == "" {
				nodeName = "node-a"
			}
			got := Categorize(tc.svc, tc.svc.Ports[0], &Node{Name: nodeName, Zone: tc.nodeZone})

			if tc.cluster == nil {
				if tc.svc.UsesClusterEndpoints() || got.Cluster != nil {
					t.Errorf("want no cluster endpoints, got UsesClusterEndpoints=%v %v", tc.svc.UsesClusterEndpoints(), epStrings(got.Cluster))
				}
			} else {
				if !tc.svc.UsesClusterEndpoints() {
					t.Errorf("UsesClusterEndpoints = false, want true")
				}
				checkSet(t, "cluster", tc.cluster, got.Cluster)
			}
			if tc.local == nil {
				if tc.svc.UsesLocalEndpoints() || got.Local != nil {
					t.Errorf("want no local endpoints, got UsesLocalEndpoints=%v %v", tc.svc.UsesLocalEndpoints(), epStrings(got.Local))
				}
			} else {
				if !tc.svc.UsesLocalEndpoints() {
					t.Errorf("UsesLocalEndpoints = false, want true")
				}
				checkSet(t, "local", tc.local, got.Local)
			}

			wantAll := tc.all
			switch {
			case tc.cluster != nil && tc.local == nil:
				wantAll = tc.cluster
			case tc.local != nil && tc.cluster == nil:
				wantAll = tc.local
			}
			checkSet(t, "allReachable", wantAll, got.AllReachable)
			if wantAny := len(wantAll) > 0 || tc.onlyRemoteEndpoints; got.HasAny != wantAny {
				t.Errorf("HasAny = %v, want %v", got.HasAny, wantAny)
			}
		})
	}
}

// sameNodeEndpoints are hinted for node-1/zone-a, node-2/zone-b,
// node-3/zone-c and node-4/zone-a; with allReady false, node-2's is unready.
func sameNodeEndpoints(allReady bool) []topoEP {
	return []topoEP{
		{addr: "198.18.64.3:80", zones: zones("zone-a"), nodes: []string{"node-1"}, ready: true},
		{addr: "198.18.64.4:80", zones: zones("zone-b"), nodes: []string{"node-2"}, ready: allReady},
		{addr: "198.18.64.5:80", zones: zones("zone-c"), nodes: []string{"node-3"}, ready: true},
		{addr: "198.18.64.6:80", zones: zones("zone-a"), nodes: []string{"node-4"}, ready: true},
	}
}

func epStrings(eps []*Endpoint) []string {
	out := []string{}
	for _, ep := range eps {
		out = append(out, ep.String())
	}
	return out
}

func checkSet(t *testing.T, what string, want []string, got []*Endpoint) {
	t.Helper()
	w := slices.Clone(want)
	if w == nil {
		w = []string{}
	}
	g := epStrings(got)
	slices.Sort(w)
	slices.Sort(g)
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("%s endpoints (-want +got):\n%s", what, diff)
	}
	if len(g) != len(slices.Compact(slices.Clone(g))) {
		t.Errorf("%s endpoints has duplicates: %v", what, g)
	}
}

func TestCategorizeNilNode(t *testing.T) {
	// A nil node has no name and no zone: nothing is local, hints never
	// match, and every ready endpoint is used.
	s := topoService(false, true, 30080)
	s.Ports[0].Endpoints = []*Endpoint{
		topoEP{addr: "198.18.64.3:80", zones: zones("zone-a"), ready: true, local: true}.endpoint(),
	}
	got := Categorize(s, s.Ports[0], nil)
	if len(got.Cluster) != 1 || len(got.Local) != 0 || !got.HasAny {
		t.Errorf("got %+v", got)
	}
}
